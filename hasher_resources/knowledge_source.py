"""One partition's knowledge-base records (DESIGN §2): where they come from — the partition's inbox
file, read and embedded here, or the miner file's knowledge split — and the streamed Parquet file the
``knowledge_base`` asset stores them in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hasher_core.embedding import TextEmbedder
from hasher_core.errors import KnowledgeBaseError
from hasher_core.knowledge import ReadReport, SourceFingerprint, read_inbox_file
from hasher_core.schemas import knowledge_base_schema

from .knowledge_split import KnowledgeSplit, ensure_split
from .storage import HasherStorage, inbox_fingerprint

#: Records per batch the split is built with (its Parquet row groups).
SPLIT_BATCH_ROWS = 2048


@dataclass
class PartitionRecords:
    """The records of one partition, as a stream of canonical batches, and what reading found."""

    origin: str
    batches: Iterator[pa.RecordBatch]
    split: KnowledgeSplit | None = None
    inbox_report: ReadReport = field(default_factory=ReadReport)
    #: The inbox file's fingerprint (the digest of its bytes, as the sensor takes it); ``None`` for a
    #: miner source file, whose fingerprint is the records' (:class:`WrittenKnowledgeBase`).
    fingerprint: str | None = None

    def read_report(self) -> dict[str, Any]:
        """What reading the input found (complete once ``batches`` is exhausted); for the miner file
        it covers every source file in it."""
        return self.split.report if self.split is not None else self.inbox_report.as_metadata()

    def warnings(self) -> list[str]:
        """One line per fallback from an unreadable candidate and per reason records were skipped."""
        read = self.read_report()
        return [f"fell back from {fallback}" for fallback in read["fallbacks"]] + [
            f"{read['path_used']}: skipped {count} record(s): {reason}"
            for reason, count in read["skipped"].items()
        ]

    def empty_note(self) -> str:
        """The note for an inbox file that gave no chunk (empty, only whitespace or a BOM): the
        partition is materialised empty and says why, so later stages see a note, not a failure."""
        why = "; ".join(self.read_report()["problems"]) or f"{self.origin}: no words"
        return f"no chunks: {why}; the partition is empty and later stages have nothing to train"

    def nothing_usable(self, partition_key: str) -> KnowledgeBaseError:
        """The error for a miner source file none of whose records could be used: it is gone, not
        empty — materialising it empty would drop its trained seeds from the next deployment."""
        read = self.read_report()
        return KnowledgeBaseError(
            f"partition {partition_key!r}: no usable records for this source file in {self.origin} "
            f"(file used: {read['path_used']}; skipped: {read['skipped'] or 'none'})"
        )


def partition_records(
    storage: HasherStorage,
    partition_key: str,
    embedder: TextEmbedder,
    *,
    input_path: str | None,
    dims: int,
    batch_rows: int,
    inbox: Mapping[str, Path] | None = None,
) -> PartitionRecords:
    """The records of ``partition_key``: its inbox file when it has one (and no ``input_path`` names a
    file under the miner directory), else its source file's records from the miner file, split once
    per content fingerprint so P partitions of one big JSON array cost one parse, not P. ``inbox`` is
    a listing of the inbox (``HasherStorage.inbox_files``) a run over many partitions makes once.

    Raises what reading the knowledge base raises (:class:`KnowledgeBaseError` and its family)."""
    inbox = storage.inbox_files() if inbox is None else inbox
    if partition_key in inbox and input_path is None:
        report = ReadReport()
        batches = read_inbox_file(inbox[partition_key], embedder, dims=dims, report=report)
        return PartitionRecords(
            f"inbox file {inbox[partition_key]}",
            batches,
            inbox_report=report,
            fingerprint=inbox_fingerprint(inbox[partition_key]),
        )
    split = ensure_split(
        storage.miner_path,
        storage.stage_dir("knowledge_split"),
        explicit_path=None if input_path is None else storage.miner_path / input_path,
        dims=dims,
        batch_rows=SPLIT_BATCH_ROWS,
    )
    return PartitionRecords(
        f"miner directory {storage.miner_path}", split.read_partition(partition_key, batch_rows), split=split
    )


@dataclass(frozen=True)
class WrittenKnowledgeBase:
    """What :func:`write_knowledge_base` wrote: rows, bytes of content, the first batch, and the
    records' :class:`~hasher_core.knowledge.SourceFingerprint` (hex, what the sensor compares)."""

    path: Path
    rows: int
    content_bytes: int
    first: pa.Table | None
    fingerprint: str


def write_knowledge_base(
    batches: Iterator[pa.RecordBatch],
    path: Path,
    dims: int,
    progress: Callable[[int], None],
    source_file: str,
) -> WrittenKnowledgeBase:
    """Stream ``batches`` into ``path`` (zstd Parquet, the canonical schema of ``dims``), calling
    ``progress(rows so far)`` after each batch, and fingerprint the records as ``source_file``'s. On
    any exception the partial file is removed and the exception propagates."""
    schema = knowledge_base_schema(dims)
    fingerprint = SourceFingerprint(source_file)
    rows = content_bytes = 0
    first: pa.Table | None = None
    try:
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for batch in batches:
                table = pa.Table.from_batches([batch]).cast(schema)
                writer.write_table(table)
                fingerprint.update_table(table)
                rows += table.num_rows
                content_bytes += pc.sum(pc.binary_length(table.column("content"))).as_py() or 0
                if first is None:
                    first = table
                progress(rows)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return WrittenKnowledgeBase(path, rows, content_bytes, first, fingerprint.hexdigest())
