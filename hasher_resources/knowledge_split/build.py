"""Building the knowledge split: one pass over the miner's knowledge base, then one directory per
partition.

``read_knowledge_base(partition_key=k)`` streams the whole miner file to keep one source file's
records, so materialising P partitions would cost P full passes (a 1 GB Go JSON array parses at
~3k records/s). :func:`ensure_split` instead streams the file once through the canonical reader and
lets ``pyarrow.dataset.write_dataset`` fan the records out into one Parquet directory per partition
key; :meth:`~hasher_resources.knowledge_split.read.KnowledgeSplit.read_partition` then reads only
that directory.

Layout under ``cache_root`` (never inside the miner directory)::

    .lock                 flock'ed by builders, so one process builds while the others wait
    .digests.json         stat → content digest memo, so a hit does not re-hash a 1 GB file
    .tmp-XXXX/            a build in progress (or a crashed one, removed by the next builder)
    <fingerprint>/        a published split: report.json + data/<partition dir>/part-N.parquet

A split is published by renaming its finished temp directory, so ``<fingerprint>/`` exists only
complete. The fingerprint covers the cache format version, ``dims``, the canonical schema and the
content (blake2b) of every candidate file discovery looked at up to the one it used: a rejected
candidate that later becomes readable changes the answer, so it is part of the key.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from hasher_core.design import EMBEDDING_DIMS
from hasher_core.errors import (
    KnowledgeBaseNotFoundError,
    KnowledgeSplitError,
    KnowledgeSplitLockTimeoutError,
)
from hasher_core.knowledge import ReadReport, discovery_candidates, read_knowledge_base, safe_partition_key
from hasher_core.schemas import knowledge_base_schema

from ..files import DigestMemo, atomic_write_text, locked, publish, stat_key
from .read import DATA_NAME, SEQ_COLUMN, KnowledgeSplit

__all__ = ["CACHE_FORMAT_VERSION", "ensure_split"]

CACHE_FORMAT_VERSION = 2  # 2: source names in NFC, UTF-16/32 JSON read
DEFAULT_KEEP = 2
DEFAULT_LOCK_TIMEOUT_S = 1800.0
# The writer keeps one open file (and its row-group buffer) per partition; beyond this many it closes
# the least recently used one and later rows of that partition go to a new file.
MAX_OPEN_FILES = 64
# Input bytes handed to one write_dataset call; bounds what the writer can queue (see _write_slices).
WRITE_SLICE_BYTES = 128 << 20

_LOCK_NAME = ".lock"
_DIGESTS_NAME = ".digests.json"
_TMP_PREFIX = ".tmp-"
_REPORT_NAME = "report.json"
_PART_COLUMN = "_part"
_FINGERPRINT = re.compile(r"[0-9a-f]{32}")
_MAX_DIGESTS = 64


def _load_digests(cache_root: Path) -> DigestMemo:
    """The stat → digest memo of candidate files saved beside the splits (empty if unreadable)."""
    entries: dict = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads((cache_root / _DIGESTS_NAME).read_text())
        if isinstance(loaded, dict):
            entries = loaded
    return DigestMemo(entries)


def _save_digests(cache_root: Path, digests: DigestMemo) -> None:
    """Save the memo's newest entries; a memo that cannot be saved is only a missed shortcut."""
    if digests.changed:
        with contextlib.suppress(OSError):
            atomic_write_text(
                cache_root / _DIGESTS_NAME, json.dumps(digests.newest(_MAX_DIGESTS), sort_keys=True)
            )


def _partition_dir(key: str) -> str:
    # Keys are safe file names but may be 100 multi-byte characters (over NAME_MAX once encoded) or
    # contain '%' and '=', which the writer's segment encoding would reinterpret: a digest avoids all.
    return "p" + hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


class _Chain:
    """Fingerprints of the candidate prefixes: ``fingerprint(k)`` names the split read from candidate k."""

    def __init__(self, existing: list[Path], dims: int, digests: DigestMemo) -> None:
        self.existing = existing
        self.digests = digests
        self.stats: list[list[int]] = []
        self.prefixes: list[str] = []
        self._hash = hashlib.blake2b(digest_size=16)
        header = {"version": CACHE_FORMAT_VERSION, "dims": dims, "schema": str(knowledge_base_schema(dims))}
        self._hash.update(json.dumps(header, sort_keys=True).encode())

    def fingerprint(self, k: int) -> str:
        while len(self.prefixes) <= k:
            path = self.existing[len(self.prefixes)]
            stat = stat_key(path)
            digest = self.digests.digest(path)
            self.stats.append(stat)
            self._hash.update(f"\n{path}\0{stat[-1]}\0{digest}".encode("utf-8", "surrogatepass"))
            self.prefixes.append(self._hash.copy().hexdigest())
        return self.prefixes[k]

    def unchanged(self, upto: int) -> bool:
        return all(stat_key(self.existing[i]) == self.stats[i] for i in range(upto + 1))


