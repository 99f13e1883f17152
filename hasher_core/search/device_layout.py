"""The device-resident search's memory layout (DESIGN §4.4 on a GPU): one source of truth for the
words the host and ``device_search.cu`` exchange, and the pure transforms that fill and read them.

The search runs on the device as persistent blocks, one frame per block at a time (see
``hasher_resources.sha256.device_search``). What crosses the bus is flat ``uint32`` arrays laid out
here: the config block (knobs, epochs and the pairwise-summation plan), frame-queue entries (slots,
target word, stream key, frame index), and finished-frame records. The CUDA source gets every
offset as a generated ``#define`` (:func:`c_defines`), so the two sides cannot drift.

Float32 values travel as their IEEE bit patterns. Seeds travel as five little-endian words: the 16
extranonce bytes and seed bytes 28–31 (the nonce, big-endian in the seed); the reserved bytes 16–27
are zero by construction (DESIGN §4.1), so they are not stored.
"""

from __future__ import annotations

import numpy as np

from hasher_core import mixing
from hasher_core.design import SEED_BYTES, SEED_NONCE_OFFSET, SLOT_COUNT, TOKEN_SHIFT, VOCABULARY_SIZE

from . import reward
from .config import SearchConfig
from .driver import PendingFrames
from .records import FinishedFrame

#: numpy's pairwise summation: ranges up to this length are summed as one leaf (PW_BLOCKSIZE).
PAIRWISE_LEAF = 128
#: Advantage scores are b·32 (integers): equal bits, plus 64 for the prefix bonus 2.0 (DESIGN §4.4).
PREFIX_SCORE = int(reward.PREFIX_ADVANTAGE_BONUS * 32)
MAX_SCORE = 32 + PREFIX_SCORE
#: Seed words on the device: extranonce bytes 0–15 as four little-endian words, then bytes 28–31.
SEED_WORDS = 5

# Config block: fixed header, then epochs[n_epochs], leaves[2 * n_leaves] (start, length), program.
CFG_POPULATION = 0
CFG_ELITES = 1
CFG_MUTANTS = 2
CFG_DIFFICULTY = 3
CFG_MAX_GENERATIONS = 4
CFG_GRPO = 5
CFG_HEADER_TIME = 6
CFG_WEIGHT_ALIGNMENT = 7
CFG_WEIGHT_STABILITY = 8
CFG_WEIGHT_FORMAT = 9
CFG_EPOCHS = 10
CFG_LEAVES = 11
CFG_PROGRAM = 12
CFG_HEADER_WORDS = 16

# Frame-queue entry: what a block needs to start a frame.
QUEUE_SLOTS = 0
QUEUE_TARGET = SLOT_COUNT
QUEUE_KEY_LO = SLOT_COUNT + 1
QUEUE_KEY_HI = SLOT_COUNT + 2
QUEUE_FRAME = SLOT_COUNT + 3
QUEUE_WORDS = 16

# Finished-frame record: the frame's queue index and what FinishedFrame needs.
RECORD_FRAME = 0
RECORD_SEED = 1
RECORD_GOLDEN = RECORD_SEED + SEED_WORDS
RECORD_MATCHED = RECORD_GOLDEN + 1
RECORD_REWARD = RECORD_MATCHED + 1
RECORD_GENERATIONS = RECORD_REWARD + 1
RECORD_EVALUATIONS_LO = RECORD_GENERATIONS + 1
RECORD_EVALUATIONS_HI = RECORD_EVALUATIONS_LO + 1
RECORD_WORDS = 12

# Per-slot state kept on the device between launches (a frame in progress).
STATE_FRAME = 0
STATE_KEY_LO = 1
STATE_KEY_HI = 2
STATE_SLOTS = 3
STATE_TARGET = STATE_SLOTS + SLOT_COUNT
STATE_GENERATION = STATE_TARGET + 1
STATE_EPOCH = STATE_GENERATION + 1
STATE_FIRST = STATE_EPOCH + 1
STATE_BEST_MATCHED = STATE_FIRST + 1
STATE_BEST_REWARD = STATE_BEST_MATCHED + 1
STATE_BEST_SEED = STATE_BEST_REWARD + 1
STATE_BEST_GOLDEN = STATE_BEST_SEED + SEED_WORDS
STATE_EVALUATIONS_LO = STATE_BEST_GOLDEN + 1
STATE_EVALUATIONS_HI = STATE_EVALUATIONS_LO + 1
STATE_WORDS = 32

