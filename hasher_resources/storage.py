"""Where hasher reads and writes, and what is there: the miner directory, the raw-text inbox, the data
directory, and the scan that tells the sensor which source files are new or changed.

One resource owns the three paths so every asset, the sensor and the CLI agree on them. Defaults
come from the environment (``HASHER_MINER_DIR``, ``HASHER_INBOX_DIR``, ``HASHER_DATA_DIR``,
``HASHER_PROGRESS_DIR``, read in ``hasher_resources.files``) and can be overridden per run in the
launchpad. The data directory may be shared by many machines; the progress stores may not. Every
step of a run first checks that it can write each directory a run writes (:meth:`HasherStorage.
check_writable`), so a read-only one stops the run before any work, naming its variable.
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from hasher_core.errors import FileChangedError, KnowledgeBaseError, ProgressDirOnNetworkError
from hasher_core.knowledge import ReadReport, discovery_candidates, list_source_files, safe_partition_key

from .files import (
    DigestMemo,
    atomic_write_text,
    check_writable_dir,
    default_data_dir,
    default_inbox_dir,
    default_miner_dir,
    default_progress_dir,
    file_digest,
    network_filesystem,
    stat_key,
)

#: Raw-text files the inbox takes (DESIGN §2).
INBOX_SUFFIXES = (".txt", ".md")
#: Version of the sensor cursor that :func:`scan_sources` reads and writes.
CURSOR_VERSION = 1
#: How the scan's ``skipped`` reasons begin for an input that gave nothing at all (``hasher partitions
#: sync`` exits 1 on them); other reasons (skipped records, entries not taken) are notes.
CANNOT_BE_READ = "cannot be read"
NO_SOURCE_FILES_READ = "no source files read"
#: Bytes of the inbox files' content digests: they are the partitions' fingerprints.
_INBOX_DIGEST_BYTES = 16


class HasherStorage(dg.ConfigurableResource):
    """The pipeline's directories. Nothing under ``miner_dir`` or ``inbox_dir`` is ever written."""

    miner_dir: str = Field(
        default_factory=lambda: str(default_miner_dir()), description="Data Miner output directory"
    )
    inbox_dir: str = Field(
        default_factory=lambda: str(default_inbox_dir()), description="Raw-text inbox (*.txt, *.md)"
    )
    data_dir: str = Field(
        default_factory=lambda: str(default_data_dir()), description="Every output of every asset"
    )
    progress_dir: str = Field(
        default_factory=lambda: str(default_progress_dir() or ""),
        description="Seeds progress stores (SQLite WAL: a local disk); empty = <data dir>/seeds_progress",
    )

    @property
    def miner_path(self) -> Path:
        return Path(self.miner_dir).expanduser()

    @property
    def inbox_path(self) -> Path:
        return Path(self.inbox_dir).expanduser()

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    def stage_dir(self, stage: str) -> Path:
        """``<data dir>/<stage>``, created on first use."""
        path = self.data_path / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def progress_path(self) -> Path:
        """The directory of the seeds progress stores, created on first use.

        Raises :class:`ProgressDirOnNetworkError` when it is on a network filesystem, where SQLite's
        WAL would let two hosts corrupt a store: ``HASHER_PROGRESS_DIR`` must then name a local disk.
        """
        path = (
            Path(self.progress_dir).expanduser() if self.progress_dir else self.data_path / "seeds_progress"
        )
        if kind := network_filesystem(path):
            raise ProgressDirOnNetworkError(path, kind)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def inbox_files(self) -> dict[str, Path]:
        """Partition key → path of each inbox file (see :func:`inbox_files`)."""
        return inbox_files(self.inbox_path)

    def inbox_listing(self) -> InboxListing:
        """The inbox's files by key and the entries skipped, with why (see :func:`list_inbox`)."""
        return list_inbox(self.inbox_path)

    def writable_dirs(self) -> list[tuple[str, Path, str]]:
        """(setting, directory, what needs it) for every directory a run writes: the data directory
        and each directory already in it (a stage's outputs, deployments, backups, the split cache),
        the progress stores' directory and, when set, ``NUMBA_CACHE_DIR``. The miner directory and
        the inbox are only read: read-only is fine there."""
        data = ("HASHER_DATA_DIR", "storage.data_dir")[self.data_dir != str(default_data_dir())]
        dirs = [(data, self.data_path, "every stage's outputs and the deployments")]
        if self.data_path.is_dir():
            with os.scandir(self.data_path) as entries:
                dirs += [
                    (data, self.data_path / e.name, "every stage's outputs and the deployments")
                    for e in sorted(entries, key=lambda e: e.name)
                    if e.is_dir(follow_symlinks=False)
                ]
        if self.progress_dir:
            progress = ("HASHER_PROGRESS_DIR", "storage.progress_dir")[
                self.progress_dir != str(default_progress_dir() or "")
            ]
            dirs.append((progress, Path(self.progress_dir).expanduser(), "the seeds progress stores"))
        if os.environ.get("NUMBA_CACHE_DIR"):
            dirs.append(("NUMBA_CACHE_DIR", Path(os.environ["NUMBA_CACHE_DIR"]), "Numba's compiled kernels"))
        return dirs

    def check_writable(self) -> None:
        """Raise :class:`~hasher_core.errors.DirectoryNotWritableError` for the first directory of
        :meth:`writable_dirs` hasher cannot write (creating missing ones on the way)."""
        for variable, path, purpose in self.writable_dirs():
            check_writable_dir(path, variable, purpose)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Every step of a run (not a sensor tick, which writes nothing here) checks before it works.
        if context.run is not None:
            self.check_writable()


