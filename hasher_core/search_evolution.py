"""The per-generation pieces of the seed search (DESIGN §4.3–4.4), vectorised over many frames.

Owns the counter-based randomness, the reward, and the two ways of building the next population
("grpo": elites + Bitcoin-aware mutants + fresh seeds; "scan": consecutive nonces). Every array has
a leading frame axis ``F`` and a population axis ``P``; nothing here loops over frames in Python.

Two layers: numpy functions that define each step readably (tests call them), and Numba functions
that the search runs, fusing a whole generation into one pass per frame without temporaries
(``gather_batch``, ``generation_step``, ``start_populations``). The compiled layer reproduces the
numpy one bit for bit (float32 arithmetic, numpy's summation order); test_search_fused.py checks it.
Host work is then a small fraction of a kernel evaluation per population member.

Randomness is SplitMix64 keyed by (frame key, generation, stream): a frame's draws depend only on
its own key and generation, never on which other frames share the kernel call, so batching,
deduplication and resume cannot change a seed.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hasher_core.design import EXTRANONCE_BYTES, SEED_BYTES, SEED_NONCE_OFFSET, VOCABULARY_SIZE
from hasher_core.header import leading_equal_bits

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

# Stream ids: each kind of draw gets its own independent sequence per (frame, generation).
STREAM_FRESH = 1
STREAM_MUTATION = 2
STREAM_SCAN_EXTRANONCE = 3

#: Prefix-match bonus added to the Hamming similarity before advantages (DESIGN §4.4).
PREFIX_ADVANTAGE_BONUS = 2.0
#: Prefix-match bonus inside the reward's alignment term (DESIGN §4.3).
PREFIX_REWARD_BONUS = 0.1
#: Share of a mutant's flipped bits that land in the nonce; the rest go to the extranonce.
NONCE_FLIP_SHARE = 0.7
MAX_FLIPS = 10
_MAX_NONCE_FLIPS = 7  # round(0.7 * 10)
_MAX_EXTRANONCE_FLIPS = 3  # 10 - round(0.7 * 9)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection on uint64 with full avalanche (array in, array out)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def random_words(frame_keys: np.ndarray, generations: np.ndarray, stream: int, count: int) -> np.ndarray:
    """``count`` pseudo-random uint64 per frame: uint64[F, count] for keys uint64[F], generations int[F]."""
    ctr = (generations.astype(np.uint64) << np.uint64(8)) | np.uint64(stream)
    base = _mix64(frame_keys.astype(np.uint64) ^ _mix64(ctr))
    steps = (np.arange(1, count + 1, dtype=np.uint64) * _GAMMA)[None, :]
    return _mix64(base[:, None] + steps)


def random_bytes(frame_keys: np.ndarray, generations: np.ndarray, stream: int, count: int) -> np.ndarray:
    """``count`` pseudo-random bytes per frame: uint8[F, count] (little-endian byte order, fixed)."""
    words = random_words(frame_keys, generations, stream, (count + 7) // 8)
    return words.astype("<u8").view(np.uint8).reshape(len(frame_keys), -1)[:, :count]


def fresh_seeds(frame_keys: np.ndarray, generations: np.ndarray, count: int) -> np.ndarray:
    """``count`` random seeds per frame, uint8[F, count, 32]: random extranonce and nonce, reserved zero."""
    f = len(frame_keys)
    raw = random_bytes(frame_keys, generations, STREAM_FRESH, count * 20).reshape(f, count, 20)
    seeds = np.zeros((f, count, SEED_BYTES), dtype=np.uint8)
    seeds[..., :EXTRANONCE_BYTES] = raw[..., :EXTRANONCE_BYTES]
    seeds[..., SEED_NONCE_OFFSET:] = raw[..., EXTRANONCE_BYTES:]
    return seeds


def hamming_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Equal bits of two uint32 words over 32 (DESIGN §4.3 "alignment" without the bonus), float32."""
    diff = np.bitwise_xor(a.astype(np.uint32, copy=False), b.astype(np.uint32, copy=False))
    return (32 - np.bitwise_count(diff)).astype(np.float32) / np.float32(32)


