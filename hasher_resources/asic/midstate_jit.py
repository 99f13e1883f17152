"""Numba version of the emulator's nonce search from a midstate (same result as ``midstate.py``).

A BM1382 hashes from the midstate and header bytes 64–75 only; so does this loop, one nonce per
iteration, two compressions each. It is the emulator's ``numba`` backend: tens of times faster
than the vectorised numpy path, at the price of a JIT compile (cached on disk) on first use.
Constants come from ``sha256.constants``; tests check it nonce for nonce against the numpy path.
"""

from __future__ import annotations

import struct

import numpy as np
from numba import njit, prange

from hasher_resources.sha256.constants import SHA256_IV, SHA256_K

_K = np.array(SHA256_K, dtype=np.int64)
_IV = np.array(SHA256_IV, dtype=np.int64)
_M = 0xFFFFFFFF


@njit(inline="always", cache=True)
def _rotr(x, n):
    return ((x >> n) | (x << (32 - n))) & 0xFFFFFFFF


@njit(inline="always", cache=True)
def _compress(state, w, k, out):
    # Words are held in int64 and masked: uint64 mixed with literals would turn float in numba.
    for t in range(16, 64):
        s0 = _rotr(w[t - 15], 7) ^ _rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
        s1 = _rotr(w[t - 2], 17) ^ _rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
        w[t] = (w[t - 16] + s0 + w[t - 7] + s1) & 0xFFFFFFFF
    a, b, c, d = state[0], state[1], state[2], state[3]
    e, f, g, h = state[4], state[5], state[6], state[7]
    for t in range(64):
        ch = (e & f) ^ (~e & g & 0xFFFFFFFF)
        t1 = (h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ch + k[t] + w[t]) & 0xFFFFFFFF
        t2 = ((_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) & 0xFFFFFFFF
        h, g, f, e = g, f, e, (d + t1) & 0xFFFFFFFF
        d, c, b, a = c, b, a, (t1 + t2) & 0xFFFFFFFF
    out[0] = (state[0] + a) & 0xFFFFFFFF
    out[1] = (state[1] + b) & 0xFFFFFFFF
    out[2] = (state[2] + c) & 0xFFFFFFFF
    out[3] = (state[3] + d) & 0xFFFFFFFF
    out[4] = (state[4] + e) & 0xFFFFFFFF
    out[5] = (state[5] + f) & 0xFFFFFFFF
    out[6] = (state[6] + g) & 0xFFFFFFFF
    out[7] = (state[7] + h) & 0xFFFFFFFF


@njit(inline="always", cache=True)
def _bswap(x):
    return ((x & 0xFF) << 24) | ((x & 0xFF00) << 8) | ((x >> 8) & 0xFF00) | (x >> 24)


@njit(parallel=True, cache=True)
def _scan(state, tail, nonces, k, iv, bits):  # pragma: no cover - compiled
    chunk = 4096  # scratch arrays are allocated once per chunk, not once per nonce
    for c in prange((nonces.size + chunk - 1) // chunk):
        w = np.zeros(64, dtype=np.int64)
        first = np.empty(8, dtype=np.int64)
        digest = np.empty(8, dtype=np.int64)
        for i in range(c * chunk, min(nonces.size, (c + 1) * chunk)):
            w[:] = 0
            w[0], w[1], w[2] = tail[0], tail[1], tail[2]
            w[3] = _bswap(np.int64(nonces[i]))
            w[4] = 0x80000000
            w[15] = 640
            _compress(state, w, k, first)
            w[:] = 0
            for j in range(8):
                w[j] = first[j]
            w[8] = 0x80000000
            w[15] = 256
            _compress(iv, w, k, digest)
            count = 0
            for j in range(7, -1, -1):  # the Bitcoin reading: digest bytes from the end
                v = _bswap(digest[j])
                if v == 0:
                    count += 32
                    continue
                while v < 0x80000000:
                    v <<= 1
                    count += 1
                break
            bits[i] = count


def hash_zero_bits_from_midstate(state: tuple[int, ...], data2: bytes, nonces: np.ndarray) -> np.ndarray:
    """Leading zero bits (int32[N]) of the byte-reversed double SHA-256 for each nonce (numba)."""
    if len(data2) != 12:
        raise ValueError(f"data2 is header bytes 64–75 (12 bytes), got {len(data2)}")
    nonces = np.ascontiguousarray(nonces, dtype=np.uint32)
    bits = np.empty(nonces.size, dtype=np.int32)
    tail = np.array(struct.unpack(">3I", data2), dtype=np.int64)
    _scan(np.array(state, dtype=np.int64), tail, nonces, _K, _IV, bits)
    return bits


def warm_up() -> None:
    """Compile (or load from the on-disk cache) before the first real work item."""
    hash_zero_bits_from_midstate(tuple(SHA256_IV), bytes(12), np.arange(4, dtype=np.uint32))
