"""A published split of the miner's knowledge base (see ``knowledge_split``), and reading one partition
of it back in the canonical schema and the original file order, a bounded batch at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hasher_core.errors import KnowledgeSplitError, PartitionNotFoundError
from hasher_core.schemas import knowledge_base_schema

#: Where a split keeps its Parquet files, and the column that records each row's place in the input.
DATA_NAME = "data"
SEQ_COLUMN = "_seq"


@dataclass(frozen=True)
class KnowledgeSplit:
    """A published split of one knowledge-base file: per-partition Parquet plus the read report."""

    path: Path
    fingerprint: str
    source_path: Path
    format: str
    report: dict[str, Any]
    # True when this call built the split, False when it found it already published.
    built: bool = False

    @property
    def dims(self) -> int:
        return int(self.report["dims"])

    def partitions(self) -> dict[str, int]:
        """Partition key → number of records, in key order."""
        return dict(self.report["partitions"])

    def read_partition(self, key: str, batch_rows: int = 8192) -> Iterator[pa.RecordBatch]:
        """The partition's records in canonical schema and original file order, ``batch_rows`` at a time.

        Raises :class:`PartitionNotFoundError` for a key the file has no record for.
        """
        if batch_rows <= 0:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        directory = self.report["partition_dirs"].get(key)
        if directory is None:
            raise PartitionNotFoundError(self.source_path, key)
        files = sorted((self.path / DATA_NAME / directory).glob("*.parquet"))
        if not files:
            raise KnowledgeSplitError(f"{self.path}: partition {key!r} has no data files; delete the cache")
        schema = knowledge_base_schema(self.dims)
        return _rebatch(ordered_tables(files), schema, batch_rows)


def ordered_tables(files: list[Path]) -> Iterator[pa.Table]:
    """The partition's row groups in sequence order, each sorted, without loading the partition whole.

    The writer preserves input order and keeps one open file per partition, so row groups cover
    disjoint ``_seq`` ranges; their statistics give the order. Should ranges ever overlap (another
    writer version), the partition is read whole and sorted instead.
    """
    groups = _row_group_ranges(files)
    groups.sort(key=lambda g: g[0])
    disjoint = bool(groups) and all(a[1] < b[0] for a, b in itertools.pairwise(groups))
    if not disjoint:
        yield pa.concat_tables(pq.read_table(p) for p in files).sort_by(SEQ_COLUMN)
        return
    for _, _, parquet, i in groups:
        table = parquet.read_row_group(i)
        seq = table.column(SEQ_COLUMN).to_numpy()
        if len(seq) > 1 and not (np.diff(seq) > 0).all():
            table = table.sort_by(SEQ_COLUMN)
        yield table


def _row_group_ranges(files: list[Path]) -> list[tuple[int, int, pq.ParquetFile, int]]:
    """(min _seq, max _seq, file, row group) of every row group; empty when any lacks statistics."""
    groups = []
    for path in files:
        parquet = pq.ParquetFile(path)
        seq_index = parquet.schema_arrow.get_field_index(SEQ_COLUMN)
        for i in range(parquet.metadata.num_row_groups):
            stats = parquet.metadata.row_group(i).column(seq_index).statistics
            if stats is None or not stats.has_min_max:
                return []
            groups.append((stats.min, stats.max, parquet, i))
    return groups


def _rebatch(tables: Iterator[pa.Table], schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    pending: list[pa.Table] = []
    pending_rows = 0
    for table in tables:
        table = table.drop_columns([SEQ_COLUMN])
        pending.append(table)
        pending_rows += table.num_rows
        while pending_rows >= batch_rows:
            joined = pa.concat_tables(pending)
            yield _canonical(joined.slice(0, batch_rows), schema)
            rest = joined.slice(batch_rows)
            pending, pending_rows = [rest], rest.num_rows
    if pending_rows:
        yield _canonical(pa.concat_tables(pending), schema)


def _canonical(table: pa.Table, schema: pa.Schema) -> pa.RecordBatch:
    columns = [table.column(f.name).combine_chunks().cast(f.type) for f in schema]
    return pa.RecordBatch.from_arrays(columns, schema=schema)
