"""JSON input as real writers produce it (DESIGN §2): every parser failure is one skipped record, integral
float chunk ids follow one rule in every format, and concatenated pretty-printed objects are read."""

from __future__ import annotations

import codecs
import json
import unicodedata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hasher_core.errors import AllRecordsInvalidError, NoReadableKnowledgeBaseError
from hasher_core.knowledge import detect_format, list_source_files

from .test_read import GO_JSON, PARQUET, arrow_table, digest, go_names, read_all, records, write

BIG = "__BIG__"


def with_raw_value(path: Path, raw: str) -> None:
    """Put ``raw`` (JSON text no Python value serialises to) where the placeholder string is."""
    path.write_text(path.read_text().replace(json.dumps(BIG), raw, 1))


PARSER_FAILURES = {
    # int() refuses more than 4,300 digits: json raises ValueError, not JSONDecodeError.
    "5,000-digit integer in an extra field": ({"extra": BIG}, "1" * 5000, "malformed_json"),
    "5,000-digit chunk id": ({"chunk_id": BIG}, "7" * 5000, "malformed_json"),
    # 388 digits parse as a Python int that no float can hold: OverflowError when converted.
    "388-digit number in an embedding": (None, "9" * 388, "embedding_not_finite"),
    # Nesting deeper than the interpreter's stack: RecursionError.
    "200,000 nested arrays": ({"extra": BIG}, "[" * 200_000 + "]" * 200_000, "malformed_json"),
}


@pytest.mark.parametrize("case", list(PARSER_FAILURES))
@pytest.mark.parametrize("fmt", ["json_array", "jsonl", "json_stream"])
def test_a_value_the_parser_cannot_take_skips_only_its_record(tmp_path: Path, fmt: str, case: str) -> None:
    change, raw, reason = PARSER_FAILURES[case]
    recs = records(5)
    if change is None:
        recs[2]["embedding"] = [BIG, *recs[2]["embedding"][1:]]
    else:
        recs[2] = {**recs[2], **change}
    path = tmp_path / GO_JSON
    if fmt == "json_stream":
        path.parent.mkdir(parents=True)
        path.write_text(jq_stream(recs))
    else:
        write(path, fmt, recs, indent=None)
    with_raw_value(path, raw)
    before = digest(path)
    table, report = read_all(tmp_path)
    assert report.format == fmt
    assert table.column("content").to_pylist() == [r["content"] for i, r in enumerate(recs) if i != 2]
    assert report.records_kept == 4 and report.skipped == {reason: 1}
    assert str(path) in report.problems[0] and reason in report.problems[0]
    assert digest(path) == before


def float_chunk_ids(fmt: str, path: Path, ids: list[float]) -> None:
    recs = records(len(ids), names=("a.txt",))
    if fmt in ("json_array", "jsonl"):
        for r, chunk_id in zip(recs, ids, strict=True):
            r["chunk_id"] = chunk_id
        write(path, fmt, recs)
        return
    table = arrow_table(recs).set_column(1, "chunk_id", pa.array(ids, pa.float64()))
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)


@pytest.mark.parametrize("fmt", ["json_array", "jsonl", "parquet", "arrow_stream"])
def test_integral_float_chunk_ids_are_accepted_and_fractions_rejected_in_every_format(
    tmp_path: Path, fmt: str
) -> None:
    name = PARQUET if fmt == "parquet" else GO_JSON
    float_chunk_ids(fmt, tmp_path / name, [0.0, 1.0, 1.5, 2.0, 1e3])
    table, report = read_all(tmp_path)
    assert table.column("chunk_id").to_pylist() == [0, 1, 2, 1000]
    assert report.skipped == {"chunk_id_not_integer": 1}


def jq_stream(recs: list[dict[str, Any]]) -> str:
    """What ``jq '.[]' array.json`` writes: each object pretty-printed, one after another."""
    return "".join(json.dumps(r, indent=2) + "\n" for r in recs)


def test_concatenated_pretty_printed_objects_are_read_as_a_stream(tmp_path: Path) -> None:
    recs = records(7)
    path = tmp_path / GO_JSON
    path.parent.mkdir(parents=True)
    path.write_text(jq_stream(recs))
    assert detect_format(path) == "json_stream"
    table, report = read_all(tmp_path)
    assert report.records_kept == 7 and not report.skipped
    assert table.column("content").to_pylist() == [r["content"] for r in recs]


def test_objects_back_to_back_without_newlines_are_a_stream_too(tmp_path: Path) -> None:
    recs = records(3)
    path = tmp_path / GO_JSON
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r, indent=1) for r in recs))
    table, report = read_all(tmp_path)
    assert report.format == "json_stream" and table.num_rows == 3


def test_a_malformed_object_in_a_stream_is_skipped_and_reading_resumes(tmp_path: Path) -> None:
    recs = records(5)
    path = tmp_path / GO_JSON
    path.parent.mkdir(parents=True)
    text = jq_stream(recs)
    broken = json.dumps(recs[1], indent=2)
    path.write_text(text.replace(broken, broken.replace('"content":', '"content" ', 1)))
    table, report = read_all(tmp_path)
    assert table.num_rows == 4 and report.skipped == {"malformed_json": 1}
    assert "record 1" in report.problems[0]


