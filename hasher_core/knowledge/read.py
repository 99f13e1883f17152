"""Reading a knowledge base (DESIGN §2): the first readable candidate, streamed and validated, and
the list of source files (partitions) with content fingerprints.

``read_knowledge_base`` picks the first readable candidate file, detects its format by content,
streams it in record batches, validates every record (skips counted per reason in a
:class:`~hasher_core.knowledge.validate.ReadReport`), drops duplicate ``(source_file, chunk_id)``
pairs and yields batches of the canonical schema. ``list_source_files`` streams the same records to
tell the sensor which partitions exist and which changed. Input files are only ever read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from hasher_core.design import EMBEDDING_DIMS
from hasher_core.errors import (
    AllRecordsInvalidError,
    KnowledgeBaseError,
    KnowledgeBaseFormatError,
    KnowledgeBaseNotFoundError,
    NoReadableKnowledgeBaseError,
    PartitionNotFoundError,
)

from .formats import (
    Format,
    detect_format,
    discovery_candidates,
    iter_arrow_file,
    iter_arrow_stream,
    iter_json_array,
    iter_json_stream,
    iter_jsonl,
    iter_parquet,
)
from .keys import safe_partition_key
from .report import ReadReport
from .validate import Validator, groups

JSON_PIECE_RECORDS = 1024
JSON_READERS = {"json_array": iter_json_array, "jsonl": iter_jsonl, "json_stream": iter_json_stream}


@dataclass(frozen=True)
class SourceFileInfo:
    """One source file of the knowledge base, i.e. one dynamic partition."""

    partition_key: str
    source_file: str
    chunks: int
    # blake2b over (chunk_id, content, embedding bytes) of its valid records, in file order.
    fingerprint: str


def _read_file(
    path: Path, fmt: Format, validator: Validator, batch_rows: int, report: ReadReport
) -> Iterator[pa.RecordBatch]:
    if fmt in JSON_READERS:
        # Decoded JSON costs ~32 bytes per float, so records are validated in small pieces and the
        # compact canonical batches gathered up to batch_rows.
        pieces = JSON_READERS[fmt](path, min(batch_rows, JSON_PIECE_RECORDS), report)
        label = "line" if fmt == "jsonl" else "record"
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for records, positions in pieces:
            batch = validator.from_records(records, positions, label)
            if batch is None:
                continue
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= batch_rows:
                yield pa.concat_batches(pending)
                pending, pending_rows = [], 0
        if pending:
            yield pa.concat_batches(pending)
        return
    if fmt == "parquet":
        batches = iter_parquet(path, batch_rows, validator.partition_key)
    elif fmt == "arrow_file":
        batches = iter_arrow_file(path, batch_rows)
    else:
        batches = iter_arrow_stream(path, batch_rows, report)
    for raw, columns, position in batches:
        batch = validator.from_arrow(raw, columns, position)
        if batch is not None:
            yield batch


def read_knowledge_base(
    miner_dir: Path,
    *,
    partition_key: str | None = None,
    explicit_path: Path | None = None,
    dims: int = EMBEDDING_DIMS,
    batch_rows: int = 8192,
    report: ReadReport | None = None,
) -> Iterator[pa.RecordBatch]:
    """Canonical batches of the knowledge base, or of one partition when ``partition_key`` is given.

    The first candidate of :func:`discovery_candidates` that exists and reads is used. A candidate
    that fails before any batch was yielded (bad magic, corrupt footer, missing columns, no records)
    is recorded in ``report.fallbacks`` and the next is tried. Damage found after batches were yielded
    cannot be undone by a fallback: a truncated JSON/Arrow-stream tail is counted as ``truncated`` and
    the records before it kept; any other failure raises :class:`KnowledgeBaseFormatError`.

    Raises :class:`KnowledgeBaseNotFoundError` (no candidate exists), :class:`NoReadableKnowledgeBaseError`
    (none reads), :class:`AllRecordsInvalidError` (every record skipped) or
    :class:`PartitionNotFoundError` (the file has no record for ``partition_key``).
    """
    report = report if report is not None else ReadReport()
    report.partition_key = partition_key
    candidates = discovery_candidates(miner_dir, explicit_path)
    report.searched = candidates
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        raise KnowledgeBaseNotFoundError(candidates)
    for path in existing:
        report.restart()
        report.path_used = path
        validator = Validator(path, dims, partition_key, report)
        yielded = False
        try:
            report.format = detect_format(path)
            for batch in _read_file(path, report.format, validator, batch_rows, report):
                yielded = True
                report.batches += 1
                report.records_kept += batch.num_rows
                yield batch
        except (KnowledgeBaseFormatError, pa.ArrowException, OSError) as exc:
            if yielded:
                raise KnowledgeBaseFormatError(
                    path, None, f"failed after {report.records_kept} records were produced: {exc}"
                ) from exc
            report.fallbacks.append((path, _short(exc)))
            continue
        if validator.records_in_file == 0 and report.records_skipped == 0:
            report.fallbacks.append((path, "contains no records"))
            continue
        if report.records_kept == 0:
            if report.records_seen == 0 and partition_key is not None:
                raise PartitionNotFoundError(path, partition_key)
            raise AllRecordsInvalidError(path, report.skipped, report.problems)
        return
    report.path_used = report.format = None
    raise NoReadableKnowledgeBaseError(candidates, report.fallbacks)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class SourceFingerprint:
    """blake2b over a source's records, fed group by group but independent of where batches split.

    Chunk ids, content lengths, content bytes and embedding bytes each go to their own stream, so
    concatenating groups gives the same digest as feeding records one at a time, and the lengths
    stream keeps contents from running into each other. The fingerprint of a miner source file in
    :func:`list_source_files` (what the sensor compares) and in the ``knowledge_base`` asset's
    metadata (what was trained) are both this, over the same canonical records in file order.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.chunks = 0
        self._streams = [hashlib.blake2b(digest_size=16) for _ in range(4)]

    def update(self, ids: np.ndarray, content: pa.Array, embeddings: np.ndarray) -> None:
        content = content.cast(pa.string())
        _validity, offsets_buffer, data = content.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[
            content.offset : content.offset + len(content) + 1
        ]
        ids_stream, lengths_stream, content_stream, embedding_stream = self._streams
        ids_stream.update(np.ascontiguousarray(ids, dtype="<i4").tobytes())
        lengths_stream.update(np.diff(offsets).astype("<i8").tobytes())
        content_stream.update(memoryview(data)[offsets[0] : offsets[-1]] if data is not None else b"")
        embedding_stream.update(np.ascontiguousarray(embeddings, dtype="<f4").tobytes())
        self.chunks += len(ids)

    def update_table(self, table: pa.Table | pa.RecordBatch) -> None:
        """Feed canonical knowledge-base rows (``chunk_id``, ``content``, ``embedding`` list<float32>)."""
        embedding = table.column("embedding")
        if isinstance(embedding, pa.ChunkedArray):
            embedding = embedding.combine_chunks()
        content = table.column("content")
        if isinstance(content, pa.ChunkedArray):
            content = content.combine_chunks()
        rows = len(table)
        values = embedding.flatten().to_numpy(zero_copy_only=False)
        self.update(
            table.column("chunk_id").to_numpy(), content, values.reshape(rows, -1) if rows else values
        )

    def hexdigest(self) -> str:
        return hashlib.blake2b(b"".join(h.digest() for h in self._streams), digest_size=16).hexdigest()


