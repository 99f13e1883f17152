"""Stage 4 — ``checkpoints``: the validation gate (DESIGN §5).

Every seed is re-evaluated on an independent path: the hashlib reference when the search ran on a
compiled backend (and the CPU backend when it ran on the reference), plus the ASIC device's own
nonce search on a sample of headers when a device is configured (a check of the device's own hashing,
not of the seeds: DESIGN §5). Seeds whose golden reproduces form
the partition's checkpoint; the mismatch rate goes into the file and the blocking asset check
``checkpoints_gate`` fails when it exceeds the tolerance. A run over a range of partitions checks the
device once, on a sample of all their checkpointed headers.
"""

import json
import time

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from hasher_resources.asic.resource import AsicResource
from hasher_resources.parquet_io import (
    HASHER_METADATA_KEY,
    partition_path,
    write_table_atomic,
)
from hasher_resources.recheck import Recheck, device_hashing_check, recheck_independently
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage

from .executors import step_op_tags
from .metadata import partition_results, preview_markdown
from .partitions import PartitionInput, backfill_policy, by_partition, source_files


class CheckpointsConfig(dg.Config):
    """The gate: how much disagreement is tolerated and how much goes to the device."""

    tolerance: float = Field(default=0.01, ge=0, le=1, description="Largest mismatch rate that passes")
    device_sample: int = Field(
        default=16,
        ge=0,
        description="Checkpointed headers sent to the ASIC device to check the device's own hashing "
        "(its nonces must verify on the kernel); this checks the device, not the seeds (0 = skip)",
    )


@dg.asset(
    partitions_def=source_files,
    backfill_policy=backfill_policy(),
    group_name="train",
    kinds={"sha256"},
    io_manager_key="parquet_io_manager",
    pool="asic",
    op_tags=step_op_tags("checkpoints"),
    description="The seeds that reproduce on an implementation other than the one that searched them "
    "(the hashlib reference for CPU or CUDA seeds, the CPU kernel for reference seeds): the last known "
    "good state, and what deployment bundles. Rows that do not reproduce are left out and written to "
    "checkpoint_mismatches/<partition>.parquet; the blocking check checkpoints_gate fails when their "
    "share exceeds tolerance. With an ASIC, device_sample headers also go to the device to check the "
    "device's own hashing, not the seeds.",
)
def checkpoints(
    context: dg.AssetExecutionContext,
    config: CheckpointsConfig,
    seeds: PartitionInput,
    kernel: Sha256Kernel,
    asic: AsicResource,
    storage: HasherStorage,
) -> dg.MaterializeResult:
    tables = {key: handle.read() for key, handle in by_partition(context, seeds).items()}
    checked = {key: _recheck(context, storage, kernel, key, table) for key, table in tables.items()}
    # The device check is of the device's own hashing, not of any partition's seeds: one sample of
    # the run's checkpointed headers, whatever the number of partitions, judged for all of them.
    good = [kept for kept, *_ in checked.values() if kept.num_rows]
    together = pa.concat_tables(good, promote_options="permissive") if len(good) > 1 else (good or [None])[0]
    if together is None:
        device, report = {"checked": False}, None
    else:
        device, report = device_hashing_check(asic, together, config.device_sample, config.tolerance)
    if report is not None:
        context.log.info(
            f"device hashing check (the device, not the seeds) on {report.headers} headers: "
            f"{report.nonces_verified}/{report.nonces_returned} nonces verify on the kernel, "
            f"hardware-error rate {report.hardware_error_rate:.4f}"
        )
    results = {}
    for key, (kept, recheck, backend, seconds) in checked.items():
        gate = _gate(recheck, backend, device, config.tolerance)
        if not recheck.rows:
            # Nothing was re-checked because there is nothing: the gate passes vacuously and says so.
            gate["note"] = "no seeds to check: the partition has no frames (see training_frames' note)"
            context.log.warning(f"partition {key!r}: {gate['note']}")
        kept = kept.replace_schema_metadata(
            {**(kept.schema.metadata or {}), HASHER_METADATA_KEY: json.dumps(gate).encode()}
        )
        results[key] = (kept, _metadata(kept, tables[key], recheck, gate, device, seconds))
    return partition_results(context, results)


def _recheck(context, storage, kernel, key: str, table: pa.Table) -> tuple[pa.Table, Recheck, str, float]:
    """One partition's seeds re-checked: ``(consistent rows, the recheck, the verify backend, its
    seconds)``; the rows that do not reproduce are written beside the checkpoints for a look."""
    started = time.monotonic()
    checked = recheck_independently(table, kernel)
    seconds = time.monotonic() - started
    backend = checked.verify_backend(kernel)
    if checked.mismatches:
        context.log.warning(
            f"{key}: {checked.mismatches} of {checked.rows} seeds do not reproduce on the {backend} backend"
        )
        write_table_atomic(
            checked.mismatch_table(table), partition_path(storage.data_path, "checkpoint_mismatches", key)
        )
    return table.filter(pa.array(checked.consistent)), checked, backend, seconds


def _gate(checked: Recheck, backend: str, device: dict, tolerance: float) -> dict:
    """What the gate decided, stored in the checkpoint file: not how long it took, so the same seeds
    give the same file on any machine or executor (the timings go to the materialization's metadata)."""
    return {
        "rows": checked.rows,
        "consistent": int(checked.consistent.sum()),
        "mismatches": checked.mismatches,
        "mismatch_rate": checked.mismatch_rate,
        "tolerance": tolerance,
        "verify_backend": backend,
        "search_backend": sorted(checked.verified_on),
        "verified_on": checked.verified_on,
        "device": {k: v for k, v in device.items() if not k.endswith("_seconds")},
        "passed": checked.mismatch_rate <= tolerance and device.get("passed", True),
    }


def _metadata(good: pa.Table, table: pa.Table, checked: Recheck, gate: dict, device: dict, seconds: float):
    solved = int(pc.sum(good.column("solved")).as_py() or 0) if good.num_rows else 0
    metadata = {
        "dagster/row_count": good.num_rows,
        "checked": checked.rows,
        "mismatches": checked.mismatches,
        "mismatch_rate": round(checked.mismatch_rate, 6),
        "tolerance": gate["tolerance"],
        "gate_passed": gate["passed"],
        "solved_checkpointed": solved,
        "verify_backend": gate["verify_backend"],
        "verify_seconds": round(seconds, 3),
        "verify_evaluations_per_s": round(checked.rows / max(seconds, 1e-9), 1),
        "device_hashing_check": dg.MetadataValue.json(device),
    }
    if "note" in gate:
        metadata["note"] = gate["note"]
    if checked.mismatches:
        metadata["mismatch_preview"] = dg.MetadataValue.md(
            preview_markdown(
                checked.mismatch_table(table), ["chunk_id", "window_end", "golden", "recomputed_golden"]
            )
        )
    return metadata
