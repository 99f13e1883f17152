"""The deployment target store (DESIGN §6): versioned bundle directories, an atomically swapped
``current`` pointer, backups, readback verification, retries, a deadline and rollback.

Layout under ``root``::

    deployments/<version>/{seeds.parquet, fingerprints.txt, index.json, index-*.npy, manifest.json}
    current -> deployments/<version>          (a relative symlink)
    backups/<UTC timestamp>-<version>/        (byte copies of what was current, newest N kept)

**Why a symlink pointer.** ``rename(2)`` of a new symlink over the old one is atomic on POSIX, so a
reader that opens ``current/seeds.parquet`` sees either the old or the new complete bundle, never
a mix, and needs no parser to follow it (``ls -l current`` says what is deployed). Version
directories are written under a temporary name, read back and verified there, and only then renamed
into place and pointed at: a kill at any moment leaves ``current`` on a verified version (or on
nothing, before the first deploy), and a directory named after a version is always complete; the
directory of an intact previous deployment is never written to.

**Damage** (bit rot, a partial copy of the data directory, a killed deploy) never leaves the store
without a way back. A deploy first removes what killed deploys left (``.tmp-*``, ``.discard-*``,
``.restore-*`` and pointer temporaries: under the lock nothing else can be writing them). When the
current deployment is damaged — a file whose checksum fails, a truncated or missing file, a version
directory without a manifest, a pointer that dangles, points outside ``deployments/`` or is no
symlink at all — the deploy replaces it (a damaged pointer that is a file or directory is kept
aside as ``current.damaged-<UTC time>``), takes no backup of the damage, and a deploy of the *same*
version writes it afresh. :meth:`DeploymentStore.rollback` deploys an earlier version again from its
directory or, when that is damaged, from its newest intact backup. Readers get
:class:`DeploymentDamagedError`, which names both ways back, and :meth:`DeploymentStore.inspect`
says what is damaged (``hasher deployments``, ``hasher status``).

An unchanged redeploy is recognised from the manifest (its content digest and its own checksum)
and the files' checksums (:meth:`DeploymentStore.holds`), streaming the files once: nothing is
parsed or rebuilt. A model opens a deployment mapped (:meth:`DeploymentStore.map_bundle`).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hasher_core.bundle import MANIFEST_FILE, Bundle, bundle_version
from hasher_core.bundle.diff import diff_bundles
from hasher_core.bundle.format import check_manifest, parse_manifest
from hasher_core.errors import (
    BundleError,
    DeploymentDamagedError,
    DeploymentFailedError,
    DeploymentLockedError,
    DeploymentStoreError,
)

from ..files import file_sha256, fsync_dir, locked, publish
from .bundle_files import map_bundle, read_bundle, verify_checksums, write_bundle
from .steps import Deadline, DeployReport, StepFailed, check_health

if TYPE_CHECKING:  # the verifier imports the kernel and device resources (and Dagster): deploys only
    from .verify import VerifyReport

DEPLOYMENTS_DIR = "deployments"
BACKUPS_DIR = "backups"
POINTER = "current"
LOCK_FILE = ".deploy.lock"
#: What killed deploys leave behind (names that start with a dot are never a version or a backup).
STALE_PREFIXES = {
    "": (f".{POINTER}.tmp-",),
    DEPLOYMENTS_DIR: (".tmp-", ".discard-", ".restore-"),
    BACKUPS_DIR: (".tmp-", ".discard-"),
}
#: The pipeline's deploy: builds the bundle from the checkpoints again and deploys it.
REDEPLOY_COMMAND = "dagster asset materialize -m hasher_assets.definitions --select deployment"
ROLLBACK_COMMAND = "hasher deployments rollback"


@dataclass(frozen=True)
class Backup:
    """A byte copy of the deployment that was current, with its files' hashes (what a rollback restores)."""

    path: Path
    version: str
    file_hashes: dict[str, str]