def list_source_files(
    miner_dir: Path,
    *,
    explicit_path: Path | None = None,
    dims: int = EMBEDDING_DIMS,
    report: ReadReport | None = None,
) -> dict[str, SourceFileInfo]:
    """Partition key → :class:`SourceFileInfo` for every source file, streaming the whole knowledge base.

    The fingerprint changes when any kept record of that source (chunk id, content or embedding)
    changes, so a sensor can re-run exactly the partitions whose input changed.
    """
    sources: dict[str, SourceFingerprint] = {}
    for batch in read_knowledge_base(miner_dir, explicit_path=explicit_path, dims=dims, report=report):
        ids = batch.column("chunk_id").to_numpy()
        content = batch.column("content")
        embeddings = batch.column("embedding").flatten().to_numpy().reshape(-1, dims)
        for name, rows in groups(batch.column("source_file")):
            key = safe_partition_key(name)
            source = sources.setdefault(key, SourceFingerprint(name))
            if source.name != name:
                raise KnowledgeBaseError(f"source files {source.name!r} and {name!r} share key {key!r}")
            source.update(ids[rows], content.take(pa.array(rows)), embeddings[rows])
    return {
        key: SourceFileInfo(key, source.name, source.chunks, source.hexdigest())
        for key, source in sorted(sources.items())
    }
