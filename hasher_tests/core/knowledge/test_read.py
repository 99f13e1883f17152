"""Reading Data Miner output (DESIGN §2): discovery, formats, fallbacks, bad records, partitions,
streaming."""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hasher_core.errors import (
    AllRecordsInvalidError,
    KnowledgeBaseFormatError,
    KnowledgeBaseNotFoundError,
    NoReadableKnowledgeBaseError,
    PartitionNotFoundError,
)
from hasher_core.knowledge import (
    ReadReport,
    detect_format,
    discovery_candidates,
    formats,
    list_source_files,
    read_knowledge_base,
    safe_partition_key,
)
from hasher_core.schemas import KNOWLEDGE_BASE_SCHEMA
from hasher_resources.files import default_inbox_dir, default_miner_dir

DIMS = 768
PARQUET = "ai_knowledge_base.parquet"
GO_JSON = "json/ai_knowledge_base.json"
GO_ARROW = "json/ai_knowledge_base.arrow"


def records(
    n: int, names: tuple[str, ...] = ("/data/docs/a.pdf", "b.txt"), seed: int = 0
) -> list[dict[str, Any]]:
    """n valid snake_case records spread over ``names``; chunk ids count up per name."""
    rng = np.random.default_rng(seed)
    counters = dict.fromkeys(names, 0)
    out = []
    for i in range(n):
        name = names[i % len(names)]
        out.append(
            {
                "file_name": name,
                "chunk_id": counters[name],
                "content": f"chunk {i} of {name}: " + "word " * 20,
                "embedding": rng.standard_normal(DIMS).astype(np.float32).tolist(),
            }
        )
        counters[name] += 1
    return out


def go_names(record: dict[str, Any]) -> dict[str, Any]:
    renamed = {"file_name": "FileName", "chunk_id": "ChunkID", "content": "Content", "embedding": "Embedding"}
    return {renamed.get(k, k): v for k, v in record.items()}


def arrow_table(recs: list[dict[str, Any]]) -> pa.Table:
    return pa.table(
        {
            "file_name": [r["file_name"] for r in recs],
            "chunk_id": pa.array([r["chunk_id"] for r in recs], pa.int32()),
            "content": [r["content"] for r in recs],
            "embedding": pa.array([r["embedding"] for r in recs], pa.list_(pa.float32())),
        }
    )


