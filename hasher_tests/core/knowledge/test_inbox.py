"""The raw-text inbox (chunking, files, reading) and the sample-data writer (DESIGN §2 Raw text)."""

from __future__ import annotations

import base64
import codecs
import hashlib
import itertools
import os
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import regex
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
from hasher_core.knowledge.inbox import NO_SPACE_SCRIPTS, split_words
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


def test_a_short_text_gives_one_chunk_and_no_chunk_is_only_overlap() -> None:
    assert len(chunk_words(words(150))) == 1
    assert [len(c.split()) for c in chunk_words(words(134))] == [134]
    assert chunk_words(words(9)) == [words(9)]
    assert chunk_words("Hello") == ["Hello"]
    assert chunk_words("  \n\t ") == []
    # With other sizes a tail under min_words after a full window is still dropped.
    assert chunk_words(words(11), size=10, overlap=0) == [words(10)]


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
        KnowledgeBaseFormatError, match=rf"latin1\.txt: not valid UTF-8: byte 0xe9 at offset {len(data) - 1}"
    ):
        list(read_inbox_file(path, HashingEmbedder()))
    assert path.read_bytes() == data


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty file"),
        (b"  \n\t \r\n", "no words (only whitespace)"),
        (codecs.BOM_UTF8, "no words (only whitespace)"),
        (codecs.BOM_UTF16_LE + " \n".encode("utf-16-le"), "no words (only whitespace)"),
    ],
)
def test_an_inbox_file_without_words_gives_no_chunk_and_says_why(
    tmp_path: Path, data: bytes, why: str
) -> None:
    path = tmp_path / "blank.txt"
    path.write_bytes(data)
    report = ReadReport()
    assert list(read_inbox_file(path, HashingEmbedder(), report=report)) == []
    assert report.problems == [f"{path}: {why}"] and report.records_kept == 0


def test_a_file_of_one_word_is_one_chunk(tmp_path: Path) -> None:
    path = tmp_path / "greeting.txt"
    path.write_text("Hello\n")
    (batch,) = read_inbox_file(path, HashingEmbedder())
    assert batch.column("content").to_pylist() == ["Hello"]


TEXT = "The river carries fine sand — café, naïve, 中文, ελληνικά, 😀.\nA second line.\n"
UNICODE_FORMS = [
    ("utf-8", b""),
    ("utf-8", codecs.BOM_UTF8),
    ("utf-16-le", b""),
    ("utf-16-le", codecs.BOM_UTF16_LE),
    ("utf-16-be", b""),
    ("utf-16-be", codecs.BOM_UTF16_BE),
    ("utf-32-le", b""),
    ("utf-32-le", codecs.BOM_UTF32_LE),
    ("utf-32-be", b""),
    ("utf-32-be", codecs.BOM_UTF32_BE),
]


@pytest.mark.parametrize(
    ("codec", "bom"), UNICODE_FORMS, ids=[f"{c}{'+bom' if b else ''}" for c, b in UNICODE_FORMS]
)
def test_an_inbox_file_in_any_unicode_form_gives_the_chunks_of_its_text(
    tmp_path: Path, codec: str, bom: bytes
) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(bom + (TEXT * 40).encode(codec))
    report = ReadReport()
    table = pa.Table.from_batches(list(read_inbox_file(path, HashingEmbedder(), report=report)))
    assert table.column("content").to_pylist() == chunk_words(TEXT * 40)
    assert report.encoding == codec.upper().replace("-LE", "LE").replace("-BE", "BE") + (
        " with BOM" if bom else ""
    )


LEGACY = [
    ("cp1252", "naïve “quotes” café"),
    ("latin-1", "café crème"),
    ("cp1251", "Привет мир"),
    ("koi8_r", "Привет мир"),
    ("shift_jis", "日本語のテキスト"),
    ("gbk", "中文文本"),
    ("big5", "中文文本"),
    ("euc_kr", "한국어 텍스트"),
    ("mac_roman", "café"),
]


@pytest.mark.parametrize(("codec", "text"), LEGACY, ids=[c for c, _ in LEGACY])
def test_a_legacy_code_page_inbox_file_is_refused_naming_the_byte_and_offset(
    tmp_path: Path, codec: str, text: str
) -> None:
    path = tmp_path / "legacy.txt"
    data = ("Plain words first. " + text).encode(codec)
    path.write_bytes(data)
    offset = next(i for i in range(len(data)) if data[i] >= 0x80)
    with pytest.raises(KnowledgeBaseFormatError) as caught:
        list(read_inbox_file(path, HashingEmbedder()))
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid UTF-8: byte 0x")
    assert f"at offset {offset} " in message or f"at offset {offset + 1} " in message
    assert "legacy code pages such as Windows-1252" in message and "save it as UTF-8" in message
    assert path.read_bytes() == data  # never rewritten


def test_an_inbox_file_name_enters_in_nfc(tmp_path: Path) -> None:
    nfd = unicodedata.normalize("NFD", "résumé notes.txt")
    (tmp_path / nfd).write_text(words(20))
    (batch,) = read_inbox_file(tmp_path / nfd, HashingEmbedder())
    assert batch.column("source_file").to_pylist() == ["résumé notes.txt"]