def inbox_fingerprint(path: Path) -> str:
    """An inbox file's fingerprint: the digest of its bytes, as :func:`scan_sources` takes it."""
    return file_digest(path, digest_size=_INBOX_DIGEST_BYTES)


@dataclass(frozen=True)
class InboxListing:
    """What is in the inbox: partition key → file taken, and path → why each other entry is not."""

    files: dict[str, Path]
    skipped: dict[str, str]


def list_inbox(inbox_dir: Path) -> InboxListing:
    """The inbox's ``.txt``/``.md`` files directly in it, by partition key, and the entries not taken.

    Hidden entries (``.name``) are ignored silently. Other entries are skipped with a reason: another
    suffix, a directory, or a name that is the same as a taken one after Unicode normalisation (a macOS
    NFD copy beside the NFC file: the NFC spelling is taken, else the first in code-point order). A
    missing inbox directory has no files.
    """
    inbox_dir = Path(inbox_dir).expanduser()
    if not inbox_dir.is_dir():
        return InboxListing({}, {})
    taken: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    # One listing; scandir's entries know their type without a stat per file.
    with os.scandir(inbox_dir) as listing:
        entries = sorted((entry.name, entry.is_file()) for entry in listing if not entry.name.startswith("."))
    for name, is_file in entries:
        path = inbox_dir / name
        if os.path.splitext(name)[1].lower() not in INBOX_SUFFIXES:
            skipped[str(path)] = f"not a {' or '.join(INBOX_SUFFIXES)} file"
            continue
        if not is_file:
            skipped[str(path)] = "not a regular file (the inbox is not searched recursively)"
            continue
        key = safe_partition_key(name)
        other = taken.get(key)
        if other is not None:
            keep, drop = (path, other) if name == unicodedata.normalize("NFC", name) else (other, path)
            taken[key] = keep
            skipped[str(drop)] = (
                f"the same name as {keep.name!r} in Unicode NFC (one spelled decomposed, as macOS writes "
                f"names): only {keep.name!r} is read; rename or remove one"
            )
            continue
        taken[key] = path
    return InboxListing(dict(sorted(taken.items())), skipped)


def inbox_files(inbox_dir: Path) -> dict[str, Path]:
    """Partition key → path of each ``.txt``/``.md`` file directly in the inbox (:func:`list_inbox`)."""
    return list_inbox(inbox_dir).files


