"""What both CPU kernels (``cpu_simd``, ``cpu_shani``) compile in: the DESIGN §4.2 constants as the
kernels use them, the 32-bit word operations Numba has no builtin for, and the header words both
read (DESIGN §4.1, as SHA-256 reads them).

Numba types uint32 arithmetic as int64, so each result is cut back to 32 bits with ``np.uint32(...)``.
The kernels' cache entries cover this file (``hasher_core.jit``): an edit here recompiles them.
"""

from __future__ import annotations

import numpy as np

from hasher_core import design
from hasher_core.jit import njit
from hasher_core.threads import run_serial

K = np.array(design.SHA256_K, dtype=np.uint32)
IV = np.array(design.SHA256_IV, dtype=np.uint32)
MUTATED = design.MUTATED_WORD_FIRST
PASSES = design.PASSES
STABILITY_FIRST = design.STABILITY_PASSES[0]
PHASE2 = design.JITTER_PHASE2_START
PHASE3 = design.JITTER_PHASE3_START
#: clz32(d) < threshold  <=>  d >= 2**(32 - threshold)
LOW_CLZ_LIMIT = 1 << (32 - design.JITTER_CLZ_THRESHOLD)
LOW_CLZ_XOR = design.JITTER_LOW_CLZ_XOR
HIGH_CLZ_XOR = design.JITTER_HIGH_CLZ_XOR
#: Where DESIGN §4.1's header fields start, in 32-bit words (every field is word-aligned).
_SLOTS_WORD = design.OFFSET_SLOTS // 4
_EXTRANONCE_WORD = design.OFFSET_EXTRANONCE // 4
_TIME_WORD = design.OFFSET_TIME // 4
_BITS_WORD = design.OFFSET_BITS // 4
_NONCE_WORD = design.OFFSET_NONCE // 4


@njit(cache=True)
def rotr(x, n):
    """32-bit rotate right of ``x`` by ``n``."""
    return np.uint32((x >> n) | (x << (32 - n)))


@njit(cache=True)
def clz32(x):
    """Leading zero bits of a 32-bit word (32 for zero)."""
    n = 0
    if x == 0:
        return 32
    while (x & np.uint32(0x80000000)) == 0:
        x = np.uint32(x << 1)
        n += 1
    return n


@njit(cache=True)
def bswap32(x):
    """The 32-bit word with its bytes reversed."""
    return np.uint32(((x & 0xFF) << 24) | ((x & 0xFF00) << 8) | ((x >> 8) & 0xFF00) | (x >> 24))


@njit(cache=True)
def header_words_into(slots, seeds, header_time, words):  # pragma: no cover - compiled
    """``words[N, 20]`` = the big-endian words of ``hasher_core.header.build_headers(slots, seeds,
    header_time)`` (``slots`` uint32[N, 12], ``seeds`` uint8[N, 32]) without the byte array: the
    little-endian fields (version, time, bits) byte-swapped, the slots as they are, the
    extranonce read big-endian and the nonce field (seed bytes 28–31 reversed) little-endian."""
    version = bswap32(np.uint32(design.HEADER_VERSION))
    time = bswap32(np.uint32(header_time))
    bits = bswap32(np.uint32(design.HEADER_BITS))
    nonce = design.SEED_NONCE_OFFSET
    for r in range(slots.shape[0]):
        words[r, 0] = version
        for i in range(design.SLOT_COUNT):
            words[r, _SLOTS_WORD + i] = slots[r, i]
        for i in range(design.EXTRANONCE_BYTES // 4):
            at = 4 * i
            words[r, _EXTRANONCE_WORD + i] = (
                (np.uint32(seeds[r, at]) << 24)
                | (np.uint32(seeds[r, at + 1]) << 16)
                | (np.uint32(seeds[r, at + 2]) << 8)
                | np.uint32(seeds[r, at + 3])
            )
        words[r, _TIME_WORD] = time
        words[r, _BITS_WORD] = bits
        words[r, _NONCE_WORD] = (
            np.uint32(seeds[r, nonce])
            | (np.uint32(seeds[r, nonce + 1]) << 8)
            | (np.uint32(seeds[r, nonce + 2]) << 16)
            | (np.uint32(seeds[r, nonce + 3]) << 24)
        )


#: Evaluations of at most this many rows run on the calling thread (~3 ms on one core): a parallel
#: region waits until every worker thread is scheduled, 17–24 ms for a single row on a busy 2-core
#: machine, against 0.2 ms for the row itself. Inference steps, deploy verification samples and the
#: auto-choice timings are this small.
SERIAL_EVALUATE_ROWS = 1024


def serial_call(rows: int) -> bool:
    """Whether an evaluation of ``rows`` rows runs on the calling thread (``hasher_core.threads``)."""
    return run_serial(rows, SERIAL_EVALUATE_ROWS)
