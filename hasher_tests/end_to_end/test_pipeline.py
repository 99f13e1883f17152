"""End to end: the five stages through ``dg.materialize`` and through the ``dagster`` CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hasher_assets.definitions import ASSET_CHECKS, ASSETS, resource_set
from hasher_cli.main import main
from hasher_core.header import target_word
from hasher_core.names import PARTITION_STAGES
from hasher_resources.asic.resource import AsicDevice, EmulatedAsicDevice, start_emulator, stop_emulator
from hasher_resources.deploy.store import DeploymentStore
from hasher_resources.sha256 import cpu, evaluate
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage

KEY = "gettysburg_address.txt"
STAGES = PARTITION_STAGES
FAST_SEEDS = {"difficulty_bits": 6, "population": 32, "max_generations": 64}


def _resources(storage: HasherStorage) -> dict:
    return resource_set(storage, kernel=Sha256Kernel(backend="cpu"), asic=EmulatedAsicDevice(share_bits=4))


def _materialize(instance, storage, selection, *, partition=KEY, config=None, raise_on_error=True):
    return dg.materialize(
        [*ASSETS, *ASSET_CHECKS],
        selection=selection,
        partition_key=partition,
        instance=instance,
        resources=_resources(storage),
        run_config={"ops": config or {"seeds": {"config": FAST_SEEDS}}},
        raise_on_error=raise_on_error,
    )


@pytest.fixture
def trained(instance, storage):
    instance.add_dynamic_partitions("source_files", [KEY])
    result = _materialize(instance, storage, STAGES)
    return instance, storage, result


def _read(storage: HasherStorage, asset: str, key: str = KEY) -> pa.Table:
    return pq.read_table(storage.data_path / asset / f"{key}.parquet")


@pytest.mark.slow
def test_four_stages_materialise_and_every_check_passes(trained):
    _, storage, result = trained
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {
        "knowledge_base_is_well_formed",
        "training_frames_are_consistent",
        "checkpoints_gate",
    }
    assert all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks if not c.passed]
    frames = _read(storage, "training_frames")
    seeds = _read(storage, "seeds")
    assert seeds.num_rows == frames.num_rows > 100
    meta = result.asset_materializations_for_node("seeds")[0].metadata
    assert meta["kernel_backend"].value == "cpu"
    assert meta["kernel_cpu_path"].value == cpu.select_kernel()  # which CPU path searched: shani or simd
    assert meta["kernel_search_loop"].value == "host"  # "device" on a GPU: generations run there
    assert 0 < meta["solved"].value <= seeds.num_rows


@pytest.mark.slow
def test_every_reported_golden_reproduces_under_the_reference(trained):
    _, storage, _ = trained
    seeds = _read(storage, "seeds")
    slots = np.stack([seeds.column(f"asic_slot_{k}").to_numpy().view(np.uint32) for k in range(12)], axis=1)
    best = np.frombuffer(b"".join(seeds.column("best_seed").to_pylist()), np.uint8).reshape(-1, 32)
    golden = evaluate(np.ascontiguousarray(slots), best.copy(), backend="reference")
    assert np.array_equal(golden, seeds.column("golden").to_numpy())
    solved = seeds.column("solved").to_numpy(zero_copy_only=False)
    words = target_word(seeds.column("target_token_id").to_numpy())  # DESIGN §4.3: token << 15
    top = np.uint32(0xFFFFFFFF << (32 - FAST_SEEDS["difficulty_bits"]) & 0xFFFFFFFF)
    assert np.array_equal((golden[solved] & top), (words[solved] & top))


@pytest.mark.slow
def test_the_gate_fails_on_a_tampered_seed_and_records_the_mismatch(trained):
    instance, storage, _ = trained
    path = storage.data_path / "seeds" / f"{KEY}.parquet"
    seeds = pq.read_table(path)
    best = seeds.column("best_seed").to_pylist()
    best[0] = bytes([best[0][0] ^ 0xFF]) + best[0][1:]  # the golden column no longer matches
    pq.write_table(
        seeds.set_column(seeds.column_names.index("best_seed"), "best_seed", pa.array(best, pa.binary())),
        path,
    )
    result = _materialize(
        instance,
        storage,
        ["checkpoints"],
        config={"checkpoints": {"config": {"tolerance": 0.0, "device_sample": 0}}},
        raise_on_error=False,
    )
    gate = next(c for c in result.get_asset_check_evaluations() if c.check_name == "checkpoints_gate")
    assert not gate.passed
    assert gate.metadata["mismatches"].value == 1
    checkpoint = _read(storage, "checkpoints")
    assert checkpoint.num_rows == seeds.num_rows - 1
    assert pq.read_table(storage.data_path / "checkpoint_mismatches" / f"{KEY}.parquet").num_rows == 1


def manifest_version(current: Path) -> str:
    return current.resolve().name


def expected_predict_status(storage: HasherStorage, row: int) -> int:
    """``hasher predict --frame-index row``'s exit status, from the reference recursion: 0 when a
    deployed row with the same slots has a seed whose golden gives back that row's target token."""
    bundle = DeploymentStore(storage.data_path).open_bundle()
    slots, seeds = bundle.slots(), bundle.best_seeds()
    same = np.flatnonzero((slots == slots[row]).all(axis=1))
    golden = evaluate(
        np.ascontiguousarray(slots[same]), np.ascontiguousarray(seeds[same]), backend="reference"
    )
    targets = bundle.seeds.column("target_token_id").to_numpy()[same]
    return 0 if ((golden >> 15) == targets).any() else 1


