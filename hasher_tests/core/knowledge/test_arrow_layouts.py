"""Every Arrow/Parquet layout common writers produce reads to the same canonical records (DESIGN §2).

polars 1.x+ writes ``string_view`` text and ``large_list<double>`` embeddings to Arrow and
``large_string`` to Parquet; pandas and Spark dictionary-encode strings; NumPy-minded writers use
``fixed_size_list``; chunk ids arrive as int64, uint64 or integral float64; any column may be chunked.
Layout is not content: each of these must give exactly the records a plain pyarrow file gives.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .test_read import DIMS, PARQUET, arrow_table, read_all, records

GO_ARROW = "json/ai_knowledge_base.arrow"
Writer = Callable[[Path, list[dict[str, Any]]], None]


def polars_frame(recs: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "file_name": [r["file_name"] for r in recs],
            "chunk_id": [r["chunk_id"] for r in recs],
            "content": [r["content"] for r in recs],
            "embedding": [r["embedding"] for r in recs],
        }
    )


def with_columns(recs: list[dict[str, Any]], **columns: Callable[[pa.Array], pa.Array]) -> pa.Table:
    table = arrow_table(recs)
    for name, convert in columns.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, convert(table.column(name).combine_chunks()))
    return table


def arrow_file(path: Path, table: pa.Table, chunk_rows: int = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=chunk_rows):
            writer.write_batch(batch)


def embeddings_as(kind: Callable[[pa.DataType], pa.DataType], value: pa.DataType) -> Callable[..., pa.Array]:
    return lambda column: pa.array(column.to_pylist(), kind(value))


def polars_ipc(path: Path, recs: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    polars_frame(recs).write_ipc(path)


def polars_ipc_stream(path: Path, recs: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    polars_frame(recs).write_ipc_stream(path)


def polars_parquet(path: Path, recs: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    polars_frame(recs).write_parquet(path, row_group_size=4)


def pyarrow_file(**columns: Callable[[pa.Array], pa.Array]) -> Writer:
    return lambda path, recs: arrow_file(path, with_columns(recs, **columns))


def pyarrow_parquet(**columns: Callable[[pa.Array], pa.Array]) -> Writer:
    def write(path: Path, recs: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(with_columns(recs, **columns), path, row_group_size=4)

    return write


def as_dictionary(column: pa.Array) -> pa.Array:
    return column.dictionary_encode()


WRITERS: dict[str, tuple[str, Writer]] = {
    "polars write_ipc (string_view, large_list<double>)": (GO_ARROW, polars_ipc),
    "polars write_ipc_stream": (GO_ARROW, polars_ipc_stream),
    "polars write_parquet (large_string, large_list<double>)": (PARQUET, polars_parquet),
    "dictionary-encoded text (Arrow)": (
        GO_ARROW,
        pyarrow_file(file_name=as_dictionary, content=as_dictionary),
    ),
    "dictionary-encoded text (Parquet)": (PARQUET, pyarrow_parquet(file_name=as_dictionary)),
    "string_view text": (GO_ARROW, pyarrow_file(file_name=lambda c: c.cast(pa.string_view()))),
    "large_string text": (GO_ARROW, pyarrow_file(content=lambda c: c.cast(pa.large_string()))),
    "binary_view text": (GO_ARROW, pyarrow_file(content=lambda c: c.cast(pa.binary_view()))),
    "fixed_size_list<float32, 768>": (
        GO_ARROW,
        pyarrow_file(embedding=embeddings_as(lambda t: pa.list_(t, DIMS), pa.float32())),
    ),
    "fixed_size_list<float64, 768> (Parquet)": (
        PARQUET,
        pyarrow_parquet(embedding=embeddings_as(lambda t: pa.list_(t, DIMS), pa.float64())),
    ),
    "large_list<float64>": (GO_ARROW, pyarrow_file(embedding=embeddings_as(pa.large_list, pa.float64()))),
    "list<float64>": (GO_ARROW, pyarrow_file(embedding=embeddings_as(pa.list_, pa.float64()))),
    "uint64 chunk ids": (GO_ARROW, pyarrow_file(chunk_id=lambda c: c.cast(pa.uint64()))),
    "decimal(20, 0) chunk ids (Spark, Arrow)": (
        GO_ARROW,
        pyarrow_file(chunk_id=lambda c: c.cast(pa.decimal128(20, 0))),
    ),
    "integral float64 chunk ids": (PARQUET, pyarrow_parquet(chunk_id=lambda c: c.cast(pa.float64()))),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_common_layout_reads_to_the_same_records(tmp_path: Path, writer: str) -> None:
    recs = records(10)
    name, write = WRITERS[writer]
    (tmp_path / "plain").mkdir()
    pq.write_table(arrow_table(recs), tmp_path / "plain" / PARQUET)
    write(tmp_path / "layout" / name, recs)
    expected, _ = read_all(tmp_path / "plain")
    table, report = read_all(tmp_path / "layout")
    assert not report.skipped and not report.fallbacks, report.as_metadata()
    assert table.equals(expected)
    assert np.array_equal(
        table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, DIMS),
        np.array([r["embedding"] for r in recs], dtype=np.float32),
    )


def test_a_partition_of_a_dictionary_encoded_polars_file_reads_only_its_rows(tmp_path: Path) -> None:
    recs = records(12, names=("a.txt", "b.txt", "c.txt"))
    frame = polars_frame(recs).with_columns(pl.col("file_name").cast(pl.Categorical))
    (tmp_path / "json").mkdir()
    frame.write_ipc(tmp_path / GO_ARROW)
    table, report = read_all(tmp_path, partition_key="b.txt")
    assert table.column("source_file").to_pylist() == ["b.txt"] * 4
    assert table.column("chunk_id").to_pylist() == [0, 1, 2, 3]
    assert not report.skipped


def test_a_uint64_chunk_id_beyond_int64_is_out_of_range_not_a_crash(tmp_path: Path) -> None:
    recs = records(4)
    table = arrow_table(recs).set_column(1, "chunk_id", pa.array([0, 1, 2**64 - 1, 3], pa.uint64()))
    arrow_file(tmp_path / GO_ARROW, table)
    read, report = read_all(tmp_path)
    assert read.column("chunk_id").to_pylist() == [0, 1, 3]
    assert report.skipped == {"chunk_id_out_of_range": 1}