# Population fields, each ``population`` words per slot (structure of arrays: coalesced on a GPU).
POP_SEED = 0
POP_GOLDEN = POP_SEED + SEED_WORDS
POP_KEYS = POP_GOLDEN + 1
POP_REWARD = POP_KEYS + 3
POP_SCORE = POP_REWARD + 1
POP_SQUARE = POP_SCORE + 1
POP_FIELDS = POP_SQUARE + 1

# Elite scratch fields, each ``elites`` words per slot, then one leaf sum per pairwise leaf.
ELITE_SEED = 0
ELITE_GOLDEN = ELITE_SEED + SEED_WORDS
ELITE_KEYS = ELITE_GOLDEN + 1
ELITE_ADVANTAGE = ELITE_KEYS + 3
ELITE_ORDER = ELITE_ADVANTAGE + 1
ELITE_FIELDS = ELITE_ORDER + 1

# Launch counters (uint64): the queue's claim cursor and end, records written, evaluations run, one
# past the last generation index the history recorded (the host reads only that much of it), and the
# most generations one block ran in the launch (what the launch's time was spent on).
COUNTER_HEAD = 0
COUNTER_END = 1
COUNTER_FINISHED = 2
COUNTER_EVALUATIONS = 3
COUNTER_REACHED = 4
COUNTER_LONGEST = 5
COUNTERS = 6

NO_FRAME = 0xFFFFFFFF
#: The largest max_generations the device's 32-bit generation counters take.
MAX_DEVICE_GENERATIONS = 2**31 - 1


def pairwise_plan(n: int) -> tuple[np.ndarray, np.ndarray]:
    """How numpy's pairwise summation adds ``n`` float32 values, as leaves and a postfix program.

    Returns ``leaves`` int64[L, 2] (start, length; each length <= 128, summed with numpy's eight
    accumulators) and ``program`` int64[K]: ``i >= 0`` pushes leaf i's sum, ``-1`` pops two and
    pushes left + right. Evaluating the program gives ``a[:n].sum()`` bit for bit; leaves are
    independent, so a GPU block sums them in parallel. ``n >= 1``.
    """
    if n < 1:
        raise ValueError(f"pairwise_plan needs n >= 1, got {n}")
    leaves: list[tuple[int, int]] = []
    program: list[int] = []
    todo: list[tuple[int, int]] = [(0, n)]  # (start, length); length -1 = emit an add
    while todo:
        lo, m = todo.pop()
        if m < 0:
            program.append(-1)
        elif m <= PAIRWISE_LEAF:
            program.append(len(leaves))
            leaves.append((lo, m))
        else:
            half = m // 2
            half -= half % 8
            todo += [(0, -1), (lo + half, m - half), (lo, half)]  # left first, then right, then add
    return np.asarray(leaves, np.int64).reshape(-1, 2), np.asarray(program, np.int64)


def leaf_sum(a: np.ndarray, lo: int, n: int) -> np.float32:
    """One leaf of numpy's pairwise sum (what the device computes per leaf), float32."""
    if n < 8:
        res = np.float32(-0.0)
        for i in range(n):
            res = np.float32(res + a[lo + i])
        return res
    r = [np.float32(a[lo + i]) for i in range(8)]
    i = 8
    while i < n - n % 8:
        r = [np.float32(r[j] + a[lo + i + j]) for j in range(8)]
        i += 8
    res = np.float32(np.float32(np.float32(r[0] + r[1]) + np.float32(r[2] + r[3])) +
                     np.float32(np.float32(r[4] + r[5]) + np.float32(r[6] + r[7])))  # fmt: skip
    for j in range(i, n):
        res = np.float32(res + a[lo + j])
    return res


def run_plan(a: np.ndarray, leaves: np.ndarray, program: np.ndarray) -> np.float32:
    """Evaluate a :func:`pairwise_plan` on float32 ``a`` (the device's algorithm, in Python)."""
    sums = [leaf_sum(a, int(lo), int(n)) for lo, n in leaves]
    stack: list[np.float32] = []
    for op in program:
        if op >= 0:
            stack.append(sums[op])
        else:
            right = stack.pop()
            stack.append(np.float32(stack.pop() + right))
    return stack[0]


