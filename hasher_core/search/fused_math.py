"""Scalar arithmetic the fused search kernels share, each the exact counterpart of a numpy step of
``reward``: SplitMix64 streams, popcount and leading equal bits on 32-bit words, and numpy's pairwise
float32 summation (so the fused means equal ``ndarray.mean`` bit for bit). Numba-compiled.
"""

from __future__ import annotations

import numpy as np

from hasher_core.jit import njit
from hasher_core.mixing import SPLITMIX_GAMMA, mix64_scalar

_U8, BYTE_MASK = np.uint64(8), np.uint64(0xFF)
_PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE
_PAIRWISE_STACK = 3 * 64  # three tasks per halving, at most 64 halvings


@njit(cache=True)
def stream_base(key, generation, stream):
    """The per-(frame, generation, stream) start of :func:`random_words`' sequence."""
    ctr = (np.uint64(generation) << _U8) | np.uint64(stream)
    return mix64_scalar(key ^ mix64_scalar(ctr))


@njit(cache=True, inline="always")
def stream_word(base, j):
    """Word ``j`` (from 0) of a stream: ``random_words(...)[:, j]``."""
    return mix64_scalar(base + np.uint64(j + 1) * SPLITMIX_GAMMA)


@njit(cache=True, inline="always")
def popcount32(x):
    """Set bits of a 32-bit word held in an int64 (a branch-free SWAR count)."""
    x = np.int64(x)
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) & 0xFFFFFFFF) >> 24


@njit(cache=True, inline="always")
def leading_equal(a, b):
    """``leading_equal_bits`` of two uint32 words (32 when equal), branch-free like numpy's."""
    x = np.int64(a ^ b)
    x |= x >> 1
    x |= x >> 2
    x |= x >> 4
    x |= x >> 8
    x |= x >> 16
    return 32 - popcount32(x)


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
def pairwise_sum(a, n):
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
def put_le(seeds, row, at, word, shift, count):
    """Bytes ``shift/8 …`` of ``word`` (little-endian) into ``seeds[row, at:at+count]``."""
    for i in range(count):
        seeds[row, at + i] = np.uint8((word >> np.uint64(shift + 8 * i)) & BYTE_MASK)
