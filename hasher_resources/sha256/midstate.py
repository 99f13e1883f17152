"""SHA-256's compression function in plain Python: the Bitcoin midstate and hashing from it.

hashlib does not expose its internal state, but mining needs it: the ASIC's work item and every
midstate nonce scan start from the state after header bytes 0–63 (DESIGN §7), computed once per
header. This is the project's one scalar compression function: the reference backend finishes
double SHA-256 from a midstate with it, and the ASIC codec computes TxTask midstates with it.
"""

from __future__ import annotations

import struct

from . import constants as C

_MASK = 0xFFFFFFFF
#: Block 2 of an 80-byte message after its 16 data bytes: the 0x80 terminator, zeros, bit length 640.
_HEADER_PAD = struct.pack(">12I", 0x80000000, *([0] * 10), C.HEADER_BYTES * 8)
#: Padding of a 32-byte digest hashed again: the 0x80 terminator, zeros, bit length 256.
_DIGEST_PAD = struct.pack(">8I", 0x80000000, *([0] * 6), 256)
#: Header bytes a midstate does not cover: 64–75 (merkle tail, time, bits) and the nonce, 76–79.
TAIL_BYTES = C.HEADER_BYTES - 64 - 4


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & _MASK


def compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    """One SHA-256 compression of a 64-byte ``block`` into the 8-word ``state`` (FIPS 180-4 §6.2.2)."""
    if len(state) != 8 or len(block) != 64:
        raise ValueError(f"compress needs 8 state words and a 64-byte block, not {len(state)}, {len(block)}")
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        x, y = w[t - 15], w[t - 2]
        s0 = _rotr(x, 7) ^ _rotr(x, 18) ^ (x >> 3)
        s1 = _rotr(y, 17) ^ _rotr(y, 19) ^ (y >> 10)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & _MASK)
    a, b, c, d, e, f, g, h = state
    for t in range(64):
        t1 = h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + (g ^ (e & (f ^ g))) + C.SHA256_K[t] + w[t]
        t2 = (_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) | (c & (a | b)))
        h, g, f, e, d, c, b, a = g, f, e, (d + t1) & _MASK, c, b, a, (t1 + t2) & _MASK
    return tuple((s + v) & _MASK for s, v in zip(state, (a, b, c, d, e, f, g, h), strict=True))


def midstate(header: bytes) -> tuple[int, ...]:
    """The SHA-256 state (8 words) after compressing bytes 0–63 of an 80-byte header; not a digest."""
    if len(header) != C.HEADER_BYTES:
        raise ValueError(f"header must be {C.HEADER_BYTES} bytes, got {len(header)}")
    return compress(C.SHA256_IV, bytes(header[:64]))


def double_sha256_from_midstate(state: tuple[int, ...], tail: bytes, nonce: int) -> bytes:
    """SHA256(SHA256(header)) from the midstate, header bytes 64–75 (``tail``) and the nonce, which
    sits little-endian in bytes 76–79: the two compressions a mining chip does per nonce."""
    if len(tail) != TAIL_BYTES:
        raise ValueError(f"tail is header bytes 64–75 ({TAIL_BYTES} bytes), got {len(tail)}")
    first = compress(state, bytes(tail) + struct.pack("<I", nonce & _MASK) + _HEADER_PAD)
    return struct.pack(">8I", *compress(C.SHA256_IV, struct.pack(">8I", *first) + _DIGEST_PAD))
