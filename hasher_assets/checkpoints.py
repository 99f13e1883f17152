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
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from hasher_core.design import SEED_BYTES, TOKEN_BITS
from hasher_core.header import build_header, golden_token, leading_equal_bits, target_word
from hasher_core.search import validate_frames_table
from hasher_resources.asic.resource import AsicResource
from hasher_resources.asic.validation import cross_validate
from hasher_resources.parquet_io import HASHER_METADATA_KEY, write_table_atomic
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


def independent_backend(search_backend: str) -> str:
    """The backend that did not produce the seeds: the reference unless the search used it."""
    return "cpu" if search_backend == "reference" else "reference"


def recheck(table: pa.Table, kernel: Sha256Kernel) -> tuple[np.ndarray, np.ndarray]:
    """Recompute every row's golden on ``kernel``; returns ``(consistent mask bool[N], recomputed
    goldens uint32[N])``. A row is consistent when its golden, its matched bits (against the target
    word, DESIGN §4.3) and its solved flag all reproduce, and a row solved at 17 bits or more gives
    back its token: ``golden >> 15 == target_token_id`` (DESIGN §5)."""
    slots, targets = validate_frames_table(table)
    seeds = np.frombuffer(b"".join(table.column("best_seed").to_pylist()), np.uint8).reshape(-1, SEED_BYTES)
    golden = kernel.evaluate_rows(slots, seeds, table.column("header_time").to_numpy())
    stored = table.column("golden").to_numpy().astype(np.uint32)
    matched = leading_equal_bits(golden, target_word(targets))
    claims_solved = table.column("solved").to_numpy(zero_copy_only=False)
    difficulty = table.column("difficulty_bits").to_numpy().astype(np.int32)
    reproduces_token = (difficulty < TOKEN_BITS) | (golden_token(golden) == targets)
    consistent = (golden == stored) & (~claims_solved | ((matched >= difficulty) & reproduces_token))
    consistent &= table.column("matched_bits").to_numpy().astype(np.int32) == matched
    return consistent, golden


