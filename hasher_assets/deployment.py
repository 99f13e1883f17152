"""Stage 5 — ``deployment``: one bundle from every partition's checkpoints, flashed with a backup.

Only partitions whose gate passed are bundled. The store (DESIGN §6) keeps ``deployments/<version>/``
plus an atomically swapped pointer; it backs up what is deployed, verifies a sample of the new
version on the kernel and on the device before the swap, and rolls back on any failure, leaving the
previous deployment byte for byte as it was; a damaged current deployment is replaced (the same
version written afresh).
"""

import importlib.metadata
import json
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
from pydantic import Field

from hasher_core.bundle import build_bundle
from hasher_core.errors import NoCheckpointsError
from hasher_resources.asic.resource import AsicResource
from hasher_resources.deploy.store import DeploymentStore
from hasher_resources.deploy.verify import verify_on_kernel_and_device
from hasher_resources.parquet_io import HASHER_METADATA_KEY, ParquetPartition
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage

from .executors import step_op_tags


class DeploymentConfig(dg.Config):
    """How to flash: dry run, retries, deadline, backups and the verification sample."""

    dry_run: bool = Field(default=False, description="Report what would change and touch nothing")
    only_solved: bool = Field(default=False, description="Bundle only seeds that solved their frame")
    retries: int = Field(
        default=2,
        ge=0,
        description="Extra attempts after a failed step; each failed one is rolled back first",
    )
    deadline_s: float = Field(
        default=300.0, gt=0, description="Seconds the whole deploy may take, device calls included"
    )
    keep_backups: int = Field(
        default=3, ge=1, description="Backups of earlier deployments to keep (a rollback restores one)"
    )
    sample_size: int = Field(default=64, ge=1, description="Rows re-verified on the kernel before the swap")
    device_sample: int = Field(
        default=8,
        ge=0,
        description="Headers re-mined on the device before the swap: checks the device's hashing, "
        "not the seeds",
    )
    tolerance: float = Field(
        default=0.01, ge=0, le=1, description="Largest device hardware-error rate that passes (as the gate)"
    )


def pipeline_version() -> str:
    """The installed hasher's version (recorded in every bundle's manifest)."""
    try:
        return importlib.metadata.version("hasher")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@dg.asset(
    group_name="deploy",
    kinds={"parquet"},
    pool="asic",
    op_tags=step_op_tags("deployment"),
    description="The deployed model: one content-addressed bundle of every partition whose "
    "checkpoints_gate passed, written to <data dir>/deployments/<version> after a backup of the "
    "previous version, re-verified on a sample on the kernel (and the device), and only then made "
    "current by an atomic pointer swap; any failure rolls back, retries, and leaves the previous "
    "deployment intact. A damaged current deployment is rewritten by deploying again. dry_run "
    "reports what would change. Use it with `hasher generate` and "
    "`hasher predict`; the deployment_recall check measures it.",
)
def deployment(
    context: dg.AssetExecutionContext,
    config: DeploymentConfig,
    checkpoints: dict[str, ParquetPartition],
    kernel: Sha256Kernel,
    asic: AsicResource,
    storage: HasherStorage,
) -> dg.MaterializeResult:
    passed: dict = {}
    refused: dict[str, str] = {}
    # Each checkpoint file read once (its gate record is in its own metadata), several at a time:
    # ten thousand partitions are ten thousand small files.
    keys = sorted(checkpoints)
    with ThreadPoolExecutor(max_workers=4) as pool:
        tables = dict(zip(keys, pool.map(lambda k: checkpoints[k].read(), keys), strict=True))
    for key, table in tables.items():
        raw = (table.schema.metadata or {}).get(HASHER_METADATA_KEY)
        gate = json.loads(raw) if raw else {}
        if gate.get("passed"):
            passed[key] = table
        else:
            refused[key] = (
                f"gate failed (mismatch rate {gate.get('mismatch_rate', '?')})" if gate else "no gate record"
            )
    for key, why in refused.items():
        context.log.warning(f"partition {key!r} is not deployed: {why}")
    empty = sorted(key for key, table in passed.items() if not table.num_rows)
    for key in empty:
        context.log.warning(f"partition {key!r} has no checkpoint rows (no frames): none of it is deployed")
    if not passed:
        raise NoCheckpointsError(
            f"no partition has checkpoints that passed the gate; looked at {sorted(checkpoints) or 'none'}"
            + (f"; refused: {refused}" if refused else "")
        )
    bundle = build_bundle(passed, pipeline_version=pipeline_version(), only_solved=config.only_solved)
    store = DeploymentStore(storage.data_path)
    report = store.deploy(
        bundle,
        verify=lambda b: verify_on_kernel_and_device(
            b,
            kernel,
            asic,
            sample_size=config.sample_size,
            device_sample=config.device_sample,
            tolerance=config.tolerance,
        ),
        health_check=lambda: asic.health_check(config.tolerance),
        retries=config.retries,
        deadline_s=config.deadline_s,
        dry_run=config.dry_run,
        keep_backups=config.keep_backups,
        sample_size=config.sample_size,
        log=context.log.info,
    )
    return dg.MaterializeResult(
        metadata={
            **report.as_metadata(),
            "partitions_deployed": dg.MetadataValue.json(sorted(set(passed) - set(empty))),
            "partitions_refused": dg.MetadataValue.json(refused),
            "partitions_empty": dg.MetadataValue.json(empty),
            "store": dg.MetadataValue.path(str(storage.data_path / "deployments")),
        }
    )