def write(path: Path, fmt: str, recs: list[dict[str, Any]], go: bool = False, indent: int | None = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(arrow_table(recs), path, row_group_size=max(1, len(recs) // 3))
    elif fmt in ("arrow_file", "arrow_stream"):
        table = arrow_table(recs)
        opener = pa.ipc.new_file if fmt == "arrow_file" else pa.ipc.new_stream
        with pa.OSFile(str(path), "wb") as sink, opener(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=max(1, len(recs) // 3)):
                writer.write_batch(batch)
    elif fmt == "json_array":
        path.write_text(json.dumps([go_names(r) if go else r for r in recs], indent=indent))
    else:
        path.write_text("".join(json.dumps(go_names(r) if go else r) + "\n" for r in recs))
    return path


def read_all(miner_dir: Path, **kwargs: Any) -> tuple[pa.Table, ReadReport]:
    report = ReadReport()
    batches = list(read_knowledge_base(miner_dir, report=report, **kwargs))
    return pa.Table.from_batches(batches, schema=KNOWLEDGE_BASE_SCHEMA), report


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_discovery_order_is_the_design_order(tmp_path: Path) -> None:
    assert discovery_candidates(tmp_path) == [
        tmp_path / "ai_knowledge_base.parquet",
        tmp_path / "backup/json/ai_knowledge_base.json",
        tmp_path / "json/ai_knowledge_base.json",
        tmp_path / "json/ai_knowledge_base.arrow",
    ]


def test_an_explicit_path_overrides_discovery(tmp_path: Path) -> None:
    write(tmp_path / PARQUET, "parquet", records(3))
    explicit = write(tmp_path / "elsewhere.jsonl", "jsonl", records(5))
    assert discovery_candidates(tmp_path, explicit) == [explicit]
    table, report = read_all(tmp_path, explicit_path=explicit)
    assert report.path_used == explicit and table.num_rows == 5


@pytest.mark.parametrize("fmt", ["parquet", "arrow_file", "arrow_stream", "json_array", "jsonl"])
def test_format_is_detected_by_content_not_extension(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path / "misnamed.bin", fmt, records(4))
    assert detect_format(path) == fmt


def test_unknown_content_is_a_format_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b"GARBAGE!")
    with pytest.raises(KnowledgeBaseFormatError, match=r"x\.json.*unrecognised content.*47 41 52"):
        detect_format(path)


@pytest.mark.parametrize(
    ("fmt", "go"),
    [
        ("parquet", False),
        ("arrow_file", False),
        ("arrow_stream", False),
        ("json_array", True),
        ("jsonl", False),
    ],
)
def test_every_format_reads_to_the_same_canonical_records(tmp_path: Path, fmt: str, go: bool) -> None:
    recs = records(10)
    write(tmp_path / "json" / "ai_knowledge_base.json", fmt, recs, go=go)
    table, report = read_all(tmp_path)
    assert table.schema == KNOWLEDGE_BASE_SCHEMA
    assert report.format == fmt and report.records_kept == 10 and not report.skipped
    assert table.column("source_file").to_pylist() == [r["file_name"] for r in recs]
    assert table.column("chunk_id").to_pylist() == [r["chunk_id"] for r in recs]
    assert table.column("content").to_pylist() == [r["content"] for r in recs]
    expected = np.array([r["embedding"] for r in recs], dtype=np.float32)
    assert np.array_equal(
        table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, DIMS), expected
    )


def test_alpaca_extras_are_kept_and_unknown_columns_ignored(tmp_path: Path) -> None:
    recs = records(3)
    for r in recs:
        r.update(instruction="Solve.", input="1+1", output="2", pos_tags=[1, 2], tokens=["a"])
    write(tmp_path / GO_JSON, "jsonl", recs)
    table, _ = read_all(tmp_path)
    assert table.column("instruction").to_pylist() == ["Solve."] * 3
    assert table.column("output").to_pylist() == ["2"] * 3
    assert "pos_tags" not in table.column_names


def test_empty_miner_directory_names_every_path_searched(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseNotFoundError) as caught:
        list(read_knowledge_base(tmp_path))
    for candidate in discovery_candidates(tmp_path):
        assert str(candidate) in str(caught.value)
    assert "HASHER_MINER_DIR" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_unreadable_parquet_falls_back_and_says_why(tmp_path: Path, damage: str) -> None:
    parquet = write(tmp_path / PARQUET, "parquet", records(6))
    data = parquet.read_bytes()
    if damage == "truncated":
        parquet.write_bytes(data[: len(data) // 2])
    else:
        parquet.write_bytes(data[:-12] + b"\xff" * 8 + data[-4:])  # footer length and metadata destroyed
    fallback = write(tmp_path / GO_JSON, "json_array", records(4), go=True)
    before = {p: digest(p) for p in (parquet, fallback)}
    table, report = read_all(tmp_path)
    assert report.path_used == fallback and table.num_rows == 4
    assert [p for p, _ in report.fallbacks] == [parquet]
    assert report.fallbacks[0][1]  # the reason is stated
    assert f"{parquet}:" in report.as_metadata()["fallbacks"][0]
    assert {p: digest(p) for p in before} == before


def test_corrupt_parquet_page_is_caught_by_its_checksum(tmp_path: Path) -> None:
    parquet = tmp_path / PARQUET
    pq.write_table(arrow_table(records(6)), parquet, write_page_checksum=True, compression="none")
    data = bytearray(parquet.read_bytes())
    data[200] ^= 0xFF  # inside the first data page
    parquet.write_bytes(bytes(data))
    write(tmp_path / GO_ARROW, "arrow_stream", records(2))
    table, report = read_all(tmp_path)
    assert report.format == "arrow_stream" and table.num_rows == 2
    assert report.fallbacks[0][0] == parquet


def test_when_no_candidate_reads_the_error_lists_each_reason(tmp_path: Path) -> None:
    (tmp_path / PARQUET).write_bytes(b"PAR1 not really")
    (tmp_path / "json").mkdir()
    (tmp_path / GO_JSON).write_text("null")
    with pytest.raises(NoReadableKnowledgeBaseError) as caught:
        list(read_knowledge_base(tmp_path))
    message = str(caught.value)
    assert f"{tmp_path / PARQUET}:" in message and f"{tmp_path / GO_JSON}: " in message
    assert "JSON null" in message


def test_truncated_json_array_keeps_the_records_before_the_break(tmp_path: Path) -> None:
    path = write(tmp_path / GO_JSON, "json_array", records(5), go=True)
    text = path.read_text()
    path.write_text(text[: text.index('"Content"', text.index('"ChunkID": 2'))])
    before = digest(path)
    table, report = read_all(tmp_path)
    assert table.num_rows == 4
    assert report.skipped == {"truncated": 1}
    assert report.problems[0].startswith(f"{path}: record 4")
    assert digest(path) == before


def test_truncated_jsonl_keeps_complete_lines(tmp_path: Path) -> None:
    path = write(tmp_path / GO_JSON, "jsonl", records(5))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    table, report = read_all(tmp_path)
    assert table.num_rows == 4
    assert report.skipped == {"truncated": 1}
    assert "line 5" in report.problems[0]


def test_a_malformed_record_mid_array_is_skipped_and_reading_resumes(tmp_path: Path) -> None:
    recs = records(3)
    good = [json.dumps(r) for r in recs]
    path = tmp_path / GO_JSON
    path.parent.mkdir()
    path.write_text(f'[{good[0]}, {{"file_name": "b.txt", chunk_id: oops}}, {good[1]}, {good[2]}]')
    table, report = read_all(tmp_path)
    assert table.column("content").to_pylist() == [r["content"] for r in recs]
    assert report.skipped == {"malformed_json": 1}
    assert "record 1" in report.problems[0]


def test_a_malformed_jsonl_line_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / GO_JSON, "jsonl", records(3))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "{not json}\n" + "".join(lines[1:]))
    table, report = read_all(tmp_path)
    assert table.num_rows == 3 and report.skipped == {"malformed_json": 1}
    assert "line 2" in report.problems[0]


def bad_record_cases() -> list[tuple[str, dict[str, Any], str]]:
    return [
        ("wrong embedding length", {"embedding": [0.5] * 767}, "embedding_length"),
        ("NaN in embedding", {"embedding": [math.nan] + [0.0] * 767}, "embedding_not_finite"),
        ("inf in embedding", {"embedding": [0.0] * 767 + [math.inf]}, "embedding_not_finite"),
        ("float32 overflow", {"embedding": [1e39] + [0.0] * 767}, "embedding_not_finite"),
        ("text in embedding", {"embedding": ["x"] * 768}, "embedding_not_numeric"),
        ("missing embedding", {"embedding": None}, "missing_embedding"),
        ("empty content", {"content": "   \n"}, "empty_content"),
        ("missing content", {"content": None}, "missing_content"),
        ("non-integer chunk id", {"chunk_id": 1.5}, "chunk_id_not_integer"),
        ("string chunk id", {"chunk_id": "7"}, "chunk_id_not_integer"),
        ("negative chunk id", {"chunk_id": -1}, "chunk_id_out_of_range"),
        ("missing file name", {"file_name": None}, "missing_file_name"),
    ]


@pytest.mark.parametrize(
    ("label", "change", "reason"), bad_record_cases(), ids=[c[0] for c in bad_record_cases()]
)
@pytest.mark.parametrize("fmt", ["json_array", "jsonl"])
def test_a_bad_json_record_is_skipped_and_counted(
    tmp_path: Path, fmt: str, label: str, change: dict[str, Any], reason: str
) -> None:
    recs = records(4)
    recs[2] = {**recs[2], **change}
    path = write(tmp_path / GO_JSON, fmt, recs)
    before = digest(path)
    table, report = read_all(tmp_path)
    assert table.num_rows == 3
    assert report.skipped == {reason: 1}
    position = "record 2" if fmt == "json_array" else "line 3"
    assert report.problems[0].startswith(f"{path}: {position}: {reason}")
    assert digest(path) == before


def test_bad_rows_in_arrow_input_are_skipped_vectorised(tmp_path: Path) -> None:
    recs = records(6)
    recs[1]["embedding"] = recs[1]["embedding"][:10]
    recs[3]["embedding"][5] = math.nan
    recs[4]["content"] = ""
    write(tmp_path / PARQUET, "parquet", recs)
    table, report = read_all(tmp_path)
    assert table.num_rows == 3
    assert report.skipped == {"embedding_length": 1, "embedding_not_finite": 1, "empty_content": 1}
    assert f"{tmp_path / PARQUET}: record 1: embedding_length" in report.problems


def test_invalid_utf8_content_is_skipped_per_record(tmp_path: Path) -> None:
    path = write(tmp_path / GO_JSON, "jsonl", records(3))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"chunk 1", b"chunk \xff\xfe 1")
    path.write_bytes(b"".join(lines))
    table, report = read_all(tmp_path)
    assert table.num_rows == 2 and report.skipped == {"invalid_utf8": 1}


def test_invalid_utf8_in_an_arrow_stream_is_skipped_per_record(tmp_path: Path) -> None:
    recs = records(3)
    table = arrow_table(recs)
    content = pa.array([b"fine text here", b"bad \xff bytes", b"also fine"], pa.binary()).view(pa.string())
    table = table.set_column(2, "content", content)
    path = tmp_path / GO_ARROW
    path.parent.mkdir()
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    out, report = read_all(tmp_path)
    assert out.column("content").to_pylist() == ["fine text here", "also fine"]
    assert report.skipped == {"invalid_utf8": 1}


def test_duplicate_chunk_ids_keep_the_first(tmp_path: Path) -> None:
    recs = records(4, names=("a.txt",))
    dup = {**recs[1], "content": "a later copy of chunk 1 " * 3}
    write(tmp_path / PARQUET, "parquet", [*recs, dup])
    table, report = read_all(tmp_path, batch_rows=2)  # the duplicate arrives in a later batch
    assert table.num_rows == 4
    assert table.column("content").to_pylist() == [r["content"] for r in recs]
    assert report.duplicates == 1 and report.skipped == {"duplicate_chunk_id": 1}


def test_duplicates_within_one_batch_are_dropped_too(tmp_path: Path) -> None:
    recs = records(3, names=("a.txt",))
    write(tmp_path / GO_JSON, "json_array", [recs[0], recs[1], recs[1], recs[2], recs[0]])
    table, report = read_all(tmp_path)
    assert table.column("chunk_id").to_pylist() == [0, 1, 2]
    assert report.skipped == {"duplicate_chunk_id": 2}


def test_a_file_where_every_record_is_bad_names_the_file_and_problems(tmp_path: Path) -> None:
    recs = [{**r, "embedding": [1.0] * 3} for r in records(3)]
    path = write(tmp_path / GO_JSON, "jsonl", recs)
    with pytest.raises(AllRecordsInvalidError) as caught:
        list(read_knowledge_base(tmp_path))
    assert str(path) in str(caught.value) and "embedding_length=3" in str(caught.value)
    assert caught.value.skipped_counts == {"embedding_length": 3}
    assert "line 1" in caught.value.first_problems[0]


@pytest.mark.parametrize("unsafe", ["/data/docs/../a.pdf", "tab\tand\nnewline.pdf", "C:\\docs\\a.pdf"])
def test_a_partition_reads_only_its_source_file(tmp_path: Path, unsafe: str) -> None:
    write(tmp_path / PARQUET, "parquet", records(9, names=(unsafe, "b.txt", "c.md")))
    key = safe_partition_key(unsafe)
    assert key != unsafe and "/" not in key
    table, report = read_all(tmp_path, partition_key=key)
    assert set(table.column("source_file").to_pylist()) == {unsafe}
    assert table.num_rows == 3 and report.records_seen == 3


@pytest.mark.parametrize("fmt", ["json_array", "arrow_file"])
def test_a_partition_with_no_record_is_a_clear_error(tmp_path: Path, fmt: str) -> None:
    write(tmp_path / GO_JSON, fmt, records(3))
    with pytest.raises(PartitionNotFoundError, match=r"no record belongs to partition 'nope\.txt'"):
        list(read_knowledge_base(tmp_path, partition_key="nope.txt"))


def test_list_source_files_counts_chunks_and_fingerprints_content(tmp_path: Path) -> None:
    recs = records(6, names=("/data/docs/a.pdf", "b.txt"))
    write(tmp_path / PARQUET, "parquet", recs)
    first = list_source_files(tmp_path)
    assert set(first) == {safe_partition_key("/data/docs/a.pdf"), "b.txt"}
    assert first["b.txt"].source_file == "b.txt" and first["b.txt"].chunks == 3
    recs[1]["content"] = "changed text for b.txt " * 3
    write(tmp_path / PARQUET, "parquet", recs)
    second = list_source_files(tmp_path)
    assert second["b.txt"].fingerprint != first["b.txt"].fingerprint
    key_a = safe_partition_key("/data/docs/a.pdf")
    assert second[key_a].fingerprint == first[key_a].fingerprint


def test_reading_streams_in_bounded_batches(tmp_path: Path) -> None:
    write(tmp_path / GO_JSON, "json_array", records(50), go=True)
    sizes = [b.num_rows for b in read_knowledge_base(tmp_path, batch_rows=8)]
    assert sum(sizes) == 50 and max(sizes) <= 8 and len(sizes) == 7


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json_array", "parquet"])
def test_a_50_megabyte_record_is_read_whole(tmp_path: Path, fmt: str) -> None:
    recs = records(3)
    big = "x" * (50 * 2**20 - 1) + "y"
    recs[1]["content"] = big
    write(tmp_path / GO_JSON, fmt, recs, indent=None)
    table, report = read_all(tmp_path)
    assert report.records_kept == 3
    assert table.column("content")[1].as_py() == big


def test_fingerprints_do_not_depend_on_format_or_batching(tmp_path: Path) -> None:
    recs = records(40, names=("a.txt", "b.txt", "c.txt"))
    write(tmp_path / "p" / PARQUET, "parquet", recs)  # row groups of 13 rows split the sources
    write(tmp_path / "j" / GO_JSON, "jsonl", recs, go=True)
    assert list_source_files(tmp_path / "p") == list_source_files(tmp_path / "j")


def small_records(n: int, dims: int) -> list[dict[str, Any]]:
    return [
        {
            "file_name": f"doc{i % 7}.txt",
            "chunk_id": i,
            "content": f"{i} " + "lorem ipsum " * 80,
            "embedding": [0.5] * dims,
        }
        for i in range(n)
    ]


def test_parquet_is_read_with_bounded_arrow_memory(tmp_path: Path) -> None:
    recs = small_records(8000, dims=4)
    table = arrow_table(recs)
    pq.write_table(table, tmp_path / PARQUET, row_group_size=500, compression="none")
    file_bytes = (tmp_path / PARQUET).stat().st_size
    baseline = pa.total_allocated_bytes()
    held = []
    rows = 0
    for batch in read_knowledge_base(tmp_path, dims=4, batch_rows=250):
        rows += batch.num_rows
        held.append(pa.total_allocated_bytes() - baseline)
        del batch
    assert rows == 8000
    # What is held stays at about one row group's worth, however far into the file the reader is.
    assert max(held) < file_bytes / 4, (max(held), file_bytes)
    assert held[-1] <= held[1] * 1.2, held


def test_a_json_array_is_parsed_incrementally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "READ_CHUNK_BYTES", 64 << 10)
    path = tmp_path / GO_JSON
    path.parent.mkdir()
    path.write_text(json.dumps(small_records(4000, dims=4)))
    file_bytes = path.stat().st_size
    warm = tmp_path / "warm"
    write(warm / GO_JSON, "json_array", small_records(10, dims=4))
    list(read_knowledge_base(warm, dims=4))  # lazy imports and caches are not the reader's memory
    tracemalloc.start()
    try:
        rows = sum(batch.num_rows for batch in read_knowledge_base(tmp_path, dims=4, batch_rows=100))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 4000
    assert peak < file_bytes / 4, (peak, file_bytes)


def test_parquet_damage_found_after_batches_were_produced_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    parquet = tmp_path / PARQUET
    pq.write_table(
        arrow_table(records(8)), parquet, row_group_size=2, write_page_checksum=True, compression="none"
    )
    write(tmp_path / GO_JSON, "jsonl", records(3))
    last = pq.ParquetFile(parquet).metadata.row_group(3).column(3)  # the last group's embeddings
    data = bytearray(parquet.read_bytes())
    start = min(o for o in (last.dictionary_page_offset, last.data_page_offset) if o)
    data[start + last.total_compressed_size - 8] ^= 0xFF
    parquet.write_bytes(bytes(data))
    produced = 0
    with pytest.raises(KnowledgeBaseFormatError, match=rf"{PARQUET}: failed after 6 records were produced"):
        for batch in read_knowledge_base(tmp_path, batch_rows=2):
            produced += batch.num_rows
    assert produced == 6


def test_an_arrow_stream_cut_off_mid_batch_keeps_the_complete_batches(tmp_path: Path) -> None:
    path = write(tmp_path / GO_ARROW, "arrow_stream", records(9))  # three batches of three
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2000])
    table, report = read_all(tmp_path)
    assert table.num_rows == 6
    assert report.skipped == {"truncated": 1}
    assert "after record 5" in report.problems[0]


