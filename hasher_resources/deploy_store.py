"""The deployment target store (DESIGN §6): versioned bundle directories, an atomically swapped
``current`` pointer, backups, readback verification, retries, a deadline and rollback.

Layout under ``root``::

    deployments/<version>/{seeds.parquet, fingerprints.txt, manifest.json}
    current -> deployments/<version>          (a relative symlink)
    backups/<UTC timestamp>-<version>/        (byte copies of what was current, newest N kept)

**Why a symlink pointer.** ``rename(2)`` of a new symlink over the old one is atomic on POSIX, so a
reader that opens ``current/seeds.parquet`` sees either the old or the new complete bundle, never
a mix, and needs no parser to follow it (``ls -l current`` says what is deployed). Version
directories are written under a temporary name and renamed into place, so a directory named after
a version is always complete; the directory of the previous deployment is never written to.

The device side (health check, device-based verification) is injected as plain callables so this
module does not import the ASIC resource. Injected callables run in a worker thread so a hung
device cannot outlive the deadline.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hasher_core.bundle import Bundle, bundle_version, file_sha256, read_bundle, write_bundle
from hasher_core.errors import (
    BundleError,
    DeploymentError,
    DeploymentFailedError,
    DeploymentLockedError,
    DeploymentStoreError,
)
from hasher_core.header import leading_equal_bits
from hasher_resources.sha256 import evaluate

DEPLOYMENTS_DIR = "deployments"
BACKUPS_DIR = "backups"
POINTER = "current"
LOCK_FILE = ".deploy.lock"
STEPS = ("health_before", "backup", "write", "swap", "readback", "verify", "health_after")


@dataclass(frozen=True)
class SampleMismatch:
    """One sampled row whose recomputed golden (or derived fields) disagrees with the bundle."""

    row: int
    fingerprint: str
    stored_golden: int
    recomputed_golden: int
    problem: str


@dataclass(frozen=True)
class VerifyReport:
    """What a readback verification checked and what disagreed."""

    verifier: str
    checked: int
    mismatches: tuple[SampleMismatch, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.checked > 0 and not self.mismatches

    def summary(self) -> str:
        if self.ok:
            return f"{self.checked} sampled rows agree on {self.verifier}"
        if not self.checked:
            return f"{self.verifier} checked no rows"
        first = self.mismatches[0]
        return (
            f"{len(self.mismatches)} of {self.checked} sampled rows disagree on {self.verifier}; first: row "
            f"{first.row} ({first.fingerprint}): {first.problem}"
        )

    def as_metadata(self) -> dict[str, Any]:
        return {
            "verifier": self.verifier,
            "checked": self.checked,
            "mismatches": len(self.mismatches),
            "seconds": round(self.seconds, 4),
        }


def sample_rows(bundle: Bundle, sample_size: int) -> np.ndarray:
    """Row indices to re-verify: a uniform sample, reproducible for a given bundle version."""
    n = bundle.num_rows
    if sample_size >= n:
        return np.arange(n)
    rng = np.random.default_rng(int(bundle.content_digest[:16], 16))
    return np.sort(rng.choice(n, size=sample_size, replace=False))


def verify_sample_on_kernel(bundle: Bundle, sample_size: int = 64, backend: str = "auto") -> VerifyReport:
    """Recompute the golden of a sample of rows on the SHA-256 kernel and compare with the bundle:
    the golden itself, the matched bits it implies, and the solved flag at the row's difficulty."""
    start = time.perf_counter()
    rows = sample_rows(bundle, sample_size)
    table = bundle.seeds.take(rows)
    slots, seeds = bundle.slots()[rows], bundle.best_seeds()[rows]
    header_time = table.column("header_time").to_numpy()
    recomputed = np.empty(len(rows), np.uint32)
    # The kernel takes one header time per call; rows from different runs may differ.
    for t in np.unique(header_time):
        mask = header_time == t
        recomputed[mask] = evaluate(
            np.ascontiguousarray(slots[mask]),
            np.ascontiguousarray(seeds[mask]),
            header_time=int(t),
            backend=backend,
        )
    stored = table.column("golden").to_numpy()
    target = table.column("target_token_id").to_numpy().astype(np.int64) & 0xFFFFFFFF
    matched = table.column("matched_bits").to_numpy()
    difficulty = table.column("difficulty_bits").to_numpy()
    solved = table.column("solved").to_numpy(zero_copy_only=False)
    fingerprints = table.column("fingerprint").to_pylist()
    real_matched = leading_equal_bits(recomputed, target.astype(np.uint32))
    mismatches = []
    for k, row in enumerate(rows):
        problems = []
        if recomputed[k] != stored[k]:
            problems.append(f"golden {int(recomputed[k]):08x}, bundle says {int(stored[k]):08x}")
        if real_matched[k] != matched[k]:
            problems.append(f"matches {int(real_matched[k])} leading bits, bundle says {int(matched[k])}")
        if bool(real_matched[k] >= difficulty[k]) != bool(solved[k]):
            problems.append(
                f"solved={not solved[k]} at {int(difficulty[k])} bits, bundle says {bool(solved[k])}"
            )
        if problems:
            mismatches.append(
                SampleMismatch(
                    int(row), fingerprints[k], int(stored[k]), int(recomputed[k]), "; ".join(problems)
                )
            )
    return VerifyReport(f"kernel:{backend}", len(rows), tuple(mismatches), time.perf_counter() - start)


