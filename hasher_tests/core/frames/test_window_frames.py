"""Window frames (DESIGN §3.3): each frame's slots encode its own context, inference rebuilds them
bit for bit from the context's tokens, and windows whose texts differ get different slots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hasher_core.embedding.lexical import embed_texts, embed_token_windows, token_byte_table
from hasher_core.frames.gorand import projection_matrix
from hasher_core.frames.tokens import load_cl100k
from hasher_core.frames.windows import ambiguity, slot_fingerprints, window_hashes, window_slots
from hasher_core.knowledge import read_knowledge_base
from hasher_core.schemas import SLOT_COLUMNS
from hasher_resources.embedder import HashingEmbedder
from hasher_resources.frames_writer import write_frames

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data"
ENCODING = load_cl100k()
PROJECTION = projection_matrix()


def slots_of(texts: list[str]) -> np.ndarray:
    tokens = [np.array(ENCODING.encode_ordinary(t)) for t in texts]
    ends = np.cumsum([t.size for t in tokens])
    return window_slots(
        np.concatenate(tokens), ends - [t.size for t in tokens], ends,
        encoding=ENCODING, projection=PROJECTION, embedder=HashingEmbedder(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def sample_frames(tmp_path_factory: pytest.TempPathFactory):
    """The bundled miner sample's window frames, written by stage 2's writer."""
    out = tmp_path_factory.mktemp("frames") / "frames.parquet"
    report = write_frames(
        read_knowledge_base(SAMPLE / "miner"), out, embedder=HashingEmbedder(), embedding_source="window"
    )
    return pq.read_table(out), report


def test_inference_rebuilds_every_training_frames_slots_bit_for_bit(sample_frames):
    frames, _ = sample_frames
    chunks = {
        (r["source_file"], r["chunk_id"]): np.array(ENCODING.encode_ordinary(r["content"]))
        for batch in read_knowledge_base(SAMPLE / "miner")
        for r in batch.to_pylist()
    }
    stored = np.stack([frames.column(c).to_numpy().view(np.uint32) for c in SLOT_COLUMNS], axis=1)
    rows = frames.select(["source_file", "chunk_id", "window_start", "window_end"]).to_pylist()
    for i in range(0, len(rows), 37):  # every 37th frame, one context at a time as inference sees it
        context = chunks[(rows[i]["source_file"], rows[i]["chunk_id"])][
            rows[i]["window_start"] : rows[i]["window_end"]
        ]
        rebuilt = window_slots(
            context, np.array([0]), np.array([context.size]),
            encoding=ENCODING, projection=PROJECTION, embedder=HashingEmbedder(),
        )  # fmt: skip
        assert np.array_equal(rebuilt[0], stored[i]), rows[i]


def test_on_the_bundled_samples_only_identical_texts_share_slots(sample_frames):
    frames, report = sample_frames
    assert report.frames == frames.num_rows > 2000
    assert report.colliding_frames == 0
    assert report.ambiguous_frames == 2 * report.ambiguous_contexts  # repeated phrases, two next tokens each


@pytest.mark.parametrize(
    "other",
    ["Four score and seven years ago", "four score and seven years ago,", "Four score and  seven years ago,",
     "Four score and seven years ago.", "Four score and seven years ago;"],
)  # fmt: skip
def test_windows_that_differ_by_punctuation_a_space_or_case_get_different_slots(other):
    base, changed = slots_of(["Four score and seven years ago,", other])
    assert not np.array_equal(base, changed)


def test_a_windows_bytes_embed_like_its_decoded_text():
    tokens = np.array(ENCODING.encode_ordinary("The Zen of Python, by Tim Peters: Beautiful is better."))
    table = token_byte_table(ENCODING)
    for end in (1, 5, tokens.size):
        window = embed_token_windows(tokens, np.array([0]), np.array([end]), table)
        assert np.array_equal(window[0], embed_texts([ENCODING.decode(tokens[:end].tolist())])[0])


def test_window_hashes_and_ambiguity_tell_repeated_text_from_collisions():
    tokens = np.array([5, 6, 7, 5, 6, 8, 9])
    hashes = window_hashes(tokens, np.array([0, 3, 1]), np.array([2, 5, 3]))
    assert hashes[0] == hashes[1] != hashes[2]
    slots = np.zeros((4, 12), np.uint32)
    slots[3, 0] = 1
    # Rows 0 and 1: the same text with two next tokens (ambiguous); row 2 shares their slots with
    # another text (a collision); row 3 stands alone.
    found = ambiguity(slots, np.array([7, 8, 7, 9]), np.array([11, 11, 12, 13], np.uint64))
    assert (found.frames, found.ambiguous_frames, found.ambiguous_contexts, found.colliding_frames) == (
        4,
        3,
        1,
        3,
    )
    # The writer keeps only 64-bit fingerprints of the slots: the same counts.
    assert ambiguity(slot_fingerprints(slots), np.array([7, 8, 7, 9]), np.array([11, 11, 12, 13])) == found


def test_slot_fingerprints_are_equal_exactly_for_equal_slots():
    rng = np.random.default_rng(3)
    slots = rng.integers(0, 2**32, (5000, 12), dtype=np.uint64).astype(np.uint32)
    slots[4000:] = slots[:1000]  # 1,000 repeated rows
    slots[10, 11] ^= 1  # a one-bit change
    keys = slot_fingerprints(slots)
    assert keys.dtype == np.uint64 and keys.shape == (5000,)
    assert np.unique(keys).size == np.unique(slots, axis=0).shape[0] == 4000 + 1
    assert (keys[4000:] == keys[:1000]).sum() == 999
