"""The deployment target store (DESIGN §6): versioned bundle directories, an atomically swapped
``current`` pointer, backups, readback verification, retries, a deadline and rollback.

Layout under ``root``::

    deployments/<version>/{seeds.parquet, fingerprints.txt, index.json, index-*.npy, manifest.json}
    current -> deployments/<version>          (a relative symlink)
    backups/<UTC timestamp>-<version>/        (byte copies of what was current, newest N kept)

**Why a symlink pointer.** ``rename(2)`` of a new symlink over the old one is atomic on POSIX, so a
reader that opens ``current/seeds.parquet`` sees either the old or the new complete bundle, never
a mix, and needs no parser to follow it (``ls -l current`` says what is deployed). Version
directories are written under a temporary name and renamed into place, so a directory named after
a version is always complete; the directory of the previous deployment is never written to.

An unchanged redeploy is recognised from the manifest's content digest and the files' checksums
(:meth:`DeploymentStore.holds`), streaming the files once: nothing is parsed or rebuilt.

The device side (health check, device-based verification, ``verify``) is injected as plain
callables so this module does not depend on a device. Injected callables run in a worker thread so a
hung device cannot outlive the deadline (``steps``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hasher_core.bundle import MANIFEST_FILE, Bundle, bundle_version
from hasher_core.bundle.diff import diff_bundles
from hasher_core.bundle.format import parse_manifest
from hasher_core.errors import (
    BundleError,
    DeploymentFailedError,
    DeploymentLockedError,
    DeploymentStoreError,
)

from ..files import file_sha256, fsync_dir, locked
from .bundle_files import map_bundle, read_bundle, verify_checksums, write_bundle
from .steps import AttemptState, Deadline, DeployReport, StepFailed, check_health

if TYPE_CHECKING:  # the verifier imports the kernel and device resources (and Dagster): deploys only
    from .verify import VerifyReport

DEPLOYMENTS_DIR = "deployments"
BACKUPS_DIR = "backups"
POINTER = "current"
LOCK_FILE = ".deploy.lock"


@dataclass(frozen=True)
class Backup:
    """A byte copy of the deployment that was current, with its files' hashes (what a rollback restores)."""

    path: Path
    version: str
    file_hashes: dict[str, str]