def _load(cache_root: Path, fingerprint: str, source_path: Path) -> KnowledgeSplit | None:
    directory = cache_root / fingerprint
    try:
        report = json.loads((directory / _REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if report.get("format_version") != CACHE_FORMAT_VERSION or report.get("fingerprint") != fingerprint:
        return None
    return KnowledgeSplit(directory, fingerprint, source_path, str(report["format"]), report)


def _lookup(cache_root: Path, chain: _Chain) -> KnowledgeSplit | None:
    for k, path in enumerate(chain.existing):
        cache = _load(cache_root, chain.fingerprint(k), path)
        if cache is not None:
            return cache
    return None


def _split_batches(
    batches: Iterator[pa.RecordBatch],
    counts: collections.Counter[str],
    dirs: dict[str, str],
    sources: dict[str, list[str]],
    failure: list[BaseException],
) -> Iterator[pa.RecordBatch]:
    """Canonical batches plus the partition directory and sequence number of every row."""
    owners: dict[str, str] = {}
    seq = 0
    try:
        for batch in batches:
            encoded = pc.dictionary_encode(batch.column("source_file"))
            names = encoded.dictionary.to_pylist()
            codes = encoded.indices.to_numpy(zero_copy_only=False)
            keys = [safe_partition_key(n) for n in names]
            for name, key, rows in zip(names, keys, np.bincount(codes, minlength=len(names)), strict=True):
                counts[key] += int(rows)
                if key not in dirs:
                    directory = _partition_dir(key)
                    if owners.setdefault(directory, key) != key:
                        raise KnowledgeSplitError(
                            f"partition keys {owners[directory]!r} and {key!r} share directory {directory}"
                        )
                    dirs[key] = directory
                if name not in sources.setdefault(key, []):
                    sources[key].append(name)
            part = pa.array([dirs[k] for k in keys], pa.string()).take(encoded.indices)
            seq_column = pa.array(np.arange(seq, seq + batch.num_rows, dtype=np.int64))
            seq += batch.num_rows
            yield batch.append_column(_PART_COLUMN, part).append_column(SEQ_COLUMN, seq_column)
    except BaseException as exc:
        # The dataset writer re-raises generator errors wrapped; keep the original to raise it as is.
        failure.append(exc)
        raise


def _write_slices(
    batches: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    base_dir: Path,
    *,
    batch_rows: int,
    max_open_files: int,
    slice_bytes: int,
) -> int:
    """Fan ``batches`` out by ``_part`` with one ``write_dataset`` call per ``slice_bytes`` of input.

    The dataset writer only pushes back on its source beyond 64M queued rows, i.e. never for 3 KB
    rows: fed the whole file at once it buffers whatever the reader gets ahead by. Each call returns
    only when its slice is on disk, so at most one slice is in flight. Returns the number of calls.
    """
    calls = 0
    while (first := next(batches, None)) is not None:

        def piece(first: pa.RecordBatch = first) -> Iterator[pa.RecordBatch]:
            size, batch = 0, first
            while batch is not None:
                yield batch
                size += batch.nbytes
                if size >= slice_bytes:
                    return
                batch = next(batches, None)

        ds.write_dataset(
            pa.RecordBatchReader.from_batches(schema, piece()),
            base_dir,
            format="parquet",
            partitioning=ds.partitioning(pa.schema([pa.field(_PART_COLUMN, pa.string())])),
            # The call number first keeps every slice's files apart (and in order by name).
            basename_template=f"part-{calls:06d}-{{i}}.parquet",
            preserve_order=True,
            max_open_files=max_open_files,
            max_rows_per_group=batch_rows,
            existing_data_behavior="error" if calls == 0 else "overwrite_or_ignore",
        )
        calls += 1
    return calls


def _build(
    miner_dir: Path,
    cache_root: Path,
    chain: _Chain,
    explicit_path: Path | None,
    dims: int,
    batch_rows: int,
    max_open_files: int,
    slice_bytes: int,
) -> KnowledgeSplit:
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=cache_root))
    try:
        report = ReadReport()
        counts: collections.Counter[str] = collections.Counter()
        dirs: dict[str, str] = {}
        sources: dict[str, list[str]] = {}
        failure: list[BaseException] = []
        source = read_knowledge_base(
            miner_dir, explicit_path=explicit_path, dims=dims, batch_rows=batch_rows, report=report
        )
        schema = (
            knowledge_base_schema(dims)
            .append(pa.field(_PART_COLUMN, pa.string(), nullable=False))
            .append(pa.field(SEQ_COLUMN, pa.int64(), nullable=False))
        )
        try:
            _write_slices(
                _split_batches(source, counts, dirs, sources, failure),
                schema,
                tmp / DATA_NAME,
                batch_rows=batch_rows,
                max_open_files=max_open_files,
                slice_bytes=slice_bytes,
            )
        except BaseException:
            if failure:
                raise failure[0] from None
            raise
        if report.path_used is None:
            raise KnowledgeSplitError(f"{miner_dir}: the read ended without naming the file it used")
        used = chain.existing.index(report.path_used)
        fingerprint = chain.fingerprint(used)
        if not chain.unchanged(used):
            raise KnowledgeSplitError(f"{report.path_used}: changed while it was being split; try again")
        metadata = report.as_metadata()
        metadata.update(
            format_version=CACHE_FORMAT_VERSION,
            fingerprint=fingerprint,
            dims=dims,
            partitions=dict(sorted(counts.items())),
            partition_dirs=dict(sorted(dirs.items())),
            partition_sources=dict(sorted(sources.items())),
            built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        (tmp / _REPORT_NAME).write_text(json.dumps(metadata, indent=1, ensure_ascii=False), encoding="utf-8")
        target = cache_root / fingerprint
        if target.exists():
            # Only an incomplete leftover can be here: complete ones were found by the lookup under the lock.
            shutil.rmtree(target)
        os.utime(tmp)  # the newest split, for pruning (the rename keeps the time)
        publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return KnowledgeSplit(target, fingerprint, report.path_used, str(report.format), metadata, built=True)


def _remove_stale_temps(cache_root: Path) -> None:
    # Called under the lock: no build is running, so every temp directory is a crashed build's.
    for entry in cache_root.iterdir():
        if entry.name.startswith(_TMP_PREFIX) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _prune(cache_root: Path, keep: int, current: Path) -> list[Path]:
    """Delete complete splits beyond the ``keep`` most recently used; never ``current``."""
    splits = [
        entry
        for entry in cache_root.iterdir()
        if _FINGERPRINT.fullmatch(entry.name)
        and entry.is_dir()
        and not entry.is_symlink()
        and (entry / _REPORT_NAME).is_file()
    ]
    splits.sort(key=lambda p: (p != current, -p.stat().st_mtime_ns))
    removed = []
    for entry in splits[max(keep, 1) :]:
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def ensure_split(
    miner_dir: Path,
    cache_root: Path,
    *,
    explicit_path: Path | None = None,
    dims: int = EMBEDDING_DIMS,
    batch_rows: int = 8192,
    keep: int = DEFAULT_KEEP,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    max_open_files: int = MAX_OPEN_FILES,
    slice_bytes: int = WRITE_SLICE_BYTES,
) -> KnowledgeSplit:
    """The split of the knowledge base discovery would read, built (one streamed pass) if not cached.

    Finds the split by fingerprint without locking; otherwise takes ``cache_root/.lock`` (waiting up
    to ``lock_timeout_s``), looks again (another process may have just published it), streams
    :func:`read_knowledge_base` once into a temp directory and renames it into place. Afterwards only
    the ``keep`` most recently used splits are kept.

    Raises what :func:`read_knowledge_base` raises for an unreadable knowledge base,
    :class:`KnowledgeSplitLockTimeoutError`, or :class:`KnowledgeSplitError` (cache inside the miner
    directory, input changed while being split).
    """
    if min(batch_rows, keep, max_open_files, slice_bytes) <= 0:
        raise ValueError(
            "batch_rows, keep, max_open_files and slice_bytes must be positive "
            f"({batch_rows}, {keep}, {max_open_files}, {slice_bytes})"
        )
    cache_root = Path(cache_root).expanduser().resolve()
    candidates = discovery_candidates(miner_dir, explicit_path)
    if explicit_path is None and _is_within(cache_root, Path(miner_dir).expanduser().resolve()):
        raise KnowledgeSplitError(
            f"{cache_root}: the knowledge split must not live inside the miner directory"
        )
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        raise KnowledgeBaseNotFoundError(candidates)
    cache_root.mkdir(parents=True, exist_ok=True)
    digests = _load_digests(cache_root)
    chain = _Chain(existing, dims, digests)
    try:
        found = _lookup(cache_root, chain)
        if found is None:
            lock_path = cache_root / _LOCK_NAME
            busy = functools.partial(KnowledgeSplitLockTimeoutError, lock_path)
            with locked(lock_path, wait_s=lock_timeout_s, busy=busy):
                found = _lookup(cache_root, chain)
                if found is None:
                    _remove_stale_temps(cache_root)
                    found = _build(
                        miner_dir,
                        cache_root,
                        chain,
                        explicit_path,
                        dims,
                        batch_rows,
                        max_open_files,
                        slice_bytes,
                    )
                    _prune(cache_root, keep, found.path)
                    return found
        with contextlib.suppress(OSError):
            # Mark it recently used, so pruning keeps the split still in use.
            os.utime(found.path)
        return found
    finally:
        _save_digests(cache_root, digests)
