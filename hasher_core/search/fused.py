"""The seed search's per-generation work, compiled: one pass per frame over the [frames, population]
arrays, without temporaries (DESIGN §4.3–4.4).

These do the same arithmetic as the numpy specification in ``reward`` (float32 where numpy used
float32, numpy's pairwise summation order for the means), so the search gives the same seeds as the
readable definition, bit for bit; the tests check them against each other. Host work is then a small
fraction of a kernel evaluation per population member.
"""

from __future__ import annotations

import numpy as np

from hasher_core.design import EXTRANONCE_BYTES, SEED_BYTES, SEED_NONCE_OFFSET, TOKEN_SHIFT, VOCABULARY_SIZE
from hasher_core.jit import njit

from .fused_math import BYTE_MASK, leading_equal, pairwise_sum, popcount32, put_le, stream_base, stream_word
from .reward import (
    MAX_EXTRANONCE_FLIPS,
    MAX_FLIPS,
    MAX_NONCE_FLIPS,
    PREFIX_REWARD_BONUS,
    STREAM_FRESH,
    STREAM_MUTATION,
    STREAM_SCAN_EXTRANONCE,
    nonce_flips,
)

_INV32 = np.float32(1 / 32)  # x / 32 == x * (1/32) exactly: a power of two
#: Nonce flips for a mutant flipping ``total`` bits, indexed by ``total`` (the split of flip_counts).
_NONCE_FLIPS = nonce_flips(np.arange(MAX_FLIPS + 1))
_RESERVED_START = EXTRANONCE_BYTES
_SEED_WORDS = SEED_BYTES // 8
_MAX_Q = 32 + 64  # largest advantage score: 32 equal bits + the prefix bonus (2.0 = 64/32)