def _tree_hashes(directory: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every regular file under ``directory``."""
    return {
        str(p.relative_to(directory)): file_sha256(p) for p in sorted(directory.rglob("*")) if p.is_file()
    }


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
        """Read the current (or a named) deployed bundle whole; with ``verify`` every checksum, the
        content digest and the index are checked (``read_bundle``)."""
        return read_bundle(self._existing_dir(version), verify=verify)

    def map_bundle(self, version: str | None = None) -> Bundle:
        """The current (or a named) deployed bundle as a model opens it: every file's checksum
        verified, the inference index memory-mapped, the seed table read only if asked for
        (``map_bundle``). Raises :class:`DeploymentStoreError` when there is no such deployment."""
        return map_bundle(self._existing_dir(version))

    def _existing_dir(self, version: str | None) -> Path:
        if version is None:
            version = self.current_version()
            if version is None:
                raise DeploymentStoreError(
                    f"nothing is deployed under {self.root} (no {POINTER} pointer): point "
                    "--deployment-root or HASHER_DATA_DIR at the data directory the pipeline wrote "
                    "(the quickstart's is .hasher_data in the checkout)"
                )
        directory = self.version_dir(version)
        if not directory.is_dir():
            known = ", ".join(self.versions()) or "none"
            raise DeploymentStoreError(f"no deployment {version!r} under {self.deployments} (have: {known})")
        return directory

    def holds(self, bundle: Bundle) -> bool:
        """Whether ``deployments/<version>`` holds exactly ``bundle``: the same format and content
        digest in its manifest and every file with the checksum the manifest records (streamed, so
        this costs one read of the files, not a parse). False for a missing or damaged directory."""
        directory = self.version_dir(bundle.version)
        try:
            manifest = parse_manifest((directory / MANIFEST_FILE).read_bytes(), directory)
            if (manifest["format"], manifest["content_digest"]) != (
                bundle.manifest["format"],
                bundle.content_digest,
            ):
                return False
            verify_checksums(directory, manifest)
        except (OSError, BundleError):
            return False
        return True

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One deploy at a time: a second one fails at once, naming the lock and who holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_FILE

        def busy(waited: float, holder: str) -> DeploymentLockedError:
            return DeploymentLockedError(f"another deploy holds {path} ({holder})")

        with locked(path, wait_s=0.0, busy=busy):
            yield

    def _swap_pointer(self, version: str | None) -> None:
        """Point ``current`` at ``version`` (None removes it) with one atomic rename."""
        if version is None:
            with contextlib.suppress(FileNotFoundError):
                self.pointer.unlink()
        else:
            tmp = self.root / f".{POINTER}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.symlink(Path(DEPLOYMENTS_DIR) / version, tmp)
            os.replace(tmp, self.pointer)
        fsync_dir(self.root)

    def _backup(self, version: str) -> Backup:
        source = self.version_dir(version)
        if not source.is_dir():
            raise StepFailed("backup", f"current deployment {version} points to missing {source}")
        hashes = _tree_hashes(source)
        self.backups_dir.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = self.backups_dir / f"{stamp}-{version}"
        tmp = self.backups_dir / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(source, tmp)
            copied = _tree_hashes(tmp)
            if copied != hashes:
                raise StepFailed("backup", f"copy of {source} in {tmp} does not match the original")
            os.rename(tmp, final)
            fsync_dir(self.backups_dir)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StepFailed("backup", f"cannot copy {source} to {final}: {e}") from e
        except StepFailed:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Backup(final, version, hashes)

    def _write_version(self, bundle: Bundle) -> bool:
        """Make ``deployments/<version>`` hold ``bundle``; True when this call created it."""
        final = self.version_dir(bundle.version)
        if final.is_dir():
            if self.holds(bundle):
                return False  # an earlier deploy of the same content, intact: reuse it
            # Damaged leftover of an earlier failed deploy (never the current one: see deploy()).
            self._discard(final)
        self.deployments.mkdir(parents=True, exist_ok=True)
        tmp = self.deployments / f".tmp-{bundle.version}-{uuid.uuid4().hex[:8]}"
        try:
            write_bundle(bundle, tmp)
            fsync_dir(tmp)
            os.rename(tmp, final)
            fsync_dir(self.deployments)
        except (OSError, BundleError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StepFailed("write", f"writing {final}: {type(e).__name__}: {e}") from e
        return True

    def _discard(self, directory: Path) -> None:
        """Remove a directory by first renaming it out of the namespace (never half-visible)."""
        if directory.exists():
            trash = directory.parent / f".discard-{directory.name}-{uuid.uuid4().hex[:8]}"
            os.rename(directory, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def _restore(self, backup: Backup) -> bool:
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
        fsync_dir(self.deployments)
        return True

    def _rollback(self, previous: str | None, backup: Backup | None, new_version: str, created: bool) -> bool:
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
            from ..sha256.resource import Sha256Kernel
            from .verify import verify_sample_on_kernel

            def verify(b: Bundle) -> VerifyReport:
                return verify_sample_on_kernel(b, Sha256Kernel(backend=kernel_backend), sample_size)

        version = bundle_version(bundle)
        clock = Deadline(deadline_s)
        with self._lock():
            previous = self.current_version()
            report = DeployReport(version=version, previous_version=previous, status="deployed")
            if previous == version:
                if not self.holds(bundle):
                    # Rewriting the current directory in place would break the rule that it is never
                    # written to; make the operator decide.
                    try:
                        self.open_bundle(version, verify=True)
                        problem = "its files are not this bundle's (another bundle format)"
                    except BundleError as e:
                        problem = str(e)
                    raise DeploymentStoreError(
                        f"current deployment {version} is damaged ({problem}); "
                        f"restore it from {self.backups_dir}"
                    )
                report.status, report.seconds = "unchanged", clock.elapsed()
                say(f"deployment {version} is already current and intact; nothing to do")
                return report

            say(f"deploying {version} ({bundle.num_rows} rows) over {previous or 'nothing'}")
            state = AttemptState(previous=previous)
            for attempt in range(1, retries + 2):
                report.attempts = attempt
                state.created = False
                try:
                    self._attempt(bundle, state, report, clock, verify, health_check, say)
                except StepFailed as failure:
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
        state: AttemptState,
        report: DeployReport,
        clock: Deadline,
        verify: Callable[[Bundle], VerifyReport],
        health_check: Callable[[], dict] | None,
        say: Callable[[str], None],
    ) -> None:
        """One pass over the steps; raises :class:`StepFailed` naming the step that failed."""
        version, previous = bundle.version, state.previous

        def step(name: str, fn: Callable[[], Any], *, injected: bool = False) -> Any:
            result = clock.run(name, fn, injected=injected)
            report.step_seconds[name] = report.step_seconds.get(name, 0.0) + clock.last_step_s
            return result

        if health_check is not None:
            report.health_before = check_health(
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
            raise StepFailed("readback", f"{self.pointer} holds {readback.version}, not {version}")
        verified = step("verify", lambda: verify(readback), injected=True)
        from .verify import VerifyReport

        if not isinstance(verified, VerifyReport):
            raise StepFailed("verify", f"verifier returned {type(verified).__name__}, not a VerifyReport")
        report.verify = verified
        if not verified.ok:
            raise StepFailed("verify", verified.summary())
        say(f"verified: {verified.summary()}")
        if health_check is not None:
            report.health_after = check_health(
                step("health_after", health_check, injected=True), "health_after"
            )


__all__ = ["DeploymentStore"]
