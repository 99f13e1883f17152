"""The 80-byte header and the jitter function (DESIGN §4.1–4.2) as plain numpy functions.

Slots are written big-endian so the hash's leading bits line up with token ids; the nonce is the
big-endian value of seed bytes 28–31 written little-endian, as a mining chip expects it.
"""

from __future__ import annotations

import numpy as np

from . import constants as C


def rotl32(x: np.ndarray | int, n: int) -> np.ndarray | int:
    """Rotate 32-bit words left by ``n`` (0 ≤ n < 32); works on Python ints and uint32 arrays."""
    n %= 32
    if n == 0:
        return x
    if isinstance(x, np.ndarray):
        x = x.astype(np.uint32, copy=False)
        return (x << np.uint32(n)) | (x >> np.uint32(32 - n))
    return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF


def clz32(x: int) -> int:
    """Count leading zero bits of a 32-bit word (32 for zero)."""
    return 32 - int(x).bit_length()


def jitter(pass_index: int, key: int, slots: np.ndarray | list[int]) -> int:
    """The per-pass jitter word: a pure function of the pass, the key and the frame's slots."""
    if pass_index < C.JITTER_PHASE2_START:
        return (key ^ int(slots[1])) & 0xFFFFFFFF
    if pass_index < C.JITTER_PHASE3_START:
        return (int(rotl32(key, 16)) ^ int(slots[2])) & 0xFFFFFFFF
    d = (key ^ int(slots[3])) & 0xFFFFFFFF
    if clz32(d) < C.JITTER_CLZ_THRESHOLD:
        return key ^ C.JITTER_LOW_CLZ_XOR
    return d ^ C.JITTER_HIGH_CLZ_XOR


def jitter_array(pass_index: int, keys: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Vectorised :func:`jitter` for ``keys`` uint32[N] and ``slots`` uint32[N, 12]."""
    keys = keys.astype(np.uint32, copy=False)
    if pass_index < C.JITTER_PHASE2_START:
        return keys ^ slots[:, 1]
    if pass_index < C.JITTER_PHASE3_START:
        return rotl32(keys, 16) ^ slots[:, 2]
    d = keys ^ slots[:, 3]
    # clz32(d) < 12  <=>  d >= 2**20
    low_clz = d >= np.uint32(1 << (32 - C.JITTER_CLZ_THRESHOLD))
    return np.where(
        low_clz, keys ^ np.uint32(C.JITTER_LOW_CLZ_XOR), d ^ np.uint32(C.JITTER_HIGH_CLZ_XOR)
    ).astype(np.uint32)


def nonce_of_seed(seeds: np.ndarray) -> np.ndarray:
    """The nonce value (uint32[N]) carried by seed bytes 28–31, read big-endian."""
    return seeds[:, C.SEED_NONCE_OFFSET : C.SEED_NONCE_OFFSET + 4].copy().view(">u4")[:, 0].astype(np.uint32)


def build_headers(slots: np.ndarray, seeds: np.ndarray, header_time: int = 0) -> np.ndarray:
    """Lay out one 80-byte header per row: ``slots`` uint32[N, 12], ``seeds`` uint8[N, 32] → uint8[N, 80]."""
    n = slots.shape[0]
    headers = np.zeros((n, C.HEADER_BYTES), dtype=np.uint8)
    headers[:, 0:4] = np.frombuffer(np.uint32(C.HEADER_VERSION).astype("<u4").tobytes(), np.uint8)
    headers[:, C.OFFSET_SLOTS : C.OFFSET_EXTRANONCE] = (
        slots.astype(">u4").view(np.uint8).reshape(n, C.SLOT_COUNT * 4)
    )
    headers[:, C.OFFSET_EXTRANONCE : C.OFFSET_TIME] = seeds[:, : C.EXTRANONCE_BYTES]
    headers[:, C.OFFSET_TIME : C.OFFSET_BITS] = np.frombuffer(
        np.uint32(header_time).astype("<u4").tobytes(), np.uint8
    )
    headers[:, C.OFFSET_BITS : C.OFFSET_NONCE] = np.frombuffer(
        np.uint32(C.HEADER_BITS).astype("<u4").tobytes(), np.uint8
    )
    # Big-endian value written little-endian == the four seed bytes reversed.
    headers[:, C.OFFSET_NONCE :] = seeds[:, C.SEED_NONCE_OFFSET : C.SEED_NONCE_OFFSET + 4][:, ::-1]
    return headers


def build_header(slots: np.ndarray | list[int], seed: bytes, header_time: int = 0) -> bytes:
    """One header as bytes (convenience for the reference, the device and the CLI)."""
    s = np.asarray(slots, dtype=np.uint32).reshape(1, C.SLOT_COUNT)
    sd = np.frombuffer(bytes(seed), dtype=np.uint8).reshape(1, C.SEED_BYTES)
    return build_headers(s, sd, header_time)[0].tobytes()


def seed_with_nonce(extranonce: bytes, nonce: int) -> bytes:
    """The 32-byte seed for an extranonce (16 bytes) and a nonce value (reserved bytes zero)."""
    if len(extranonce) != C.EXTRANONCE_BYTES:
        raise ValueError(f"extranonce must be {C.EXTRANONCE_BYTES} bytes, got {len(extranonce)}")
    return bytes(extranonce) + bytes(12) + int(nonce & 0xFFFFFFFF).to_bytes(4, "big")
