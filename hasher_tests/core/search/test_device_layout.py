"""The device search's layout and pure transforms: numpy's pairwise summation as a plan, the config
block, frame-queue entries, seed words and finished-frame records."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hasher_core.design import SEED_BYTES
from hasher_core.search import device_layout as layout
from hasher_core.search import reward
from hasher_core.search.config import SearchConfig
from hasher_core.search.driver import PendingFrames


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), seed=st.integers(0, 2**32 - 1))
def test_the_plan_adds_in_numpys_pairwise_order(n, seed):
    rng = np.random.default_rng(seed)
    a = (rng.random(n) * rng.choice([1e-3, 1.0, 7.0, 1e4])).astype(np.float32)
    leaves, program = layout.pairwise_plan(n)
    assert layout.run_plan(a, leaves, program) == a.sum()  # float32, numpy's order: bit for bit


@pytest.mark.parametrize("n", [1, 7, 8, 128, 129, 256, 1000, 4099, 65536])
def test_plan_leaves_tile_the_range_in_order_and_fit_a_leaf(n):
    leaves, program = layout.pairwise_plan(n)
    starts, lengths = leaves[:, 0], leaves[:, 1]
    assert starts[0] == 0 and (starts[1:] == starts[:-1] + lengths[:-1]).all() and lengths.sum() == n
    assert (lengths >= 1).all() and (lengths <= layout.PAIRWISE_LEAF).all()
    assert sorted(program[program >= 0].tolist()) == list(range(len(leaves)))  # each leaf pushed once
    assert (program == -1).sum() == len(leaves) - 1  # a binary tree


def test_plan_refuses_an_empty_range():
    with pytest.raises(ValueError, match="n >= 1"):
        layout.pairwise_plan(0)


def test_config_block_holds_every_knob_then_epochs_leaves_and_program():
    config = SearchConfig(
        difficulty_bits=20,
        difficulty_schedule=(8, 12),
        population=300,
        elite_ratio=0.1,
        max_generations=77,
        strategy="scan",
        reward_weights=(0.5, 0.25, 0.125),
        header_time=0xDEADBEEF,
    )
    words = layout.config_words(config)
    assert words.dtype == np.uint32
    assert words[layout.CFG_POPULATION] == 300 and words[layout.CFG_ELITES] == config.elites == 30
    assert words[layout.CFG_MUTANTS] == 30 and words[layout.CFG_DIFFICULTY] == 20
    assert words[layout.CFG_MAX_GENERATIONS] == 77 and words[layout.CFG_GRPO] == 0
    assert words[layout.CFG_HEADER_TIME] == 0xDEADBEEF
    weights = words[[layout.CFG_WEIGHT_ALIGNMENT, layout.CFG_WEIGHT_STABILITY, layout.CFG_WEIGHT_FORMAT]]
    assert weights.view(np.float32).tolist() == [0.5, 0.25, 0.125]
    n_epochs, n_leaves = words[layout.CFG_EPOCHS], words[layout.CFG_LEAVES]
    at = layout.CFG_HEADER_WORDS
    assert words[at : at + n_epochs].tolist() == [8, 12, 20]
    leaves, program = layout.pairwise_plan(300)
    assert (words[at + n_epochs : at + n_epochs + 2 * n_leaves] == leaves.reshape(-1)).all()
    assert (words[at + n_epochs + 2 * n_leaves :].view(np.int32) == program).all()


def test_mutants_fill_what_the_elites_leave_when_they_are_most_of_the_population():
    words = layout.config_words(SearchConfig(population=10, elite_ratio=0.8))
    assert (words[layout.CFG_ELITES], words[layout.CFG_MUTANTS]) == (8, 2)


def test_a_generation_count_beyond_32_bits_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="max_generations=2147483648 is beyond the device search"):
        layout.config_words(SearchConfig(max_generations=2**31))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40))
def test_seed_words_round_trip_and_keep_the_reserved_bytes_zero(seed, n):
    keys = np.random.default_rng(seed).integers(0, 2**63, n, dtype=np.uint64)
    seeds = reward.fresh_seeds(keys, np.zeros(n, np.int64), 3).reshape(-1, SEED_BYTES)
    words = layout.seed_words(seeds)
    assert words.shape == (3 * n, layout.SEED_WORDS)
    assert (layout.seed_bytes(words) == seeds).all()
    # word 4 is seed bytes 28–31 read little-endian: the big-endian nonce byte-swapped
    nonce = int.from_bytes(seeds[0, 28:].tobytes(), "big")
    assert int(words[0, 4]) == int.from_bytes(nonce.to_bytes(4, "big"), "little")


def test_queue_entries_carry_slots_target_key_halves_and_frame_index():
    slots = np.arange(24, dtype=np.uint32).reshape(2, 12)
    entries = layout.queue_entries(
        slots, np.array([5 << 15, 7], np.uint32), np.array([2**64 - 1, 3], np.uint64), np.array([9, 4])
    )
    assert entries.shape == (2, layout.QUEUE_WORDS)
    assert (entries[:, layout.QUEUE_SLOTS : layout.QUEUE_SLOTS + 12] == slots).all()
    assert entries[0, layout.QUEUE_TARGET] == 5 << 15
    assert (entries[0, layout.QUEUE_KEY_LO], entries[0, layout.QUEUE_KEY_HI]) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert (entries[1, layout.QUEUE_KEY_LO], entries[1, layout.QUEUE_KEY_HI]) == (3, 0)
    assert entries[:, layout.QUEUE_FRAME].tolist() == [9, 4]


def _frames(n: int) -> PendingFrames:
    return PendingFrames(
        slots=np.zeros((n, 12), np.uint32),
        target_words=np.arange(n, dtype=np.uint32) << np.uint32(15),
        keys=np.zeros(n, np.uint64),
        fingerprints=[f"fp{i}" for i in range(n)],
    )


def test_records_become_finished_frames():
    frames = _frames(3)
    seed = np.zeros(SEED_BYTES, np.uint8)
    seed[:16] = np.arange(1, 17)
    seed[28:] = [0xAA, 0xBB, 0xCC, 0xDD]
    record = np.zeros(layout.RECORD_WORDS, np.uint32)
    record[layout.RECORD_FRAME] = 2
    record[layout.RECORD_SEED : layout.RECORD_SEED + 5] = layout.seed_words(seed[None])[0]
    record[layout.RECORD_GOLDEN] = (2 << 15) | 1
    record[layout.RECORD_MATCHED] = 31
    record[layout.RECORD_REWARD] = layout.float_bits(0.75)
    record[layout.RECORD_GENERATIONS] = 12
    record[layout.RECORD_EVALUATIONS_LO], record[layout.RECORD_EVALUATIONS_HI] = 5, 1
    positions, results = layout.finished_frames(record[None], frames, difficulty=17)
    assert positions == [2]
    r = results[0]
    assert (r.fingerprint, r.best_seed, r.golden, r.matched_bits) == (
        "fp2",
        seed.tobytes(),
        (2 << 15) | 1,
        31,
    )
    assert (r.hamming, r.reward, r.generations, r.evaluations, r.solved) == (1, 0.75, 12, 2**32 + 5, True)


def test_a_record_naming_no_frame_of_the_search_is_an_error():
    record = np.zeros((1, layout.RECORD_WORDS), np.uint32)
    record[0, layout.RECORD_FRAME] = 3
    with pytest.raises(ValueError, match="returned frame 3 of 3"):
        layout.finished_frames(record, _frames(3), difficulty=17)


def test_every_layout_constant_reaches_the_cuda_defines_once():
    defines = layout.c_defines()
    for name in (
        "CFG_POPULATION",
        "QUEUE_WORDS",
        "RECORD_REWARD",
        "STATE_WORDS",
        "POP_FIELDS",
        "ELITE_ORDER",
    ):
        assert defines[f"HASHER_{name}"] == getattr(layout, name)
    assert defines["HASHER_NONCE_FLIPS"] == ", ".join(
        str(v) for v in reward.nonce_flips(np.arange(reward.MAX_FLIPS + 1))
    )
    assert defines["HASHER_PREFIX_SCORE"] == 64 and defines["HASHER_MAX_SCORE"] == 96