def compute_reward(
    golden: np.ndarray,
    keys: np.ndarray,
    targets: np.ndarray,
    difficulty_bits: np.ndarray | int,
    weights: tuple[float, float, float],
) -> np.ndarray:
    """The DESIGN §4.3 reward, float32 of golden's shape.

    ``golden`` uint32[...], ``keys`` uint32[..., 3] (passes 18–20), ``targets`` broadcastable to
    ``golden``, ``difficulty_bits`` scalar or broadcastable.
    """
    targets = np.asarray(targets, dtype=np.uint32)
    prefix = leading_equal_bits(golden, targets) >= np.asarray(difficulty_bits)
    alignment = hamming_similarity(golden, targets) + np.float32(PREFIX_REWARD_BONUS) * prefix
    stability = hamming_similarity(keys, golden[..., None]).mean(axis=-1, dtype=np.float32)
    valid_token = (golden < np.uint32(VOCABULARY_SIZE)).astype(np.float32)
    w_align, w_stab, w_format = (np.float32(w) for w in weights)
    return (w_align * alignment + w_stab * stability + w_format * valid_token).astype(np.float32)


def group_advantages(similarity: np.ndarray, prefix_match: np.ndarray) -> np.ndarray:
    """Group-relative advantages ``(b - mean(b)) / std(b)`` per frame (row), float32[F, P].

    A row whose members all score the same has no preference: its advantages are zero.
    """
    b = similarity.astype(np.float32) + np.float32(PREFIX_ADVANTAGE_BONUS) * prefix_match
    centred = b - b.mean(axis=1, keepdims=True)
    std = b.std(axis=1, keepdims=True)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)


