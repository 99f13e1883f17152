"""The deployment store: deploy, backup, pointer swap, readback, retries, deadline, rollback, dry run.

Every failure test hashes every file of the previous deployment before and after the failed deploy
and checks the pointer still names it: a failed deploy must leave it byte-for-byte intact.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

import hasher_resources.deploy.bundle_files as bundle_files_module
import hasher_resources.deploy.store as store_module
from hasher_core.bundle import SEEDS_FILE, Bundle, build_bundle
from hasher_core.errors import DeploymentFailedError, DeploymentLockedError
from hasher_resources.asic.emulator import Emulator, serve_in_thread
from hasher_resources.asic.session import AsicSession
from hasher_resources.deploy.bundle_files import write_bundle
from hasher_resources.deploy.store import DeploymentStore
from hasher_resources.deploy.verify import SampleMismatch, VerifyReport, verify_sample_on_kernel
from hasher_resources.files import file_sha256
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_tests.core.bundle.test_bundle import make_checkpoints
from hasher_tests.resources.asic.emulated import SHARE_BITS, small_board

REFERENCE = Sha256Kernel(backend="reference")

FAST = {"retry_delay_s": 0.0, "kernel_backend": "reference"}


@pytest.fixture(scope="module")
def v1() -> Bundle:
    return build_bundle({"a.txt": make_checkpoints(10, seed=1)}, pipeline_version="0.1.0")


@pytest.fixture(scope="module")
def v2() -> Bundle:
    # a.txt's first 8 rows unchanged, 2 dropped; a new partition added.
    a = make_checkpoints(10, seed=1).slice(0, 8)
    return build_bundle(
        {"a.txt": a, "b.txt": make_checkpoints(6, partition="b.txt", seed=7)}, pipeline_version="0.1.0"
    )


@pytest.fixture
def deployed(tmp_path, v1) -> DeploymentStore:
    store = DeploymentStore(tmp_path / "store")
    store.deploy(v1, **FAST)
    return store


def snapshot(store: DeploymentStore) -> tuple[str | None, dict[str, str]]:
    """The pointer and the hash of every file of the current deployment."""
    version = store.current_version()
    directory = store.version_dir(version)
    return version, {p.name: file_sha256(p) for p in sorted(directory.iterdir())}


def no_temporaries(store: DeploymentStore) -> bool:
    dirs = [store.root, store.deployments, store.backups_dir]
    return not [
        p for d in dirs if d.is_dir() for p in d.iterdir() if p.name.startswith(".") and "lock" not in p.name
    ]


def test_first_deploy_writes_version_and_points_current_at_it(tmp_path, v1):
    store = DeploymentStore(tmp_path)
    lines: list[str] = []
    report = store.deploy(v1, log=lines.append, **FAST)
    assert report.status == "deployed" and report.attempts == 1
    assert store.current_version() == v1.version
    assert os.readlink(store.pointer) == f"deployments/{v1.version}"
    assert (store.pointer / SEEDS_FILE).read_bytes() == v1.files[SEEDS_FILE]
    assert report.backup_path is None and store.backups() == []
    assert report.verify is not None and report.verify.ok and report.verify.checked == v1.num_rows
    assert set(report.step_seconds) == {"write", "swap", "readback", "verify"}
    assert any("deployed" in line for line in lines)
    json.dumps(report.as_metadata())


def test_second_deploy_backs_up_previous_and_swaps(deployed, v1, v2):
    before = snapshot(deployed)
    report = deployed.deploy(v2, **FAST)
    assert deployed.current_version() == v2.version
    assert report.previous_version == v1.version
    (backup,) = deployed.backups()
    assert backup.name.endswith(f"-{v1.version}") and report.backup_path == str(backup)
    assert {p.name: file_sha256(p) for p in backup.iterdir()} == before[1]
    # The old version directory stays, untouched: rolling back by hand is one pointer swap.
    assert {p.name: file_sha256(p) for p in deployed.version_dir(v1.version).iterdir()} == before[1]
    assert no_temporaries(deployed)


def test_redeploying_the_same_content_is_a_no_op(deployed, v1):
    before = snapshot(deployed)
    rebuilt = build_bundle({"a.txt": make_checkpoints(10, seed=1)}, pipeline_version="0.1.0")
    report = deployed.deploy(rebuilt, **FAST)
    assert report.status == "unchanged" and report.attempts == 0
    assert snapshot(deployed) == before and deployed.backups() == []


def test_keeps_only_n_backups(tmp_path):
    store = DeploymentStore(tmp_path)
    bundles = [build_bundle({"p": make_checkpoints(2, seed=s)}, pipeline_version="0") for s in range(5)]
    for b in bundles:
        store.deploy(b, keep_backups=2, **FAST)
    backups = store.backups()
    assert [p.name.rsplit("-", 1)[1] for p in backups] == [bundles[2].version, bundles[3].version]


def test_health_check_runs_before_and_after(deployed, v2):
    calls: list[int] = []

    def health() -> dict:
        calls.append(1)
        return {"ok": True, "chips": 32}

    report = deployed.deploy(v2, health_check=health, **FAST)
    assert len(calls) == 2
    assert report.health_before == report.health_after == {"ok": True, "chips": 32}


def assert_failed_deploy_left_previous_intact(store, bundle, before, step, text, **kwargs):
    with pytest.raises(DeploymentFailedError) as e:
        store.deploy(bundle, **{**FAST, **kwargs})
    assert e.value.step == step
    assert text in str(e.value)
    assert f"rolled back to {before[0]}" in str(e.value)
    assert snapshot(store) == before
    assert bundle.version not in store.versions()
    assert no_temporaries(store)
    return e.value


def test_unhealthy_device_before_deploy_fails_and_rolls_back(deployed, v2):
    before = snapshot(deployed)

    def health() -> dict:
        return {"ok": False, "reason": "no chips answered"}

    err = assert_failed_deploy_left_previous_intact(
        deployed, v2, before, "health_before", "no chips answered", health_check=health, retries=1
    )
    assert err.attempts == 2


def test_health_check_raising_after_swap_rolls_back(deployed, v2):
    before = snapshot(deployed)
    calls = iter(range(100))

    def health() -> dict:
        if next(calls) % 2:  # the "after" check of every attempt
            raise ConnectionError("device vanished from /dev/ttyUSB0")
        return {"ok": True}

    assert_failed_deploy_left_previous_intact(
        deployed, v2, before, "health_after", "ConnectionError: device vanished", health_check=health
    )


def test_verify_reporting_mismatches_rolls_back_and_says_why(deployed, v2):
    before = snapshot(deployed)

    def verify(b: Bundle) -> VerifyReport:
        report = verify_sample_on_kernel(b, REFERENCE, 4)
        bad = SampleMismatch(0, "fp0", 1, 2, "golden 00000002, bundle says 00000001")
        return VerifyReport("asic:emulator", report.checked, (bad,))

    err = assert_failed_deploy_left_previous_intact(
        deployed, v2, before, "verify", "1 of 4 sampled rows disagree on asic:emulator", verify=verify
    )
    assert err.attempts == 3 and len(err.attempt_errors) == 3


def test_write_failing_mid_copy_leaves_no_partial_version(deployed, v2, monkeypatch):
    before = snapshot(deployed)
    real = bundle_files_module.atomic_write_bytes

    def flaky(path: Path, data: bytes, **kwargs) -> Path:
        if path.name != SEEDS_FILE:
            real(path, data[: len(data) // 2], **kwargs)
            raise OSError(28, "No space left on device")
        return real(path, data, **kwargs)

    monkeypatch.setattr(bundle_files_module, "atomic_write_bytes", flaky)
    assert_failed_deploy_left_previous_intact(deployed, v2, before, "write", "No space left on device")


def test_corrupted_file_in_fresh_version_fails_readback(deployed, v2, monkeypatch):
    before = snapshot(deployed)

    def write_then_corrupt(bundle: Bundle, directory: Path) -> dict[str, str]:
        written = write_bundle(bundle, directory)
        path = Path(directory) / SEEDS_FILE
        data = bytearray(path.read_bytes())
        data[100] ^= 0xFF
        path.write_bytes(bytes(data))
        return written

    monkeypatch.setattr(store_module, "write_bundle", write_then_corrupt)
    assert_failed_deploy_left_previous_intact(
        deployed, v2, before, "readback", f"{SEEDS_FILE}: sha256 mismatch: manifest says"
    )


def test_transient_failure_is_retried(deployed, v2):
    failures = iter([True])

    def verify(b: Bundle) -> VerifyReport:
        if next(failures, False):
            raise TimeoutError("serial read timed out")
        return verify_sample_on_kernel(b, REFERENCE, 8)

    report = deployed.deploy(v2, verify=verify, **FAST)
    assert report.attempts == 2 and deployed.current_version() == v2.version
    assert "serial read timed out" in report.retried_errors[0]
    assert len(deployed.backups()) == 1  # the backup is taken once, not per attempt


def test_deadline_exceeded_by_a_hung_device_rolls_back(deployed, v2):
    before = snapshot(deployed)
    release = threading.Event()

    def hung() -> dict:
        release.wait(5)
        return {"ok": True}

    t0 = time.monotonic()
    try:
        assert_failed_deploy_left_previous_intact(
            deployed, v2, before, "health_before", "deadline exceeded", health_check=hung, deadline_s=0.3
        )
    finally:
        release.set()
    assert time.monotonic() - t0 < 2


def test_fault_that_damages_previous_deployment_is_restored_from_backup(deployed, v1, v2):
    before = snapshot(deployed)

    def sabotage(b: Bundle) -> VerifyReport:
        victim = deployed.version_dir(v1.version) / SEEDS_FILE
        victim.write_bytes(b"garbage")
        raise RuntimeError("firmware crashed while flashing")

    err = assert_failed_deploy_left_previous_intact(
        deployed, v2, before, "verify", "firmware crashed", verify=sabotage, retries=0
    )
    assert err.restored_from_backup and "restored from backup" in str(err)


def test_failed_first_deploy_leaves_nothing_deployed(tmp_path, v1):
    store = DeploymentStore(tmp_path)

    def unhealthy() -> dict:
        return {"healthy": False}

    with pytest.raises(DeploymentFailedError, match="rolled back to no deployment") as e:
        store.deploy(
            v1, health_check=lambda: {"ok": True}, verify=lambda b: VerifyReport("x", 0), retries=0, **FAST
        )
    assert e.value.step == "verify" and "x checked no rows" in str(e.value)
    assert store.current_version() is None and store.versions() == []
    with pytest.raises(DeploymentFailedError, match="unhealthy"):
        store.deploy(v1, health_check=unhealthy, retries=0, **FAST)
    assert not store.pointer.exists()


def test_dry_run_reports_the_diff_and_touches_nothing(deployed, v1, v2):
    def every_file(root: Path) -> dict[str, tuple[str, float]]:
        return {str(p): (file_sha256(p), p.stat().st_mtime) for p in root.rglob("*") if p.is_file()}

    before = every_file(deployed.root)
    report = deployed.deploy(v2, dry_run=True, **FAST)
    assert every_file(deployed.root) == before and deployed.current_version() == v1.version
    assert report.status == "dry_run" and report.would_change
    d = report.diff
    assert (d.rows_before, d.rows_after) == (10, 14)
    assert (d.frames_added, d.frames_removed, d.frames_changed, d.frames_unchanged) == (6, 2, 0, 8)
    assert json.loads(json.dumps(report.as_metadata()))["diff"]["frames_added"] == 6


def test_dry_run_counts_changed_seeds(deployed, v1):
    t = make_checkpoints(10, seed=1)
    seeds = t.column("best_seed").to_pylist()
    seeds[0] = bytes(32)
    changed = build_bundle(
        {"a.txt": t.set_column(t.schema.get_field_index("best_seed"), "best_seed", pa.array(seeds))},
        pipeline_version="0.1.0",
    )
    report = DeploymentStore(deployed.root).deploy(changed, dry_run=True)
    assert report.diff.frames_changed == 1 and report.diff.frames_added == 0


def test_dry_run_reports_a_damaged_current_deployment(deployed, v1, v2):
    path = deployed.version_dir(v1.version) / SEEDS_FILE
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    report = deployed.deploy(v2, dry_run=True)
    assert "checksum" in report.current_error or "mismatch" in report.current_error


def test_kernel_verifier_catches_a_wrong_golden(v1):
    assert verify_sample_on_kernel(v1, REFERENCE, 64).ok
    t = make_checkpoints(10, seed=1)
    golden = t.column("golden").to_pylist()
    golden[3] ^= 1
    bad = build_bundle(
        {"a.txt": t.set_column(t.schema.get_field_index("golden"), "golden", pa.array(golden))},
        pipeline_version="0.1.0",
    )
    report = verify_sample_on_kernel(bad, REFERENCE, 64)
    assert not report.ok and len(report.mismatches) == 1 and "golden" in report.mismatches[0].problem


def test_a_concurrent_deploy_is_refused(deployed, v2):
    started, release = threading.Event(), threading.Event()

    def slow_verify(b: Bundle) -> VerifyReport:
        started.set()
        release.wait(5)
        return verify_sample_on_kernel(b, REFERENCE, 2)

    worker = threading.Thread(target=lambda: deployed.deploy(v2, verify=slow_verify, **FAST))
    worker.start()
    try:
        assert started.wait(5)
        with pytest.raises(DeploymentLockedError, match="another deploy holds"):
            DeploymentStore(deployed.root).deploy(v2, **FAST)
    finally:
        release.set()
        worker.join(5)
    assert deployed.current_version() == v2.version


def test_bad_settings_are_rejected(deployed, v2):
    with pytest.raises(ValueError, match="keep_backups >= 1"):
        deployed.deploy(v2, keep_backups=0)


def test_going_back_to_an_earlier_version_reuses_its_directory(deployed, v1, v2):
    deployed.deploy(v2, **FAST)
    earlier = deployed.version_dir(v1.version) / SEEDS_FILE
    inode = earlier.stat().st_ino
    report = deployed.deploy(v1, **FAST)
    assert report.status == "deployed" and deployed.current_version() == v1.version
    assert earlier.stat().st_ino == inode  # reused, not rewritten
    assert report.backup_path.endswith(f"-{v2.version}")


def test_a_damaged_leftover_version_directory_is_rewritten(deployed, v1, v2):
    deployed.deploy(v2, **FAST)
    leftover = deployed.version_dir(v1.version) / SEEDS_FILE
    leftover.write_bytes(b"half a file")
    deployed.deploy(v1, **FAST)
    assert leftover.read_bytes() == v1.files[SEEDS_FILE]
    assert no_temporaries(deployed)


@pytest.mark.parametrize(
    ("state", "text"),
    [({"chips_alive": 0}, "no chip alive"), ({"hardware_errors": 3}, "3 hardware error(s)")],
)
def test_a_device_with_dead_chips_or_hardware_errors_stops_the_deploy(deployed, v2, state, text):
    board = small_board()
    for name, value in state.items():
        setattr(board, name, value)
    before = snapshot(deployed)
    with (
        serve_in_thread(Emulator(board, [])) as url,
        AsicSession(url, share_bits=SHARE_BITS, timeout_s=0.5, chain_count=1, chip_count=4) as device,
    ):
        assert_failed_deploy_left_previous_intact(
            deployed, v2, before, "health_before", text, health_check=device.health_check, retries=0
        )
