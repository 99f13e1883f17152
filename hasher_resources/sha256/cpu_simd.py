"""The CPU backend's SIMD path: the 21-pass recursion and the midstate nonce scan compiled with Numba
for every CPU.

The kernels work on blocks of ``LANES`` independent evaluations side by side in structure-of-arrays
form (``state[word, lane]``), so every innermost loop runs over lanes and LLVM emits SIMD rotates
and adds for it; a scalar per-hash loop is about six times slower. Blocks are spread over cores
with ``prange`` in one large parallel region per call.

What is computed once per evaluation rather than once per pass (DESIGN §4.2 keeps these fixed):
- rounds 0–8 of block 1, which only read header words 0–8 (version and slots 0–7);
- the whole 64-word schedule of block 2 (header words 16–19 and padding never change), with the
  round constants folded in.
Numba types uint32 arithmetic as int64, so every value that is later shifted right or used twice
is cut back to 32 bits with ``np.uint32(...)``: that keeps rotates correct and lets LLVM narrow the
vector code to 32-bit lanes (``vprold``, ``vpternlogd`` on AVX-512; twice the lanes of int64 code).

A leaf: ``cpu`` chooses between this path and ``cpu_shani`` and calls :func:`evaluate_words` /
:func:`scan_windows`, which take the same arguments as their SHA-NI twins.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from hasher_core import design
from hasher_core.jit import njit

from .cpu_words import (
    HIGH_CLZ_XOR,
    IV,
    LOW_CLZ_LIMIT,
    LOW_CLZ_XOR,
    MUTATED,
    PASSES,
    PHASE2,
    PHASE3,
    STABILITY_FIRST,
    K,
    bswap32,
    clz32,
    rotr,
)

#: Evaluations processed side by side in one block; 64 keeps a block's three 64-row schedules in L1.
LANES = 64

#: Blocks handed to a worker at a time (dynamic scheduling): when another process takes a core, the
#: remaining workers pick up its share instead of the whole call waiting for it.
PARALLEL_CHUNK_BLOCKS = 2


@njit(cache=True)
def _schedule(w):
    """Extend rows 0–15 of ``w[64, LANES]`` to the full message schedule."""
    for t in range(16, 64):
        for lane in range(LANES):
            x = w[t - 15, lane]
            y = w[t - 2, lane]
            s0 = rotr(x, 7) ^ rotr(x, 18) ^ np.uint32(x >> 3)
            s1 = rotr(y, 17) ^ rotr(y, 19) ^ np.uint32(y >> 10)
            w[t, lane] = np.uint32(w[t - 16, lane] + s0 + w[t - 7, lane] + s1)


@njit(cache=True)
def _rounds(v, w, first, last, k):
    """Rounds ``first … last-1`` on state ``v[8, LANES]`` with round constants ``k`` (zeros when ``w``
    already holds W+K)."""
    for t in range(first, last):
        kt = k[t]
        for lane in range(LANES):
            a = v[0, lane]
            b = v[1, lane]
            c = v[2, lane]
            d = v[3, lane]
            e = v[4, lane]
            f = v[5, lane]
            g = v[6, lane]
            h = v[7, lane]
            # t1 and t2 are cut to 32 bits: each has two uses, and LLVM narrows Numba's int64 arithmetic
            # back to 32-bit SIMD lanes only when every expression tree ends in a truncation.
            t1 = np.uint32(
                h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + (g ^ (e & (f ^ g))) + kt + w[t, lane]
            )
            t2 = np.uint32((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) | (c & (a | b))))
            v[7, lane] = g
            v[6, lane] = f
            v[5, lane] = e
            v[4, lane] = np.uint32(d + t1)
            v[3, lane] = c
            v[2, lane] = b
            v[1, lane] = a
            v[0, lane] = np.uint32(t1 + t2)


@njit(cache=True)
def _second_hash(s, w3, v, iv, k):
    """SHA-256 of the 32-byte digest ``s[8, LANES]`` into ``v`` (final state, IV added)."""
    for t in range(8):
        for lane in range(LANES):
            w3[t, lane] = s[t, lane]
    _schedule(w3)
    for t in range(8):
        for lane in range(LANES):
            v[t, lane] = iv[t]
    _rounds(v, w3, 0, 64, k)
    for t in range(8):
        for lane in range(LANES):
            v[t, lane] = np.uint32(v[t, lane] + iv[t])


@njit(cache=True)
def _digest_padding(w3):
    """Rows 8–15 of the second hash's block: 0x80 terminator and the 256-bit length."""
    for lane in range(LANES):
        w3[8, lane] = np.uint32(0x80000000)
        for t in range(9, 15):
            w3[t, lane] = np.uint32(0)
        w3[15, lane] = np.uint32(256)