def flip_counts(advantage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How many bits a mutant flips in the nonce and in the extranonce, given its parent's advantage.

    Total flips ``clip(round(10 / (|A| + 1)), 1, 10)``: fewer for a better parent; about 70 % of them
    in the nonce (at least one), so a mutant is a near neighbour a mining chip could also sweep.
    """
    total = np.clip(np.rint(MAX_FLIPS / (np.abs(advantage) + 1.0)), 1, MAX_FLIPS).astype(np.int64)
    in_nonce = _nonce_flips(total)
    return in_nonce, total - in_nonce


def _nonce_flips(total: np.ndarray) -> np.ndarray:
    """The nonce's share of ``total`` flips (at least one)."""
    return np.maximum(1, np.rint(NONCE_FLIP_SHARE * total)).astype(np.int64)


def mutate(
    parents: np.ndarray, advantage: np.ndarray, frame_keys: np.ndarray, generations: np.ndarray
) -> np.ndarray:
    """One Bitcoin-aware mutant per parent: uint8[F, M, 32] from parents uint8[F, M, 32].

    Flipped bits only ever touch the extranonce (bytes 0–15) and the nonce (28–31); the reserved
    bytes stay zero.
    """
    f, m = parents.shape[:2]
    in_nonce, in_extranonce = flip_counts(advantage)
    words = random_words(frame_keys, generations, STREAM_MUTATION, 2 * m).reshape(f, m, 2)
    # All flip positions at once: 5-bit fields of word 0 (nonce), 7-bit fields of word 1 (extranonce).
    nonce_pos = (words[..., :1] >> (np.arange(_MAX_NONCE_FLIPS, dtype=np.uint64) * np.uint64(5))) & np.uint64(
        31
    )
    use = np.arange(_MAX_NONCE_FLIPS) < in_nonce[..., None]
    nonce_mask = np.bitwise_xor.reduce(use.astype(np.uint32) << nonce_pos.astype(np.uint32), axis=-1)
    ext_pos = (
        words[..., 1:] >> (np.arange(_MAX_EXTRANONCE_FLIPS, dtype=np.uint64) * np.uint64(7))
    ) & np.uint64(127)
    use = np.arange(_MAX_EXTRANONCE_FLIPS) < in_extranonce[..., None]
    bits = use.astype(np.uint64) << (ext_pos & np.uint64(63))
    high = ext_pos >= np.uint64(64)
    extranonce_mask = np.stack(  # 128 bits as (low word, high word)
        [
            np.bitwise_xor.reduce(np.where(high, np.uint64(0), bits), axis=-1),
            np.bitwise_xor.reduce(np.where(high, bits, np.uint64(0)), axis=-1),
        ],
        axis=-1,
    )
    children = parents.copy()
    children[..., SEED_NONCE_OFFSET:] ^= nonce_mask.astype(">u4").view(np.uint8).reshape(f, m, 4)
    children[..., :EXTRANONCE_BYTES] ^= extranonce_mask.astype("<u8").view(np.uint8).reshape(f, m, 16)
    return children


def take_rows(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``values[f, order[f, k], ...]`` for every frame f: [F, K, ...] (a flat gather, no broadcasting)."""
    f, p = values.shape[:2]
    flat = (np.arange(f)[:, None] * p + order).reshape(-1)
    return values.reshape(f * p, *values.shape[2:])[flat].reshape(f, order.shape[1], *values.shape[2:])


def elite_count(population: int, elite_ratio: float) -> int:
    """Elites kept per generation: at least one, and at least one slot left for new seeds."""
    return int(min(population - 1, max(1, round(population * elite_ratio))))


def grpo_next_population(
    seeds: np.ndarray,
    advantage: np.ndarray,
    frame_keys: np.ndarray,
    generations: np.ndarray,
    elites: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Next GRPO population per frame: ``(seeds uint8[F, P, 32], order int[F, E])``.

    Layout: slots ``[0, E)`` the elites (their goldens are known: ``order`` says where they came
    from), ``[E, E+M)`` one mutant per elite, the rest fresh random seeds. ``generations`` is the
    generation being built, so its draws differ from every earlier generation's.
    """
    p = seeds.shape[1]
    order = np.argsort(-advantage, axis=1, kind="stable")[:, :elites]
    elite_seeds = take_rows(seeds, order)
    elite_adv = take_rows(advantage, order)
    mutants = min(elites, p - elites)
    out = np.empty_like(seeds)
    out[:, :elites] = elite_seeds
    out[:, elites : elites + mutants] = mutate(
        elite_seeds[:, :mutants], elite_adv[:, :mutants], frame_keys, generations
    )
    out[:, elites + mutants :] = fresh_seeds(frame_keys, generations, p - elites - mutants)
    return out, order


def scan_population(frame_keys: np.ndarray, generations: np.ndarray, population: int) -> np.ndarray:
    """Generation ``g``'s block of consecutive nonces per frame, mining-style: uint8[F, P, 32].

    Nonces ``g·P … g·P+P-1`` under one random extranonce; when the 2^32 nonces run out the sweep
    moves to the next random extranonce (as a miner rolls the extranonce).
    """
    f = len(frame_keys)
    offset = generations.astype(np.int64)[:, None] * population + np.arange(population, dtype=np.int64)
    rollover = offset >> 32
    first = rollover[:, 0]
    # A block spans at most two extranonces; draw both and pick per nonce.
    ext0 = random_bytes(frame_keys, first, STREAM_SCAN_EXTRANONCE, EXTRANONCE_BYTES)
    ext1 = random_bytes(frame_keys, first + 1, STREAM_SCAN_EXTRANONCE, EXTRANONCE_BYTES)
    seeds = np.zeros((f, population, SEED_BYTES), dtype=np.uint8)
    rolled = rollover > first[:, None]
    if rolled.any():
        seeds[..., :EXTRANONCE_BYTES] = np.where(rolled[..., None], ext1[:, None, :], ext0[:, None, :])
    else:  # the common case: the whole block under one extranonce
        seeds[..., :EXTRANONCE_BYTES] = ext0[:, None, :]
    nonces = (offset & 0xFFFFFFFF).astype(np.uint32)
    seeds[..., SEED_NONCE_OFFSET:] = nonces.astype(">u4").view(np.uint8).reshape(f, population, 4)
    return seeds


# --- the fused per-generation step (Numba) ------------------------------------------------------
#
# The functions above are the readable definition; the search runs the compiled versions below,
# which do the same arithmetic (float32 where numpy used float32, numpy's pairwise summation order
# for the means) frame by frame in one pass over the [frames, population] arrays, without
# temporaries. hasher_tests/test_search_fused.py checks them against the definitions bit for bit.

_U30, _U27, _U31, _U8, _BYTE = (np.uint64(v) for v in (30, 27, 31, 8, 0xFF))
_INV32 = np.float32(1 / 32)  # x / 32 == x * (1/32) exactly: a power of two
#: Nonce flips for a mutant flipping ``total`` bits, indexed by ``total`` (the split of flip_counts).
_NONCE_FLIPS = _nonce_flips(np.arange(MAX_FLIPS + 1))
_RESERVED_START = EXTRANONCE_BYTES
_PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE
_PAIRWISE_STACK = 3 * 64  # three tasks per halving, at most 64 halvings
_SEED_WORDS = SEED_BYTES // 8
_FRESH_BYTES = EXTRANONCE_BYTES + SEED_BYTES - SEED_NONCE_OFFSET  # random bytes per fresh seed: 20
_MAX_Q = 32 + 64  # largest advantage score: 32 equal bits + the prefix bonus (2.0 = 64/32)


@njit(cache=True, inline="always")
def _mix64_scalar(z):
    z = (z ^ (z >> _U30)) * _MIX1
    z = (z ^ (z >> _U27)) * _MIX2
    return z ^ (z >> _U31)


@njit(cache=True)
def _stream_base(key, generation, stream):
    """The per-(frame, generation, stream) start of :func:`random_words`' sequence."""
    ctr = (np.uint64(generation) << _U8) | np.uint64(stream)
    return _mix64_scalar(key ^ _mix64_scalar(ctr))


@njit(cache=True, inline="always")
def _word(base, j):
    """Word ``j`` (from 0) of a stream: ``random_words(...)[:, j]``."""
    return _mix64_scalar(base + np.uint64(j + 1) * _GAMMA)


@njit(cache=True, inline="always")
def _popcount32(x):
    x = np.int64(x)
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) & 0xFFFFFFFF) >> 24