@dataclass(frozen=True)
class BundleDiff:
    """What a deploy changes, by frame fingerprint (a frame is changed when its seeds differ)."""

    rows_before: int
    rows_after: int
    frames_added: int
    frames_removed: int
    frames_changed: int
    frames_unchanged: int
    examples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, Any]:
        return {
            "rows_before": self.rows_before,
            "rows_after": self.rows_after,
            "frames_added": self.frames_added,
            "frames_removed": self.frames_removed,
            "frames_changed": self.frames_changed,
            "frames_unchanged": self.frames_unchanged,
            "examples": {k: list(v) for k, v in self.examples.items()},
        }


def _frames_by_fingerprint(bundle: Bundle | None) -> dict[str, tuple]:
    if bundle is None:
        return {}
    t = bundle.seeds
    out: dict[str, list] = {}
    for fp, seed, ht, golden in zip(
        t.column("fingerprint").to_pylist(),
        t.column("best_seed").to_pylist(),
        t.column("header_time").to_pylist(),
        t.column("golden").to_pylist(),
        strict=True,
    ):
        out.setdefault(fp, []).append((seed, ht, golden))
    return {fp: tuple(sorted(v)) for fp, v in out.items()}


def diff_bundles(before: Bundle | None, after: Bundle, examples: int = 5) -> BundleDiff:
    """Rows and frames added, removed and changed going from ``before`` to ``after``."""
    old, new = _frames_by_fingerprint(before), _frames_by_fingerprint(after)
    added = sorted(new.keys() - old.keys())
    removed = sorted(old.keys() - new.keys())
    common = old.keys() & new.keys()
    changed = sorted(fp for fp in common if old[fp] != new[fp])
    return BundleDiff(
        rows_before=before.num_rows if before is not None else 0,
        rows_after=after.num_rows,
        frames_added=len(added),
        frames_removed=len(removed),
        frames_changed=len(changed),
        frames_unchanged=len(common) - len(changed),
        examples={"added": tuple(added[:examples]), "removed": tuple(removed[:examples]),
                  "changed": tuple(changed[:examples])},
    )  # fmt: skip