def recheck_independently(
    table: pa.Table, kernel: Sha256Kernel
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """:func:`recheck` with every row on a backend other than the one that searched it (the row's
    ``kernel_backend``; unknown counts as the kernel resource's): reference-searched rows on the CPU
    kernel, all others on the reference. Returns ``(consistent, recomputed, search → verify backend)``.
    """
    consistent = np.zeros(table.num_rows, dtype=bool)
    recomputed = np.zeros(table.num_rows, dtype=np.uint32)
    searched = [b or kernel.backend_name() for b in table.column("kernel_backend").to_pylist()]
    verified_on: dict[str, str] = {}
    for search_backend in sorted(set(searched)):
        rows = np.flatnonzero(np.array(searched, dtype=object) == search_backend)
        verified_on[search_backend] = independent_backend(search_backend)
        # The gate's second opinion runs on the kernel resource's threads/device, on another backend.
        ok, golden = recheck(table.take(pa.array(rows)), kernel.on_backend(verified_on[search_backend]))
        consistent[rows], recomputed[rows] = ok, golden
    return consistent, recomputed, verified_on


def sample_headers(table: pa.Table, count: int) -> list[bytes]:
    """Headers of up to ``count`` checkpointed frames (solved ones first) for the device."""
    sample = table.sort_by([("solved", "descending"), ("chunk_id", "ascending")]).slice(0, count)
    slots, _ = validate_frames_table(sample)
    seeds = sample.column("best_seed").to_pylist()
    times = sample.column("header_time").to_pylist()
    return [build_header(slots[i], seeds[i], int(times[i])) for i in range(sample.num_rows)]


@dg.asset(
    partitions_def=source_files,
    backfill_policy=backfill_policy(),
    group_name="train",
    kinds={"sha256"},
    io_manager_key="parquet_io_manager",
    pool="asic",
    op_tags=step_op_tags("checkpoints"),
    description="Seeds that reproduce on an independent implementation: the last known good state.",
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
    good = [table for table, *_ in checked.values() if table.num_rows]
    device: dict = {"checked": False}
    device_ok = True
    if config.device_sample > 0 and good:
        headers = sample_headers(pa.concat_tables(good, promote_options="permissive"), config.device_sample)
        report = cross_validate(asic, headers)
        device_ok = report.passed(config.tolerance)
        device = {"checked": True, "passed": device_ok, **report.as_metadata()}
        context.log.info(
            f"device hashing check (the device, not the seeds) on {report.headers} headers: "
            f"{report.nonces_verified}/{report.nonces_returned} nonces verify on the kernel, "
            f"hardware-error rate {report.hardware_error_rate:.4f}"
        )
    results = {
        key: _gated(config, good_rows, bad, counts, device, device_ok)
        for key, (good_rows, bad, counts) in checked.items()
    }
    return partition_results(context, results)


def _recheck(context, storage, kernel, key: str, table: pa.Table) -> tuple[pa.Table, pa.Table, dict]:
    """One partition's seeds re-checked: ``(consistent rows, the others with their recomputed
    golden, counts)``; the others are also written beside the checkpoints for a look."""
    started = time.monotonic()
    consistent, recomputed, verified_on = recheck_independently(table, kernel)
    backend = "+".join(sorted(set(verified_on.values()))) or independent_backend(kernel.backend_name())
    seconds = time.monotonic() - started
    rows = table.num_rows
    mismatches = int(rows - consistent.sum())
    good = table.filter(pa.array(consistent))
    bad = table.filter(pa.array(~consistent)).append_column(
        "recomputed_golden", pa.array(recomputed[~consistent])
    )
    if mismatches:
        context.log.warning(f"{key}: {mismatches} of {rows} seeds do not reproduce on the {backend} backend")
        write_table_atomic(bad, storage.stage_dir("checkpoint_mismatches") / f"{key}.parquet")
    counts = {"rows": rows, "mismatches": mismatches, "backend": backend, "verified_on": verified_on}
    return good, bad, {**counts, "seconds": seconds}


def _gated(config, good: pa.Table, bad: pa.Table, counts: dict, device: dict, device_ok: bool):
    """One partition's checkpoint table with its gate record in the file, and its metadata."""
    rows, mismatches = counts["rows"], counts["mismatches"]
    rate = mismatches / rows if rows else 0.0
    gate = {
        "rows": rows,
        "consistent": rows - mismatches,
        "mismatches": mismatches,
        "mismatch_rate": rate,
        "tolerance": config.tolerance,
        "verify_backend": counts["backend"],
        "search_backend": sorted(counts["verified_on"]),
        "verified_on": counts["verified_on"],
        # What the gate decided, not how long it took: the same seeds give the same file on any
        # machine or executor (the timings go to the materialization's metadata below).
        "device": {k: v for k, v in device.items() if not k.endswith("_seconds")},
        "passed": rate <= config.tolerance and device_ok,
    }
    schema_meta = dict(good.schema.metadata or {})
    schema_meta[HASHER_METADATA_KEY] = json.dumps(gate).encode()
    good = good.replace_schema_metadata(schema_meta)
    solved = int(pc.sum(good.column("solved")).as_py() or 0) if good.num_rows else 0
    metadata = {
        "dagster/row_count": good.num_rows,
        "checked": rows,
        "mismatches": mismatches,
        "mismatch_rate": round(rate, 6),
        "tolerance": config.tolerance,
        "gate_passed": gate["passed"],
        "solved_checkpointed": solved,
        "verify_backend": counts["backend"],
        "verify_seconds": round(counts["seconds"], 3),
        "verify_evaluations_per_s": round(rows / max(counts["seconds"], 1e-9), 1),
        "device_hashing_check": dg.MetadataValue.json(device),
    }
    if mismatches:
        metadata["mismatch_preview"] = dg.MetadataValue.md(
            preview_markdown(bad, ["chunk_id", "window_end", "golden", "recomputed_golden"])
        )
    return good, metadata
