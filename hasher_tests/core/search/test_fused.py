"""The compiled per-generation step of the search equals the numpy definitions bit for bit.

``hasher_core.search.reward``'s numpy functions define the reward, the advantages, selection, mutation and
fresh seeds readably; the search runs Numba versions fused over all frames. These tests run both
on the same inputs (with many ties, so ordering and tie-breaks are exercised) and compare every
output array exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from hasher_core.header import leading_equal_bits
from hasher_core.search import fused, fused_math
from hasher_core.search import reward as spec
from hasher_core.search.config import SearchConfig
from hasher_core.search.loop import _ActiveSet


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 37, 128, 129, 192, 255, 256, 1000, 4099])
def test_pairwise_sum_adds_in_numpys_order(n):
    rng = np.random.default_rng(n)
    rows = (rng.random((40, n)) * rng.random((40, 1)) * 3).astype(np.float32)
    assert [fused_math.pairwise_sum(r, n) for r in rows] == list(rows.sum(axis=1))


def test_compiled_populations_equal_fresh_seeds_and_scan_blocks():
    keys = np.array([1, 2**64 - 1, 12345], np.uint64)
    for grpo in (True, False):
        seeds = np.full((3, 37, 32), 0xAA, np.uint8)
        fused.start_populations(seeds, np.arange(3), keys, grpo)
        zero = np.zeros(3, np.int64)
        want = spec.fresh_seeds(keys, zero, 37) if grpo else spec.scan_population(keys, zero, 37)
        assert (seeds == want).all()
    # A scan block that crosses the end of the 2^32 nonces rolls the extranonce mid-block.
    generation = (2**32 - 1) // 5
    block = np.zeros((5, 32), np.uint8)
    fused.write_scan(block, keys[0], generation, 5)
    assert (block == spec.scan_population(keys[:1], np.array([generation]), 5)[0]).all()


@pytest.mark.parametrize("advantage", [0.0, 3.0, -3.0, 1 / 3, 0.25, 1.5, 9.0, -0.7, 1e9])
def test_compiled_mutant_equals_mutate(advantage):
    keys = np.array([99], np.uint64)
    parents = spec.fresh_seeds(keys, np.zeros(1, np.int64), 64)
    adv = np.full((1, 64), advantage, np.float32)
    want = spec.mutate(parents, adv, keys, np.array([7]))
    base = np.uint64(fused_math.stream_base(keys[0], 7, spec.STREAM_MUTATION))
    got = np.zeros_like(parents)
    for e in range(64):
        w_nonce = np.uint64(fused_math.stream_word(base, 2 * e))
        w_extranonce = np.uint64(fused_math.stream_word(base, 2 * e + 1))
        fused.write_mutant(got, 0, e, parents[0], e, adv[0, e], w_nonce, w_extranonce)
    assert (got == want).all()


def numpy_step(s: _ActiveSet, golden, keys, config: SearchConfig):
    """The generation step written with the numpy definitions (what the compiled step must equal)."""
    p, elites, difficulty = config.population, config.elites, config.difficulty_bits
    epochs = np.asarray(config.epochs)
    row = 0
    for f in np.flatnonzero(s.frame >= 0):
        first = s.first_unevaluated[f]
        s.golden[f, first:] = golden[row : row + p - first]
        s.keys[f, first:] = keys[row : row + p - first]
        row += p - first
        s.evaluations[f] += p - first
    a = np.flatnonzero(s.frame >= 0)
    g, t = s.golden[a], s.target[a][:, None]
    matched = leading_equal_bits(g, t)
    reward = spec.compute_reward(g, s.keys[a], t, difficulty, config.reward_weights)
    top = matched.max(axis=1)
    pick = np.argmax(np.where(matched == top[:, None], reward, -np.inf), axis=1)
    ar = np.arange(len(a))
    better = (top > s.best_matched[a]) | ((top == s.best_matched[a]) & (reward[ar, pick] > s.best_reward[a]))
    s.best_matched[a[better]] = top[better]
    s.best_reward[a[better]] = reward[ar, pick][better]
    s.best_seed[a[better]] = s.seeds[a[better], pick[better]]
    s.best_golden[a[better]] = g[ar[better], pick[better]]
    history = (s.generation[a].copy(), reward.mean(axis=1), reward.max(axis=1))
    done = (s.best_matched[a] >= difficulty) | (s.generation[a] + 1 >= config.max_generations)
    s.done[:] = False
    s.done[a[done]] = True
    keep, c = ~done, a[~done]
    if not c.size:
        return history
    next_gen = s.generation[c] + 1
    if config.strategy == "grpo":
        prefix = matched[keep] >= epochs[s.epoch[c]][:, None]
        adv = spec.group_advantages(spec.hamming_similarity(g[keep], t[keep]), prefix)
        s.epoch[c] = np.minimum(np.searchsorted(epochs, s.best_matched[c], side="right"), len(epochs) - 1)
        s.seeds[c], order = spec.grpo_next_population(s.seeds[c], adv, s.key[c], next_gen, elites)
        s.golden[c, :elites] = spec.take_rows(s.golden[c], order)
        s.keys[c, :elites] = spec.take_rows(s.keys[c], order)
        s.first_unevaluated[c] = elites
    else:
        s.seeds[c] = spec.scan_population(s.key[c], next_gen, p)
        s.first_unevaluated[c] = 0
    s.generation[c] = next_gen
    return history


def make_state(config: SearchConfig, capacity: int, seed: int) -> _ActiveSet:
    rng = np.random.default_rng(seed)
    s = _ActiveSet(capacity, config.population)
    s.frame[:] = np.arange(capacity)
    s.frame[1] = -1  # a free slot in the middle
    s.key[:] = rng.integers(0, 2**63, capacity, dtype=np.uint64)
    s.slots[:] = rng.integers(0, 2**32, (capacity, 12), dtype=np.uint32)
    s.target[:] = rng.integers(0, 1 << 17, capacity)
    s.best_matched[:] = -1
    s.best_reward[:] = -np.inf
    fused.start_populations(s.seeds, np.arange(capacity), s.key, config.strategy == "grpo")
    return s


STATE_FIELDS = (
    "generation",
    "epoch",
    "seeds",
    "golden",
    "keys",
    "first_unevaluated",
    "best_matched",
    "best_reward",
    "best_seed",
    "best_golden",
    "evaluations",
    "done",
)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"strategy": "scan"},
        {"population": 37, "elite_ratio": 0.6, "reward_weights": (0.2, 0.5, 0.3)},
        {"population": 300, "difficulty_schedule": (3, 5, 7), "difficulty_bits": 9},
        {"population": 2, "elite_ratio": 0.1},
    ],
)
def test_compiled_generation_step_equals_the_numpy_definitions(changes):
    config = SearchConfig(**{"difficulty_bits": 12, "max_generations": 5, **changes}).validate()
    capacity, p = 5, config.population
    mine, theirs = make_state(config, capacity, 1), make_state(config, capacity, 1)
    rng = np.random.default_rng(2)
    sums = np.zeros((3, 8))
    want_sums = np.zeros((3, 8))
    for _ in range(6):
        rows = fused.gather_batch(
            mine.frame, mine.first_unevaluated, mine.slots, mine.seeds, mine.batch_slots, mine.batch_seeds
        )
        active = np.flatnonzero(mine.frame >= 0)
        expected_rows = np.concatenate([mine.seeds[f, mine.first_unevaluated[f] :] for f in active])
        assert (mine.batch_seeds[:rows] == expected_rows).all()
        assert (
            mine.batch_slots[:rows] == np.repeat(mine.slots[active], p - mine.first_unevaluated[active], 0)
        ).all()
        # Goldens from a small set of distances to the target: many ties, prefixes of 0–8 bits
        # (the schedule climbs), and every other generation one exact match (a frame solves).
        targets = np.repeat(mine.target[active], p - mine.first_unevaluated[active])
        high = rng.choice([1 << 23, 1 << 24, 1 << 26, 1 << 28, 1 << 31], rows) | rng.choice([0, 1, 3], rows)
        if rng.random() < 0.5:
            high[rng.integers(rows)] = 0
        golden = (targets ^ high).astype(np.uint32)
        keys = (golden[:, None] ^ rng.choice([0, 1, 0xFF], (rows, 3))).astype(np.uint32)
        frames_at, sum_mean, sum_best = sums[0].astype(np.int64), sums[1], sums[2]
        finished = fused.generation_step(
            mine.frame, mine.generation, mine.epoch, mine.key, mine.target, mine.seeds, mine.golden,
            mine.keys, mine.first_unevaluated, golden, keys, mine.best_matched, mine.best_reward,
            mine.best_seed, mine.best_golden, mine.evaluations, np.asarray(config.epochs),
            config.difficulty_bits, config.max_generations, np.asarray(config.reward_weights, np.float32),
            config.elites, config.strategy == "grpo", mine.done, frames_at, sum_mean, sum_best,
        )  # fmt: skip
        sums[0] = frames_at
        gens, mean, best = numpy_step(theirs, golden, keys, config)
        np.add.at(want_sums[0], gens, 1)
        np.add.at(want_sums[1], gens, mean)
        np.add.at(want_sums[2], gens, best)
        for name in STATE_FIELDS:
            assert (getattr(mine, name) == getattr(theirs, name)).all(), name
        assert (sums == want_sums).all()
        assert finished == mine.done.sum()
        for s in (mine, theirs):
            s.frame[s.done] = -1
        if not (mine.frame >= 0).any():
            break
    assert want_sums[0].sum() > capacity  # several generations really ran