@njit(cache=True, inline="always")
def _leading_equal(a, b):
    """``leading_equal_bits`` of two uint32 words (32 when equal), branch-free like numpy's."""
    x = np.int64(a ^ b)
    x |= x >> 1
    x |= x >> 2
    x |= x >> 4
    x |= x >> 8
    x |= x >> 16
    return 32 - _popcount32(x)


@njit(cache=True)
def _block_sum(a, lo, n):
    """numpy's pairwise summation of ``a[lo:lo+n]`` for ``n <= 128`` (one leaf of the tree)."""
    if n < 8:
        res = np.float32(-0.0)
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True)
def _pairwise_sum(a, n):
    """``a[:n].sum()`` in float32, added in exactly numpy's pairwise order (so means agree).

    numpy halves a range (at a multiple of 8) until it is at most 128 long; this walks the same
    tree with an explicit stack, because Numba cannot reload a cached recursive function.
    """
    if n <= _PAIRWISE_BLOCK:
        return _block_sum(a, 0, n)
    task_lo = np.empty(_PAIRWISE_STACK, np.int64)
    task_n = np.empty(_PAIRWISE_STACK, np.int64)  # -1: add the top two partial sums
    partial = np.empty(_PAIRWISE_STACK, np.float32)
    tasks, partials = 1, 0
    task_lo[0], task_n[0] = 0, n
    while tasks:
        tasks -= 1
        lo, m = task_lo[tasks], task_n[tasks]
        if m < 0:
            partials -= 1
            partial[partials - 1] = partial[partials - 1] + partial[partials]
        elif m <= _PAIRWISE_BLOCK:
            partial[partials] = _block_sum(a, lo, m)
            partials += 1
        else:
            half = m // 2
            half -= half % 8
            # Pushed in reverse: left half first, then right half, then their sum (left + right).
            task_lo[tasks], task_n[tasks] = 0, -1
            task_lo[tasks + 1], task_n[tasks + 1] = lo + half, m - half
            task_lo[tasks + 2], task_n[tasks + 2] = lo, half
            tasks += 3
    return partial[0]


@njit(cache=True, inline="always")
def _put_le(seeds, row, at, word, shift, count):
    """Bytes ``shift/8 …`` of ``word`` (little-endian) into ``seeds[row, at:at+count]``."""
    for i in range(count):
        seeds[row, at + i] = np.uint8((word >> np.uint64(shift + 8 * i)) & _BYTE)


