"""The reference backend: DESIGN §4.2 written out with hashlib, one header at a time.

Readable and slow (about 22 double SHA-256 per evaluation through OpenSSL); it is the oracle every
other backend is tested against and the independent second opinion of the checkpoints gate. The
recursion itself is ``hasher_core.header.recursion``; this module is the backend-shaped loop around
it. The midstate scan is the one path hashlib cannot take (it cannot start from a given state): it
runs the pure-Python compression of ``hasher_core.header``, tested against hashlib on whole headers;
its windowed form (many windows of consecutive nonces) is a loop over them.
"""

from __future__ import annotations

import struct

import numpy as np

from hasher_core import design
from hasher_core.header import (
    build_header,
    double_sha256_from_midstate,
    hash_zero_bits,
    header_hash_zero_bits,
    recursion,
)


def evaluate_with_keys(
    slots: np.ndarray, seeds: np.ndarray, header_time: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Goldens uint32[N] and the keys of passes 18–20 uint32[N, 3] for validated inputs."""
    n = slots.shape[0]
    golden = np.empty(n, dtype=np.uint32)
    keys = np.empty((n, len(design.STABILITY_PASSES)), dtype=np.uint32)
    for r in range(n):
        header = build_header(slots[r], seeds[r].tobytes(), header_time)
        g, all_keys = recursion(header, slots[r])
        golden[r] = g
        keys[r] = [all_keys[p] for p in design.STABILITY_PASSES]
    return golden, keys


def scan_seed_nonces(
    slots: np.ndarray,
    extranonce: bytes,
    nonce_start: int,
    nonce_count: int,
    header_time: int = 0,
) -> np.ndarray:
    """Goldens for one frame and extranonce over nonces ``nonce_start … +nonce_count`` (uint32)."""
    out = np.empty(nonce_count, dtype=np.uint32)
    base = bytes(extranonce) + bytes(12)
    for k in range(nonce_count):
        nonce = (nonce_start + k) & 0xFFFFFFFF
        header = build_header(slots, base + nonce.to_bytes(4, "big"), header_time)
        out[k], _ = recursion(header, slots)
    return out


def scan_header_nonces(header: bytes, nonce_start: int, nonce_count: int) -> np.ndarray:
    """Leading zero bits (uint8) of the mining hash for each nonce in the range (nonce in bytes 76–79, LE)."""
    out = np.empty(nonce_count, dtype=np.uint8)
    h = bytearray(header)
    for k in range(nonce_count):
        struct.pack_into("<I", h, design.OFFSET_NONCE, (nonce_start + k) & 0xFFFFFFFF)
        out[k] = min(header_hash_zero_bits(bytes(h)), 255)
    return out


def scan_midstate_windows(
    midstate: tuple[int, ...], tail: bytes, starts: np.ndarray, window_size: int, skip: int, count: int
) -> np.ndarray:
    """Leading zero bits (uint8[count]) at positions ``skip … skip+count-1`` of the windows
    (``window_size`` nonces from each of ``starts``) laid end to end: window by window, nonce by
    nonce, the plain loop the compiled backends are checked against."""
    out = np.empty(count, dtype=np.uint8)
    position = skip
    for k in range(count):
        window, offset = divmod(position + k, window_size)
        nonce = (int(starts[window]) + offset) & 0xFFFFFFFF
        out[k] = min(hash_zero_bits(double_sha256_from_midstate(midstate, tail, nonce)), 255)
    return out


def scan_midstate_nonces(
    midstate: tuple[int, ...], tail: bytes, nonce_start: int, nonce_count: int
) -> np.ndarray:
    """Like :func:`scan_header_nonces`, from the state after header bytes 0–63 and bytes 64–75."""
    return scan_midstate_windows(
        midstate, tail, np.array([nonce_start], np.int64), nonce_count, 0, nonce_count
    )