def test_the_miner_directory_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HASHER_MINER_DIR", str(tmp_path))
    monkeypatch.delenv("HASHER_INBOX_DIR", raising=False)
    assert default_miner_dir() == tmp_path
    assert default_inbox_dir() == tmp_path / "inbox"
    monkeypatch.delenv("HASHER_MINER_DIR")
    assert default_miner_dir() == Path.home() / ".local/share/dataminer"


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 12),
    separator=st.sampled_from([",", ", ", ",\n  ", " ,\t"]),
    read_chunk=st.sampled_from([1, 7, 64, 1 << 20]),
    cut_fraction=st.floats(0.0, 1.0),
)
def test_json_array_cut_anywhere_keeps_exactly_the_complete_records(
    count: int, separator: str, read_chunk: int, cut_fraction: float
) -> None:
    recs = small_records(count, dims=2)
    text, ends = "[\n  ", []
    for i, record in enumerate(recs):
        text += (separator if i else "") + json.dumps(record, ensure_ascii=False)
        ends.append(len(text.encode()))
    text += "\n]\n"
    data = text.encode()
    cut = max(1, round(cut_fraction * len(data)))
    complete = sum(end <= cut for end in ends)
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(formats, "READ_CHUNK_BYTES", read_chunk),
    ):
        path = Path(tmp) / "kb.json"
        path.write_bytes(data[:cut])
        report = ReadReport()
        if complete == 0:
            with pytest.raises(AllRecordsInvalidError, match="truncated=1"):
                list(read_knowledge_base(Path(tmp), explicit_path=path, dims=2, report=report))
            return
        rows = pa.Table.from_batches(
            list(read_knowledge_base(Path(tmp), explicit_path=path, dims=2, report=report))
        )
    assert rows.column("chunk_id").to_pylist() == list(range(complete))
    whole = data[:cut].rstrip() == data.rstrip()
    assert report.skipped == ({} if whole else {"truncated": 1})