@njit(cache=True)
def write_fresh(seeds, start, count, base):
    """``fresh_seeds`` into ``seeds[start:start+count]`` (uint8[P, 32]) from stream ``base``.

    The stream's bytes (words little-endian) go 20 to a seed: 16 extranonce, then 4 nonce bytes.
    Two seeds take exactly five words.
    """
    for pair in range((count + 1) // 2):
        w0, w1, w2 = (
            stream_word(base, 5 * pair),
            stream_word(base, 5 * pair + 1),
            stream_word(base, 5 * pair + 2),
        )
        s = start + 2 * pair
        put_le(seeds, s, 0, w0, 0, 8)
        put_le(seeds, s, 8, w1, 0, 8)
        put_le(seeds, s, SEED_NONCE_OFFSET, w2, 0, 4)
        if 2 * pair + 1 < count:
            w3, w4 = stream_word(base, 5 * pair + 3), stream_word(base, 5 * pair + 4)
            put_le(seeds, s + 1, 0, w2, 32, 4)
            put_le(seeds, s + 1, 4, w3, 0, 8)
            put_le(seeds, s + 1, 12, w4, 0, 4)
            put_le(seeds, s + 1, SEED_NONCE_OFFSET, w4, 32, 4)
    for row in range(start, start + count):
        for r in range(_RESERVED_START, SEED_NONCE_OFFSET):
            seeds[row, r] = 0


@njit(cache=True)
def write_scan(seeds, key, generation, population):
    """``scan_population`` for one frame into ``seeds`` (uint8[P, 32])."""
    extranonce = np.empty(EXTRANONCE_BYTES, np.uint8)
    stream = -1
    for i in range(population):
        offset = generation * population + i
        rollover = offset >> 32
        if rollover != stream:  # at most twice per block
            stream = rollover
            base = stream_base(key, rollover, STREAM_SCAN_EXTRANONCE)
            w0, w1 = stream_word(base, 0), stream_word(base, 1)
            for b in range(8):
                extranonce[b] = np.uint8((w0 >> np.uint64(8 * b)) & BYTE_MASK)
                extranonce[8 + b] = np.uint8((w1 >> np.uint64(8 * b)) & BYTE_MASK)
        for b in range(EXTRANONCE_BYTES):
            seeds[i, b] = extranonce[b]
        for b in range(_RESERVED_START, SEED_NONCE_OFFSET):
            seeds[i, b] = 0
        nonce = offset & 0xFFFFFFFF
        for b in range(4):
            seeds[i, SEED_NONCE_OFFSET + b] = np.uint8((nonce >> (24 - 8 * b)) & 0xFF)


@njit(cache=True)
def write_mutant(seeds, f, row, parents, parent, advantage, w_nonce, w_extranonce):
    """``seeds[f, row]`` = the Bitcoin-aware mutant of ``parents[parent]`` (``mutate`` for one
    parent, same float32 flip count), from its two random words."""
    x = np.rint(np.float32(MAX_FLIPS) / (np.float32(abs(advantage)) + np.float32(1.0)))
    total = int(min(max(x, np.float32(1.0)), np.float32(MAX_FLIPS)))
    in_nonce = _NONCE_FLIPS[total]
    # Fixed trip counts and no data-dependent branches: the unused fields are masked out.
    nonce_mask = 0
    for k in range(MAX_NONCE_FLIPS):
        pos = np.int64((w_nonce >> np.uint64(5 * k)) & np.uint64(31))
        nonce_mask ^= np.int64(k < in_nonce) << pos
    low = high = 0  # the 128 extranonce bits as two little-endian 64-bit words
    for k in range(MAX_EXTRANONCE_FLIPS):
        pos = np.int64((w_extranonce >> np.uint64(7 * k)) & np.uint64(127))
        bit = np.int64(k < total - in_nonce) << (pos & 63)
        in_high = pos >> 6
        low ^= bit * (1 - in_high)
        high ^= bit * in_high
    for b in range(8):
        seeds[f, row, b] = parents[parent, b] ^ np.uint8((low >> (8 * b)) & 0xFF)
        seeds[f, row, 8 + b] = parents[parent, 8 + b] ^ np.uint8((high >> (8 * b)) & 0xFF)
    for b in range(EXTRANONCE_BYTES, SEED_NONCE_OFFSET):
        seeds[f, row, b] = parents[parent, b]
    for b in range(4):  # the nonce is big-endian in the seed
        seeds[f, row, SEED_NONCE_OFFSET + b] = parents[parent, SEED_NONCE_OFFSET + b] ^ np.uint8(
            (nonce_mask >> (24 - 8 * b)) & 0xFF
        )


@njit(cache=True)
def start_populations(seeds, slots_to_start, keys, grpo):
    """Generation 0 for the frames in ``slots_to_start``: ``seeds[i]`` from ``keys[i]``."""
    population = seeds.shape[1]
    for i in slots_to_start:
        if grpo:
            write_fresh(seeds[i], 0, population, stream_base(keys[i], 0, STREAM_FRESH))
        else:
            write_scan(seeds[i], keys[i], 0, population)


@njit(cache=True)
def gather_batch(frame, first_unevaluated, slots, seeds, out_slots, out_seeds):
    """Copy every row the active frames still have to evaluate (``seeds[f, first:]`` for each
    active f, in slot order) into ``out_slots``/``out_seeds``; returns the number of rows."""
    population = seeds.shape[1]
    seed_words, out_words = seeds.view(np.uint64), out_seeds.view(np.uint64)
    row_start = np.empty(frame.shape[0], np.int64)
    rows = 0
    for f in range(frame.shape[0]):
        row_start[f] = rows
        if frame[f] >= 0:
            rows += population - first_unevaluated[f]
    for f in range(frame.shape[0]):
        if frame[f] < 0:
            continue
        n = row_start[f]
        for p in range(first_unevaluated[f], population):
            for w in range(slots.shape[1]):
                out_slots[n, w] = slots[f, w]
            for w in range(_SEED_WORDS):
                out_words[n, w] = seed_words[f, p, w]
            n += 1
    return rows


@njit(cache=True)
def _score_frame(f, golden, keys, target, difficulty, weights, reward, matched):
    """``compute_reward`` and ``leading_equal_bits`` of frame f's population into ``reward`` and
    ``matched``; returns the index of its best member: most bits matched, then highest reward,
    first in population order."""
    w_align, w_stab, w_format = weights[0], weights[1], weights[2]
    n_keys = keys.shape[2]
    t = np.int64(target[f])  # int64 words: Numba's uint32 mixes would go through float64
    for p in range(golden.shape[1]):
        g = np.int64(golden[f, p])
        m = leading_equal(g, t)
        matched[p] = m
        equal = 32 - popcount32(g ^ t)
        bonus = np.float32(PREFIX_REWARD_BONUS) * np.float32(m >= difficulty)
        alignment = np.float32(equal) * _INV32 + bonus
        stab = np.float32(-0.0)
        for k in range(n_keys):
            stab += np.float32(32 - popcount32(np.int64(keys[f, p, k]) ^ g)) * _INV32
        stability = stab / np.float32(n_keys)
        valid = np.float32((g >> TOKEN_SHIFT) < VOCABULARY_SIZE)  # the token it stands for is valid
        reward[p] = w_align * alignment + w_stab * stability + w_format * valid
    top, pick = -1, 0
    for p in range(golden.shape[1]):
        if matched[p] > top or (matched[p] == top and reward[p] > reward[pick]):
            top, pick = matched[p], p
    return pick


@njit(cache=True)
def _grpo_frame(f, next_generation, epoch_bits, key, target, seeds, golden, keys, matched, elites):
    """``group_advantages`` + ``grpo_next_population`` for frame f, in place: elites (with their
    goldens and keys) to the front, one mutant each, fresh seeds after."""
    population = seeds.shape[1]
    n_keys = keys.shape[2]
    t = target[f]
    # Advantage scores b·32 = equal bits + 64 on a prefix match at the epoch's difficulty are
    # integers: their sum (so the mean) is exact, and sorting them sorts the advantages.
    score = np.empty(population, np.int64)
    total = 0
    for p in range(population):
        q = 32 - popcount32(golden[f, p] ^ t) + (64 if matched[p] >= epoch_bits else 0)
        score[p] = q
        total += q
    mean = np.float32(total) * _INV32 / np.float32(population)
    square = np.empty(population, np.float32)
    for p in range(population):
        c = np.float32(score[p]) * _INV32 - mean
        square[p] = c * c
    std = np.sqrt(pairwise_sum(square, population) / np.float32(population))
    # The first `elites` of the stable descending order of the scores (a counting sort).
    bucket = np.zeros(_MAX_Q + 1, np.int64)
    for p in range(population):
        bucket[score[p]] += 1
    start = 0
    for q in range(_MAX_Q, -1, -1):
        n_q = bucket[q]
        bucket[q] = start
        start += n_q
    order = np.empty(elites, np.int64)
    for p in range(population):
        pos = bucket[score[p]]
        bucket[score[p]] += 1
        if pos < elites:
            order[pos] = p
    elite_seeds = np.empty((elites, SEED_BYTES), np.uint8)
    elite_golden = np.empty(elites, np.uint32)
    elite_keys = np.empty((elites, n_keys), np.uint32)
    elite_adv = np.empty(elites, np.float32)
    # Seeds move as four 64-bit words (a plain copy: byte order does not matter).
    seed_words, elite_words = seeds.view(np.uint64), elite_seeds.view(np.uint64)
    for e in range(elites):
        src = order[e]
        for w in range(_SEED_WORDS):
            elite_words[e, w] = seed_words[f, src, w]
        elite_golden[e] = golden[f, src]
        for k in range(n_keys):
            elite_keys[e, k] = keys[f, src, k]
        c = np.float32(score[src]) * _INV32 - mean
        elite_adv[e] = c / std if std > 0 else np.float32(0.0)
    for e in range(elites):
        for w in range(_SEED_WORDS):
            seed_words[f, e, w] = elite_words[e, w]
        golden[f, e] = elite_golden[e]
        for k in range(n_keys):
            keys[f, e, k] = elite_keys[e, k]
    mutants = min(elites, population - elites)
    base = stream_base(key, next_generation, STREAM_MUTATION)
    for e in range(mutants):
        w_nonce, w_extranonce = stream_word(base, 2 * e), stream_word(base, 2 * e + 1)
        write_mutant(seeds, f, elites + e, elite_seeds, e, elite_adv[e], w_nonce, w_extranonce)
    fresh_base = stream_base(key, next_generation, STREAM_FRESH)
    write_fresh(seeds[f], elites + mutants, population - elites - mutants, fresh_base)


@njit(cache=True)
def generation_step(
    frame,
    generation,
    epoch,
    key,
    target,
    seeds,
    golden,
    keys,
    first_unevaluated,
    batch_golden,
    batch_keys,
    best_matched,
    best_reward,
    best_seed,
    best_golden,
    evaluations,
    epochs,
    difficulty,
    max_generations,
    weights,
    elites,
    grpo,
    done,
    history_frames,
    history_mean,
    history_best,
):
    """One generation for every active frame (``frame >= 0``), after the kernel call; returns how
    many frames finished.

    Takes the batch's goldens/keys (rows in :func:`gather_batch` order), scores the population
    (DESIGN §4.3 reward), updates each frame's best seed, marks ``done`` frames (solved at
    ``difficulty`` or out of generations), and builds the next population of every other frame in
    place: GRPO (:func:`grpo_next_population`, elites keep their goldens) or the next scan block.
    Adds each frame's mean and best reward to the history sums at its generation (``np.add.at``
    order). Frames are stepped one after another on the calling thread (the kernel call before it is
    what runs on every core); results equal the numpy definitions above bit for bit.
    """
    population = seeds.shape[1]
    n_keys = keys.shape[2]
    capacity = frame.shape[0]
    row_start = np.empty(capacity, np.int64)  # each frame's first row in the batch
    rows = 0
    for f in range(capacity):
        row_start[f] = rows
        if frame[f] >= 0:
            rows += population - first_unevaluated[f]
    mean_reward = np.zeros(capacity, np.float32)
    max_reward = np.zeros(capacity, np.float32)
    for f in range(capacity):
        done[f] = False
        if frame[f] < 0:
            continue
        first = first_unevaluated[f]
        row = row_start[f]
        for p in range(first, population):
            golden[f, p] = batch_golden[row]
            for k in range(n_keys):
                keys[f, p, k] = batch_keys[row, k]
            row += 1
        evaluations[f] += population - first

        reward = np.empty(population, np.float32)
        matched = np.empty(population, np.int64)
        pick = _score_frame(f, golden, keys, target, difficulty, weights, reward, matched)
        mean_reward[f] = pairwise_sum(reward, population) / np.float32(population)
        max_reward[f] = reward.max()
        top = matched[pick]
        if top > best_matched[f] or (top == best_matched[f] and reward[pick] > best_reward[f]):
            best_matched[f] = top
            best_reward[f] = reward[pick]
            for b in range(SEED_BYTES):
                best_seed[f, b] = seeds[f, pick, b]
            best_golden[f] = golden[f, pick]
        next_generation = generation[f] + 1
        if best_matched[f] >= difficulty or next_generation >= max_generations:
            done[f] = True
            continue
        if grpo:
            epoch_bits = epochs[epoch[f]]
            _grpo_frame(f, next_generation, epoch_bits, key[f], target, seeds, golden, keys, matched, elites)
            # The epoch of the next generation: climb the schedule with the best seed so far.
            climbed = 0
            while climbed < epochs.shape[0] and epochs[climbed] <= best_matched[f]:
                climbed += 1
            epoch[f] = min(climbed, epochs.shape[0] - 1)
            first_unevaluated[f] = elites
        else:
            write_scan(seeds[f], key[f], next_generation, population)
            first_unevaluated[f] = 0
        generation[f] = next_generation
    finished = 0
    for f in range(capacity):  # in slot order, as np.add.at adds
        if frame[f] < 0:
            continue
        g = generation[f] - (0 if done[f] else 1)  # the generation just scored
        history_frames[g] += 1
        history_mean[g] += np.float64(mean_reward[f])
        history_best[g] += np.float64(max_reward[f])
        finished += done[f]
    return finished