def test_a_stream_cut_off_mid_object_keeps_the_objects_before(tmp_path: Path) -> None:
    path = tmp_path / GO_JSON
    path.parent.mkdir(parents=True)
    text = jq_stream(records(4))
    path.write_text(text[: len(text) - 200])
    table, report = read_all(tmp_path)
    assert table.num_rows == 3 and report.skipped == {"truncated": 1}


def test_one_object_per_line_is_still_json_lines(tmp_path: Path) -> None:
    path = write(tmp_path / GO_JSON, "jsonl", records(3))
    assert detect_format(path) == "jsonl"


UNICODE_FORMS = {
    "utf-8": b"",
    "utf-8+bom": codecs.BOM_UTF8,
    "utf-16-le": b"",
    "utf-16-le+bom": codecs.BOM_UTF16_LE,  # Windows PowerShell 5.1's Out-File
    "utf-16-be": b"",
    "utf-16-be+bom": codecs.BOM_UTF16_BE,
    "utf-32-le": b"",
    "utf-32-le+bom": codecs.BOM_UTF32_LE,
    "utf-32-be": b"",
    "utf-32-be+bom": codecs.BOM_UTF32_BE,
}


def json_text(fmt: str, recs: list[dict[str, Any]]) -> str:
    if fmt == "json_array":
        return json.dumps([go_names(r) for r in recs], indent=1, ensure_ascii=False)
    if fmt == "json_stream":
        return "".join(json.dumps(r, indent=2, ensure_ascii=False) + "\n" for r in recs)
    return "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in recs)  # CRLF, as Windows writes


@pytest.mark.parametrize("form", list(UNICODE_FORMS))
@pytest.mark.parametrize("fmt", ["json_array", "jsonl", "json_stream"])
def test_miner_json_in_every_unicode_form_reads_the_same_records(tmp_path: Path, fmt: str, form: str) -> None:
    recs = records(6, names=("résumé.pdf", "中文.txt"))
    for i, r in enumerate(recs):
        r["content"] = f"chunk {i}: café, 中文, 😀 " + "word " * 10
    codec = form.removesuffix("+bom")
    path = tmp_path / GO_JSON
    path.parent.mkdir(parents=True)
    path.write_bytes(UNICODE_FORMS[form] + json_text(fmt, recs).encode(codec))
    before = digest(path)
    table, report = read_all(tmp_path)
    assert (report.format, report.skipped) == (fmt, {})
    assert table.column("content").to_pylist() == [r["content"] for r in recs]
    assert table.column("source_file").to_pylist() == [r["file_name"] for r in recs]
    assert report.encoding == codec.upper().replace("-LE", "LE").replace("-BE", "BE") + (
        " with BOM" if form.endswith("+bom") else ""
    )
    assert digest(path) == before


@pytest.mark.parametrize("fmt", ["json_array", "jsonl", "json_stream"])
def test_a_cp1252_miner_json_skips_each_record_with_a_non_ascii_byte_naming_it(
    tmp_path: Path, fmt: str
) -> None:
    recs = records(4)
    recs[1]["content"] = "naïve “quotes” " + "word " * 10
    path = tmp_path / GO_JSON
    path.parent.mkdir(parents=True)
    path.write_bytes(json_text(fmt, recs).encode("cp1252"))
    table, report = read_all(tmp_path)
    assert report.skipped == {"invalid_utf8": 1} and table.num_rows == 3
    (problem,) = report.problems
    assert "content is not valid UTF-8 text (byte 0xef at character 2, after 'na')" in problem
    assert "legacy code pages such as Windows-1252 are not read" in problem


def test_a_miner_json_that_is_all_cp1252_is_an_error_naming_the_file_and_the_byte(tmp_path: Path) -> None:
    recs = records(3)
    for r in recs:
        r["file_name"] = "café.txt"
    path = tmp_path / GO_JSON
    path.parent.mkdir(parents=True)
    path.write_bytes(json_text("json_array", recs).encode("latin-1"))
    with pytest.raises(AllRecordsInvalidError) as caught:
        read_all(tmp_path)
    assert str(path) in str(caught.value) and "file_name is not valid UTF-8 text (byte 0xe9" in str(
        caught.value
    )


def test_a_json_file_in_no_unicode_form_is_a_format_error_saying_what_it_was_read_as(tmp_path: Path) -> None:
    path = tmp_path / GO_JSON
    path.parent.mkdir(parents=True)
    path.write_bytes("«".encode("cp1252") + b"[]")
    with pytest.raises(NoReadableKnowledgeBaseError) as caught:
        read_all(tmp_path)
    assert "not valid UTF-8: byte 0xab at offset 0" in str(caught.value)


@pytest.mark.parametrize("fmt", ["json_array", "parquet", "arrow_stream"])
def test_nfd_and_nfc_file_names_are_one_source_file_in_nfc(tmp_path: Path, fmt: str) -> None:
    nfc = "résumé notes.txt"
    recs = records(4, names=(unicodedata.normalize("NFD", nfc), nfc))  # chunk ids 0, 0, 1, 1
    path = write(tmp_path / (PARQUET if fmt == "parquet" else GO_JSON), fmt, recs)
    table, report = read_all(tmp_path, explicit_path=path)
    assert set(table.column("source_file").to_pylist()) == {nfc}
    assert table.column("chunk_id").to_pylist() == [0, 1]  # the second spelling's copies are duplicates
    assert report.skipped == {"duplicate_chunk_id": 2}
    assert list(list_source_files(tmp_path, explicit_path=path)) == [nfc]
