"""The deployment asset's settings through the asset: dry_run, only_solved, retries, keep_backups, and
a device unfit to deploy to (the health check)."""

from __future__ import annotations

import contextlib
import json

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import PrivateAttr

from hasher_assets.definitions import ASSETS
from hasher_resources.asic.emulator import Board, Emulator, serve_in_thread
from hasher_resources.asic.resource import AsicResource
from hasher_resources.deploy.store import DeploymentStore
from hasher_resources.parquet_io import HASHER_METADATA_KEY
from hasher_resources.storage import HasherStorage
from hasher_tests.assets.local import local_resources
from hasher_tests.core.bundle.test_bundle import make_checkpoints

KEYS = ["a.txt", "b.txt"]


class ThreadEmulatedAsic(AsicResource):
    """The emulator served from a thread (no process start-up), with a board state to set, and a
    health check that reports trouble for its first ``unhealthy_first`` calls."""

    chain_count: int = 1
    chip_count: int = 4
    share_bits: int = 6
    chips_alive: int | None = None
    unhealthy_first: int = 0
    _health_calls: int = PrivateAttr(default=0)

    def _start(self, cleanup: contextlib.ExitStack) -> str:
        board = Board(
            chains=self.chain_count,
            chips=self.chip_count,
            share_bits=self.share_bits,
            nonces_per_work=512,
            chips_alive=self.chips_alive,
            backend="reference",
        )
        return cleanup.enter_context(serve_in_thread(Emulator(board, [])))

    def health_check(self, tolerance: float = 0.01) -> dict:
        self._health_calls += 1
        if self._health_calls <= self.unhealthy_first:
            return {"ok": False, "problems": ["fan 1 stopped"]}
        return super().health_check(tolerance)


def store_checkpoints(storage: HasherStorage, seed: int) -> dict[str, int]:
    """Checkpoint files that passed the gate, as the checkpoints asset stores them; solved rows per key."""
    solved = {}
    for i, key in enumerate(KEYS):
        table = make_checkpoints(8, partition=key, seed=seed * 10 + i)
        gate = {"passed": True, "mismatch_rate": 0.0, "rows": table.num_rows}
        meta = {**(table.schema.metadata or {}), HASHER_METADATA_KEY: json.dumps(gate).encode()}
        pq.write_table(
            table.replace_schema_metadata(meta), storage.stage_dir("checkpoints") / f"{key}.parquet"
        )
        solved[key] = int(np.sum(table.column("solved").to_numpy(zero_copy_only=False)))
    return solved


def deploy(instance, storage: HasherStorage, asic: AsicResource | None = None, **config: object):
    return dg.materialize(
        [*ASSETS],
        selection=["deployment"],
        instance=instance,
        resources={**local_resources(storage, "cpu"), "asic": asic or ThreadEmulatedAsic()},
        run_config={"ops": {"deployment": {"config": {"device_sample": 2, **config}}}},
        raise_on_error=False,
    )


def metadata(result) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("deployment")[0].metadata.items()}


@pytest.fixture
def store(instance, storage) -> DeploymentStore:
    instance.add_dynamic_partitions("source_files", KEYS)
    return DeploymentStore(storage.data_path)


def test_only_solved_bundles_just_the_solved_seeds(instance, storage, store):
    solved = store_checkpoints(storage, seed=1)
    result = deploy(instance, storage, only_solved=True)
    assert result.success
    bundle = store.open_bundle()
    assert bundle.num_rows == sum(solved.values()) < 16
    assert bundle.seeds.column("solved").to_pylist() == [True] * bundle.num_rows
    everything = deploy(instance, storage)
    assert everything.success and store.open_bundle().num_rows == 16


def test_dry_run_reports_the_change_and_touches_nothing(instance, storage, store):
    store_checkpoints(storage, seed=1)
    assert deploy(instance, storage).success
    current, versions, backups = store.current_version(), store.versions(), store.backups()
    store_checkpoints(storage, seed=2)
    result = deploy(instance, storage, dry_run=True)
    assert result.success
    meta = metadata(result)
    assert meta["status"] == "dry_run" and meta["previous_version"] == current
    assert meta["version"] != current and meta["diff"]
    assert (store.current_version(), store.versions(), store.backups()) == (current, versions, backups)


def test_keep_backups_prunes_older_backups(instance, storage, store):
    for seed in (1, 2, 3, 4):
        store_checkpoints(storage, seed=seed)
        assert deploy(instance, storage, keep_backups=1).success
    assert len(store.versions()) == 4 and len(store.backups()) == 1


def test_a_failing_step_is_retried_up_to_retries(instance, storage, store):
    store_checkpoints(storage, seed=1)
    result = deploy(instance, storage, ThreadEmulatedAsic(unhealthy_first=1), retries=1)
    assert result.success
    meta = metadata(result)
    assert meta["attempts"] == 2 and len(meta["retried_errors"]) == 1
    assert "fan 1 stopped" in meta["retried_errors"][0]


def test_without_retries_the_first_failure_stops_the_deploy_and_keeps_the_previous(instance, storage, store):
    store_checkpoints(storage, seed=1)
    assert deploy(instance, storage).success
    previous = store.current_version()
    store_checkpoints(storage, seed=2)
    result = deploy(instance, storage, ThreadEmulatedAsic(unhealthy_first=1), retries=0)
    assert not result.success
    assert "fan 1 stopped" in str(result.all_events)
    assert store.current_version() == previous


def test_a_device_with_no_chip_alive_is_not_deployed_to(instance, storage, store):
    store_checkpoints(storage, seed=1)
    result = deploy(instance, storage, ThreadEmulatedAsic(chips_alive=0), retries=0)
    assert not result.success
    assert "no chip alive (0 of 4)" in str(result.all_events)
    assert store.current_version() is None


def test_the_deployment_asset_repairs_a_damaged_current_deployment_of_the_same_checkpoints(
    instance, storage, store
):
    # Bughunt round 3, case 01: one flipped bit, then the same checkpoints deployed again.
    store_checkpoints(storage, seed=1)
    assert deploy(instance, storage).success
    version = store.current_version()
    seeds = store.version_dir(version) / "seeds.parquet"
    data = bytearray(seeds.read_bytes())
    data[len(data) // 2] ^= 1
    seeds.write_bytes(bytes(data))
    result = deploy(instance, storage)
    assert result.success
    meta = metadata(result)
    assert meta["status"] == "deployed" and "BundleChecksumError" in meta["current_error"]
    assert store.current_version() == version and not store.inspect().damaged
