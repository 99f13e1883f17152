"""The checkpoints gate re-checks every seed on an implementation other than the one that searched it
(DESIGN §5): compiled-backend seeds on the hashlib reference, reference seeds on the CPU kernel."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hasher_assets.checkpoints import CheckpointsConfig, checkpoints
from hasher_assets.checks import checkpoints_gate
from hasher_assets.definitions import ASSETS
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage
from hasher_tests.assets.local import local_resources
from hasher_tests.core.bundle.test_bundle import make_checkpoints
from hasher_tests.core.search.test_reproduce import marked_unsolved_although_it_reaches_its_difficulty

KEY = "a.txt"


def stored_seeds(storage: HasherStorage, searched_on: list[str | None]) -> pa.Table:
    """Seeds with real goldens, as the seeds asset stores them, each row labelled with its backend."""
    table = make_checkpoints(len(searched_on), partition=KEY, seed=3)
    table = table.append_column("kernel_backend", pa.array(searched_on, pa.string()))
    pq.write_table(table, storage.stage_dir("seeds") / f"{KEY}.parquet")
    return table


def run_gate(instance, storage: HasherStorage, kernel_backend: str = "cpu"):
    instance.add_dynamic_partitions("source_files", [KEY])
    return dg.materialize(
        [*ASSETS, checkpoints_gate],
        selection=dg.AssetSelection.assets(checkpoints) | dg.AssetSelection.checks(checkpoints_gate),
        partition_key=KEY,
        instance=instance,
        resources=local_resources(storage, kernel_backend),
        run_config={"ops": {"checkpoints": {"config": {"device_sample": 0}}}},
        raise_on_error=False,
    )


@pytest.fixture
def evaluated_on(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(backend, rows) of every evaluation the kernel resource runs."""
    calls: list[tuple[str, int]] = []
    original = Sha256Kernel.evaluate_rows

    def spy(self: Sha256Kernel, slots: np.ndarray, seeds: np.ndarray, header_times: np.ndarray) -> np.ndarray:
        calls.append((self.backend_name(), len(slots)))
        return original(self, slots, seeds, header_times)

    monkeypatch.setattr(Sha256Kernel, "evaluate_rows", spy)
    return calls


def test_each_seed_is_rechecked_on_a_backend_other_than_its_search(instance, storage, evaluated_on):
    stored_seeds(storage, ["cpu", "cpu", "cpu", "reference", "reference"])
    result = run_gate(instance, storage)
    assert sorted(evaluated_on) == [("cpu", 2), ("reference", 3)]
    gate = pq.read_schema(storage.data_path / "checkpoints" / f"{KEY}.parquet").metadata
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["independent"].value is True
    assert check.metadata["verified_on"].value == {"cpu": "reference", "reference": "cpu"}
    assert b'"passed": true' in gate[b"hasher"]


def test_a_reference_search_is_checked_by_the_cpu_kernel_and_a_bad_seed_is_caught(
    instance, storage, evaluated_on
):
    table = stored_seeds(storage, ["reference"] * 6)
    seeds = table.column("best_seed").to_pylist()
    seeds[4] = bytes(32)  # a seed whose golden is not the stored one
    table = table.set_column(table.schema.get_field_index("best_seed"), "best_seed", pa.array(seeds))
    pq.write_table(table, storage.stage_dir("seeds") / f"{KEY}.parquet")
    result = run_gate(instance, storage, kernel_backend="reference")
    assert evaluated_on == [("cpu", 6)]
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.metadata["mismatches"].value == 1 and check.metadata["verify_backend"].value == "cpu"
    kept = pq.read_table(storage.data_path / "checkpoints" / f"{KEY}.parquet")
    assert kept.num_rows == 5


def test_seeds_of_unknown_backend_are_checked_against_the_kernel_resources_backend(
    instance, storage, evaluated_on
):
    stored_seeds(storage, [None, None])
    result = run_gate(instance, storage, kernel_backend="reference")
    assert evaluated_on == [("cpu", 2)]
    (check,) = result.get_asset_check_evaluations()
    assert check.metadata["verified_on"].value == {"reference": "cpu"}


def test_the_device_check_is_labelled_as_a_check_of_the_device_not_the_seeds(instance, storage):
    stored_seeds(storage, ["cpu", "cpu"])
    (check,) = run_gate(instance, storage).get_asset_check_evaluations()
    assert check.metadata["device_hashing_check"].value == {"checked": False}
    assert "device" not in check.metadata  # the old label said "device" and nothing about what was checked
    assert "the device, not the seeds" in checkpoints_gate.check_specs_by_output_name["result"].description
    config = CheckpointsConfig.model_fields["device_sample"].description
    assert "device's own hashing" in config and "not the seeds" in config


def test_a_row_marked_unsolved_whose_golden_reaches_its_difficulty_fails_the_gate(instance, storage):
    """The row deployment verification rejects is rejected here first: one rule for both."""
    table, row = marked_unsolved_although_it_reaches_its_difficulty()
    table = table.append_column("kernel_backend", pa.array(["cpu"] * table.num_rows, pa.string()))
    pq.write_table(table, storage.stage_dir("seeds") / f"{KEY}.parquet")
    (check,) = run_gate(instance, storage).get_asset_check_evaluations()
    assert not check.passed and check.metadata["mismatches"].value == 1
    kept = pq.read_table(storage.data_path / "checkpoints" / f"{KEY}.parquet")
    assert table.column("fingerprint")[row] not in kept.column("fingerprint")