def test_an_inbox_file_name_that_is_not_utf8_enters_with_a_replacement_character(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.txt")  # a Latin-1 name on a UTF-8 filesystem
    (tmp_path / name).write_text(words(20))
    (batch,) = read_inbox_file(tmp_path / name, HashingEmbedder())
    assert batch.column("source_file").to_pylist() == ["caf\ufffd.txt"]


def old_chunks(text: str, size: int = 150, overlap: int = 25, min_words: int = 10) -> list[str]:
    """Chunking before scripts without spaces were handled: whitespace words, joined by one space."""
    split = text.split()
    chunks = []
    for start in range(0, len(split), size - overlap):
        window = split[start : start + size]
        if len(window) >= min_words:
            chunks.append(" ".join(window))
        if start + size >= len(split):
            break
    return chunks


NO_SPACE_CHARACTER = regex.compile("[" + "".join(rf"\p{{scx={name}}}" for name in NO_SPACE_SCRIPTS) + "]")
SPACED_WORD = st.text(
    st.characters(codec="utf-8", categories=("L", "M", "N", "P", "S")), min_size=1, max_size=100
).filter(lambda w: w.split() == [w] and not NO_SPACE_CHARACTER.search(w))
SPACE = st.sampled_from([" ", "  ", "\n", "\t", "\r\n", "\u00a0", "\u3000 "])


@given(st.lists(st.tuples(SPACED_WORD, SPACE), min_size=10, max_size=600))
def test_text_written_with_spaces_chunks_exactly_as_before(pairs: list[tuple[str, str]]) -> None:
    text = "".join(word + space for word, space in pairs)
    assert chunk_words(text) == old_chunks(text)


def test_the_sample_texts_chunk_exactly_as_before() -> None:
    root = Path(__file__).parents[3] / "sample_data"
    texts = [p.read_text(encoding="utf-8") for p in sorted(root.glob("*/*.txt"))]
    assert len(texts) == 5
    for text in texts:
        assert chunk_words(text) == old_chunks(text)


#: One sentence in each script written without spaces between words (and a mixed one).
NO_SPACE_TEXTS = {
    "chinese": "河流把细沙从山上带到宽阔的山谷，农民每年春天在那里种植水稻。",
    "japanese": "川は山から細かい砂を運び、農家は毎年春にそこで米を植えます。カタカナもある。",
    "thai": "แม่น้ำพัดพาทรายละเอียดจากภูเขาลงสู่หุบเขากว้างที่ชาวนาปลูกข้าวทุกฤดูใบไม้ผลิ",
    "lao": "ແມ່ນ້ຳພັດພາຊາຍລະອຽດຈາກພູລົງສູ່ຮ່ອມພູກວ້າງທີ່ຊາວນາປູກເຂົ້າ",
    "khmer": "ទន្លេនាំខ្សាច់ល្អិតពីភ្នំចុះមកជ្រលងភ្នំធំទូលាយដែលកសិករដាំស្រូវ",
    "myanmar": "မြစ်သည်တောင်များမှသဲနုများကိုချိုင့်ဝှမ်းကျယ်သို့သယ်ဆောင်သည်",
    "tibetan": "གཙང་པོས་རི་ནས་བྱེ་མ་ཕྲ་མོ་ལུང་པ་ཡངས་པོར་ཁྱེར་ཡོང་།",
    "mixed": "Python是一种编程语言，它的设计哲学强调代码的可读性。Dagster 管理数据资产。",
}


@pytest.mark.parametrize("script", list(NO_SPACE_TEXTS))
def test_a_short_text_without_spaces_is_one_chunk_of_itself(script: str) -> None:
    assert chunk_words(NO_SPACE_TEXTS[script]) == [NO_SPACE_TEXTS[script]]


@pytest.mark.parametrize("script", list(NO_SPACE_TEXTS))
def test_a_long_text_without_spaces_gives_bounded_overlapping_chunks_of_its_own_text(script: str) -> None:
    text = NO_SPACE_TEXTS[script] * 200
    chunks = chunk_words(text)
    counted = [len(split_words(chunk)[0]) for chunk in chunks]
    total = len(split_words(text)[0])
    assert len(chunks) == 1 + -(-(total - 150) // 125)
    assert counted[:-1] == [150] * (len(chunks) - 1) and 25 < counted[-1] <= 150
    for chunk in chunks:
        assert chunk in text  # nothing inserted: Chinese gets no spaces between characters
    for before, after in itertools.pairwise(chunks):
        assert split_words(before)[0][-25:] == split_words(after)[0][:25]
    rest = [word for chunk in chunks[1:] for word in split_words(chunk)[0][25:]]
    assert split_words(chunks[0])[0] + rest == split_words(text)[0]  # every word, once, in order


def test_a_run_without_whitespace_counts_one_word_per_100_characters() -> None:
    blob = base64.b64encode(bytes(range(256)) * 120).decode()  # 40,960 characters, no whitespace
    chunks = chunk_words("data: " + blob)
    assert len(chunks) == 1 + -(-(1 + 410 - 150) // 125) == 4
    assert max(len(c) for c in chunks) == 150 * 100  # the bound: 150 words of 100 characters
    assert chunks[0].startswith("data: " + blob[:100]) and chunks[-1].endswith(blob[-60:])


def test_split_words_keeps_what_stood_between_words() -> None:
    assert split_words("Python是一种 language") == (
        ["Python", "是", "一", "种", "language"],
        [" ", "", "", "", " "],
    )
    assert split_words("ที่นี่") == (["ที่", "นี่"], [" ", ""])  # a base letter with its marks is one word


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
