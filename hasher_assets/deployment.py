"""Stage 5 — ``deployment``: one bundle from every partition's checkpoints, flashed with a backup.

Only partitions whose gate passed are bundled. The store (DESIGN §6) keeps ``deployments/<version>/``
plus an atomically swapped pointer; it backs up what is deployed, verifies a sample after the swap
on the kernel and on the device, and rolls back on any failure, leaving the previous deployment
byte for byte as it was.
"""

import importlib.metadata

import dagster as dg
from pydantic import Field

from hasher_core.bundle import Bundle, build_bundle
from hasher_core.errors import NoCheckpointsError
from hasher_core.header import build_header
from hasher_resources.asic.device import AsicDevice
from hasher_resources.asic.validation import cross_validate
from hasher_resources.deploy_store import (
    DeploymentStore,
    SampleMismatch,
    VerifyReport,
    verify_sample_on_kernel,
)
from hasher_resources.io import ParquetPartition
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage


class DeploymentConfig(dg.Config):
    """How to flash: dry run, retries, deadline, backups and the verification sample."""

    dry_run: bool = Field(default=False, description="Report what would change and touch nothing")
    only_solved: bool = Field(default=False, description="Bundle only seeds that solved their frame")
    retries: int = Field(default=2, ge=0)
    deadline_s: float = Field(default=300.0, gt=0)
    keep_backups: int = Field(default=3, ge=1)
    sample_size: int = Field(default=64, ge=1, description="Rows re-verified on the kernel after the swap")
    device_sample: int = Field(default=8, ge=0, description="Headers re-mined on the device after the swap")


def verify_on_kernel_and_device(
    bundle: Bundle, sample_size: int, kernel: Sha256Kernel, asic: AsicDevice, device_sample: int
) -> VerifyReport:
    """Read-back check after the swap: goldens of a sample on the kernel, then the device's own
    nonces for a few of those headers must verify (DESIGN §6, "on the device or kernel")."""
    report = verify_sample_on_kernel(bundle, sample_size, kernel.backend_name())
    if not report.ok or device_sample == 0:
        return report
    slots, seeds = bundle.slots(), bundle.best_seeds()
    times = bundle.seeds.column("header_time").to_pylist()
    rows = range(min(device_sample, bundle.num_rows))
    headers = [build_header(slots[r], seeds[r].tobytes(), int(times[r])) for r in rows]
    device = cross_validate(asic, headers)
    problems = []
    if device.nonces_returned == 0:
        problems.append("the device returned no nonce for any header")
    if device.nonces_verified < device.nonces_returned:
        problems.append(f"{device.nonces_returned - device.nonces_verified} device nonces fail on the kernel")
    mismatches = tuple(SampleMismatch(-1, "device", 0, 0, p) for p in problems)
    return VerifyReport(
        verifier=f"{report.verifier} + device ({device.headers} headers)",
        checked=report.checked + device.headers,
        mismatches=mismatches,
        seconds=report.seconds + device.device_s + device.verify_s,
    )


def pipeline_version() -> str:
    try:
        return importlib.metadata.version("hasher")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@dg.asset(
    group_name="deploy",
    kinds={"parquet"},
    pool="asic",
    description="The versioned seed bundle on the target, with backup and rollback (DESIGN §6).",
)
def deployment(
    context: dg.AssetExecutionContext,
    config: DeploymentConfig,
    checkpoints: dict[str, ParquetPartition],
    kernel: Sha256Kernel,
    asic: AsicDevice,
    storage: HasherStorage,
) -> dg.MaterializeResult:
    passed: dict = {}
    refused: dict[str, str] = {}
    for key, handle in sorted(checkpoints.items()):
        gate = handle.hasher_metadata()
        if gate.get("passed"):
            passed[key] = handle.read()
        else:
            refused[key] = (
                f"gate failed (mismatch rate {gate.get('mismatch_rate', '?')})" if gate else "no gate record"
            )
    for key, why in refused.items():
        context.log.warning(f"partition {key!r} is not deployed: {why}")
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
            b, config.sample_size, kernel, asic, config.device_sample
        ),
        health_check=asic.health_check,
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
            "partitions_deployed": dg.MetadataValue.json(sorted(passed)),
            "partitions_refused": dg.MetadataValue.json(refused),
            "store": dg.MetadataValue.path(str(storage.data_path / "deployments")),
        }
    )
