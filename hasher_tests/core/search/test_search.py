"""The seed search (DESIGN §4.3–4.5): config, fingerprints, reward, evolution, determinism, inputs.

Search mechanics run on ``fast_oracle``, a vectorised stand-in random oracle (milliseconds);
correctness of what is reported is checked against the hashlib reference recursion.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hasher_core.design import VOCABULARY_SIZE
from hasher_core.errors import FramesInputError, SearchConfigError
from hasher_core.header import golden_token, leading_equal_bits, target_word
from hasher_core.search import reward
from hasher_core.search.config import SearchConfig
from hasher_core.search.loop import frame_fingerprint, search_frames
from hasher_core.search.records import FinishedFrame
from hasher_core.search.results import attach_results, search_plot_png, validate_frames_table
from hasher_resources.sha256 import evaluate_with_keys
from hasher_resources.sha256.device_search_host import standin_evaluate

#: A vectorised pseudo-random function of (slots, seed, time) with the kernel's signature (the
#: device search's stand-in recursion, also compiled into its host build).
fast_oracle = standin_evaluate


def reference_evaluate(slots, seeds, header_time):
    return evaluate_with_keys(slots, seeds, header_time=header_time, backend="reference")


def cpu_evaluate(slots, seeds, header_time):
    return evaluate_with_keys(slots, seeds, header_time=header_time, backend="cpu")


def make_frames(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**32, (n, 12), dtype=np.uint32), rng.integers(0, VOCABULARY_SIZE, n)


def frames_table(slots: np.ndarray, targets: np.ndarray) -> pa.Table:
    cols = {f"asic_slot_{k}": pa.array(slots[:, k].view(np.int32)) for k in range(12)}
    cols["target_token_id"] = pa.array(np.asarray(targets, np.int32))
    cols["best_seed"] = pa.nulls(len(targets), pa.binary())
    return pa.table(cols)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"difficulty_bits": 0}, "difficulty_bits must be an integer in 1–32, got 0"),
        ({"difficulty_bits": 33}, "difficulty_bits must be an integer in 1–32, got 33"),
        ({"difficulty_schedule": (12, 10)}, "must not decrease"),
        ({"difficulty_schedule": (12, 24)}, "goes above difficulty_bits=17"),
        ({"difficulty_schedule": ()}, "non-empty list"),
        ({"population": 1}, "population must be an integer in 2–"),
        ({"elite_ratio": 1.0}, "elite_ratio must be in (0, 1)"),
        ({"max_generations": 0}, "max_generations must be a positive integer"),
        ({"strategy": "cma"}, "strategy must be one of ('grpo', 'scan'), got 'cma'"),
        ({"reward_weights": (1.0, -1.0, 0.0)}, "reward_weights must be three finite non-negative"),
        ({"header_time": 2**32}, "header_time must fit in 32 bits"),
        ({"frames_per_call": 0}, "frames_per_call must be a positive integer"),
    ],
)
def test_config_out_of_range_is_rejected_with_the_setting_named(changes, message):
    with pytest.raises(SearchConfigError) as err:
        SearchConfig(**changes).validate()
    assert message in str(err.value)


def test_search_refuses_a_bad_difficulty_before_evaluating_anything():
    calls = []
    slots, targets = make_frames(2)
    with pytest.raises(SearchConfigError, match="difficulty_bits"):
        search_frames(slots, targets, SearchConfig(difficulty_bits=40), lambda *a: calls.append(a))
    assert calls == []


def test_schedule_epochs_end_at_the_final_difficulty():
    assert SearchConfig(difficulty_bits=20, difficulty_schedule=(12, 16)).epochs == (12, 16, 20)
    assert SearchConfig(difficulty_bits=16, difficulty_schedule=(12, 16)).epochs == (12, 16)
    assert SearchConfig(difficulty_bits=16).epochs == (16,)


def test_fingerprint_covers_everything_that_changes_the_seed_but_not_batching():
    slots, targets = make_frames(1)
    base = SearchConfig()
    fp = frame_fingerprint(slots[0], int(targets[0]), base)
    assert re.fullmatch("[0-9a-f]{32}", fp)
    assert frame_fingerprint(slots[0], int(targets[0]), SearchConfig(frames_per_call=3)) == fp
    changed = [
        SearchConfig(difficulty_bits=21),
        SearchConfig(difficulty_schedule=(12,)),
        SearchConfig(header_time=1),
        SearchConfig(strategy="scan"),
        SearchConfig(population=128),
        SearchConfig(elite_ratio=0.5),
        SearchConfig(max_generations=10),
        SearchConfig(rng_seed=1),
        SearchConfig(reward_weights=(1.0, 0.0, 0.0)),
    ]
    fps = {frame_fingerprint(slots[0], int(targets[0]), c) for c in changed}
    assert fp not in fps and len(fps) == len(changed)
    other = slots[0].copy()
    other[11] ^= 1
    assert frame_fingerprint(other, int(targets[0]), base) != fp
    assert frame_fingerprint(slots[0], int(targets[0]) + 1, base) != fp


def test_fingerprint_includes_the_algorithm_version(monkeypatch):
    from hasher_core.search import config as search_config

    slots, targets = make_frames(1)
    fp = frame_fingerprint(slots[0], int(targets[0]), SearchConfig())
    monkeypatch.setattr(search_config, "ALGORITHM_VERSION", "hasher-recursion-v0")
    assert frame_fingerprint(slots[0], int(targets[0]), SearchConfig()) != fp


def test_reward_follows_design_4_3_on_hand_computed_values():
    target = np.array([0x0000_1234], np.uint32)
    golden = np.array([0x0000_1234], np.uint32)  # exact match, a valid token id
    keys = np.array([[0x0000_1234, 0xFFFF_EDCB, 0x0000_1235]], np.uint32)  # similarity 1, 0, 31/32
    r = reward.compute_reward(golden, keys, target, 32, (0.6, 0.3, 0.1))
    stability = (1 + 0 + 31 / 32) / 3
    assert r[0] == pytest.approx(0.6 * 1.1 + 0.3 * stability + 0.1 * 1.0, rel=1e-6)
    far = np.array([0xFFFF_EDCB], np.uint32)  # every bit differs; not a token id
    r = reward.compute_reward(far, np.repeat(far[:, None], 3, axis=1), target, 4, (0.6, 0.3, 0.1))
    assert r[0] == pytest.approx(0.3, rel=1e-6)


def test_advantages_are_group_relative_and_zero_for_a_flat_group():
    sim = np.array([[0.5, 0.75, 1.0], [0.5, 0.5, 0.5]], np.float32)
    adv = reward.group_advantages(sim, np.zeros_like(sim, bool))
    assert adv[0] == pytest.approx([-1.2247449, 0.0, 1.2247449], rel=1e-5)
    assert (adv[1] == 0).all()
    boosted = reward.group_advantages(sim, np.array([[True, False, False], [False] * 3]))
    assert boosted[0, 0] > boosted[0, 2]  # a prefix match outranks better Hamming similarity


def test_fewer_flips_for_higher_advantage_mostly_in_the_nonce():
    in_nonce, in_extranonce = reward.flip_counts(np.array([0.0, 1.0, 4.0, 100.0]))
    total = in_nonce + in_extranonce
    assert list(total) == [10, 5, 2, 1]
    assert list(in_nonce) == [7, 4, 1, 1]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**64 - 1), st.floats(-5, 5))
def test_mutants_touch_only_extranonce_and_nonce_and_differ_from_the_parent(key, advantage):
    keys = np.array([key], np.uint64)
    parents = reward.fresh_seeds(keys, np.zeros(1, np.int64), 16)
    children = reward.mutate(parents, np.full((1, 16), advantage), keys, np.ones(1, np.int64))
    assert (children[..., 16:28] == 0).all()
    flipped = np.bitwise_count(parents ^ children).sum(axis=-1)
    nonce_flipped = np.bitwise_count(parents[..., 28:] ^ children[..., 28:]).sum(axis=-1)
    in_nonce, in_extranonce = reward.flip_counts(np.array([advantage]))
    # Each flip toggles one bit (two flips of one bit cancel): a field's changed bits have the parity
    # of its flip count.
    assert (nonce_flipped % 2 == in_nonce[0] % 2).all()
    assert ((flipped - nonce_flipped) % 2 == in_extranonce[0] % 2).all()
    assert (flipped >= 1).all()
    assert (flipped <= in_nonce[0] + in_extranonce[0]).all()


def test_fresh_seeds_keep_the_reserved_bytes_zero_and_depend_only_on_key_and_generation():
    keys = np.array([1, 2, 3], np.uint64)
    a = reward.fresh_seeds(keys, np.array([0, 0, 5]), 8)
    b = reward.fresh_seeds(keys[1:], np.array([0, 5]), 8)
    assert (a[..., 16:28] == 0).all()
    assert (a[1:] == b).all()
    assert not (a[0] == a[1]).all()


def test_scan_sweeps_consecutive_nonces_under_one_extranonce_then_rolls_it():
    keys = np.array([9], np.uint64)
    gen0 = reward.scan_population(keys, np.array([0]), 4)
    gen1 = reward.scan_population(keys, np.array([1]), 4)
    nonces = np.concatenate([gen0[0, :, 28:], gen1[0, :, 28:]]).view(">u4").ravel()
    assert list(nonces) == list(range(8))
    assert (gen0[0, :, :16] == gen0[0, 0, :16]).all() and (gen1[0, :, :16] == gen0[0, 0, :16]).all()
    last = reward.scan_population(keys, np.array([(2**32 - 1) // 5]), 5)  # offsets 2^32-1 … 2^32+3
    assert list(last[0, :, 28:].view(">u4").ravel()) == [2**32 - 1, 0, 1, 2, 3]
    assert (last[0, 0, :16] != last[0, 1, :16]).any() and (last[0, 1:, :16] == last[0, 1, :16]).all()


@pytest.mark.parametrize("strategy", ["grpo", "scan"])
def test_reported_seeds_really_solve_their_frames_on_the_reference_kernel(strategy):
    slots, targets = make_frames(4)
    config = SearchConfig(difficulty_bits=5, population=16, max_generations=40, strategy=strategy)
    r = search_frames(slots, targets, config, reference_evaluate)
    golden, keys = evaluate_with_keys(slots, r.best_seed, backend="reference")
    words = target_word(targets)  # DESIGN §4.3: the token in the top 17 bits
    assert (golden == r.golden).all()
    assert (leading_equal_bits(golden, words) == r.matched_bits).all()
    assert (np.bitwise_count(golden ^ words) == r.hamming).all()
    expected_reward = reward.compute_reward(golden, keys, words, 5, config.reward_weights)
    assert np.allclose(expected_reward, r.reward)
    assert r.solved.all() and (r.matched_bits >= 5).all()
    assert ((golden >> np.uint32(27)) == (targets >> 12)).all()  # the token's top 5 bits
    assert (r.best_seed[:, 16:28] == 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["grpo", "scan"])
def test_seeds_solved_at_17_bits_give_back_their_token_on_hashlib(strategy):
    """The default difficulty is an exact token: ``golden >> 15 == target`` (searched on the CPU
    backend, checked on the hashlib reference)."""
    slots, targets = make_frames(2, seed=11)
    config = SearchConfig(strategy=strategy, max_generations=20_000)
    assert config.difficulty_bits == 17
    r = search_frames(slots, targets, config, cpu_evaluate)
    golden, _ = evaluate_with_keys(slots, r.best_seed, backend="reference")
    assert r.solved.all() and (golden == r.golden).all()
    assert (golden_token(golden) == targets).all()


@pytest.mark.parametrize("strategy", ["grpo", "scan"])
def test_same_config_and_rng_seed_give_the_same_seeds_whatever_the_batching(strategy):
    slots, targets = make_frames(24)
    base = SearchConfig(difficulty_bits=10, population=32, max_generations=64, strategy=strategy)
    a = search_frames(slots, targets, base, fast_oracle)
    b = search_frames(slots, targets, SearchConfig(**{**base.__dict__, "frames_per_call": 5}), fast_oracle)
    order = np.random.default_rng(3).permutation(24)
    c = search_frames(slots[order], targets[order], base, fast_oracle)
    for other, idx in ((b, slice(None)), (c, np.argsort(order))):
        assert (other.best_seed[idx] == a.best_seed).all()
        assert (other.generations[idx] == a.generations).all()
        assert (other.evaluations[idx] == a.evaluations).all()
    d = search_frames(slots, targets, SearchConfig(**{**base.__dict__, "rng_seed": 1}), fast_oracle)
    assert (d.best_seed != a.best_seed).any()


def test_identical_frames_are_searched_once_and_fanned_out():
    slots, targets = make_frames(3)
    slots = np.concatenate([slots, slots[[1, 1, 0]]])
    targets = np.concatenate([targets, targets[[1, 1, 0]]])
    seen = []

    def counting(s, seeds, t):
        seen.append(len(s))
        return fast_oracle(s, seeds, t)

    config = SearchConfig(difficulty_bits=8, population=32, max_generations=32)
    r = search_frames(slots, targets, config, counting)
    assert r.unique_frames == 3 and r.frames_searched == 3 and len(r) == 6
    assert (r.best_seed[3] == r.best_seed[1]).all() and (r.best_seed[5] == r.best_seed[0]).all()
    assert r.fingerprint[4] == r.fingerprint[1]
    single = search_frames(slots[:3], targets[:3], config, fast_oracle)
    assert sum(seen) == single.run_evaluations == r.run_evaluations


def test_grpo_keeps_elites_without_hashing_them_again():
    slots, targets = make_frames(1)
    config = SearchConfig(difficulty_bits=32, population=16, elite_ratio=0.25, max_generations=5)
    sizes = []

    def counting(s, seeds, t):
        sizes.append(len(s))
        return fast_oracle(s, seeds, t)

    r = search_frames(slots, targets, config, counting)
    assert sizes == [16, 12, 12, 12, 12]
    assert r.evaluations[0] == 64 and r.generations[0] == 5 and not r.solved[0]


def test_unsolved_frames_keep_their_best_seed_and_stop_at_max_generations():
    slots, targets = make_frames(3)
    config = SearchConfig(difficulty_bits=30, population=8, max_generations=6, strategy="scan")
    r = search_frames(slots, targets, config, reference_evaluate)
    assert not r.solved.any() and (r.generations == 6).all() and (r.evaluations == 48).all()
    golden, _ = evaluate_with_keys(slots, r.best_seed, backend="reference")
    assert (golden == r.golden).all() and (r.matched_bits < 30).all()


def test_difficulty_schedule_climbs_and_solves_only_at_the_final_difficulty():
    slots, targets = make_frames(6)
    # ~14,000 evaluations of budget for an expected 2^10 per frame: failing to solve is a bug.
    config = SearchConfig(difficulty_bits=10, difficulty_schedule=(4, 7), population=32, max_generations=600)
    r = search_frames(slots, targets, config, fast_oracle)
    assert r.solved.all() and (r.matched_bits >= 10).all()
    hard = SearchConfig(difficulty_bits=30, difficulty_schedule=(4,), population=8, max_generations=3)
    assert not search_frames(slots, targets, hard, fast_oracle).solved.any()


def test_progress_reports_frames_solved_rate_and_eta():
    slots, targets = make_frames(10)
    ticks = iter(np.arange(0, 1000, 0.5))
    reports = []
    config = SearchConfig(difficulty_bits=6, population=16, max_generations=50, frames_per_call=3)
    r = search_frames(
        slots,
        targets,
        config,
        fast_oracle,
        progress=reports.append,
        progress_every_s=1.0,
        clock=lambda: next(ticks),
    )
    assert len(reports) >= 2
    final = reports[-1]
    assert final.frames_done == final.frames_total == 10 and final.solved == int(r.solved.sum())
    assert final.evaluations == r.run_evaluations and final.evaluations_per_s > 0 and final.eta_s == 0
    assert all(a.frames_done <= b.frames_done for a, b in itertools.pairwise(reports))
    assert "10/10 frames (100.0%)" in final.line()
    assert r.history.generation_frames[0] == 10 and len(r.history.solved) >= 2


def test_summary_reports_what_the_asset_shows():
    slots, targets = make_frames(5)
    r = search_frames(slots, targets, SearchConfig(difficulty_bits=6, population=16), fast_oracle)
    s = r.summary()
    assert s["frames"] == 5 and s["solved_pct"] == 100.0 and s["evaluations_this_run"] == r.run_evaluations
    assert 0 < s["search_efficiency"] <= 1 and s["mean_generations"] >= 1


class DictStore:
    """The progress-store protocol over a dict (what the SQLite store does, without a file)."""

    def __init__(self) -> None:
        self.frames: dict[str, FinishedFrame] = {}

    def get_many(self, fingerprints: list[str]) -> dict[str, FinishedFrame]:
        return {f: self.frames[f] for f in fingerprints if f in self.frames}

    def put_many(self, results: list[FinishedFrame]) -> None:
        self.frames.update((r.fingerprint, r) for r in results)


def test_the_summary_says_which_evaluations_this_run_ran_and_which_all_frames_cost():
    slots, targets = make_frames(4)
    slots, targets = (
        np.concatenate([slots, slots[:1]]),
        np.concatenate([targets, targets[:1]]),
    )  # a duplicate row
    config, store = SearchConfig(difficulty_bits=6, population=16), DictStore()
    first = search_frames(slots, targets, config, fast_oracle, store=store).summary()
    assert (first["frames"], first["unique_frames"]) == (5, 4)
    assert first["evaluations_all_frames"] == first["evaluations_this_run"] > 0  # the duplicate counted once
    again = search_frames(slots, targets, config, fast_oracle, store=store).summary()
    assert again["evaluations_this_run"] == 0 and again["unique_frames_searched"] == 0
    assert (again["frames_from_store"], again["unique_frames_from_store"]) == (5, 4)
    assert again["evaluations_all_frames"] == first["evaluations_all_frames"]


def test_an_evaluator_returning_the_wrong_shape_is_named():
    slots, targets = make_frames(2)
    with pytest.raises(TypeError, match=r"evaluator must return golden uint32\[64\]"):
        search_frames(
            slots, targets, SearchConfig(population=32), lambda s, d, t: (np.zeros(1, np.uint32), None)
        )


def test_frames_table_gives_bit_cast_slots_and_targets():
    slots, targets = make_frames(4)
    s, t = validate_frames_table(frames_table(slots, targets))
    assert s.dtype == np.uint32 and (s == slots).all() and (t == targets).all()


def test_missing_slot_column_is_named():
    slots, targets = make_frames(2)
    table = frames_table(slots, targets).drop_columns(["asic_slot_7"])
    with pytest.raises(FramesInputError, match=r"missing column\(s\) \['asic_slot_7'\]"):
        validate_frames_table(table)


def test_wrong_width_slot_column_is_named():
    slots, targets = make_frames(2)
    table = frames_table(slots, targets)
    table = table.set_column(3, "asic_slot_3", pa.array(slots[:, 3].astype(np.int64)))
    with pytest.raises(FramesInputError, match=r"column 'asic_slot_3' must be int32 .* got int64"):
        validate_frames_table(table)


def test_null_slot_is_named_with_its_row():
    slots, targets = make_frames(3)
    table = frames_table(slots, targets)
    table = table.set_column(0, "asic_slot_0", pa.array([1, None, 3], pa.int32()))
    with pytest.raises(FramesInputError, match=r"'asic_slot_0' has 1 null.*row 1"):
        validate_frames_table(table)


@pytest.mark.parametrize("bad", [-1, VOCABULARY_SIZE])
def test_target_outside_the_vocabulary_is_named_with_its_row(bad):
    slots, targets = make_frames(3)
    targets[2] = bad
    with pytest.raises(FramesInputError, match=f"target_token_id {bad} at row 2 is outside the vocabulary"):
        validate_frames_table(frames_table(slots, targets))
    with pytest.raises(FramesInputError, match="at row 2"):
        search_frames(slots, targets, SearchConfig(), fast_oracle)


def test_attach_results_fills_best_seed_in_place_and_adds_the_result_columns():
    slots, targets = make_frames(3)
    table = frames_table(slots, targets)
    config = SearchConfig(difficulty_bits=6, population=16, header_time=7)
    r = search_frames(slots, targets, config, fast_oracle)
    out = attach_results(table, r, config, "reference")
    assert out.column_names[: table.num_columns] == table.column_names
    assert out.column("best_seed").to_pylist() == [bytes(x) for x in r.best_seed]
    for name in ("golden", "matched_bits", "hamming", "reward", "generations", "evaluations", "solved"):
        assert out.column(name).to_pylist() == getattr(r, name).tolist()
    assert set(out.column("difficulty_bits").to_pylist()) == {6}
    assert set(out.column("header_time").to_pylist()) == {7}
    assert set(out.column("kernel_backend").to_pylist()) == {"reference"}


@pytest.mark.slow  # importing matplotlib takes a couple of seconds
def test_search_plot_is_a_png():
    slots, targets = make_frames(6)
    r = search_frames(slots, targets, SearchConfig(difficulty_bits=8, population=16), fast_oracle)
    assert search_plot_png(r.history)[:8] == b"\x89PNG\r\n\x1a\n"
