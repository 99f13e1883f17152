"""The 80-byte header, the jitter and the 21-pass recursion (DESIGN §4.1–4.2), plus the Bitcoin midstate.

Plain functions on bytes and numpy arrays: the header layout every backend and the ASIC share, the
per-pass jitter, SHA-256's compression function (hashlib cannot start from a given state, and mining
starts from the state after header bytes 0–63), and the recursion written out with hashlib, one
header at a time: readable, slow, and the oracle every compiled backend is tested against.

Slots are written big-endian so the hash's leading bits line up with token ids; the nonce is the
big-endian value of seed bytes 28–31 written little-endian, as a mining chip expects it.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from . import design

_MASK = 0xFFFFFFFF
#: Block 2 of an 80-byte message after its 16 data bytes: the 0x80 terminator, zeros, bit length 640.
_HEADER_PAD = struct.pack(">12I", 0x80000000, *([0] * 10), design.HEADER_BYTES * 8)
#: Padding of a 32-byte digest hashed again: the 0x80 terminator, zeros, bit length 256.
_DIGEST_PAD = struct.pack(">8I", 0x80000000, *([0] * 6), 256)


def rotl32(x: np.ndarray | int, n: int) -> np.ndarray | int:
    """Rotate 32-bit words left by ``n`` (0 ≤ n < 32); works on Python ints and uint32 arrays."""
    n %= 32
    if n == 0:
        return x
    if isinstance(x, np.ndarray):
        x = x.astype(np.uint32, copy=False)
        return (x << np.uint32(n)) | (x >> np.uint32(32 - n))
    return ((x << n) | (x >> (32 - n))) & _MASK


def clz32(x: int) -> int:
    """Count leading zero bits of a 32-bit word (32 for zero)."""
    return 32 - int(x).bit_length()


def leading_equal_bits(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """How many leading bits two uint32 words share (uint8, 32 when equal): DESIGN §4.3's match."""
    x = np.asarray(a, dtype=np.uint32) ^ np.asarray(b, dtype=np.uint32)
    for shift in (1, 2, 4, 8, 16):  # smear the highest set bit downwards, then count
        x = x | (x >> np.uint32(shift))
    return (32 - np.bitwise_count(x)).astype(np.uint8)


def target_word(token_ids: np.ndarray | int) -> np.ndarray:
    """The 32-bit word a seed's golden is matched against (DESIGN §4.3): ``token << 15``, uint32."""
    return (np.asarray(token_ids, dtype=np.uint32) << np.uint32(design.TOKEN_SHIFT)).astype(np.uint32)


def golden_token(golden: np.ndarray | int) -> np.ndarray:
    """The token id a golden stands for (DESIGN §4.3): its top 17 bits, ``golden >> 15``, uint32."""
    return (np.asarray(golden, dtype=np.uint32) >> np.uint32(design.TOKEN_SHIFT)).astype(np.uint32)


def jitter(pass_index: int, key: int, slots: np.ndarray | list[int]) -> int:
    """The per-pass jitter word (DESIGN §4.2): a pure function of the pass, the key and the slots."""
    if pass_index < design.JITTER_PHASE2_START:
        return (key ^ int(slots[1])) & _MASK
    if pass_index < design.JITTER_PHASE3_START:
        return (int(rotl32(key, 16)) ^ int(slots[2])) & _MASK
    d = (key ^ int(slots[3])) & _MASK
    if clz32(d) < design.JITTER_CLZ_THRESHOLD:
        return key ^ design.JITTER_LOW_CLZ_XOR
    return d ^ design.JITTER_HIGH_CLZ_XOR


def build_headers(slots: np.ndarray, seeds: np.ndarray, header_time: int = 0) -> np.ndarray:
    """Lay out one 80-byte header per row (DESIGN §4.1).

    ``slots`` uint32[N, 12], ``seeds`` uint8[N, 32], ``header_time`` a 32-bit constant → uint8[N, 80].
    """
    n = slots.shape[0]
    headers = np.zeros((n, design.HEADER_BYTES), dtype=np.uint8)
    headers[:, 0:4] = np.frombuffer(np.uint32(design.HEADER_VERSION).astype("<u4").tobytes(), np.uint8)
    headers[:, design.OFFSET_SLOTS : design.OFFSET_EXTRANONCE] = (
        slots.astype(">u4").view(np.uint8).reshape(n, design.SLOT_COUNT * 4)
    )
    headers[:, design.OFFSET_EXTRANONCE : design.OFFSET_TIME] = seeds[:, : design.EXTRANONCE_BYTES]
    headers[:, design.OFFSET_TIME : design.OFFSET_BITS] = np.frombuffer(
        np.uint32(header_time).astype("<u4").tobytes(), np.uint8
    )
    headers[:, design.OFFSET_BITS : design.OFFSET_NONCE] = np.frombuffer(
        np.uint32(design.HEADER_BITS).astype("<u4").tobytes(), np.uint8
    )
    # Big-endian value written little-endian == the four seed bytes reversed.
    nonce = design.SEED_NONCE_OFFSET
    headers[:, design.OFFSET_NONCE :] = seeds[:, nonce : nonce + 4][:, ::-1]
    return headers