@njit(cache=True)
def _write_fresh(seeds, start, count, base):
    """``fresh_seeds`` into ``seeds[start:start+count]`` (uint8[P, 32]) from stream ``base``.

    The stream's bytes (words little-endian) go 20 to a seed: 16 extranonce, then 4 nonce bytes.
    Two seeds take exactly five words.
    """
    for pair in range((count + 1) // 2):
        w0, w1, w2 = _word(base, 5 * pair), _word(base, 5 * pair + 1), _word(base, 5 * pair + 2)
        s = start + 2 * pair
        _put_le(seeds, s, 0, w0, 0, 8)
        _put_le(seeds, s, 8, w1, 0, 8)
        _put_le(seeds, s, SEED_NONCE_OFFSET, w2, 0, 4)
        if 2 * pair + 1 < count:
            w3, w4 = _word(base, 5 * pair + 3), _word(base, 5 * pair + 4)
            _put_le(seeds, s + 1, 0, w2, 32, 4)
            _put_le(seeds, s + 1, 4, w3, 0, 8)
            _put_le(seeds, s + 1, 12, w4, 0, 4)
            _put_le(seeds, s + 1, SEED_NONCE_OFFSET, w4, 32, 4)
    for row in range(start, start + count):
        for r in range(_RESERVED_START, SEED_NONCE_OFFSET):
            seeds[row, r] = 0


@njit(cache=True)
def _write_scan(seeds, key, generation, population):
    """``scan_population`` for one frame into ``seeds`` (uint8[P, 32])."""
    extranonce = np.empty(EXTRANONCE_BYTES, np.uint8)
    stream = -1
    for i in range(population):
        offset = generation * population + i
        rollover = offset >> 32
        if rollover != stream:  # at most twice per block
            stream = rollover
            base = _stream_base(key, rollover, STREAM_SCAN_EXTRANONCE)
            w0, w1 = _word(base, 0), _word(base, 1)
            for b in range(8):
                extranonce[b] = np.uint8((w0 >> np.uint64(8 * b)) & _BYTE)
                extranonce[8 + b] = np.uint8((w1 >> np.uint64(8 * b)) & _BYTE)
        for b in range(EXTRANONCE_BYTES):
            seeds[i, b] = extranonce[b]
        for b in range(_RESERVED_START, SEED_NONCE_OFFSET):
            seeds[i, b] = 0
        nonce = offset & 0xFFFFFFFF
        for b in range(4):
            seeds[i, SEED_NONCE_OFFSET + b] = np.uint8((nonce >> (24 - 8 * b)) & 0xFF)


@njit(cache=True)
def _write_mutant(seeds, f, row, parents, parent, advantage, w_nonce, w_extranonce):
    """``seeds[f, row]`` = the Bitcoin-aware mutant of ``parents[parent]`` (``mutate`` for one
    parent, same float32 flip count), from its two random words."""
    x = np.rint(np.float32(MAX_FLIPS) / (np.float32(abs(advantage)) + np.float32(1.0)))
    total = int(min(max(x, np.float32(1.0)), np.float32(MAX_FLIPS)))
    in_nonce = _NONCE_FLIPS[total]
    # Fixed trip counts and no data-dependent branches: the unused fields are masked out.
    nonce_mask = 0
    for k in range(_MAX_NONCE_FLIPS):
        pos = np.int64((w_nonce >> np.uint64(5 * k)) & np.uint64(31))
        nonce_mask ^= np.int64(k < in_nonce) << pos
    low = high = 0  # the 128 extranonce bits as two little-endian 64-bit words
    for k in range(_MAX_EXTRANONCE_FLIPS):
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
            _write_fresh(seeds[i], 0, population, _stream_base(keys[i], 0, STREAM_FRESH))
        else:
            _write_scan(seeds[i], keys[i], 0, population)


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
        m = _leading_equal(g, t)
        matched[p] = m
        equal = 32 - _popcount32(g ^ t)
        bonus = np.float32(PREFIX_REWARD_BONUS) * np.float32(m >= difficulty)
        alignment = np.float32(equal) * _INV32 + bonus
        stab = np.float32(-0.0)
        for k in range(n_keys):
            stab += np.float32(32 - _popcount32(np.int64(keys[f, p, k]) ^ g)) * _INV32
        stability = stab / np.float32(n_keys)
        valid = np.float32(g < VOCABULARY_SIZE)
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
        q = 32 - _popcount32(golden[f, p] ^ t) + (64 if matched[p] >= epoch_bits else 0)
        score[p] = q
        total += q
    mean = np.float32(total) * _INV32 / np.float32(population)
    square = np.empty(population, np.float32)
    for p in range(population):
        c = np.float32(score[p]) * _INV32 - mean
        square[p] = c * c
    std = np.sqrt(_pairwise_sum(square, population) / np.float32(population))
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
    base = _stream_base(key, next_generation, STREAM_MUTATION)
    for e in range(mutants):
        w_nonce, w_extranonce = _word(base, 2 * e), _word(base, 2 * e + 1)
        _write_mutant(seeds, f, elites + e, elite_seeds, e, elite_adv[e], w_nonce, w_extranonce)
    fresh_base = _stream_base(key, next_generation, STREAM_FRESH)
    _write_fresh(seeds[f], elites + mutants, population - elites - mutants, fresh_base)


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
    order). Frames are independent, so they run in parallel; results equal the numpy definitions
    above bit for bit, whatever the thread count.
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
        mean_reward[f] = _pairwise_sum(reward, population) / np.float32(population)
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
            _write_scan(seeds[f], key[f], next_generation, population)
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