def scan_sources(
    storage: HasherStorage, cursor: dict, max_files: int
) -> tuple[dict[str, str], dict, list[str]]:
    """Compare the miner directory and inbox with the cursor (a JSON-able dict from an earlier scan).

    Returns ``(changed partitions → fingerprint, new cursor, log lines)``. A file whose stat is
    unchanged costs one ``stat``; a touched file whose content digest is unchanged requests nothing;
    at most ``max_files`` changed files are read per call, the rest wait for the next one. The
    miner file's partitions get per-source-file fingerprints, so an edited document re-runs only
    its own partition. Plain function so ``hasher partitions sync`` and tests can call it too.

    The cursor's ``skipped`` maps each input that was not (fully) read to why: inbox entries that are
    not taken (:func:`list_inbox`), unreadable files, a miner file with no readable source file or with
    skipped records. It is also kept in ``<data dir>/source_scan.json`` (:func:`record_scan`), so the
    sensor's and ``hasher partitions sync``'s findings show in ``hasher status``.
    """
    files: dict[str, dict] = {k: dict(v) for k, v in cursor.get("files", {}).items()}
    partitions: dict[str, str] = dict(cursor.get("partitions", {}))
    memo = DigestMemo(files, digest_size=_INBOX_DIGEST_BYTES)
    changed: dict[str, str] = {}
    notes: list[str] = []
    unreadable: dict[str, str] = {}
    candidates: list[tuple[str, Path]] = []
    miner = storage.miner_path
    if miner.is_dir():
        existing = [p for p in discovery_candidates(miner) if p.is_file()]
        if existing:  # only the file discovery would use; later candidates are fallbacks
            candidates.append(("miner", existing[0]))
    inbox = storage.inbox_listing()  # listed once per scan
    inbox_keys = {path: key for key, path in inbox.files.items()}
    candidates += [("inbox", p) for p in inbox_keys]
    # Files whose stat moved come first; after them, files re-read only because they changed too
    # recently for their memoised digest to be trusted (those are almost always unchanged).
    pending = [(kind, path) for kind, path in candidates if memo.cached(path) is None]
    pending.sort(key=lambda item: files.get(str(item[1]), {}).get("stat") == stat_key(item[1]))
    handled = 0
    for kind, path in pending:
        if handled >= max_files:
            if files.get(str(path), {}).get("stat") != stat_key(path):
                notes.append(f"deferred {path} to the next tick (limit {max_files} changed files per tick)")
            continue
        handled += 1
        previous = dict(files.get(str(path), {}))
        try:
            digest = memo.digest(path)
        except FileChangedError as exc:
            notes.append(f"{exc}; it is read again on the next tick")
            continue
        except OSError as exc:  # unreadable (permissions, an I/O error): skipped and said, never fatal
            unreadable[str(path)] = f"{CANNOT_BE_READ}: {exc.strerror or exc}"
            notes.append(f"{path}: {unreadable[str(path)]}; skipped")
            continue
        if previous.get("digest") == digest:
            notes.append(f"{path}: touched but content unchanged")
            continue
        problem = None
        if kind == "inbox":
            per_key = {inbox_keys[path]: digest}
        else:
            report = ReadReport()
            try:
                per_key = {k: info.fingerprint for k, info in list_source_files(miner, report=report).items()}
            except KnowledgeBaseError as exc:
                # An empty run of the miner (null, [], a 0-row Parquet) or a broken file must not hide
                # the inbox: it is noted once (until the file changes) and the scan goes on.
                reason = " ".join(str(exc).split())
                notes.append(f"{path}: no source files in the miner output ({reason}); inbox still scanned")
                problem = f"{NO_SOURCE_FILES_READ}: {reason}"
                per_key = {}
            if report.records_skipped and problem is None:
                reasons = ", ".join(f"{r} {n}" for r, n in sorted(report.skipped.items()))
                first = report.problems[0] if report.problems else ""
                problem = f"{report.records_skipped} record(s) skipped ({reasons}); first: {first}"
                notes.append(f"{path}: {problem}")
        # Kept with the file's entry, so a later scan that does not re-read it still reports it.
        files[str(path)].pop("problem", None)
        if problem:
            files[str(path)]["problem"] = problem
        for key, fingerprint in per_key.items():
            if partitions.get(key) != fingerprint:
                changed[key] = fingerprint
                partitions[key] = fingerprint
        files[str(path)]["keys"] = sorted(per_key)
        notes.append(
            f"{path}: {len(per_key)} source file(s), {sum(k in changed for k in per_key)} new or changed"
        )
    skipped = {**inbox.skipped, **unreadable}
    for _kind, path in candidates:
        if problem := files.get(str(path), {}).get("problem"):
            skipped[str(path)] = problem
    skipped = dict(sorted(skipped.items()))
    if (unkept := record_scan(storage, skipped)) is not None:
        notes.append(unkept)
    cursor = {"version": CURSOR_VERSION, "files": files, "partitions": partitions, "skipped": skipped}
    return changed, cursor, notes


#: The last scan's skipped inputs, under the data directory (``hasher status`` shows them).
SCAN_REPORT = "source_scan.json"


def record_scan(storage: HasherStorage, skipped: dict[str, str]) -> str | None:
    """Keep what the last scan skipped and why in ``<data dir>/source_scan.json``, rewritten only when
    it changed (a sensor tick that finds the same problems writes nothing).

    The report is for ``hasher status`` only, and a scan (a sensor tick) needs no writable data
    directory: when it cannot be written, this returns a note saying so instead of raising."""
    path = storage.data_path / SCAN_REPORT
    report = {"miner_dir": str(storage.miner_path), "inbox_dir": str(storage.inbox_path), "skipped": skipped}
    if read_scan_report(storage.data_path) == report:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # ASCII escapes: a path with undecodable bytes (PEP 383 surrogates) stays valid JSON and UTF-8.
        atomic_write_text(path, json.dumps(report, indent=1) + "\n")
    except OSError as exc:
        return f"{path}: not kept ({exc.strerror or exc}); hasher status will not list the skipped inputs"
    return None


def read_scan_report(data_dir: Path) -> dict | None:
    """What :func:`record_scan` kept under ``data_dir``; None when no scan ran or it is unreadable."""
    try:
        return json.loads((Path(data_dir) / SCAN_REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
