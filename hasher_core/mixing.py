"""The 64-bit hash arithmetic several transforms share, each constant once: FNV-1a 64 (its offset
basis and prime) and SplitMix64 (its increment and finaliser multipliers), with the finaliser for
numpy arrays and, compiled, for one word.

Users: the offline embedding's piece hashes (``embedding.lexical``), the window and slot fingerprints
of stage 2 (``frames.windows``), and the search's random streams (``search.reward`` and its compiled
twin ``search.fused_math``).
"""

from __future__ import annotations

import numpy as np

from hasher_core.jit import njit

#: FNV-1a 64's offset basis and prime.
FNV64_OFFSET = np.uint64(0xCBF29CE484222325)
FNV64_PRIME = np.uint64(0x100000001B3)
#: SplitMix64's increment (2^64 / golden ratio) and its finaliser's two multipliers.
SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)
SPLITMIX_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
SPLITMIX_MUL2 = np.uint64(0x94D049BB133111EB)

_U30, _U27, _U31 = np.uint64(30), np.uint64(27), np.uint64(31)


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection on uint64 with full avalanche (array in, array out)."""
    z = (z ^ (z >> _U30)) * SPLITMIX_MUL1
    z = (z ^ (z >> _U27)) * SPLITMIX_MUL2
    return z ^ (z >> _U31)


@njit(cache=True, inline="always")
def mix64_scalar(z):
    """:func:`mix64` of one uint64, compiled."""
    z = (z ^ (z >> _U30)) * SPLITMIX_MUL1
    z = (z ^ (z >> _U27)) * SPLITMIX_MUL2
    return z ^ (z >> _U31)
