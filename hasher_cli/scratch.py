"""Train and deploy one text in a scratch directory: the five stages and their checks through
``dg.materialize`` with a throwaway Dagster instance, the offline embedder, the chosen kernel and
the bundled ASIC emulator. For benchmarks, tests and notebooks; the code location itself is
``hasher_assets.definitions``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from hasher_assets.definitions import ASSET_CHECKS, ASSETS, resource_set
from hasher_core.names import PARTITION_STAGES
from hasher_resources.asic.resource import EmulatedAsicDevice
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage

DEPLOYMENT_WITH_CHECKS = dg.AssetSelection.assets("deployment") | dg.AssetSelection.checks_for_assets(
    "deployment"
)


@dataclass(frozen=True)
class ScratchRun:
    """Where a scratch run stored everything, and the two ``dg.materialize`` results."""

    storage: HasherStorage
    trained: dg.ExecuteInProcessResult
    deployment: dg.ExecuteInProcessResult

    def seeds_metadata(self) -> dict[str, object]:
        """The ``seeds`` materialisation's metadata as plain values (solved, seconds, rates…)."""
        materialization = self.trained.asset_materializations_for_node("seeds")[0]
        return {key: value.value for key, value in materialization.metadata.items()}

    def recall_check(self) -> tuple[dg.AssetCheckEvaluation, dict[str, object]]:
        """The ``deployment_recall`` evaluation and its metadata as plain values."""
        (check,) = [
            c for c in self.deployment.get_asset_check_evaluations() if c.check_name == "deployment_recall"
        ]
        return check, {key: value.value for key, value in check.metadata.items()}


def train_and_deploy(
    text: Path,
    root: Path,
    *,
    difficulty_bits: int,
    strategy: str = "grpo",
    backend: str = "cpu",
    asic: EmulatedAsicDevice | None = None,
) -> ScratchRun:
    """Copy ``text`` into ``root/inbox``, materialise the four training stages for its partition,
    then ``deployment`` with its checks; everything is written under ``root`` (which must not hold a
    previous run). ``asic`` defaults to the emulator on ``backend``. Stage failures raise as
    ``dg.materialize`` raises them (a gate failure is a check result, not an exception)."""
    for sub in ("inbox", "miner"):
        (root / sub).mkdir(parents=True)
    shutil.copy(text, root / "inbox" / text.name)
    storage = HasherStorage(  # every path in the scratch directory, whatever the environment says
        miner_dir=str(root / "miner"),
        inbox_dir=str(root / "inbox"),
        data_dir=str(root / "data"),
        progress_dir=str(root / "data" / "seeds_progress"),
    )
    resources = resource_set(
        storage,
        kernel=Sha256Kernel(backend=backend),
        asic=asic if asic is not None else EmulatedAsicDevice(backend=backend),
    )
    config = {"ops": {"seeds": {"config": {"difficulty_bits": difficulty_bits, "strategy": strategy}}}}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source_files", [text.name])
        trained = dg.materialize(
            [*ASSETS, *ASSET_CHECKS],
            selection=dg.AssetSelection.assets(*PARTITION_STAGES),
            partition_key=text.name,
            instance=instance,
            resources=resources,
            run_config=config,
        )
        deployment = dg.materialize(
            [*ASSETS, *ASSET_CHECKS],
            selection=DEPLOYMENT_WITH_CHECKS,
            instance=instance,
            resources=resources,
        )
    return ScratchRun(storage=storage, trained=trained, deployment=deployment)