@pytest.mark.slow
def test_deployment_bundles_the_checkpoints(trained, capsys):
    instance, storage, _ = trained
    result = dg.materialize(
        [*ASSETS], selection=["deployment"], instance=instance, resources=_resources(storage)
    )
    assert result.success
    meta = result.asset_materializations_for_node("deployment")[0].metadata
    assert meta["partitions_deployed"].value == [KEY]
    current = storage.data_path / "current"
    assert current.exists()
    manifest = json.loads((current / "manifest.json").read_text())
    assert manifest["total_rows"] == _read(storage, "checkpoints").num_rows

    # What `hasher status` and `hasher predict` show a user afterwards.
    assert main(["status", "--deployment-root", storage.data_dir]) == 0
    status = capsys.readouterr().out
    assert KEY in status and f"deployment: {manifest_version(current)}" in status
    expected = expected_predict_status(storage, 0)
    assert main(["predict", "--deployment-root", storage.data_dir, "--frame-index", "0"]) == expected
    assert "candidate row(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_deployment_refuses_a_failed_gate_and_keeps_the_previous_deployment(trained):
    instance, storage, _ = trained
    assert dg.materialize(
        [*ASSETS], selection=["deployment"], instance=instance, resources=_resources(storage)
    ).success
    current = storage.data_path / "current"
    before = {p.name: p.read_bytes() for p in current.iterdir()}
    version = current.resolve().name
    path = storage.data_path / "seeds" / f"{KEY}.parquet"
    seeds = pq.read_table(path)
    golden = seeds.column("golden").to_numpy().copy()
    golden[:10] ^= 1  # ten seeds now claim goldens they do not have
    pq.write_table(seeds.set_column(seeds.column_names.index("golden"), "golden", pa.array(golden)), path)
    checked = _materialize(
        instance, storage, ["checkpoints"], config={"checkpoints": {"config": {"device_sample": 0}}},
        raise_on_error=False,
    )  # fmt: skip
    assert not next(
        c for c in checked.get_asset_check_evaluations() if c.check_name == "checkpoints_gate"
    ).passed
    result = dg.materialize(
        [*ASSETS],
        selection=["deployment"],
        instance=instance,
        resources=_resources(storage),
        raise_on_error=False,
    )
    assert not result.success
    assert "no partition has checkpoints that passed the gate" in str(result.all_events)
    assert current.resolve().name == version
    assert {p.name: p.read_bytes() for p in current.iterdir()} == before


@pytest.mark.slow
def test_cli_materialises_a_registered_partition_with_a_persistent_instance(tmp_path, miner_dir):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((Path(__file__).resolve().parents[2] / "dagster.yaml").read_text())
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "HASHER_MINER_DIR": str(miner_dir),
        "HASHER_INBOX_DIR": str(tmp_path / "inbox"),
        "HASHER_DATA_DIR": str(tmp_path / "data"),
        "HASHER_KERNEL_BACKEND": "cpu",
    }
    bindir = Path(sys.executable).parent
    sync = subprocess.run(
        [str(bindir / "hasher"), "partitions", "sync"], env=env, capture_output=True, text=True, timeout=120
    )
    assert sync.returncode == 0, sync.stderr
    assert KEY in sync.stdout.split()
    config = {"ops": {"seeds": {"config": FAST_SEEDS}}, "execution": {"config": {"in_process": {}}}}
    run = subprocess.run(
        [str(bindir / "dagster"), "asset", "materialize", "-m", "hasher_assets.definitions",
         "--select", ",".join(STAGES), "--partition", KEY, "--config-json", json.dumps(config)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / "data" / "checkpoints" / f"{KEY}.parquet").exists()


@pytest.mark.slow
def test_the_gate_fails_when_the_device_returns_nonces_that_do_not_verify(trained):
    instance, storage, _ = trained
    proc, url = start_emulator(share_bits=4, faults=["wrong-nonce:nonce:*"])
    try:
        resources = {**_resources(storage), "asic": AsicDevice(url=url, share_bits=4)}
        result = dg.materialize(
            [*ASSETS, *ASSET_CHECKS],
            selection=["checkpoints"],
            partition_key=KEY,
            instance=instance,
            resources=resources,
            run_config={"ops": {"checkpoints": {"config": {"device_sample": 4}}}},
            raise_on_error=False,
        )
    finally:
        stop_emulator(proc)
    gate = next(c for c in result.get_asset_check_evaluations() if c.check_name == "checkpoints_gate")
    assert not gate.passed
    device = gate.metadata["device_hashing_check"].value
    assert device["checked"] and not device["passed"]
    assert device["asic_nonces_verified"] < device["asic_nonces_returned"]