@dataclass
class DeployReport:
    """What a deploy (or dry run) did, step by step; ``as_metadata()`` is for the Dagster asset."""

    version: str
    previous_version: str | None
    status: str  # "deployed" | "unchanged" | "dry_run"
    attempts: int = 0
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)
    backup_path: str | None = None
    pruned_backups: list[str] = field(default_factory=list)
    diff: BundleDiff | None = None
    verify: VerifyReport | None = None
    health_before: dict[str, Any] | None = None
    health_after: dict[str, Any] | None = None
    retried_errors: list[str] = field(default_factory=list)
    current_error: str | None = None

    @property
    def would_change(self) -> bool:
        return self.version != self.previous_version

    def as_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "version": self.version,
            "previous_version": self.previous_version or "",
            "status": self.status,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 4),
            "step_seconds": {k: round(v, 4) for k, v in self.step_seconds.items()},
            "backup_path": self.backup_path or "",
            "pruned_backups": list(self.pruned_backups),
            "retried_errors": list(self.retried_errors),
        }
        if self.diff is not None:
            meta["diff"] = self.diff.as_metadata()
        if self.verify is not None:
            meta["verify"] = self.verify.as_metadata()
        if self.health_before is not None:
            meta["health_before"] = self.health_before
        if self.health_after is not None:
            meta["health_after"] = self.health_after
        if self.current_error:
            meta["current_error"] = self.current_error
        return meta


class _StepFailed(Exception):
    def __init__(self, step: str, reason: str):
        self.step, self.reason = step, reason
        super().__init__(f"{step}: {reason}")


@dataclass(frozen=True)
class _Backup:
    path: Path
    version: str
    file_hashes: dict[str, str]