def float_bits(x: float) -> int:
    """The IEEE bits of ``x`` rounded to float32."""
    return int(np.float32(x).view(np.uint32))


def config_words(config: SearchConfig) -> np.ndarray:
    """The config block of ``config`` (validated): uint32[CFG_HEADER_WORDS + epochs + 2·leaves + program].

    Raises ValueError when a setting is beyond what the device search supports
    (``max_generations`` above :data:`MAX_DEVICE_GENERATIONS`).
    """
    config.validate()
    if config.max_generations > MAX_DEVICE_GENERATIONS:
        raise ValueError(
            f"max_generations={config.max_generations} is beyond the device search's "
            f"{MAX_DEVICE_GENERATIONS:,} (32-bit generation counters); use the cpu backend or fewer"
        )
    population, elites = int(config.population), config.elites
    epochs = np.asarray(config.epochs, np.uint32)
    leaves, program = pairwise_plan(population)
    head = np.zeros(CFG_HEADER_WORDS, np.uint32)
    head[CFG_POPULATION] = population
    head[CFG_ELITES] = elites
    head[CFG_MUTANTS] = min(elites, population - elites)
    head[CFG_DIFFICULTY] = int(config.difficulty_bits)
    head[CFG_MAX_GENERATIONS] = int(config.max_generations)
    head[CFG_GRPO] = int(config.strategy == "grpo")
    head[CFG_HEADER_TIME] = int(config.header_time)
    for at, weight in zip(
        (CFG_WEIGHT_ALIGNMENT, CFG_WEIGHT_STABILITY, CFG_WEIGHT_FORMAT), config.reward_weights, strict=True
    ):
        head[at] = float_bits(weight)
    head[CFG_EPOCHS] = len(epochs)
    head[CFG_LEAVES] = len(leaves)
    head[CFG_PROGRAM] = len(program)
    # The program's -1 (add) becomes 0xFFFFFFFF; the device reads it as a signed int.
    return np.concatenate([head, epochs, leaves.reshape(-1).astype(np.uint32), program.astype(np.uint32)])


def slot_words(config: SearchConfig) -> tuple[int, int]:
    """Device words per slot: (population fields, elite scratch + leaf sums)."""
    population, elites = int(config.population), config.elites
    return POP_FIELDS * population, ELITE_FIELDS * elites + len(pairwise_plan(population)[0])


def queue_entries(
    slots: np.ndarray, target_words: np.ndarray, keys: np.ndarray, frames: np.ndarray
) -> np.ndarray:
    """Frame-queue entries uint32[n, QUEUE_WORDS] for ``slots`` uint32[n, 12], target words
    (``token << 15``) uint32[n], stream keys uint64[n] and frame indices int[n]."""
    n = len(frames)
    out = np.zeros((n, QUEUE_WORDS), np.uint32)
    out[:, QUEUE_SLOTS : QUEUE_SLOTS + SLOT_COUNT] = slots
    out[:, QUEUE_TARGET] = target_words
    keys = np.asarray(keys, np.uint64)
    out[:, QUEUE_KEY_LO] = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    out[:, QUEUE_KEY_HI] = (keys >> np.uint64(32)).astype(np.uint32)
    out[:, QUEUE_FRAME] = frames
    return out


def seed_bytes(words: np.ndarray) -> np.ndarray:
    """Seeds uint8[n, 32] from device seed words uint32[n, 5] (reserved bytes 16–27 zero)."""
    words = np.ascontiguousarray(words, dtype="<u4")
    out = np.zeros((len(words), SEED_BYTES), np.uint8)
    as_bytes = words.view(np.uint8).reshape(len(words), 4 * SEED_WORDS)
    out[:, :16] = as_bytes[:, :16]
    out[:, SEED_NONCE_OFFSET:] = as_bytes[:, 16:]
    return out


def seed_words(seeds: np.ndarray) -> np.ndarray:
    """Device seed words uint32[n, 5] of seeds uint8[n, 32] (the inverse of :func:`seed_bytes`)."""
    seeds = np.ascontiguousarray(seeds, np.uint8)
    picked = np.concatenate([seeds[:, :16], seeds[:, SEED_NONCE_OFFSET:]], axis=1)
    return np.ascontiguousarray(picked).view("<u4").astype(np.uint32)


