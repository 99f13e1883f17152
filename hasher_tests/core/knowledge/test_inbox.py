"""The raw-text inbox (chunking, files, reading) and the sample-data writer (DESIGN §2 Raw text)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import PrivateAttr

from hasher_core.errors import KnowledgeBaseError, KnowledgeBaseFormatError
from hasher_core.knowledge import (
    ReadReport,
    chunk_words,
    read_inbox_file,
    read_knowledge_base,
    safe_partition_key,
)
from hasher_core.schemas import KNOWLEDGE_BASE_SCHEMA
from hasher_resources.embedder import HashingEmbedder
from hasher_resources.sample_writer import write_sample_knowledge_base
from hasher_resources.storage import inbox_files


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_chunks_are_150_words_with_25_overlap() -> None:
    chunks = chunk_words(words(400))
    assert [c.split()[0] for c in chunks] == ["w0", "w125", "w250"]
    assert [len(c.split()) for c in chunks] == [150, 150, 150]
    assert chunks[0].split()[-25:] == chunks[1].split()[:25]


def test_a_tail_under_10_words_is_dropped_and_no_chunk_is_only_overlap() -> None:
    assert len(chunk_words(words(150))) == 1
    assert [len(c.split()) for c in chunk_words(words(134))] == [134]
    assert chunk_words(words(9)) == []
    assert chunk_words("  \n\t ") == []


def test_chunking_splits_on_any_whitespace() -> None:
    assert chunk_words("a\tb\nc  d\u00a0e f g h i j") == ["a b c d e f g h i j"]


def test_bad_chunk_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="overlap < size"):
        chunk_words("a b", size=10, overlap=10)


@given(st.integers(0, 700), st.integers(11, 200), st.data())
def test_every_word_lands_in_a_chunk_in_order(n: int, size: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, size - 1))
    text = words(n)
    chunks = chunk_words(text, size=size, overlap=overlap, min_words=1)
    covered = set()
    for chunk in chunks:
        ids = [int(w[1:]) for w in chunk.split()]
        assert ids == list(range(ids[0], ids[0] + len(ids))) and len(ids) <= size
        covered.update(ids)
    assert covered == set(range(n))


def test_inbox_lists_text_and_markdown_files_by_key(tmp_path: Path) -> None:
    for name in ["a.txt", "notes.MD", "image.png", ".hidden.txt", "x...y.txt"]:
        (tmp_path / name).write_text(words(20))
    (tmp_path / "dir.txt").mkdir()
    files = inbox_files(tmp_path)
    assert files == {
        "a.txt": tmp_path / "a.txt",
        "notes.MD": tmp_path / "notes.MD",
        safe_partition_key("x...y.txt"): tmp_path / "x...y.txt",
    }
    assert inbox_files(tmp_path / "missing") == {}


def test_an_inbox_file_becomes_canonical_embedded_chunks(tmp_path: Path) -> None:
    path = tmp_path / "essay.md"
    path.write_text("\ufeff" + words(300), encoding="utf-8")
    report = ReadReport()
    table = pa.Table.from_batches(list(read_inbox_file(path, HashingEmbedder(), report=report, batch_rows=2)))
    assert table.schema == KNOWLEDGE_BASE_SCHEMA
    assert table.column("source_file").to_pylist() == ["essay.md"] * 3
    assert table.column("chunk_id").to_pylist() == [0, 1, 2]
    assert table.column("content").to_pylist() == chunk_words(words(300))
    expected = HashingEmbedder().embed(chunk_words(words(300)))
    assert np.array_equal(
        table.column("embedding").combine_chunks().flatten().to_numpy().reshape(3, 768), expected
    )
    assert report.records_kept == 3 and report.format == "text"


def test_a_non_utf8_inbox_file_names_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    data = (words(30) + " café").encode("latin-1")
    path.write_bytes(data)
    with pytest.raises(
        KnowledgeBaseFormatError, match=rf"latin1\.txt: not valid UTF-8 at byte offset {len(data) - 1}"
    ):
        list(read_inbox_file(path, HashingEmbedder()))
    assert path.read_bytes() == data


@pytest.mark.parametrize(
    ("text", "message"), [("", "empty file"), ("too short", "no chunk of at least 10 words")]
)
def test_an_inbox_file_without_chunks_is_an_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "short.txt"
    path.write_text(text)
    with pytest.raises(KnowledgeBaseFormatError, match=message):
        list(read_inbox_file(path, HashingEmbedder()))


class WrongShapeEmbedder:
    def embed(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), 5), dtype=np.float32)


def test_an_embedder_answering_the_wrong_shape_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(words(40))
    with pytest.raises(KnowledgeBaseError, match=r"shape \(1, 5\), expected \(1, 768\)"):
        list(read_inbox_file(path, WrongShapeEmbedder()))


def test_sample_parquet_and_go_json_read_back_identically(tmp_path: Path) -> None:
    documents = {"/data/docs/intro.pdf": words(320), "notes.txt": "Hash café ünïcode " * 20}
    paths = write_sample_knowledge_base(tmp_path, documents, HashingEmbedder())
    assert paths == {
        "parquet": tmp_path / "ai_knowledge_base.parquet",
        "json": tmp_path / "json/ai_knowledge_base.json",
    }
    assert '"FileName": "/data/docs/intro.pdf"' in paths["json"].read_text(encoding="utf-8")
    from_parquet = pa.Table.from_batches(list(read_knowledge_base(tmp_path)))
    from_json = pa.Table.from_batches(list(read_knowledge_base(tmp_path, explicit_path=paths["json"])))
    assert from_parquet.num_rows == 3 + 1
    assert from_parquet.equals(from_json)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "ai_knowledge_base.json",
        "ai_knowledge_base.parquet",
    ]


def test_reading_never_modifies_the_miner_directory(tmp_path: Path) -> None:
    write_sample_knowledge_base(tmp_path, {"a.txt": words(200)}, HashingEmbedder())

    def snapshot() -> dict[Path, tuple[str, int]]:
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        return {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in files}

    before = snapshot()
    list(read_knowledge_base(tmp_path))
    list(read_knowledge_base(tmp_path, explicit_path=tmp_path / "json/ai_knowledge_base.json"))
    assert snapshot() == before and len(before) == 2


class FailingEmbedder(HashingEmbedder):
    """An embedder whose server goes away after the first call."""

    _calls: int = PrivateAttr(default=0)

    def embed(self, texts: list[str]) -> np.ndarray:
        self._calls += 1
        if self._calls > 1:
            raise ConnectionError("connection refused")
        return super().embed(texts)


def test_an_embedder_failing_mid_file_names_the_file_and_the_chunks(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(words(1000))
    with pytest.raises(KnowledgeBaseError) as caught:
        list(read_inbox_file(path, FailingEmbedder(), batch_rows=3))
    assert str(caught.value) == f"{path}: embedding chunks 3..5 failed: ConnectionError: connection refused"
