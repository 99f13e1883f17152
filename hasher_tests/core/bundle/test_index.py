"""The inference index (DESIGN §6.1): exact lookup, the answering row of a frame, and a nearest-frame
search whose answer is a scan of every frame's float32 distance, ties included.

The oracle of the nearest frame is what the model computed before the index existed, kept here
verbatim: ``np.argmin(np.linalg.norm(features - f, axis=1))`` over every frame in source order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hasher_core import design
from hasher_core.bundle import build_bundle
from hasher_core.bundle import index as index_module
from hasher_core.bundle.index import (
    ANSWER_DTYPE,
    INDEX_FORMAT,
    PARAMS_FILE,
    InferenceIndex,
    build_index,
    dequantised,
    slot_hashes,
)
from hasher_core.errors import BundleFormatError
from hasher_core.frames.windows import pack_slots, unpack_slots
from hasher_tests.core.bundle.test_bundle import make_checkpoints


def seed_table(slots: np.ndarray, targets=None, solved=None) -> pa.Table:
    """A bundle's seed table with these slots uint32[N, 12] (rows in this order), one source file."""
    n = len(slots)
    table = make_checkpoints(n, solved_every=0)
    for k in range(design.SLOT_COUNT):
        name = f"asic_slot_{k}"
        table = table.set_column(table.column_names.index(name), name, pa.array(slots[:, k].view(np.int32)))
    columns = {
        "chunk_id": pa.array(np.arange(n) // 4, pa.int32()),
        "window_end": pa.array(np.arange(n) % 4 + 1, pa.int32()),
        "fingerprint": pa.array([f"{i:032x}" for i in range(n)]),
    }
    if targets is not None:
        columns["target_token_id"] = pa.array(np.asarray(targets, np.int32))
    if solved is not None:
        columns["solved"] = pa.array(np.asarray(solved, bool))
    for name, values in columns.items():
        table = table.set_column(table.column_names.index(name), name, values)
    # build_bundle sorts rows (partition, source, chunk, window end, ...): keep them in this order.
    return build_bundle({"doc.txt": table}, pipeline_version="test").seeds


def scan_every_frame(index: InferenceIndex, words: np.ndarray) -> tuple[int, float]:
    """The answer before the index: argmin of the float32 distance over frames in source order."""
    by_rank = np.argsort(index.answer["rank"])
    gaps = np.linalg.norm(dequantised(index.slots[by_rank]) - dequantised(words[None, :])[0], axis=1)
    best = int(np.argmin(gaps))
    return int(by_rank[best]), float(gaps[best])


def clustered_slots(rng: np.random.Generator, frames: int, spread: int) -> np.ndarray:
    """Frames in a few clusters of quantised features, as trained text gives (neighbouring windows)."""
    centres = rng.integers(-20000, 20000, (max(1, frames // 50), 2 * design.SLOT_COUNT))
    features = centres[rng.integers(len(centres), size=frames)] + rng.integers(
        -spread, spread + 1, (frames, 24)
    )
    return pack_slots(np.clip(features, -32768, 32767).astype(np.int16))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), frames=st.integers(1, 3000), spread=st.sampled_from([0, 3, 300, 5000]))
def test_the_nearest_frame_is_the_float32_scan_of_every_frame(seed, frames, spread):
    rng = np.random.default_rng(seed)
    slots = clustered_slots(rng, frames, spread)
    index = build_index(seed_table(slots))
    queries = np.concatenate([clustered_slots(rng, 20, spread), slots[rng.integers(frames, size=5)] ^ 1])
    for words in queries:
        assert index.nearest(words) == scan_every_frame(index, words)


def test_a_distance_tie_goes_to_the_first_frame_in_source_order():
    # Feature 0 at 90 and at 110 is one distance from 100; every other feature equal. The index
    # orders frames by cell, not by source: the answer must not depend on that order.
    features = np.zeros((6, 24), np.int16)
    features[:, 0] = [30000, 110, -30000, 90, 20000, -20000]
    query = np.zeros((1, 24), np.int16)
    query[0, 0] = 100
    slots, words = pack_slots(features), pack_slots(query)[0]
    forward = build_index(seed_table(slots))
    frame, distance = forward.nearest(words)
    assert int(forward.answer["rank"][frame]) == 1  # 110 comes before 90 in source order
    assert distance == pytest.approx(10 / 65535, rel=1e-4)  # float32 features: rounded
    swapped = features[[0, 3, 2, 1, 4, 5]]  # now 90 comes first
    backward = build_index(seed_table(pack_slots(swapped)))
    frame, again = backward.nearest(words)
    assert (
        int(backward.answer["rank"][frame]) == 1
        and unpack_slots(backward.slots[frame : frame + 1])[0, 0] == 90
    )
    assert again == distance
    assert forward.nearest(words) == scan_every_frame(forward, words)


def test_an_integer_tie_that_float32_rounding_breaks_is_broken_as_the_scan_broke_it():
    # 164 and 36 are both 64 from 100, but their float32 distances differ in the last bit: the scan
    # of every frame answered the (float32-)nearer one, whichever came first.
    features = np.zeros((3, 24), np.int16)
    features[:, 0] = [164, 36, 30000]
    query = np.zeros((1, 24), np.int16)
    query[0, 0] = 100
    index = build_index(seed_table(pack_slots(features)))
    frame, _ = index.nearest(pack_slots(query)[0])
    assert unpack_slots(index.slots[frame : frame + 1])[0, 0] == 36
    assert index.nearest(pack_slots(query)[0]) == scan_every_frame(index, pack_slots(query)[0])


def test_exact_lookup_finds_every_frame_and_nothing_else():
    rng = np.random.default_rng(3)
    slots = clustered_slots(rng, 500, 100)
    index = build_index(seed_table(slots))
    found = index.lookup(slots)
    assert np.array_equal(index.slots[found], slots)
    others = slots.copy()
    others[:, 5] ^= np.uint32(1 << 7)
    missing = ~np.isin(slot_hashes(others), slot_hashes(slots))
    assert np.all(index.lookup(others)[missing] == -1)


def test_rows_whose_hashes_collide_are_grouped_by_their_slots():
    rng = np.random.default_rng(4)
    slots = rng.integers(0, 2**32, (40, 12), dtype=np.uint64).astype(np.uint32)[rng.integers(0, 40, 200)]
    frame_of_row, first_row, by_hash = index_module._frames_of_rows(slots, np.zeros(len(slots), np.uint64))
    _, first = np.unique(slots.view(np.dtype((np.void, 48))).ravel(), return_index=True)
    assert sorted(first_row.tolist()) == sorted(first.tolist()) and first_row.tolist() == sorted(
        first_row.tolist()
    )
    assert np.array_equal(slots[first_row[frame_of_row]], slots)  # each row's frame has its slots
    assert sorted(by_hash.tolist()) == list(range(len(first_row)))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_frame_is_answered_by_its_most_frequent_target_first_seen_solved_row(seed):
    rng = np.random.default_rng(seed)
    distinct = rng.integers(0, 2**32, (6, 12), dtype=np.uint64).astype(np.uint32)
    which = rng.integers(0, 6, 40)
    targets, solved = rng.integers(0, 4, 40), rng.random(40) < 0.5
    seeds = seed_table(distinct[which], targets, solved)
    index = build_index(seeds)
    rows_slots = seeds.column("slots").combine_chunks().flatten().to_numpy().reshape(-1, 12)
    row_targets = seeds.column("target_token_id").to_numpy()
    row_solved = seeds.column("solved").to_numpy(zero_copy_only=False)
    for frame in range(index.frames):
        rows = [r for r in range(len(rows_slots)) if np.array_equal(rows_slots[r], index.slots[frame])]
        counts: dict[int, int] = {}
        for r in rows:
            counts[int(row_targets[r])] = counts.get(int(row_targets[r]), 0) + 1
        winner = next(
            int(row_targets[r]) for r in rows if counts[int(row_targets[r])] == max(counts.values())
        )
        with_winner = [r for r in rows if row_targets[r] == winner]
        expected = next((r for r in with_winner if row_solved[r]), with_winner[0])
        answer = index.answer[frame]
        assert (int(answer["row"]), int(answer["rows"]), bool(answer["ambiguous"])) == (
            expected,
            len(rows),
            len(counts) > 1,
        )


def test_the_index_round_trips_through_its_files():
    index = build_index(seed_table(clustered_slots(np.random.default_rng(5), 300, 50)))
    back = InferenceIndex.from_files(index.files(), "bundle")
    for name in index_module.ARRAY_FILES:
        assert np.array_equal(getattr(back, name), getattr(index, name)), name
    assert back.params == index.params


def test_an_index_of_another_format_is_refused_naming_what_to_do():
    files = build_index(seed_table(clustered_slots(np.random.default_rng(6), 20, 5))).files()
    files[PARAMS_FILE] = files[PARAMS_FILE].replace(INDEX_FORMAT.encode(), b"hasher-index-v0")
    with pytest.raises(BundleFormatError, match=r"index format 'hasher-index-v0'.*redeploy the bundle"):
        InferenceIndex.from_files(files, "bundle")


def test_an_index_array_of_the_wrong_shape_is_refused_naming_the_file():
    index = build_index(seed_table(clustered_slots(np.random.default_rng(7), 20, 5)))
    arrays = {**index.files()}
    arrays["index-answer.npy"] = np.zeros(3, ANSWER_DTYPE)
    with pytest.raises(
        BundleFormatError, match=r"bundle/index-answer\.npy: holds .* the index parameters say"
    ):
        InferenceIndex.from_files(arrays, "bundle")
