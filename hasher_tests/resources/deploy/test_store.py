"""The deployment store: deploy, backup, pointer swap, readback, retries, deadline, rollback, dry run.

Every failure test hashes every file of the previous deployment before and after the failed deploy
and checks the pointer still names it: a failed deploy must leave it byte-for-byte intact.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

import hasher_resources.deploy.bundle_files as bundle_files_module
import hasher_resources.deploy.store as store_module
from hasher_core.bundle import (
    FINGERPRINTS_FILE,
    MANIFEST_FILE,
    SEEDS_FILE,
    Bundle,
    build_bundle,
    parse_bundle,
)
from hasher_core.errors import BundleError, DeploymentFailedError, DeploymentLockedError, DeploymentStoreError
from hasher_resources.asic.emulator import Emulator, serve_in_thread
from hasher_resources.asic.session import AsicSession
from hasher_resources.deploy.bundle_files import write_bundle
from hasher_resources.deploy.store import REDEPLOY_COMMAND, ROLLBACK_COMMAND, DeploymentStore
from hasher_resources.deploy.verify import SampleMismatch, VerifyReport, verify_sample_on_kernel
from hasher_resources.files import file_sha256
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_tests.core.bundle.test_bundle import make_checkpoints
from hasher_tests.resources.asic.emulated import SHARE_BITS, small_board

REFERENCE = Sha256Kernel(backend="reference")

FAST = {"retry_delay_s": 0.0, "kernel_backend": "reference"}
FILES = (SEEDS_FILE, FINGERPRINTS_FILE, MANIFEST_FILE)


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


# --- damaged state: every member has a way back ----------------------------------------------------


def flip_bit(path: Path, at: float = 0.5) -> None:
    """Flip one bit of a file (bit rot, a bad copy), at a fraction ``at`` of its length."""
    data = bytearray(path.read_bytes())
    data[min(int(len(data) * at), len(data) - 1)] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_pointer(store: DeploymentStore, how: str) -> None:
    store.pointer.unlink()
    if how == "file":
        store.pointer.write_text("f333692b55744425\n")
    elif how == "directory":  # what a copy that follows symlinks (cp -rL, some sync tools) makes
        store.pointer.mkdir()
    elif how == "outside":
        os.symlink("/nonexistent/deployments/abc", store.pointer)
    elif how == "temporary":
        os.symlink("deployments/.tmp-abc-12345678", store.pointer)


DAMAGES = {
    **{f"flipped bit in {name}": (lambda s, v, n=name: flip_bit(s.version_dir(v) / n)) for name in FILES},
    **{f"truncated {name}": (lambda s, v, n=name: truncate(s.version_dir(v) / n)) for name in FILES},
    **{f"missing {name}": (lambda s, v, n=name: (s.version_dir(v) / n).unlink()) for name in FILES},
    "version directory missing (dangling pointer)": lambda s, v: shutil.rmtree(s.version_dir(v)),
    "version directory is a file": lambda s, v: (
        shutil.rmtree(s.version_dir(v)),
        s.version_dir(v).write_bytes(b"x"),
    ),
    "pointer missing": lambda s, v: s.pointer.unlink(),
    "pointer is a file": lambda s, v: damage_pointer(s, "file"),
    "pointer is a directory": lambda s, v: damage_pointer(s, "directory"),
    "pointer points outside deployments/": lambda s, v: damage_pointer(s, "outside"),
    "pointer points at a temporary": lambda s, v: damage_pointer(s, "temporary"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_every_damaged_current_state_is_reported_and_a_redeploy_of_the_same_bundle_repairs_it(
    deployed, v1, damage
):
    DAMAGES[damage](deployed, v1.version)
    health = deployed.inspect()
    assert health.damaged and health.current_problem
    assert REDEPLOY_COMMAND in health.recovery and ROLLBACK_COMMAND in health.recovery
    with pytest.raises(DeploymentStoreError) as e:
        deployed.open_bundle()
    assert REDEPLOY_COMMAND in str(e.value) and str(deployed.root) in str(e.value)
    lines: list[str] = []
    report = deployed.deploy(v1, log=lines.append, **FAST)
    assert report.status == "deployed" and report.verify.ok and deployed.current_version() == v1.version
    assert snapshot(deployed) == (v1.version, {n: file_sha256_of(v1, n) for n in sorted(v1.files)})
    assert deployed.open_bundle().content_digest == v1.content_digest
    assert not deployed.inspect().damaged and no_temporaries(deployed)
    if damage != "pointer missing":  # no pointer: nothing to say is damaged while deploying
        assert report.current_error and any("is damaged" in line for line in lines)
    assert deployed.backups() == []  # damage is not backed up


def file_sha256_of(bundle: Bundle, name: str) -> str:
    import hashlib

    return hashlib.sha256(bundle.files[name]).hexdigest()


def test_a_pointer_that_is_a_file_or_directory_is_kept_aside_not_deleted(deployed, v1):
    damage_pointer(deployed, "file")
    deployed.deploy(v1, **FAST)
    (aside,) = deployed.root.glob("current.damaged-*")
    assert aside.read_text() == "f333692b55744425\n"


@pytest.mark.parametrize("at", [0.0, 0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("name", FILES)
def test_one_flipped_bit_anywhere_in_any_file_of_a_bundle_is_caught(deployed, v1, name, at):
    flip_bit(deployed.version_dir(v1.version) / name, at)
    assert deployed.inspect().damaged


def test_one_flipped_bit_in_every_byte_of_the_manifest_is_caught(tmp_path, v1):
    # The manifest's creation time and counts are in no checksum of the payloads: its own digest is.
    raw = v1.files[MANIFEST_FILE]
    caught = 0
    for i in range(len(raw)):
        files = dict(v1.files)
        files[MANIFEST_FILE] = raw[:i] + bytes([raw[i] ^ (1 << (i % 8))]) + raw[i + 1 :]
        try:
            parse_bundle(files, tmp_path)
        except BundleError:
            caught += 1
    assert caught == len(raw)


def test_a_deploy_over_a_damaged_current_takes_no_backup_of_the_damage(deployed, v1, v2):
    flip_bit(deployed.version_dir(v1.version) / SEEDS_FILE)
    report = deployed.deploy(v2, **FAST)
    assert report.status == "deployed" and deployed.current_version() == v2.version
    assert deployed.backups() == [] and report.backup_path is None
    health = deployed.inspect()
    assert not health.damaged and health.versions[v1.version].startswith("BundleChecksumError")


def test_a_failed_deploy_over_a_damaged_current_puts_the_pointer_back_and_says_it_was_damaged(
    deployed, v1, v2
):
    flip_bit(deployed.version_dir(v1.version) / SEEDS_FILE)
    with pytest.raises(DeploymentFailedError, match=f"rolled back to {v1.version}, as damaged as before"):
        deployed.deploy(v2, verify=lambda b: VerifyReport("x", 0), retries=0, **FAST)
    assert deployed.pointer_state() == (v1.version, None) and deployed.inspect().damaged
    assert v2.version not in deployed.versions() and no_temporaries(deployed)


def test_what_a_killed_deploy_left_is_listed_and_removed_by_the_next_deploy(deployed, v2):
    leftovers = [
        deployed.deployments / f".tmp-{v2.version}-0badc0de",
        deployed.deployments / ".discard-abc-0badc0de",
        deployed.deployments / ".restore-abc-0badc0de",
        deployed.backups_dir / ".tmp-x-0badc0de",
    ]
    for path in leftovers:
        path.mkdir(parents=True)
        (path / SEEDS_FILE).write_bytes(b"half")
    (deployed.root / ".current.tmp-1-0badc0de").symlink_to("deployments/x")
    assert len(deployed.inspect().stale) == 5 and not deployed.inspect().damaged
    report = deployed.deploy(v2, **FAST)
    assert len(report.stale_removed) == 5 and "stale_removed" in report.as_metadata()
    assert no_temporaries(deployed) and deployed.inspect().stale == ()


def test_rollback_goes_back_to_the_previous_version(deployed, v1, v2):
    deployed.deploy(v2, **FAST)
    report = deployed.rollback(**FAST)
    assert report.version == v1.version and deployed.current_version() == v1.version


def test_rollback_restores_a_damaged_earlier_version_from_its_backup(deployed, v1, v2):
    deployed.deploy(v2, **FAST)  # backs up v1
    flip_bit(deployed.version_dir(v1.version) / SEEDS_FILE)
    report = deployed.rollback(**FAST)
    assert report.status == "deployed" and report.verify.ok
    assert deployed.open_bundle().content_digest == v1.content_digest and not deployed.inspect().damaged


def test_rollback_to_the_damaged_current_version_repairs_it_from_a_backup(deployed, v1, v2):
    deployed.deploy(v2, **FAST)
    deployed.deploy(v1, **FAST)  # v1 current again; a backup of v1 is left from the first swap
    flip_bit(deployed.version_dir(v1.version) / MANIFEST_FILE)
    assert deployed.inspect().damaged
    deployed.rollback(to=v1.version, **FAST)
    assert deployed.open_bundle().content_digest == v1.content_digest


def test_a_damaged_backup_is_reported_and_never_rolled_back_to(deployed, v1, v2):
    deployed.deploy(v2, **FAST)
    (backup,) = deployed.backups()
    flip_bit(backup / SEEDS_FILE)
    flip_bit(deployed.version_dir(v1.version) / SEEDS_FILE)
    health = deployed.inspect()
    assert health.backups[backup.name].startswith("BundleChecksumError") and not health.damaged
    with pytest.raises(DeploymentStoreError) as e:
        deployed.rollback(**FAST)
    message = str(e.value)
    assert f"no intact copy of {v1.version}" in message and str(backup) in message
    assert REDEPLOY_COMMAND in message and deployed.current_version() == v2.version


def test_rollback_with_no_earlier_version_says_what_to_do(deployed):
    with pytest.raises(DeploymentStoreError, match="no earlier deployment to roll back to"):
        deployed.rollback(**FAST)


def test_a_dry_run_over_a_damaged_pointer_reports_it(deployed, v2):
    damage_pointer(deployed, "outside")
    report = deployed.deploy(v2, dry_run=True, **FAST)
    assert "not into deployments/" in report.current_error


# --- a deploy killed at any step --------------------------------------------------------------------

KILLED_DEPLOY = """
import os, signal, sys
from pathlib import Path
import hasher_resources.deploy.store as store_module
from hasher_core.bundle import build_bundle
from hasher_resources.deploy.store import REDEPLOY_COMMAND, ROLLBACK_COMMAND, DeploymentStore
from hasher_resources.deploy.verify import verify_sample_on_kernel
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_tests.core.bundle.test_bundle import make_checkpoints