@dataclass
class AttemptState:
    """What survives between attempts of one deploy: the backup is taken once (and not at all of a
    damaged previous deployment); ``staged`` is the attempt's unverified copy, if any."""

    previous: str | None
    previous_intact: bool = True
    backup: Backup | None = None
    staged: Path | None = None
    created: bool = False
    restored: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StoreHealth:
    """What :meth:`DeploymentStore.inspect` found: each problem as one line, None where intact."""

    root: Path
    current: str | None
    current_problem: str | None
    versions: dict[str, str | None]
    backups: dict[str, str | None]
    stale: tuple[str, ...]
    recovery: str

    @property
    def damaged(self) -> bool:
        """True when the current deployment (or the pointer to it) cannot be used as it is."""
        return self.current_problem is not None


def _tree_hashes(directory: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every regular file under ``directory``."""
    return {
        str(p.relative_to(directory)): file_sha256(p) for p in sorted(directory.rglob("*")) if p.is_file()
    }


def _bundle_problem(directory: Path) -> str | None:
    """Why the bundle directory cannot be used as it is (one line), or None when it verifies."""
    if not directory.is_dir():
        return "missing" if not directory.exists() else "not a directory"
    try:
        read_bundle(directory, verify=True)
    except BundleError as e:
        return f"{type(e).__name__}: {e}"
    return None


class DeploymentStore:
    """A local deployment target: versioned bundle directories plus an atomically swapped pointer."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.deployments = self.root / DEPLOYMENTS_DIR
        self.backups_dir = self.root / BACKUPS_DIR
        self.pointer = self.root / POINTER

    def version_dir(self, version: str) -> Path:
        return self.deployments / version

    def recovery(self) -> str:
        """The two ways back from a damaged deployment, as one sentence naming the commands."""
        return (
            f"recover with `{REDEPLOY_COMMAND}` (HASHER_DATA_DIR={self.root}; a deploy of the same "
            f"checkpoints writes the version afresh) or `{ROLLBACK_COMMAND} --deployment-root {self.root}` "
            "(an earlier version, or `--to VERSION`, from its directory or its newest intact backup)"
        )

    def pointer_state(self) -> tuple[str | None, str | None]:
        """``(version, problem)`` of the ``current`` pointer: the version it names (None when there
        is no pointer or it names no version) and what is wrong with it (None when nothing is;
        the bundle itself is not read)."""
        if not self.pointer.is_symlink():
            if self.pointer.exists():
                kind = "a directory" if self.pointer.is_dir() else "a file"
                return None, (
                    f"{self.pointer} is {kind}, not a symlink into {DEPLOYMENTS_DIR}/ (a copy that "
                    "followed or could not keep symlinks?)"
                )
            return None, None
        target = Path(os.readlink(self.pointer))
        if target.parent != Path(DEPLOYMENTS_DIR) or not target.name or target.name.startswith("."):
            return None, f"{self.pointer} points to {target}, not into {DEPLOYMENTS_DIR}/"
        if not self.version_dir(target.name).is_dir():
            return target.name, f"{self.pointer} points to {DEPLOYMENTS_DIR}/{target.name}, which is missing"
        return target.name, None

    def current_version(self) -> str | None:
        """The deployed version, or None when nothing was ever deployed. Raises
        :class:`DeploymentDamagedError` for a pointer that names no version."""
        version, problem = self.pointer_state()
        if version is None and problem is not None:
            raise DeploymentDamagedError(None, problem, self.recovery())
        return version

    def current_state(self) -> tuple[str | None, str | None]:
        """``(version, problem)`` like :meth:`pointer_state`, with the current bundle read and
        verified: the problem is the first thing that keeps it from being used as it is."""
        version, problem = self.pointer_state()
        if problem is None and version is not None:
            try:
                read_bundle(self.version_dir(version), verify=True)
            except BundleError as e:
                problem = f"{type(e).__name__}: {e}"
        return version, problem

    def stale(self) -> list[Path]:
        """What killed deploys left: temporary directories, discards and pointer temporaries."""
        found = []
        for sub, prefixes in STALE_PREFIXES.items():
            directory = self.root / sub
            if directory.is_dir():
                found += sorted(p for p in directory.iterdir() if p.name.startswith(prefixes))
        return found

    def inspect(self, *, everything: bool = True) -> StoreHealth:
        """Read and verify the current deployment and (with ``everything``) every version
        directory and backup; say what is damaged and what killed deploys left behind."""
        current, problem = self.current_state()
        versions = self.versions()
        if current is None and problem is None and versions:
            problem = (
                f"no {POINTER} pointer, yet {DEPLOYMENTS_DIR}/ holds {len(versions)} version(s) "
                "(a partial copy of the data directory?)"
            )
        states: dict[str, str | None] = {}
        backups: dict[str, str | None] = {}
        if everything:
            for version in versions:
                states[version] = _bundle_problem(self.version_dir(version))
            for path in self.backups():
                backups[path.name] = _bundle_problem(path)
        stale = tuple(str(p.relative_to(self.root)) for p in self.stale())
        return StoreHealth(self.root, current, problem, states, backups, stale, self.recovery())

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
        content digest and the index are checked (``read_bundle``).

        Raises :class:`DeploymentDamagedError` naming the damage and the commands that recover from
        it when the bundle does not verify or the pointer is damaged, and
        :class:`DeploymentStoreError` when nothing is deployed or the version is unknown.
        """
        version, directory = self._existing_dir(version)
        try:
            return read_bundle(directory, verify=verify)
        except BundleError as e:
            raise DeploymentDamagedError(version, f"{type(e).__name__}: {e}", self.recovery()) from e

    def map_bundle(self, version: str | None = None) -> Bundle:
        """The current (or a named) deployed bundle as a model opens it: every file's checksum
        verified, the inference index memory-mapped, the seed table read only if asked for
        (``map_bundle``). Raises like :meth:`open_bundle`."""
        version, directory = self._existing_dir(version)
        try:
            return map_bundle(directory)
        except BundleError as e:
            raise DeploymentDamagedError(version, f"{type(e).__name__}: {e}", self.recovery()) from e

    def _existing_dir(self, version: str | None) -> tuple[str, Path]:
        """``(version, its directory)`` of the current (or a named) deployment; raises as
        :meth:`open_bundle` does when there is none."""
        if version is None:
            version, problem = self.pointer_state()
            if problem is not None:
                raise DeploymentDamagedError(version, problem, self.recovery())
            if version is None:
                versions = self.versions()
                left = (
                    f"; {DEPLOYMENTS_DIR}/ holds {', '.join(versions)}: {self.recovery()}" if versions else ""
                )
                raise DeploymentStoreError(
                    f"nothing is deployed under {self.root} (no {POINTER} pointer): point "
                    "--deployment-root or HASHER_DATA_DIR at the data directory the pipeline wrote "
                    f"(the quickstart's is .hasher_data in the checkout){left}"
                )
        directory = self.version_dir(version)
        if not directory.is_dir():
            known = ", ".join(self.versions()) or "none"
            raise DeploymentStoreError(f"no deployment {version!r} under {self.deployments} (have: {known})")
        return version, directory

    def holds(self, bundle: Bundle) -> bool:
        """Whether ``deployments/<version>`` holds exactly ``bundle``: the same format and content
        digest in its manifest, the manifest as written (``check_manifest``) and every file with the
        checksum the manifest records (streamed, so this costs one read of the files, not a parse).
        False for a missing or damaged directory."""
        directory = self.version_dir(bundle.version)
        try:
            raw = (directory / MANIFEST_FILE).read_bytes()
            manifest = parse_manifest(raw, directory)
            if (manifest["format"], manifest["content_digest"]) != (
                bundle.manifest["format"],
                bundle.content_digest,
            ):
                return False
            check_manifest(manifest, raw, directory)
            verify_checksums(directory, manifest)
        except (OSError, BundleError, KeyError, TypeError, ValueError):
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
            publish(tmp, self.pointer)
            return
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
            publish(tmp, final)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StepFailed("backup", f"cannot copy {source} to {final}: {e}") from e
        except StepFailed:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Backup(final, version, hashes)

    def _stage_version(self, bundle: Bundle, state: AttemptState) -> Path:
        """The directory to read back and verify: ``deployments/<version>`` when it already holds
        this content intact (an earlier deploy of it), else a fresh temporary copy that
        :meth:`_install` moves into place once it is verified."""
        final = self.version_dir(bundle.version)
        if final.is_dir() and self.holds(bundle):
            return final  # else damaged: written afresh beside it, then swapped in by _install
        self.deployments.mkdir(parents=True, exist_ok=True)
        tmp = self.deployments / f".tmp-{bundle.version}-{uuid.uuid4().hex[:8]}"
        state.staged = tmp
        try:
            write_bundle(bundle, tmp)
        except (OSError, BundleError) as e:
            raise StepFailed("write", f"writing {tmp}: {type(e).__name__}: {e}") from e
        return tmp

    def _install(self, version: str, staged: Path, state: AttemptState) -> None:
        """Move a verified staged copy to ``deployments/<version>`` (replacing a damaged one there)."""
        final = self.version_dir(version)
        if staged == final:
            return
        self._discard(final)
        publish(staged, final)
        state.staged, state.created = None, True

    def _discard(self, directory: Path) -> None:
        """Remove a directory by first renaming it out of the namespace (never half-visible); a file
        or symlink in its place is unlinked."""
        if directory.is_symlink() or directory.is_file():
            directory.unlink()
        elif directory.exists():
            trash = directory.parent / f".discard-{directory.name}-{uuid.uuid4().hex[:8]}"
            os.rename(directory, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def _clear_stale(self) -> list[str]:
        """Remove what killed deploys left (call under the lock); returns their names."""
        removed = []
        for path in self.stale():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed.append(str(path.relative_to(self.root)))
        return removed

    def _set_aside_pointer(self) -> Path | None:
        """Move a ``current`` that is a file or directory (not a symlink) out of the pointer's way,
        kept as ``current.damaged-<UTC time>``; returns where, or None when there was none."""
        if self.pointer.is_symlink() or not self.pointer.exists():
            return None
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.root / f"{POINTER}.damaged-{stamp}"
        os.rename(self.pointer, aside)
        fsync_dir(self.root)
        return aside

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
        publish(tmp, target)
        return True

    def _install_and_swap(self, version: str, staged: Path, state: AttemptState) -> None:
        self._install(version, staged, state)
        self._swap_pointer(version)
        if self.pointer_state() != (version, None):
            raise StepFailed(
                "swap", f"{self.pointer} does not name {DEPLOYMENTS_DIR}/{version} after the swap"
            )

    def _rollback(self, state: AttemptState, new_version: str) -> bool:
        """Undo one failed attempt: drop its staged copy, restore the previous version from its
        backup when the attempt damaged it, point ``current`` back where it was."""
        previous = state.previous
        if state.staged is not None:
            shutil.rmtree(state.staged, ignore_errors=True)
            state.staged = None
        restored = False
        if previous is not None:
            if state.backup is not None:
                restored = self._restore(state.backup)
            if self.pointer_state()[0] != previous:
                self._swap_pointer(previous)
        else:
            self._swap_pointer(None)
        if state.created and new_version != previous:
            self._discard(self.version_dir(new_version))
        return restored

    def rollback(self, to: str | None = None, **deploy_options: Any) -> DeployReport:
        """Deploy an earlier version again: ``to``, or the newest version a backup holds that is not
        the current one (backups are taken of what each deploy replaced, so that is the version
        before it). Its bundle comes from ``deployments/<version>`` when that verifies, else from
        its newest backup that verifies, and goes through :meth:`deploy` (``deploy_options``), so
        a damaged directory of it is written afresh and everything is verified before the swap.

        Raises :class:`DeploymentStoreError` naming every copy tried and why it failed, with the
        command that deploys from the checkpoints instead.
        """
        current = self.pointer_state()[0]
        if to is not None:
            candidates = [to]
        else:
            candidates = []
            for path in reversed(self.backups()):
                version = path.name.rsplit("-", 1)[-1]
                if version != current and version not in candidates:
                    candidates.append(version)
        if not candidates:
            raise DeploymentStoreError(
                f"no earlier deployment to roll back to under {self.root}: no backup holds a version "
                f"other than the current one ({current or 'none'}); name one with --to VERSION "
                f"(`hasher deployments` lists them) or deploy from the checkpoints: `{REDEPLOY_COMMAND}`"
            )
        tried: list[str] = []
        for version in candidates:
            copies = [self.version_dir(version)] + [
                p for p in reversed(self.backups()) if p.name.endswith(f"-{version}")
            ]
            for copy in copies:
                problem = _bundle_problem(copy)
                if problem is None:
                    bundle = read_bundle(copy, verify=True)
                    if bundle.version == version:
                        return self.deploy(bundle, **deploy_options)
                    problem = f"holds version {bundle.version}"
                tried.append(f"{copy}: {problem}")
        raise DeploymentStoreError(
            f"no intact copy of {', '.join(candidates)} to roll back to ({'; '.join(tried)}); deploy "
            f"from the checkpoints instead: `{REDEPLOY_COMMAND}`"
        )

    def _prune_backups(self, keep: int) -> list[str]:
        old = self.backups()[:-keep] if keep else self.backups()
        for path in old:
            self._discard(path)
        return [p.name for p in old]

    def dry_run(self, bundle: Bundle, *, health_check: Callable[[], dict] | None = None) -> DeployReport:
        """What :meth:`deploy` would change, touching nothing."""
        start = time.perf_counter()
        previous, problem = self.pointer_state()
        current: Bundle | None = None
        current_error = f"current deployment fails verification: {problem}" if problem else None
        if previous is not None and problem is None:
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
        """Deploy ``bundle``: health check, backup, write, read back, verify a sample, swap, health check.

        Any failure, or passing ``deadline_s``, is retried up to ``retries`` times (each failed
        attempt is rolled back first); then :class:`DeploymentFailedError` says which step failed
        and why, with the previous deployment byte-for-byte intact and current again.
        ``verify`` defaults to :func:`verify_sample_on_kernel` on ``kernel_backend``. A damaged
        current deployment is replaced, and written afresh when ``bundle`` is its version (module
        docstring); it is not backed up.
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
            stale = self._clear_stale()
            if stale:
                say(f"removed what a killed deploy left: {', '.join(stale)}")
            # An unchanged redeploy costs one read of the files' checksums, not a parse (holds).
            pointed, pointer_problem = self.pointer_state()
            if pointed == version and pointer_problem is None and self.holds(bundle):
                previous, damage = pointed, None
            else:
                previous, damage = self.current_state()
            report = DeployReport(version=version, previous_version=previous, status="deployed")
            report.stale_removed = stale
            if previous == version and damage is None:
                report.status, report.seconds = "unchanged", clock.elapsed()
                say(f"deployment {version} is already current and intact; nothing to do")
                return report
            if damage is not None:
                report.current_error = damage
                aside = self._set_aside_pointer()
                say(
                    f"the current deployment is damaged ({damage}); deploying {version} replaces it"
                    + (f" ({POINTER} kept as {aside.name})" if aside else "")
                )

            say(f"deploying {version} ({bundle.num_rows} rows) over {previous or 'nothing'}")
            state = AttemptState(previous=previous, previous_intact=damage is None)
            for attempt in range(1, retries + 2):
                report.attempts = attempt
                state.created = False
                try:
                    self._attempt(bundle, state, report, clock, verify, health_check, say)
                except StepFailed as failure:
                    state.errors.append(f"attempt {attempt}: {failure}")
                    say(f"attempt {attempt} failed at {failure.step}: {failure.reason}; rolling back")
                    try:
                        state.restored |= self._rollback(state, version)
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
                            previous_damage=damage,
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
        if previous is not None and state.previous_intact and state.backup is None:
            state.backup = step("backup", lambda: self._backup(previous))
            report.backup_path = str(state.backup.path)
            say(f"backed up {previous} to {state.backup.path}")
        staged = step("write", lambda: self._stage_version(bundle, state))
        readback = step("readback", lambda: read_bundle(staged, verify=True))
        if readback.version != version:
            raise StepFailed("readback", f"{staged} holds {readback.version}, not {version}")
        # Verified before the swap: a deploy killed at any moment leaves current on a verified version.
        verified = step("verify", lambda: verify(readback), injected=True)
        from .verify import VerifyReport

        if not isinstance(verified, VerifyReport):
            raise StepFailed("verify", f"verifier returned {type(verified).__name__}, not a VerifyReport")
        report.verify = verified
        if not verified.ok:
            raise StepFailed("verify", verified.summary())
        say(f"verified: {verified.summary()}")
        step("swap", lambda: self._install_and_swap(version, staged, state))
        say(f"{POINTER} -> {DEPLOYMENTS_DIR}/{version}")
        if health_check is not None:
            report.health_after = check_health(
                step("health_after", health_check, injected=True), "health_after"
            )


__all__ = ["DeploymentStore"]