def _evaluate_blocks_py(words, jitter_slots, golden, keys, k, iv):  # pragma: no cover - compiled
    """``words`` uint32[N, 20] big-endian header words, ``jitter_slots`` uint32[N, 3] (slots 1–3);
    N is a multiple of LANES. Writes ``golden[N]`` and ``keys[N, 3]``."""
    zeros = np.zeros(64, dtype=np.uint32)
    for block in prange(words.shape[0] // LANES):
        base = block * LANES
        w = np.empty((64, LANES), dtype=np.uint32)
        wk2 = np.empty((64, LANES), dtype=np.uint32)
        w3 = np.empty((64, LANES), dtype=np.uint32)
        v = np.empty((8, LANES), dtype=np.uint32)
        s = np.empty((8, LANES), dtype=np.uint32)
        mid = np.empty((8, LANES), dtype=np.uint32)
        js = np.empty((3, LANES), dtype=np.uint32)
        for t in range(16):
            for lane in range(LANES):
                w[t, lane] = words[base + lane, t]
        for t in range(3):
            for lane in range(LANES):
                js[t, lane] = jitter_slots[base + lane, t]
        # Block 2 (header words 16–19 + padding) is the same in every pass: schedule it once, K folded in.
        for t in range(4):
            for lane in range(LANES):
                wk2[t, lane] = words[base + lane, 16 + t]
        for lane in range(LANES):
            wk2[4, lane] = np.uint32(0x80000000)
            for t in range(5, 15):
                wk2[t, lane] = np.uint32(0)
            wk2[15, lane] = np.uint32(640)
        _schedule(wk2)
        for t in range(64):
            for lane in range(LANES):
                wk2[t, lane] = np.uint32(wk2[t, lane] + k[t])
        _digest_padding(w3)
        # Rounds 0–8 of block 1 read only words 0–8, which no pass changes.
        for t in range(8):
            for lane in range(LANES):
                mid[t, lane] = iv[t]
        _rounds(mid, w, 0, MUTATED, k)
        for p in range(PASSES + 1):
            _schedule(w)
            for t in range(8):
                for lane in range(LANES):
                    v[t, lane] = mid[t, lane]
            _rounds(v, w, MUTATED, 64, k)
            for t in range(8):
                for lane in range(LANES):
                    s[t, lane] = np.uint32(v[t, lane] + iv[t])
                    v[t, lane] = s[t, lane]
            _rounds(v, wk2, 0, 64, zeros)
            for t in range(8):
                for lane in range(LANES):
                    s[t, lane] = np.uint32(s[t, lane] + v[t, lane])
            _second_hash(s, w3, v, iv, k)
            if p == PASSES:
                for lane in range(LANES):
                    golden[base + lane] = v[0, lane]
                break
            if p >= STABILITY_FIRST:
                for lane in range(LANES):
                    keys[base + lane, p - STABILITY_FIRST] = v[0, lane]
            for lane in range(LANES):
                key = v[0, lane]
                if p < PHASE2:
                    j = np.uint32(key ^ js[0, lane])
                elif p < PHASE3:
                    j = np.uint32(rotr(key, 16) ^ js[1, lane])
                else:
                    d = np.uint32(key ^ js[2, lane])
                    j = np.uint32(key ^ LOW_CLZ_XOR) if d >= LOW_CLZ_LIMIT else np.uint32(d ^ HIGH_CLZ_XOR)
                w[MUTATED, lane] = np.uint32(w[MUTATED, lane] ^ j)
                w[MUTATED + 1, lane] = np.uint32(w[MUTATED + 1, lane] ^ rotr(j, 24))
                w[MUTATED + 2, lane] = np.uint32(w[MUTATED + 2, lane] ^ rotr(j, 16))
                w[MUTATED + 3, lane] = np.uint32(w[MUTATED + 3, lane] ^ rotr(j, 8))


_evaluate_blocks = njit(parallel=True, cache=True)(_evaluate_blocks_py)
#: The same kernel on the calling thread, for inputs too small to share (``cpu.serial_call``).
_evaluate_blocks_serial = njit(cache=True)(_evaluate_blocks_py)


def _scan_windows_blocks_py(
    midstate, tail, starts, window_size, skip, count, zero_bits, k, iv
):  # pragma: no cover
    """``midstate`` uint32[8]: the state after header bytes 0–63 (computed once per header, the
    Bitcoin midstate); ``tail`` uint32[3]: big-endian header words 16–18 (bytes 64–75).

    Nonces come from windows of ``window_size`` consecutive nonces starting at ``starts`` (int64),
    laid end to end; this call hashes positions ``skip … skip+count-1`` of that sequence (position
    p: nonce ``starts[p // window_size] + p % window_size`` mod 2^32). Lanes are packed across
    window boundaries, so windows smaller than LANES waste no lanes; padding lanes past ``count``
    hash nonce 0 and are not read. Writes, per position, the leading zero bits of the byte-reversed
    double SHA-256 (capped at 255): two compressions per nonce."""
    mid = np.empty((8, LANES), dtype=np.uint32)
    for t in range(8):
        for lane in range(LANES):
            mid[t, lane] = midstate[t]
    for block in prange((count + LANES - 1) // LANES):
        base = block * LANES
        w = np.empty((64, LANES), dtype=np.uint32)
        w3 = np.empty((64, LANES), dtype=np.uint32)
        v = np.empty((8, LANES), dtype=np.uint32)
        s = np.empty((8, LANES), dtype=np.uint32)
        for lane in range(LANES):
            nonce = 0
            if base + lane < count:
                position = skip + base + lane
                window = position // window_size
                nonce = (starts[window] + position - window * window_size) & 0xFFFFFFFF
            w[0, lane] = tail[0]
            w[1, lane] = tail[1]
            w[2, lane] = tail[2]
            # The nonce sits little-endian in bytes 76–79, so the big-endian message word is swapped.
            w[3, lane] = bswap32(np.uint32(nonce))
            w[4, lane] = np.uint32(0x80000000)
            for t in range(5, 15):
                w[t, lane] = np.uint32(0)
            w[15, lane] = np.uint32(640)
        _schedule(w)
        for t in range(8):
            for lane in range(LANES):
                v[t, lane] = mid[t, lane]
        _rounds(v, w, 0, 64, k)
        for t in range(8):
            for lane in range(LANES):
                s[t, lane] = np.uint32(mid[t, lane] + v[t, lane])
        _digest_padding(w3)
        _second_hash(s, w3, v, iv, k)
        for lane in range(LANES):
            # A Bitcoin hash is read byte-reversed: digest word 7, byte-swapped, holds its top bits.
            bits = 0
            for t in range(7, -1, -1):
                z = clz32(bswap32(v[t, lane]))
                bits += z
                if z < 32:
                    break
            zero_bits[base + lane] = min(bits, 255)


_scan_windows_blocks = njit(parallel=True, cache=True)(_scan_windows_blocks_py)
#: The same kernel on one thread, for scans too small to share: waking the worker pool costs more
#: than they do, and on a busy machine a parallel region waits for every worker to be scheduled.
_scan_windows_blocks_serial = njit(cache=True)(_scan_windows_blocks_py)


def _padded_rows(a: np.ndarray) -> np.ndarray:
    """``a`` with its rows padded to a multiple of LANES (zeros), contiguous."""
    n = a.shape[0]
    pad = -n % LANES
    if pad == 0:
        return np.ascontiguousarray(a)
    out = np.zeros((n + pad, *a.shape[1:]), dtype=a.dtype)
    out[:n] = a
    return out


def evaluate_words(words: np.ndarray, jitter_slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Goldens uint32[N] and keys uint32[N, 3] for ``words`` uint32[N, 20] (big-endian header words)
    and ``jitter_slots`` uint32[N, 3] (slots 1–3)."""
    n = words.shape[0]
    words = _padded_rows(words)
    jitter_slots = _padded_rows(jitter_slots)
    golden = np.empty(words.shape[0], dtype=np.uint32)
    keys = np.empty((words.shape[0], len(design.STABILITY_PASSES)), dtype=np.uint32)
    from .cpu_words import serial_call

    if serial_call(n):
        _evaluate_blocks_serial(words, jitter_slots, golden, keys, K, IV)
    else:
        with numba.parallel_chunksize(PARALLEL_CHUNK_BLOCKS):
            _evaluate_blocks(words, jitter_slots, golden, keys, K, IV)
    return golden[:n], keys[:n]


def scan_windows(
    midstate: np.ndarray,
    tail: np.ndarray,
    starts: np.ndarray,
    window_size: int,
    skip: int,
    count: int,
    serial: bool,
) -> np.ndarray:
    """Leading zero bits (uint8[count]) of the mining hash at positions ``skip … skip+count-1`` of the
    windows (see ``_scan_windows_blocks_py``), from ``midstate`` uint32[8], ``tail`` uint32[3] and
    ``starts`` int64; ``serial`` runs it on the calling thread."""
    zero_bits = np.empty(-(-count // LANES) * LANES, dtype=np.uint8)
    args = (midstate, tail, starts, window_size, skip, count, zero_bits, K, IV)
    if serial:
        _scan_windows_blocks_serial(*args)
    else:
        with numba.parallel_chunksize(PARALLEL_CHUNK_BLOCKS):
            _scan_windows_blocks(*args)
    return zero_bits[:count]
