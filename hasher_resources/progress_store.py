"""The search's progress store (DESIGN §4.6): finished frames of one partition in SQLite (WAL).

Each finished frame (solved or out of generations) is one row keyed by its fingerprint, so a run
that is killed — ``kill -9`` included — and started again reads what it already has and searches
only the rest. One run of a partition at a time: an exclusive ``flock`` on a sidecar ``.lock``
file; a second run waits up to ``wait_s`` and then fails naming the partition.

The store is never deleted, truncated or silently recreated: a file that is not a hasher progress
store is an error naming it. A store written by another algorithm version is kept and used; its
rows simply never match (the version is part of every fingerprint), and a warning says so.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from hasher_core.design import ALGORITHM_VERSION
from hasher_core.errors import ProgressStoreError, ProgressStoreLockedError
from hasher_core.search import Evaluator, SearchConfig, SearchProgress, SearchResults, search_frames
from hasher_core.search.driver import SearchDriver
from hasher_core.search.records import FinishedFrame

from .files import acquire_lock, release_lock

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: One column per field of a finished frame, in its order (the store reads rows back positionally).
_FRAME_COLUMNS = tuple(f.name for f in dataclasses.fields(FinishedFrame))
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
    fingerprint TEXT PRIMARY KEY,
    best_seed BLOB NOT NULL,
    golden INTEGER NOT NULL,
    matched_bits INTEGER NOT NULL,
    hamming INTEGER NOT NULL,
    reward REAL NOT NULL,
    generations INTEGER NOT NULL,
    evaluations INTEGER NOT NULL,
    solved INTEGER NOT NULL,
    algorithm_version TEXT NOT NULL,
    finished_at REAL NOT NULL
);
"""
_GET_CHUNK = 500  # stays under SQLite's host-parameter limit


class StoresByFingerprint:
    """The progress stores of several partitions searched together as one ``ProgressStore``: a
    finished frame is committed to the store of every partition that has it (``owners``:
    fingerprint → partitions), and looked up in theirs. The stores stay the owner's to close."""

    def __init__(self, stores: dict[str, SqliteProgressStore], owners: dict[str, list[str]]) -> None:
        self.stores, self.owners = stores, owners

    def get_many(self, fingerprints: Iterable[str]) -> dict[str, FinishedFrame]:
        """Stored results among ``fingerprints``, from any store that owns them."""
        wanted: dict[str, list[str]] = {}
        for fingerprint in fingerprints:
            for key in self.owners.get(fingerprint, ()):
                wanted.setdefault(key, []).append(fingerprint)
        found: dict[str, FinishedFrame] = {}
        for key, mine in wanted.items():
            found.update(self.stores[key].get_many(mine))
        return found

    def put_many(self, results: Sequence[FinishedFrame]) -> None:
        """Commit each finished frame to every store that owns it (one transaction per store)."""
        by_store: dict[str, list[FinishedFrame]] = {}
        for result in results:
            for key in self.owners.get(result.fingerprint, ()):
                by_store.setdefault(key, []).append(result)
        for key, mine in by_store.items():
            self.stores[key].put_many(mine)


class ProgressStoreVersionWarning(UserWarning):
    """The store was written by another algorithm version: its rows will not be reused."""


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