def c_defines() -> dict[str, int | str]:
    """Every layout constant and search constant the CUDA source needs, by macro name."""
    layout = {
        name: value
        for name, value in globals().items()
        if name.startswith(("CFG_", "QUEUE_", "RECORD_", "STATE_", "POP_", "ELITE_", "COUNTER"))
    }
    layout |= {"SEED_WORDS": SEED_WORDS, "MAX_SCORE": MAX_SCORE, "PAIRWISE_LEAF": PAIRWISE_LEAF}
    defines: dict[str, int | str] = {f"HASHER_{k}": v for k, v in layout.items()}
    flips = reward.nonce_flips(np.arange(reward.MAX_FLIPS + 1))
    defines |= {
        "HASHER_NO_FRAME": f"0x{NO_FRAME:08x}u",
        "HASHER_SPLITMIX_GAMMA": f"0x{int(mixing.SPLITMIX_GAMMA):016x}ull",
        "HASHER_SPLITMIX_MUL1": f"0x{int(mixing.SPLITMIX_MUL1):016x}ull",
        "HASHER_SPLITMIX_MUL2": f"0x{int(mixing.SPLITMIX_MUL2):016x}ull",
        "HASHER_STREAM_FRESH": reward.STREAM_FRESH,
        "HASHER_STREAM_MUTATION": reward.STREAM_MUTATION,
        "HASHER_STREAM_SCAN_EXTRANONCE": reward.STREAM_SCAN_EXTRANONCE,
        "HASHER_MAX_FLIPS": reward.MAX_FLIPS,
        "HASHER_MAX_NONCE_FLIPS": reward.MAX_NONCE_FLIPS,
        "HASHER_MAX_EXTRANONCE_FLIPS": reward.MAX_EXTRANONCE_FLIPS,
        "HASHER_NONCE_FLIPS": ", ".join(str(int(v)) for v in flips),
        "HASHER_PREFIX_SCORE": PREFIX_SCORE,
        "HASHER_PREFIX_REWARD_BONUS_BITS": f"0x{float_bits(reward.PREFIX_REWARD_BONUS):08x}u",
        "HASHER_VOCABULARY_SIZE": VOCABULARY_SIZE,
        "HASHER_SEARCH_TOKEN_SHIFT": TOKEN_SHIFT,
    }
    return defines


def finished_frames(
    records: np.ndarray, frames: PendingFrames, difficulty: int
) -> tuple[list[int], list[FinishedFrame]]:
    """Finished-frame records uint32[n, RECORD_WORDS] as (positions in ``frames``, FinishedFrame list).

    Raises ValueError on a record that names no frame of ``frames`` (a corrupt launch)."""
    records = np.asarray(records, np.uint32).reshape(-1, RECORD_WORDS)
    positions = records[:, RECORD_FRAME].astype(np.int64)
    if len(positions) and int(positions.max()) >= len(frames):
        raise ValueError(f"device search returned frame {int(positions.max())} of {len(frames)}")
    seeds = seed_bytes(records[:, RECORD_SEED : RECORD_SEED + SEED_WORDS]).tobytes()
    golden = records[:, RECORD_GOLDEN]
    matched = records[:, RECORD_MATCHED].view(np.int32)
    rewards = np.ascontiguousarray(records[:, RECORD_REWARD]).view(np.float32)
    evaluations = records[:, RECORD_EVALUATIONS_LO].astype(np.uint64) | (
        records[:, RECORD_EVALUATIONS_HI].astype(np.uint64) << np.uint64(32)
    )
    hamming = np.bitwise_count(golden ^ frames.target_words[positions])
    # Python scalars from whole columns at once: a launch can finish thousands of frames.
    columns = zip(
        positions.tolist(),
        golden.tolist(),
        matched.tolist(),
        hamming.tolist(),
        rewards.tolist(),
        records[:, RECORD_GENERATIONS].tolist(),
        evaluations.tolist(),
        strict=True,
    )
    results = [
        FinishedFrame(
            fingerprint=frames.fingerprints[frame],
            best_seed=seeds[SEED_BYTES * i : SEED_BYTES * (i + 1)],
            golden=g,
            matched_bits=m,
            hamming=h,
            reward=r,
            generations=gens,
            evaluations=e,
            solved=m >= difficulty,
        )
        for i, (frame, g, m, h, r, gens, e) in enumerate(columns)
    ]
    return positions.tolist(), results