def build_header(slots: np.ndarray | list[int], seed: bytes, header_time: int = 0) -> bytes:
    """One 80-byte header: 12 slot words, a 32-byte seed and the header time (DESIGN §4.1)."""
    s = np.asarray(slots, dtype=np.uint32).reshape(1, design.SLOT_COUNT)
    sd = np.frombuffer(bytes(seed), dtype=np.uint8).reshape(1, design.SEED_BYTES)
    return build_headers(s, sd, header_time)[0].tobytes()


def seed_with_nonce(extranonce: bytes, nonce: int) -> bytes:
    """The 32-byte seed for a 16-byte extranonce and a nonce value (reserved bytes 16–27 zero).

    Raises ValueError when ``extranonce`` is not 16 bytes.
    """
    if len(extranonce) != design.EXTRANONCE_BYTES:
        raise ValueError(f"extranonce must be {design.EXTRANONCE_BYTES} bytes, got {len(extranonce)}")
    return bytes(extranonce) + bytes(12) + int(nonce & _MASK).to_bytes(4, "big")


def double_sha256(data: bytes) -> bytes:
    """SHA256(SHA256(data)) with hashlib."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def be32(digest: bytes) -> int:
    """The first four digest bytes read big-endian (DESIGN §4.2's ``BE32``)."""
    return int.from_bytes(digest[:4], "big")


def recursion(header: bytes, slots: np.ndarray | list[int]) -> tuple[int, list[int]]:
    """Run the 21 passes of DESIGN §4.2 on one header; return ``(golden, keys of passes 0–20)``."""
    h = bytearray(header)
    keys: list[int] = []
    for p in range(design.PASSES):
        key = be32(double_sha256(bytes(h)))
        keys.append(key)
        j = jitter(p, key, slots)
        for i in range(design.MUTATED_WORD_COUNT):
            off = 4 * (design.MUTATED_WORD_FIRST + i)
            (word,) = struct.unpack_from(">I", h, off)
            struct.pack_into(">I", h, off, word ^ int(rotl32(j, 8 * i)))
    return be32(double_sha256(bytes(h))), keys


def hash_zero_bits(digest: bytes) -> int:
    """Leading zero bits of a double SHA-256 read as a Bitcoin hash (byte-reversed, 256-bit)."""
    return 256 - int.from_bytes(digest[::-1], "big").bit_length()


def header_hash_zero_bits(header: bytes) -> int:
    """Leading zero bits of a header's double SHA-256 read as a Bitcoin hash: a share's difficulty."""
    return hash_zero_bits(double_sha256(header))


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & _MASK


def compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    """One SHA-256 compression of a 64-byte ``block`` into the 8-word ``state`` (FIPS 180-4 §6.2.2).

    Raises ValueError for a state that is not 8 words or a block that is not 64 bytes.
    """
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
        t1 = h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + (g ^ (e & (f ^ g))) + design.SHA256_K[t] + w[t]
        t2 = (_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) | (c & (a | b)))
        h, g, f, e, d, c, b, a = g, f, e, (d + t1) & _MASK, c, b, a, (t1 + t2) & _MASK
    return tuple((s + v) & _MASK for s, v in zip(state, (a, b, c, d, e, f, g, h), strict=True))


def midstate(header: bytes) -> tuple[int, ...]:
    """The SHA-256 state (8 words) after compressing bytes 0–63 of a header; not a digest (DESIGN §7).

    Raises ValueError when ``header`` is not 80 bytes.
    """
    if len(header) != design.HEADER_BYTES:
        raise ValueError(f"header must be {design.HEADER_BYTES} bytes, got {len(header)}")
    return compress(design.SHA256_IV, bytes(header[:64]))


def double_sha256_from_midstate(state: tuple[int, ...], tail: bytes, nonce: int) -> bytes:
    """SHA256(SHA256(header)) from the midstate, header bytes 64–75 (``tail``) and the nonce, which
    sits little-endian in bytes 76–79: the two compressions a mining chip does per nonce.

    Raises ValueError when ``tail`` is not 12 bytes.
    """
    if len(tail) != design.TAIL_BYTES:
        raise ValueError(f"tail is header bytes 64–75 ({design.TAIL_BYTES} bytes), got {len(tail)}")
    first = compress(state, bytes(tail) + struct.pack("<I", nonce & _MASK) + _HEADER_PAD)
    return struct.pack(">8I", *compress(design.SHA256_IV, struct.pack(">8I", *first) + _DIGEST_PAD))