class SqliteProgressStore:
    """The progress store (``hasher_core.search.ProgressStore``) of one partition in SQLite: finished
    frames keyed by fingerprint; use as a context manager.

    ``SqliteProgressStore.open(path, partition=..., wait_s=...)`` takes the partition lock, then opens
    (or creates) the database. Rows are committed by :meth:`put_many` in one transaction.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, lock_fd: int, partition: str) -> None:
        self.path = path
        self.partition = partition
        self._db = connection
        self._lock_fd: int | None = lock_fd
        self.algorithm_version = ALGORITHM_VERSION
        self.stored_algorithm_version: str | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, partition: str | None = None, wait_s: float = 0.0):
        """Lock and open the store at ``path`` (created if missing).

        Raises :class:`ProgressStoreLockedError` if another run holds it for longer than ``wait_s``
        and :class:`ProgressStoreError` if the file is not a hasher progress store.
        """
        path = Path(path)
        partition = partition if partition is not None else path.stem
        lock_path = _lock_path(path)

        def busy(waited: float, holder: str) -> ProgressStoreLockedError:
            return ProgressStoreLockedError(path, partition, wait_s, lock_path)

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = acquire_lock(
                lock_path, wait_s=max(0.0, wait_s), busy=busy, note=f"partition {partition}"
            )
        except OSError as exc:  # read-only filesystem, permissions: the lock file cannot be created
            raise ProgressStoreError(
                path,
                f"cannot write its directory {path.parent} ({exc.strerror or exc}); the progress stores "
                "need a writable local directory (HASHER_PROGRESS_DIR)",
            ) from exc
        try:
            _check_magic(path)
            connection = _connect(path)
        except BaseException:
            release_lock(lock_fd)
            raise
        store = cls(path, connection, lock_fd, partition)
        try:
            store._init_schema()
        except BaseException:
            store.close()
            raise
        return store

    def _init_schema(self) -> None:
        db = self._db
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and not {"meta", "frames"} <= tables:
                raise ProgressStoreError(
                    self.path, f"not a hasher progress store (it has tables {sorted(tables)})"
                )
            if not tables:
                with db:
                    db.executescript(_SCHEMA)
                    db.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?)",
                        [
                            ("schema_version", SCHEMA_VERSION),
                            ("algorithm_version", ALGORITHM_VERSION),
                            ("created_at", f"{time.time():.3f}"),
                        ],
                    )
            columns = {r[1] for r in db.execute("PRAGMA table_info(frames)")}
            missing = set(_FRAME_COLUMNS) - columns
            if missing:
                raise ProgressStoreError(self.path, f"frames table lacks columns {sorted(missing)}")
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise ProgressStoreError(self.path, f"cannot read it as SQLite: {exc}") from exc
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise ProgressStoreError(
                self.path, f"schema version {meta.get('schema_version')!r}, expected {SCHEMA_VERSION!r}"
            )
        self.stored_algorithm_version = meta.get("algorithm_version")
        if self.stored_algorithm_version != ALGORITHM_VERSION:
            message = (
                f"progress store {self.path} was written by algorithm version "
                f"{self.stored_algorithm_version!r}, this is {ALGORITHM_VERSION!r}: its frames will not "
                "be reused (their fingerprints differ); new results are added beside them"
            )
            log.warning(message)
            warnings.warn(message, ProgressStoreVersionWarning, stacklevel=3)

    def other_versions(self) -> dict[str, int]:
        """Rows written by other algorithm versions (another objective or recursion), per version:
        they are kept but never reused, since the version is part of every fingerprint."""
        rows = self._db.execute(
            "SELECT algorithm_version, COUNT(*) FROM frames WHERE algorithm_version != ? GROUP BY 1",
            (ALGORITHM_VERSION,),
        )
        return dict(rows.fetchall())

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM frames").fetchone()[0])

    def get_many(self, fingerprints: Iterable[str]) -> dict[str, FinishedFrame]:
        """The stored results among ``fingerprints`` (missing ones are simply absent)."""
        wanted = list(dict.fromkeys(fingerprints))
        found: dict[str, FinishedFrame] = {}
        cols = ", ".join(_FRAME_COLUMNS)
        for i in range(0, len(wanted), _GET_CHUNK):
            chunk = wanted[i : i + _GET_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT {cols} FROM frames WHERE fingerprint IN ({marks})", chunk)
            for row in rows:
                found[row[0]] = FinishedFrame(
                    fingerprint=row[0],
                    best_seed=bytes(row[1]),
                    golden=int(row[2]),
                    matched_bits=int(row[3]),
                    hamming=int(row[4]),
                    reward=float(row[5]),
                    generations=int(row[6]),
                    evaluations=int(row[7]),
                    solved=bool(row[8]),
                )
        return found

    def put_many(self, results: Sequence[FinishedFrame]) -> None:
        """Commit finished frames in one transaction (a re-put of a fingerprint replaces it)."""
        if not results:
            return
        now = time.time()
        rows = [
            (
                r.fingerprint,
                bytes(r.best_seed),
                int(r.golden),
                int(r.matched_bits),
                int(r.hamming),
                float(r.reward),
                int(r.generations),
                int(r.evaluations),
                int(bool(r.solved)),
                ALGORITHM_VERSION,
                now,
            )
            for r in results
        ]
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO frames VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )

    def close(self) -> None:
        """Close the database and release the partition lock (idempotent)."""
        if self._lock_fd is None:
            return
        try:
            self._db.close()
        finally:
            release_lock(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> SqliteProgressStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_magic(path: Path) -> None:
    """Refuse anything that exists and is not SQLite, before SQLite gets a chance to write to it."""
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ProgressStoreError(path, f"cannot be read: {exc.strerror or exc}") from exc
    if head and head != _SQLITE_MAGIC:
        raise ProgressStoreError(path, "is not an SQLite database (bad header)")


def _connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=False)
        # WAL: a reader (the UI, a test) never blocks the writer, and a killed writer leaves every
        # committed transaction intact. NORMAL sync survives process death; a power cut may lose the
        # last commits, which a rerun recomputes identically (the search is deterministic).
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
    except sqlite3.DatabaseError as exc:
        raise ProgressStoreError(path, f"cannot be opened as SQLite: {exc}") from exc
    return db


def search_resumable(
    path: Path,
    slots: np.ndarray,
    targets: np.ndarray,
    config: SearchConfig,
    evaluate: Evaluator,
    *,
    partition: str | None = None,
    wait_s: float = 0.0,
    progress: Callable[[SearchProgress], None] | None = None,
    progress_every_s: float = 5.0,
    warn: Callable[[str], None] | None = None,
    driver: SearchDriver | None = None,
) -> SearchResults:
    """:func:`~hasher_core.search.search_frames` with the progress store at ``path``: frames it holds
    are taken from it, every frame finished here is committed to it as it finishes, so a killed run
    resumes where it was. ``warn`` is told, once, when the store holds seeds of another algorithm
    version (kept, never reused). ``driver`` runs the generations on a device
    (:meth:`Sha256Kernel.search_driver`; ``None``: the host loop). Raises what
    :meth:`SqliteProgressStore.open` raises."""
    with SqliteProgressStore.open(path, partition=partition, wait_s=wait_s) as store:
        if warn is not None and (stale := store.other_versions()):
            warn(
                f"progress store {path} holds {sum(stale.values()):,} seeds of {', '.join(sorted(stale))} "
                f"(another objective): none is reused; this run searches for {store.algorithm_version}"
            )
        return search_frames(
            slots,
            targets,
            config,
            evaluate,
            store=store,
            progress=progress,
            progress_every_s=progress_every_s,
            driver=driver,
        )
