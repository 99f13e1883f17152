"""The SHA-256 midstate of a header and the nonce search a chip does from it (DESIGN §7).

The midstate is the SHA-256 **state after compressing header bytes 0–63** — eight words, not a
digest (the Go toolchain sent ``SHA256(header[0:64])``, which no chip can finish). A BM1382 gets
only that state and header bytes 64–75 and sweeps the nonce (bytes 76–79, little-endian): one
compression finishes the first SHA-256, a second one hashes the 32-byte digest. This module owns
the compression function (scalar, for the host, and vectorised over nonces, for the emulator) and
takes its constants from ``sha256.constants`` so nothing drifts.
"""

from __future__ import annotations

import struct

import numpy as np

from hasher_resources.sha256.constants import HEADER_BYTES, SHA256_IV, SHA256_K

#: Second-block padding of an 80-byte message: 0x80 after the nonce, then the bit length 640.
_BLOCK2_PAD = (0x80000000, *([0] * 10), HEADER_BYTES * 8)
#: Padding of the 32-byte digest in the second SHA-256: 0x80, zeros, bit length 256.
_DIGEST_PAD = (0x80000000, *([0] * 6), 256)
_M32 = 0xFFFFFFFF


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & _M32


def compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    """One SHA-256 compression (FIPS 180-4 §6.2.2) of a 64-byte block into an 8-word state."""
    if len(state) != 8 or len(block) != 64:
        raise ValueError(f"compress needs 8 state words and a 64-byte block, not {len(state)}, {len(block)}")
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        s0 = _rotr(w[t - 15], 7) ^ _rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
        s1 = _rotr(w[t - 2], 17) ^ _rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & _M32)
    a, b, c, d, e, f, g, h = state
    for t in range(64):
        t1 = h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ((e & f) ^ (~e & g)) + SHA256_K[t] + w[t]
        t2 = (_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))
        a, b, c, d, e, f, g, h = (t1 + t2) & _M32, a, b, c, (d + t1) & _M32, e, f, g
    return tuple((x + y) & _M32 for x, y in zip(state, (a, b, c, d, e, f, g, h), strict=True))


def midstate_words(header: bytes) -> tuple[int, ...]:
    """The eight SHA-256 state words after header bytes 0–63."""
    if len(header) < 64:
        raise ValueError(f"a midstate needs at least 64 header bytes, got {len(header)}")
    return compress(SHA256_IV, bytes(header[:64]))


def midstate(header: bytes) -> bytes:
    """The midstate as it goes into a TxTask: the eight state words, each little-endian (cgminer)."""
    return struct.pack("<8I", *midstate_words(header))


def words_of_midstate(wire: bytes) -> tuple[int, ...]:
    """Inverse of :func:`midstate`: the state words from the 32 bytes of a TxTask work item."""
    if len(wire) != 32:
        raise ValueError(f"a midstate is 32 bytes, got {len(wire)}")
    return struct.unpack("<8I", wire)


def finish_double_sha256(state: tuple[int, ...], tail: bytes) -> bytes:
    """SHA256(SHA256(header)) from the midstate and header bytes 64–79 (what a chip computes)."""
    if len(tail) != 16:
        raise ValueError(f"the header tail is 16 bytes (64–79), got {len(tail)}")
    block2 = tail + struct.pack(">12I", *_BLOCK2_PAD)
    first = struct.pack(">8I", *compress(state, block2))
    second = compress(SHA256_IV, first + struct.pack(">8I", *_DIGEST_PAD))
    return struct.pack(">8I", *second)


def _rotr_v(x: np.ndarray, n: int) -> np.ndarray:
    return (x >> np.uint32(n)) | (x << np.uint32(32 - n))


def _compress_v(state: list[np.ndarray], w: list[np.ndarray]) -> list[np.ndarray]:
    """Vectorised compression: ``w`` is 16 uint32 arrays (or broadcastable scalars)."""
    w = list(w)
    for t in range(16, 64):
        x, y = w[t - 15], w[t - 2]
        s0 = _rotr_v(x, 7) ^ _rotr_v(x, 18) ^ (x >> np.uint32(3))
        s1 = _rotr_v(y, 17) ^ _rotr_v(y, 19) ^ (y >> np.uint32(10))
        w.append(w[t - 16] + s0 + w[t - 7] + s1)
    a, b, c, d, e, f, g, h = state
    for t in range(64):
        t1 = h + (_rotr_v(e, 6) ^ _rotr_v(e, 11) ^ _rotr_v(e, 25)) + ((e & f) ^ (~e & g))
        t1 = t1 + np.uint32(SHA256_K[t]) + w[t]
        t2 = (_rotr_v(a, 2) ^ _rotr_v(a, 13) ^ _rotr_v(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))
        a, b, c, d, e, f, g, h = t1 + t2, a, b, c, d + t1, e, f, g
    return [s + v for s, v in zip(state, (a, b, c, d, e, f, g, h), strict=True)]


def _clz32_v(x: np.ndarray) -> np.ndarray:
    for shift in (1, 2, 4, 8, 16):  # smear the highest set bit downwards, then count
        x = x | (x >> np.uint32(shift))
    return 32 - np.bitwise_count(x).astype(np.int32)


def _bswap32_v(x: np.ndarray) -> np.ndarray:
    return x.byteswap()


def hash_zero_bits_from_midstate(state: tuple[int, ...], data2: bytes, nonces: np.ndarray) -> np.ndarray:
    """Leading zero bits (int32[N], up to 256) of the byte-reversed double SHA-256 for each nonce.

    This is the Bitcoin reading of a hash (DESIGN §7): the digest as a little-endian 256-bit number,
    so its leading zero bits are the trailing zero *bytes* of the digest, read from word 7 down.
    """
    if len(data2) != 12:
        raise ValueError(f"data2 is header bytes 64–75 (12 bytes), got {len(data2)}")
    nonces = np.ascontiguousarray(nonces, dtype=np.uint32)
    n = nonces.size
    st = [np.full(n, s, dtype=np.uint32) for s in state]
    # The nonce sits little-endian in bytes 76–79, so the big-endian message word is its byteswap.
    w = [np.full(n, v, dtype=np.uint32) for v in struct.unpack(">3I", data2)]
    w += [_bswap32_v(nonces)] + [np.full(n, v, dtype=np.uint32) for v in _BLOCK2_PAD]
    first = _compress_v(st, w)
    iv = [np.full(n, s, dtype=np.uint32) for s in SHA256_IV]
    digest = _compress_v(iv, first + [np.full(n, v, dtype=np.uint32) for v in _DIGEST_PAD])
    bits = np.zeros(n, dtype=np.int32)
    still_zero = np.ones(n, dtype=bool)
    for word in reversed(digest):
        lead = _clz32_v(_bswap32_v(word))
        bits += np.where(still_zero, lead, 0)
        still_zero &= lead == 32
        if not still_zero.any():
            break
    return bits
