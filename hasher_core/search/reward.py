"""The per-generation pieces of the seed search (DESIGN §4.3–4.4), as the readable numpy specification.

Owns the counter-based randomness, the reward, and the two ways of building the next population
("grpo": elites + Bitcoin-aware mutants + fresh seeds; "scan": consecutive nonces). Every array has
a leading frame axis ``F`` and a population axis ``P``; nothing here loops over frames in Python.

The search runs the compiled versions in ``fused`` (one pass per frame per generation, no
temporaries), which reproduce these functions bit for bit (float32 arithmetic, numpy's summation
order); the tests check the two against each other.

Randomness is SplitMix64 keyed by (frame key, generation, stream): a frame's draws depend only on
its own key and generation, never on which other frames share the kernel call, so batching,
deduplication and resume cannot change a seed.
"""

from __future__ import annotations

import numpy as np

from hasher_core.design import EXTRANONCE_BYTES, SEED_BYTES, SEED_NONCE_OFFSET, VOCABULARY_SIZE
from hasher_core.header import golden_token, leading_equal_bits
from hasher_core.mixing import SPLITMIX_GAMMA, mix64

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
MAX_NONCE_FLIPS = 7  # round(0.7 * 10)
MAX_EXTRANONCE_FLIPS = 3  # 10 - round(0.7 * 9)


def random_words(frame_keys: np.ndarray, generations: np.ndarray, stream: int, count: int) -> np.ndarray:
    """``count`` pseudo-random uint64 per frame: uint64[F, count] for keys uint64[F], generations int[F]."""
    ctr = (generations.astype(np.uint64) << np.uint64(8)) | np.uint64(stream)
    base = mix64(frame_keys.astype(np.uint64) ^ mix64(ctr))
    steps = (np.arange(1, count + 1, dtype=np.uint64) * SPLITMIX_GAMMA)[None, :]
    return mix64(base[:, None] + steps)


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

    ``golden`` uint32[...], ``keys`` uint32[..., 3] (passes 18–20), ``targets`` the target words
    (``token << 15``) broadcastable to ``golden``, ``difficulty_bits`` scalar or broadcastable. The
    format term is 1 when the token a golden stands for (``golden >> 15``) is a valid token id.
    """
    targets = np.asarray(targets, dtype=np.uint32)
    prefix = leading_equal_bits(golden, targets) >= np.asarray(difficulty_bits)
    alignment = hamming_similarity(golden, targets) + np.float32(PREFIX_REWARD_BONUS) * prefix
    stability = hamming_similarity(keys, golden[..., None]).mean(axis=-1, dtype=np.float32)
    valid_token = (golden_token(golden) < np.uint32(VOCABULARY_SIZE)).astype(np.float32)
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
    in_nonce = nonce_flips(total)
    return in_nonce, total - in_nonce


def nonce_flips(total: np.ndarray) -> np.ndarray:
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
    nonce_pos = (words[..., :1] >> (np.arange(MAX_NONCE_FLIPS, dtype=np.uint64) * np.uint64(5))) & np.uint64(
        31
    )
    use = np.arange(MAX_NONCE_FLIPS) < in_nonce[..., None]
    nonce_mask = np.bitwise_xor.reduce(use.astype(np.uint32) << nonce_pos.astype(np.uint32), axis=-1)
    ext_pos = (
        words[..., 1:] >> (np.arange(MAX_EXTRANONCE_FLIPS, dtype=np.uint64) * np.uint64(7))
    ) & np.uint64(127)
    use = np.arange(MAX_EXTRANONCE_FLIPS) < in_extranonce[..., None]
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
