"""SHA-256's compression function in plain Python, for the Bitcoin midstate of an 80-byte header.

hashlib does not expose its internal state, but mining needs it: the ASIC's work item and the
CUDA header scan both start from the state after header bytes 0–63 (DESIGN §7), computed once
per header, so speed does not matter here.
"""

from __future__ import annotations

import struct

from . import constants as C

_MASK = 0xFFFFFFFF


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & _MASK


def compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    """One SHA-256 compression of a 64-byte ``block`` into the 8-word ``state`` (FIPS 180-4 §6.2.2)."""
    if len(block) != 64:
        raise ValueError(f"a SHA-256 block is 64 bytes, got {len(block)}")
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