root, point = Path(sys.argv[1]), sys.argv[2]
kill = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
a = make_checkpoints(10, seed=1).slice(0, 8)
b = make_checkpoints(6, partition="b.txt", seed=7)
v2 = build_bundle({"a.txt": a, "b.txt": b}, pipeline_version="0.1.0")
store = DeploymentStore(root)
verify = lambda b: verify_sample_on_kernel(b, Sha256Kernel(backend="reference"), 64)
health = None
if point == "backup":  # the copy is made, not yet renamed into backups/
    real_copy = store_module.shutil.copytree
    store_module.shutil.copytree = lambda *a, **k: (real_copy(*a, **k), kill())
elif point == "write":  # the first file of the new version is written
    real_write = store_module.write_bundle
    store_module.write_bundle = lambda b, d: (real_write(b, d), kill())
elif point == "verify":
    verify = kill
elif point == "swap":  # the version directory is in place, the pointer not yet swapped
    store_module.DeploymentStore._swap_pointer = kill
elif point == "health_after":
    calls = []
    health = lambda: kill() if calls.append(1) or len(calls) > 1 else {"ok": True}
store.deploy(v2, verify=verify, health_check=health, retry_delay_s=0)
"""


@pytest.mark.slow
@pytest.mark.parametrize("point", ["backup", "write", "verify", "swap", "health_after"])
def test_a_deploy_killed_at_any_step_leaves_a_verified_current_and_the_next_deploy_completes(
    deployed, v1, v2, point
):
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", KILLED_DEPLOY, str(deployed.root), point],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    current = deployed.current_version()
    # Only a kill after the swap (which follows verification) leaves the new version current.
    assert current == (v2.version if point == "health_after" else v1.version)
    assert not deployed.inspect().damaged
    verified: list[Bundle] = []

    def verify(b: Bundle) -> VerifyReport:
        verified.append(b)
        return verify_sample_on_kernel(b, REFERENCE, 64)

    report = deployed.deploy(v2, verify=verify, **FAST)
    assert deployed.current_version() == v2.version and no_temporaries(deployed)
    if point != "health_after":
        assert report.status == "deployed" and verified and verified[0].version == v2.version