def _tree_hashes(directory: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every regular file under ``directory``."""
    return {
        str(p.relative_to(directory)): file_sha256(p) for p in sorted(directory.rglob("*")) if p.is_file()
    }


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _call_with_timeout(fn: Callable[[], Any], timeout_s: float, step: str) -> Any:
    """Run an injected (device-side) callable, giving up when the deadline passes."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    # A daemon thread: a device call that never returns must not keep the process alive.
    worker = threading.Thread(target=target, name=f"deploy-{step}", daemon=True)
    worker.start()
    worker.join(max(timeout_s, 0.0))
    if worker.is_alive():
        raise _StepFailed(step, f"deadline exceeded: still running after {timeout_s:.3f} s")
    if "error" in box:
        e = box["error"]
        raise _StepFailed(step, f"{type(e).__name__}: {e}") from e
    return box.get("value")


def _check_health(result: Any, step: str) -> dict[str, Any]:
    if not isinstance(result, Mapping):
        raise _StepFailed(step, f"health check returned {type(result).__name__}, expected a dict")
    for key in ("ok", "healthy"):
        if key in result and not result[key]:
            raise _StepFailed(step, f"device reports unhealthy: {dict(result)}")
    return dict(result)


class DeploymentStore:
    """A local deployment target: versioned bundle directories plus an atomically swapped pointer."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.deployments = self.root / DEPLOYMENTS_DIR
        self.backups_dir = self.root / BACKUPS_DIR
        self.pointer = self.root / POINTER

    def version_dir(self, version: str) -> Path:
        return self.deployments / version

    def current_version(self) -> str | None:
        """The deployed version, or None when nothing was ever deployed."""
        if not self.pointer.is_symlink():
            if self.pointer.exists():
                raise DeploymentStoreError(f"{self.pointer} exists but is not a symlink; refusing to guess")
            return None
        target = Path(os.readlink(self.pointer))
        if target.parent != Path(DEPLOYMENTS_DIR) or not target.name:
            raise DeploymentStoreError(f"{self.pointer} points to {target}, not into {DEPLOYMENTS_DIR}/")
        return target.name

    def versions(self) -> list[str]:
        """Version directories present (complete ones; temporaries start with a dot)."""
        if not self.deployments.is_dir():
            return []
        return sorted(p.name for p in self.deployments.iterdir() if p.is_dir() and not p.name.startswith("."))

    def backups(self) -> list[Path]:
        """Backup directories, oldest first."""
        if not self.backups_dir.is_dir():
            return []
        return sorted(p for p in self.backups_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def open_bundle(self, version: str | None = None, *, verify: bool = True) -> Bundle:
        """Read the current (or a named) deployed bundle, checksums verified."""
        if version is None:
            version = self.current_version()
            if version is None:
                raise DeploymentStoreError(f"nothing is deployed under {self.root} (no {POINTER} pointer)")
        directory = self.version_dir(version)
        if not directory.is_dir():
            known = ", ".join(self.versions()) or "none"
            raise DeploymentStoreError(f"no deployment {version!r} under {self.deployments} (have: {known})")
        return read_bundle(directory, verify=verify)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DeploymentLockedError(f"another deploy holds {self.root / LOCK_FILE}") from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _swap_pointer(self, version: str | None) -> None:
        """Point ``current`` at ``version`` (None removes it) with one atomic rename."""
        if version is None:
            with contextlib.suppress(FileNotFoundError):
                self.pointer.unlink()
        else:
            tmp = self.root / f".{POINTER}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.symlink(Path(DEPLOYMENTS_DIR) / version, tmp)
            os.replace(tmp, self.pointer)
        _fsync_dir(self.root)

    def _backup(self, version: str) -> _Backup:
        source = self.version_dir(version)
        if not source.is_dir():
            raise _StepFailed("backup", f"current deployment {version} points to missing {source}")
        hashes = _tree_hashes(source)
        self.backups_dir.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = self.backups_dir / f"{stamp}-{version}"
        tmp = self.backups_dir / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(source, tmp)
            copied = _tree_hashes(tmp)
            if copied != hashes:
                raise _StepFailed("backup", f"copy of {source} in {tmp} does not match the original")
            os.rename(tmp, final)
            _fsync_dir(self.backups_dir)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _StepFailed("backup", f"cannot copy {source} to {final}: {e}") from e
        except _StepFailed:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return _Backup(final, version, hashes)

    def _write_version(self, bundle: Bundle) -> bool:
        """Make ``deployments/<version>`` hold ``bundle``; True when this call created it."""
        final = self.version_dir(bundle.version)
        if final.is_dir():
            try:
                if read_bundle(final, verify=True).content_digest == bundle.content_digest:
                    return False  # an earlier deploy of the same content, intact: reuse it
            except BundleError:
                pass
            # Damaged leftover of an earlier failed deploy (never the current one: see deploy()).
            self._discard(final)
        self.deployments.mkdir(parents=True, exist_ok=True)
        tmp = self.deployments / f".tmp-{bundle.version}-{uuid.uuid4().hex[:8]}"
        try:
            write_bundle(bundle, tmp)
            _fsync_dir(tmp)
            os.rename(tmp, final)
            _fsync_dir(self.deployments)
        except (OSError, BundleError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _StepFailed("write", f"writing {final}: {type(e).__name__}: {e}") from e
        return True

    def _discard(self, directory: Path) -> None:
        """Remove a directory by first renaming it out of the namespace (never half-visible)."""
        if directory.exists():
            trash = directory.parent / f".discard-{directory.name}-{uuid.uuid4().hex[:8]}"
            os.rename(directory, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def _restore(self, backup: _Backup) -> bool:
        """Make the previous version's directory byte-identical to its backup; True if it had to."""
        target = self.version_dir(backup.version)
        if target.is_dir() and _tree_hashes(target) == backup.file_hashes:
            return False
        tmp = self.deployments / f".restore-{backup.version}-{uuid.uuid4().hex[:8]}"
        shutil.copytree(backup.path, tmp)
        if _tree_hashes(tmp) != backup.file_hashes:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DeploymentStoreError(f"backup {backup.path} no longer matches what was backed up")
        self._discard(target)
        os.rename(tmp, target)
        _fsync_dir(self.deployments)
        return True

    def _rollback(
        self, previous: str | None, backup: _Backup | None, new_version: str, created: bool
    ) -> bool:
        restored = False
        if previous is not None:
            if backup is not None:
                restored = self._restore(backup)
            if self.current_version() != previous:
                self._swap_pointer(previous)
        else:
            self._swap_pointer(None)
        if created and new_version != previous:
            self._discard(self.version_dir(new_version))
        return restored

    def _prune_backups(self, keep: int) -> list[str]:
        old = self.backups()[:-keep] if keep else self.backups()
        for path in old:
            self._discard(path)
        return [p.name for p in old]

    def dry_run(self, bundle: Bundle, *, health_check: Callable[[], dict] | None = None) -> DeployReport:
        """What :meth:`deploy` would change, touching nothing."""
        start = time.perf_counter()
        previous = self.current_version()
        current: Bundle | None = None
        current_error = None
        if previous is not None:
            try:
                current = self.open_bundle(previous, verify=True)
            except (BundleError, DeploymentStoreError) as e:
                current_error = f"current deployment fails verification: {e}"
                with contextlib.suppress(BundleError, DeploymentStoreError):
                    current = self.open_bundle(previous, verify=False)
        health = None
        if health_check is not None:
            try:
                health = dict(health_check())
            except Exception as e:
                health = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        return DeployReport(
            version=bundle_version(bundle),
            previous_version=previous,
            status="dry_run",
            seconds=time.perf_counter() - start,
            diff=diff_bundles(current, bundle),
            health_before=health,
            current_error=current_error,
        )

    def deploy(
        self,
        bundle: Bundle,
        *,
        verify: Callable[[Bundle], VerifyReport] | None = None,
        health_check: Callable[[], dict] | None = None,
        retries: int = 2,
        deadline_s: float = 300,
        dry_run: bool = False,
        keep_backups: int = 3,
        sample_size: int = 64,
        log: Callable[[str], None] | None = None,
        kernel_backend: str = "auto",
        retry_delay_s: float = 1.0,
    ) -> DeployReport:
        """Deploy ``bundle``: health check, backup, write, swap, read back, verify a sample, health check.

        Any failure, or passing ``deadline_s``, is retried up to ``retries`` times (each failed
        attempt is rolled back first); then :class:`DeploymentFailedError` says which step failed
        and why, with the previous deployment byte-for-byte intact and current again.
        ``verify`` defaults to :func:`verify_sample_on_kernel` on ``kernel_backend``.
        """
        if retries < 0 or keep_backups < 1 or deadline_s <= 0 or sample_size < 1:
            raise ValueError(
                "need retries >= 0, keep_backups >= 1 (the backup is what a rollback restores), "
                f"deadline_s > 0, sample_size >= 1; got {retries=}, {keep_backups=}, {deadline_s=}, "
                f"{sample_size=}"
            )
        if dry_run:
            return self.dry_run(bundle, health_check=health_check)
        say = log or (lambda _msg: None)
        if verify is None:

            def verify(b: Bundle) -> VerifyReport:
                return verify_sample_on_kernel(b, sample_size, kernel_backend)

        version = bundle_version(bundle)
        clock = _Deadline(deadline_s)
        with self._lock():
            previous = self.current_version()
            report = DeployReport(version=version, previous_version=previous, status="deployed")
            if previous == version:
                try:
                    self.open_bundle(version, verify=True)
                except BundleError as e:
                    # Rewriting the current directory in place would break the rule that it is never
                    # written to; make the operator decide.
                    raise DeploymentStoreError(
                        f"current deployment {version} is damaged ({e}); restore it from {self.backups_dir}"
                    ) from e
                report.status, report.seconds = "unchanged", clock.elapsed()
                say(f"deployment {version} is already current and intact; nothing to do")
                return report

            say(f"deploying {version} ({bundle.num_rows} rows) over {previous or 'nothing'}")
            state = _AttemptState(previous=previous)
            for attempt in range(1, retries + 2):
                report.attempts = attempt
                state.created = False
                try:
                    self._attempt(bundle, state, report, clock, verify, health_check, say)
                except _StepFailed as failure:
                    state.errors.append(f"attempt {attempt}: {failure}")
                    say(f"attempt {attempt} failed at {failure.step}: {failure.reason}; rolling back")
                    try:
                        state.restored |= self._rollback(previous, state.backup, version, state.created)
                    except Exception as e:
                        raise DeploymentFailedError(
                            version,
                            failure.step,
                            f"{failure.reason}; AND the rollback failed: {type(e).__name__}: {e}",
                            attempts=attempt,
                            rolled_back_to=None,
                            attempt_errors=tuple(state.errors),
                            rollback_completed=False,
                        ) from e
                    if attempt > retries or clock.remaining() <= 0:
                        raise DeploymentFailedError(
                            version,
                            failure.step,
                            failure.reason,
                            attempts=attempt,
                            rolled_back_to=previous,
                            restored_from_backup=state.restored,
                            attempt_errors=tuple(state.errors),
                        ) from failure
                    time.sleep(max(0.0, min(retry_delay_s, clock.remaining())))
                    continue
                report.retried_errors = state.errors
                report.pruned_backups = self._prune_backups(keep_backups)
                report.seconds = clock.elapsed()
                say(f"deployed {version} in {report.seconds:.3f} s ({attempt} attempt(s))")
                return report
            raise AssertionError("unreachable: the last attempt returns or raises")

    def _attempt(
        self,
        bundle: Bundle,
        state: _AttemptState,
        report: DeployReport,
        clock: _Deadline,
        verify: Callable[[Bundle], VerifyReport],
        health_check: Callable[[], dict] | None,
        say: Callable[[str], None],
    ) -> None:
        """One pass over the steps; raises :class:`_StepFailed` naming the step that failed."""
        version, previous = bundle.version, state.previous

        def step(name: str, fn: Callable[[], Any], *, injected: bool = False) -> Any:
            result = clock.run(name, fn, injected=injected)
            report.step_seconds[name] = report.step_seconds.get(name, 0.0) + clock.last_step_s
            return result

        if health_check is not None:
            report.health_before = _check_health(
                step("health_before", health_check, injected=True), "health_before"
            )
        if previous is not None and state.backup is None:
            state.backup = step("backup", lambda: self._backup(previous))
            report.backup_path = str(state.backup.path)
            say(f"backed up {previous} to {state.backup.path}")
        state.created = step("write", lambda: self._write_version(bundle))
        step("swap", lambda: self._swap_pointer(version))
        say(f"{POINTER} -> {DEPLOYMENTS_DIR}/{version}")
        readback = step("readback", lambda: read_bundle(self.pointer, verify=True))
        if readback.version != version:
            raise _StepFailed("readback", f"{self.pointer} holds {readback.version}, not {version}")
        verified = step("verify", lambda: verify(readback), injected=True)
        if not isinstance(verified, VerifyReport):
            raise _StepFailed("verify", f"verifier returned {type(verified).__name__}, not a VerifyReport")
        report.verify = verified
        if not verified.ok:
            raise _StepFailed("verify", verified.summary())
        say(f"verified: {verified.summary()}")
        if health_check is not None:
            report.health_after = _check_health(
                step("health_after", health_check, injected=True), "health_after"
            )


@dataclass
class _AttemptState:
    """What survives between attempts of one deploy: the backup is taken once."""

    previous: str | None
    backup: _Backup | None = None
    created: bool = False
    restored: bool = False
    errors: list[str] = field(default_factory=list)


class _Deadline:
    """The deploy's deadline: checked before and after every step, enforced on injected callables."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.monotonic()
        self.last_step_s = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def run(self, name: str, fn: Callable[[], Any], *, injected: bool) -> Any:
        if self.remaining() <= 0:
            raise _StepFailed(name, f"deadline of {self.seconds} s exceeded before the step started")
        t0 = time.monotonic()
        try:
            result = _call_with_timeout(fn, self.remaining(), name) if injected else fn()
        except _StepFailed:
            raise
        except Exception as e:
            raise _StepFailed(name, f"{type(e).__name__}: {e}") from e
        finally:
            self.last_step_s = time.monotonic() - t0
        if self.remaining() <= 0:
            raise _StepFailed(name, f"deadline of {self.seconds} s exceeded during the step")
        return result


__all__ = [
    "BundleDiff",
    "DeployReport",
    "DeploymentError",
    "DeploymentFailedError",
    "DeploymentLockedError",
    "DeploymentStore",
    "DeploymentStoreError",
    "SampleMismatch",
    "VerifyReport",
    "diff_bundles",
    "sample_rows",
    "verify_sample_on_kernel",
]
