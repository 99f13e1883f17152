"""What both CPU kernels (``cpu_simd``, ``cpu_shani``) compile in: the DESIGN §4.2 constants as the
kernels use them and the 32-bit word operations Numba has no builtin for.

Numba types uint32 arithmetic as int64, so each result is cut back to 32 bits with ``np.uint32(...)``.
The kernels' cache entries cover this file (``hasher_core.jit``): an edit here recompiles them.
"""

from __future__ import annotations

import numpy as np

from hasher_core import design
from hasher_core.jit import njit

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
