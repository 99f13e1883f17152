"""Stage 2: windows, the Go-compatible slot mapper, the frame schema and the atomic writer (DESIGN §3)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiktoken
import tiktoken.core as tiktoken_core
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hasher_core.errors import EmbedderError, FramesConfigError, FramesInputError
from hasher_core.frames.gorand import projection_matrix
from hasher_core.frames.tokens import load_cl100k
from hasher_core.frames.windows import (
    expected_window_count,
    frames_from_batch,
    pack_slots,
    project_to_slots,
    quantize_features,
    unpack_slots,
    validate_frame_options,
    window_indices,
)
from hasher_core.schemas import FRAME_SCHEMA, SLOT_COLUMNS
from hasher_resources.frames_writer import FramesReport, write_frames

KB_SCHEMA = pa.schema(
    [
        ("source_file", pa.utf8()),
        ("chunk_id", pa.int32()),
        ("content", pa.utf8()),
        ("embedding", pa.list_(pa.float32(), 768)),
    ]
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Antminer S3 boards hash SHA-256 at about 440 GH/s.",
    "x",  # one token: no frames
    "",  # no tokens: no frames
    "Special text <|endoftext|> stays ordinary text here.",
]


def kb_batch(texts: list[str], source: str = "notes.txt", seed: int = 0) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((len(texts), 768)).astype(np.float32) * 0.05
    return pa.RecordBatch.from_arrays(
        [
            pa.array([source] * len(texts)),
            pa.array(np.arange(len(texts), dtype=np.int32)),
            pa.array(texts),
            pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 768),
        ],
        schema=KB_SCHEMA,
    )


def scalar_slots(embedding: np.ndarray, projection: np.ndarray) -> list[int]:
    """The Go mapper written out with explicit float32 scalar arithmetic: the independent oracle."""
    q = []
    for i in range(24):
        acc = np.float32(0.0)
        for j in range(min(len(embedding), 768)):
            acc = np.float32(acc + np.float32(np.float32(embedding[j]) * projection[i, j]))
        s = 1.0 / (1.0 + math.exp(-float(acc)))
        q.append(int(s * 65535 - 32768) & 0xFFFF)  # int() truncates toward zero like Go's int16()
    return [(q[2 * k] << 16) | q[2 * k + 1] for k in range(12)]


def test_frame_schema_is_design_3_5_exactly() -> None:
    assert FRAME_SCHEMA.names == [
        "source_file",
        "chunk_id",
        "window_start",
        "window_end",
        "context_length",
        *[f"asic_slot_{k}" for k in range(12)],
        "target_token_id",
        "best_seed",
    ]
    assert FRAME_SCHEMA.field("source_file").type == pa.dictionary(pa.int32(), pa.utf8())
    for name in FRAME_SCHEMA.names[1:-1]:
        assert FRAME_SCHEMA.field(name).type == pa.int32(), name
    assert FRAME_SCHEMA.field("best_seed").type == pa.binary()
    assert FRAME_SCHEMA.field("best_seed").nullable
    assert tuple(f"asic_slot_{k}" for k in range(12)) == SLOT_COLUMNS


def test_window_example_from_the_go_encoder() -> None:
    # W=3, tokens [1,2,3,4,5]: ([1]→2), ([1,2]→3), ([1,2,3]→4), ([2,3,4]→5)
    starts, ends = window_indices(5, window=3)
    assert starts.tolist() == [0, 0, 0, 1]
    assert ends.tolist() == [1, 2, 3, 4]


def test_fewer_than_two_tokens_give_no_windows() -> None:
    for n in (0, 1):
        starts, ends = window_indices(n)
        assert starts.size == ends.size == 0
        assert expected_window_count(n, 3) == 0


def test_stride_skips_targets() -> None:
    starts, ends = window_indices(10, window=4, stride=3)
    assert ends.tolist() == [1, 4, 7]
    assert starts.tolist() == [0, 0, 3]


@settings(max_examples=200, deadline=None)
@given(
    tokens=st.lists(st.integers(0, 100276), max_size=300),
    window=st.integers(1, 160),
    stride=st.integers(1, 9),
)
def test_window_properties(tokens: list[int], window: int, stride: int) -> None:
    n = len(tokens)
    starts, ends = window_indices(n, window=window, stride=stride)
    assert starts.dtype == ends.dtype == np.int32
    assert len(ends) == expected_window_count(n, stride) == (math.ceil((n - 1) / stride) if n >= 2 else 0)
    lengths = ends - starts
    assert ((lengths >= 1) & (lengths <= window)).all()
    assert (lengths == np.minimum(ends, window)).all()
    assert (np.diff(starts) >= 0).all() and (np.diff(ends) == stride).all()
    if n >= 2:
        assert ends[0] == 1 and ends[-1] < n
        targets = np.asarray(tokens)[ends]
        assert targets.tolist() == [tokens[i] for i in range(1, n, stride)]


def test_mapper_golden_vector_from_the_go_mapper() -> None:
    # DESIGN §3.4's vector from the Go mapper: emb[j] = float32(sin(j)*0.05), seed 1337.
    emb = np.float32(np.sin(np.arange(768)) * 0.05)[None, :]
    slots = project_to_slots(emb, projection_matrix())
    assert slots.dtype == np.uint32 and slots.shape == (1, 12)
    assert [f"{s:08x}" for s in slots[0]] == [
        "d536fa9e",
        "dba7ce9a",
        "0dc3d8ba",
        "eef8dded",
        "f743c126",
        "eacdd7b3",
        "1dbd0690",
        "0bf917cf",
        "1a41c116",
        "e961e0a9",
        "233e088c",
        "d07ff7b4",
    ]


def test_all_zero_embedding_gives_all_zero_slots() -> None:
    assert not project_to_slots(np.zeros((3, 768), np.float32), projection_matrix()).any()


def test_mapper_matches_the_scalar_float32_oracle() -> None:
    rng = np.random.default_rng(5)
    p = projection_matrix()
    emb = (rng.standard_normal((3, 768)) * rng.choice([0.01, 0.1, 1.0], size=(3, 1))).astype(np.float32)
    got = project_to_slots(emb, p)
    for row in range(3):
        assert got[row].tolist() == scalar_slots(emb[row], p)


def test_sparse_embeddings_with_signed_zeros_match_the_scalar_oracle_across_thread_blocks() -> None:
    # The kernel skips zero terms (the offline embeddings are mostly zeros) and splits rows into
    # blocks per thread: neither may change a bit. 600 rows span three 256-row blocks.
    rng = np.random.default_rng(8)
    p = projection_matrix()
    emb = rng.standard_normal((600, 768)).astype(np.float32) * np.float32(0.05)
    emb[rng.random(emb.shape) < 0.7] = 0.0
    emb[rng.random(emb.shape) < 0.05] = -0.0
    emb[5] = -0.0  # a row of negative zeros gives the all-zero slots
    got = project_to_slots(emb, p)
    assert not got[5].any()
    for row in (0, 255, 256, 511, 599):
        assert got[row].tolist() == scalar_slots(emb[row], p)
    np.testing.assert_array_equal(got[300:301], project_to_slots(emb[300:301], p))


def test_the_serial_and_the_parallel_projection_give_the_same_bits(monkeypatch) -> None:
    import hasher_core.frames.windows as windows_module

    rng = np.random.default_rng(9)
    emb = rng.standard_normal((windows_module.SERIAL_PROJECTION_ROWS + 5, 768)).astype(
        np.float32
    ) * np.float32(0.05)
    p = projection_matrix()
    parallel = project_to_slots(emb, p)
    monkeypatch.setattr(windows_module, "SERIAL_PROJECTION_ROWS", 10**9)
    np.testing.assert_array_equal(project_to_slots(emb, p), parallel)


def test_the_serial_and_the_parallel_embedding_give_the_same_bits(monkeypatch) -> None:
    import hasher_core.embedding.lexical as lexical

    texts = [
        f"window {i} of words, some repeated: alpha beta {i % 7} gamma"
        for i in range(lexical.SERIAL_WINDOWS + 9)
    ]
    parallel = lexical.embed_texts(texts)
    monkeypatch.setattr(lexical, "SERIAL_WINDOWS", 10**9)
    np.testing.assert_array_equal(lexical.embed_texts(texts), parallel)


def test_shorter_embeddings_count_missing_dimensions_as_zero() -> None:
    rng = np.random.default_rng(6)
    p = projection_matrix()
    short = rng.standard_normal((2, 300)).astype(np.float32) * 0.1
    padded = np.zeros((2, 768), np.float32)
    padded[:, :300] = short
    np.testing.assert_array_equal(project_to_slots(short, p), project_to_slots(padded, p))
    assert project_to_slots(short[:1], p)[0].tolist() == scalar_slots(short[0], p)


def test_dimensions_past_768_are_ignored() -> None:
    rng = np.random.default_rng(7)
    emb = rng.standard_normal((2, 800)).astype(np.float32)
    p = projection_matrix()
    np.testing.assert_array_equal(project_to_slots(emb, p), project_to_slots(emb[:, :768], p))


def test_quantization_saturates_and_truncates_toward_zero() -> None:
    q = quantize_features(np.array([[0.0, 1e9, -1e9, 1e-4, -1e-4]], np.float32))
    # sigmoid(±tiny)*65535-32768 = -0.5 ± 1.6: trunc gives 1 and -2, floor would give 1 and -3.
    assert q.tolist() == [[0, 32767, -32768, 1, -2]]


def test_even_features_go_in_the_high_half() -> None:
    q = np.zeros((1, 24), np.int16)
    q[0, 0], q[0, 1], q[0, 23] = -1, 2, -32768
    slots = pack_slots(q)
    assert slots[0, 0] == 0xFFFF0002 and slots[0, 11] == 0x00008000


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.int16, st.tuples(st.integers(1, 8), st.just(24))))
def test_slot_packing_round_trips(q: np.ndarray) -> None:
    slots = pack_slots(q)
    assert slots.dtype == np.uint32 and slots.shape == (q.shape[0], 12)
    assert (slots >> 16).astype(np.uint16).view(np.int16).tolist() == q[:, 0::2].tolist()
    np.testing.assert_array_equal(unpack_slots(slots), q)


def test_frames_from_batch_follows_windows_and_chunk_embeddings() -> None:
    enc, p = load_cl100k(), projection_matrix()
    batch = kb_batch(TEXTS)
    frames = frames_from_batch(batch, encoding=enc, window=4, projection=p, embedding_source="chunk")
    assert frames.schema.equals(FRAME_SCHEMA)
    table = frames.to_pydict()
    slots = project_to_slots(batch.column("embedding").flatten().to_numpy().reshape(-1, 768), p).view(
        np.int32
    )
    row = 0
    for chunk_id, text in enumerate(TEXTS):
        tokens = enc.encode_ordinary(text)
        starts, ends = window_indices(len(tokens), window=4)
        for start, end in zip(starts, ends, strict=True):
            assert table["chunk_id"][row] == chunk_id
            assert table["source_file"][row] == "notes.txt"
            assert (table["window_start"][row], table["window_end"][row]) == (start, end)
            assert table["context_length"][row] == end - start
            assert table["target_token_id"][row] == tokens[end]
            assert [table[c][row] for c in SLOT_COLUMNS] == slots[chunk_id].tolist()
            assert table["best_seed"][row] is None
            row += 1
    assert row == frames.num_rows


def test_window_embedding_source_embeds_decoded_contexts_in_batches() -> None:
    enc, p = load_cl100k(), projection_matrix()

    class CountingEmbedder:
        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        def embed(self, texts: list[str]) -> np.ndarray:
            self.calls.append(list(texts))
            out = np.zeros((len(texts), 768), np.float32)
            for r, t in enumerate(texts):
                out[r, : len(t) % 768] = 0.01 * (1 + len(t) % 7)
            return out

    embedder = CountingEmbedder()
    batch = kb_batch(TEXTS[:2])
    frames = frames_from_batch(
        batch,
        encoding=enc,
        window=5,
        projection=p,
        embedding_source="window",
        embedder=embedder,
        embed_batch_size=4,
    )
    sizes = [len(c) for c in embedder.calls]
    assert (
        sum(sizes) == frames.num_rows and all(s <= 4 for s in sizes) and sizes[:-1] == [4] * (len(sizes) - 1)
    )
    texts = [t for c in embedder.calls for t in c]
    first = enc.encode_ordinary(TEXTS[0])
    assert texts[0] == enc.decode(first[:1]) and texts[5] == enc.decode(first[1:6])
    expected = project_to_slots(embedder.embed(texts), p).view(np.int32)
    got = np.stack([frames.column(c).to_numpy() for c in SLOT_COLUMNS], axis=1)
    np.testing.assert_array_equal(got, expected)


def test_window_source_without_embedder_is_a_config_error() -> None:
    with pytest.raises(FramesConfigError, match="needs an embedder"):
        frames_from_batch(
            kb_batch(TEXTS), encoding=load_cl100k(), projection=projection_matrix(), embedding_source="window"
        )


def test_embedder_returning_wrong_row_count_is_an_input_error() -> None:
    class ShortEmbedder:
        def embed(self, texts: list[str]) -> np.ndarray:
            return np.zeros((len(texts) - 1, 768), np.float32)

    with pytest.raises(FramesInputError, match="embedder returned shape"):
        frames_from_batch(
            kb_batch(TEXTS[:1]),
            encoding=load_cl100k(),
            projection=projection_matrix(),
            embedding_source="window",
            embedder=ShortEmbedder(),
        )


def test_nan_embedding_names_the_chunk() -> None:
    batch = kb_batch(TEXTS)
    emb = batch.column("embedding").flatten().to_numpy().copy()
    emb[768 * 1 + 10] = np.nan
    batch = batch.set_column(3, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(emb), 768))
    with pytest.raises(FramesInputError, match=r"'notes.txt'#1: embedding has NaN"):
        frames_from_batch(
            batch, encoding=load_cl100k(), projection=projection_matrix(), embedding_source="chunk"
        )


def test_missing_column_is_named() -> None:
    batch = kb_batch(TEXTS).drop_columns(["embedding"])
    with pytest.raises(FramesInputError, match=r"lacks column\(s\) \['embedding'\]"):
        frames_from_batch(
            batch, encoding=load_cl100k(), projection=projection_matrix(), embedding_source="chunk"
        )


def test_variable_length_embedding_lists_are_zero_padded() -> None:
    enc, p = load_cl100k(), projection_matrix()
    fixed = kb_batch(TEXTS[:2])
    emb = fixed.column("embedding").flatten().to_numpy().reshape(2, 768).copy()
    emb[1, 500:] = 0
    ragged = pa.array([emb[0].tolist(), emb[1, :500].tolist()], pa.list_(pa.float32()))
    a = frames_from_batch(
        fixed.set_column(3, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 768)),
        encoding=enc,
        projection=p,
        embedding_source="chunk",
    )
    b = frames_from_batch(
        fixed.set_column(3, "embedding", ragged), encoding=enc, projection=p, embedding_source="chunk"
    )
    assert a.equals(b)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": 0}, "window must be an integer >= 1"),
        ({"stride": -1}, "stride must be an integer >= 1"),
        ({"compression": "gzip"}, "compression must be one of"),
        ({"embedding_source": "chunks"}, "embedding_source must be one of"),
        ({"embed_batch_size": 0}, "embed_batch_size must be an integer >= 1"),
    ],
)
def test_bad_options_are_rejected_with_the_option_named(options: dict, message: str) -> None:
    with pytest.raises(FramesConfigError, match=message):
        validate_frame_options(**options)


def test_write_frames_streams_batches_into_one_parquet_file(tmp_path: Path) -> None:
    enc, p = load_cl100k(), projection_matrix()
    batches = [kb_batch(TEXTS, "a.txt", 1), kb_batch(TEXTS[:2], "b.txt", 2)]
    seen: list[tuple[int, int]] = []
    out = tmp_path / "frames" / "part.parquet"
    report = write_frames(
        iter(batches),
        out,
        encoding=enc,
        projection=p,
        window=8,
        embedding_source="chunk",
        compression="snappy",
        progress=lambda r: seen.append((r.batches, r.chunks)),
    )
    assert seen == [(1, 5), (2, 7)]
    table = pq.read_table(out)
    assert table.schema.equals(FRAME_SCHEMA)
    expected = pa.Table.from_batches(
        [
            frames_from_batch(b, encoding=enc, projection=p, window=8, embedding_source="chunk")
            for b in batches
        ]
    )
    assert table.num_rows > 0 and table.to_pylist() == expected.to_pylist()
    assert isinstance(report, FramesReport) and report.done
    assert (report.chunks, report.frames, report.skipped_chunks) == (7, table.num_rows, 2)
    assert report.tokens == sum(
        len(enc.encode_ordinary(t)) for b in batches for t in b.column("content").to_pylist()
    )
    assert report.content_bytes == sum(
        len(t.encode()) for b in batches for t in b.column("content").to_pylist()
    )
    assert report.file_bytes == out.stat().st_size
    meta = report.as_metadata()
    assert meta["frames"] == table.num_rows and "frames_per_second" in meta
    assert pq.ParquetFile(out).metadata.row_group(0).column(1).compression == "SNAPPY"
    assert list(out.parent.iterdir()) == [out]


def test_empty_input_writes_a_valid_empty_file(tmp_path: Path) -> None:
    out = tmp_path / "empty.parquet"
    report = write_frames(
        [], out, encoding=load_cl100k(), projection=projection_matrix(), embedding_source="chunk"
    )
    assert report.frames == 0 and pq.read_table(out).schema.equals(FRAME_SCHEMA)


def test_failure_mid_stream_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "part.parquet"
    enc, p = load_cl100k(), projection_matrix()
    write_frames([kb_batch(TEXTS)], out, encoding=enc, projection=p, embedding_source="chunk")
    before = out.read_bytes()

    def batches():
        yield kb_batch(TEXTS, seed=3)
        yield kb_batch(TEXTS, seed=4)
        raise OSError("knowledge base vanished")

    with pytest.raises(OSError, match="knowledge base vanished"):
        write_frames(batches(), out, encoding=enc, projection=p, embedding_source="chunk")
    assert out.read_bytes() == before
    assert list(tmp_path.iterdir()) == [out]


def test_bad_record_mid_stream_keeps_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "part.parquet"
    enc, p = load_cl100k(), projection_matrix()
    write_frames([kb_batch(TEXTS)], out, encoding=enc, projection=p, embedding_source="chunk")
    before = out.read_bytes()
    bad = kb_batch(TEXTS[:2]).drop_columns(["content"])
    with pytest.raises(FramesInputError, match="content"):
        write_frames([kb_batch(TEXTS), bad], out, encoding=enc, projection=p, embedding_source="chunk")
    assert out.read_bytes() == before and list(tmp_path.iterdir()) == [out]


def test_bad_config_creates_no_file(tmp_path: Path) -> None:
    out = tmp_path / "part.parquet"
    with pytest.raises(FramesConfigError, match="compression"):
        write_frames([kb_batch(TEXTS)], out, compression="lz4")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_padded_page_tiktoken_cannot_take_still_gives_its_frames(tmp_path: Path) -> None:
    enc, p = load_cl100k(), projection_matrix()
    padded = " " * 1_000_000 + "the text after the padding"
    batch = kb_batch([TEXTS[0], padded])
    report = write_frames(
        [batch], tmp_path / "f.parquet", encoding=enc, projection=p, window=8, embedding_source="chunk"
    )
    tokens = [len(enc.encode_ordinary(TEXTS[0])), len(enc._encode_only_native_bpe(padded))]
    assert report.frames == sum(expected_window_count(n) for n in tokens) > tokens[1] - 1
    assert report.tokenizer_failed == 0 and not report.problems
    assert pq.read_table(tmp_path / "f.parquet").column("chunk_id").to_pylist().count(1) == tokens[1] - 1


def test_a_chunk_no_tokenizer_takes_is_skipped_counted_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc, p = load_cl100k(), projection_matrix()
    texts = [TEXTS[0], "POISON " + TEXTS[1], TEXTS[4]]
    clean = write_frames(
        [kb_batch([texts[0], "", texts[2]])],
        tmp_path / "clean.parquet",
        encoding=enc,
        projection=p,
        window=8,
        embedding_source="chunk",
    )
    real_encode, real_piece = (
        tiktoken_core.Encoding.encode_to_numpy,
        tiktoken_core.Encoding._encode_single_piece,
    )

    def encode(self: tiktoken.Encoding, text: str, **kwargs: object) -> np.ndarray:
        if "POISON" in text:
            raise ValueError("Regex error while tokenizing")
        return real_encode(self, text, **kwargs)

    def piece(self: tiktoken.Encoding, piece: bytes) -> list[int]:
        if b"POISON" in piece:
            raise RuntimeError("library bug on this text")
        return real_piece(self, piece)

    monkeypatch.setattr(tiktoken_core.Encoding, "encode_to_numpy", encode)
    monkeypatch.setattr(tiktoken_core.Encoding, "_encode_single_piece", piece)
    report = write_frames(
        [kb_batch(texts)],
        tmp_path / "f.parquet",
        encoding=enc,
        projection=p,
        window=8,
        embedding_source="chunk",
    )
    assert report.tokenizer_failed == 1
    assert report.problems == [
        "chunk 'notes.txt'#1: skipped, tokenizer_failed: tiktoken failed (ValueError: Regex error while "
        "tokenizing) and so did splitting by pieces (RuntimeError: library bug on this text)"
    ]
    assert report.frames == clean.frames
    frames = pq.read_table(tmp_path / "f.parquet")
    assert (
        frames.drop(["best_seed"]).to_pylist()
        == pq.read_table(tmp_path / "clean.parquet").drop(["best_seed"]).to_pylist()
    )


def test_an_embedder_failing_mid_stream_names_the_chunks_it_was_embedding(tmp_path: Path) -> None:
    class GoneEmbedder:
        def embed(self, texts: list[str]) -> np.ndarray:
            raise EmbedderError("http://127.0.0.1:11434/api/embed failed after 3 attempts")

    with pytest.raises(EmbedderError) as caught:
        write_frames(
            [kb_batch(TEXTS[:2], "notes.txt")],
            tmp_path / "f.parquet",
            projection=projection_matrix(),
            embedder=GoneEmbedder(),
        )
    assert str(caught.value) == (
        "embedding the windows of chunks 'notes.txt'#0 to 'notes.txt'#1: "
        "http://127.0.0.1:11434/api/embed failed after 3 attempts"
    )
    assert not (tmp_path / "f.parquet").exists()
