"""The SHA-256 midstate of a header in the byte order a TxTask carries it (DESIGN §7).

The midstate is the SHA-256 **state after compressing header bytes 0–63** — eight words, not a
digest (the Go toolchain sent ``SHA256(header[0:64])``, which no chip can finish). A BM1382 gets
only that state and header bytes 64–75 and sweeps the nonce (bytes 76–79, little-endian). cgminer
puts each state word on the wire little-endian; this module converts between that and the words.
The compression itself is the kernel's (``sha256.midstate.compress``), and so is the nonce search
from a midstate (``sha256.scan_midstate_nonces``): one SHA-256 implementation in the project.
"""

from __future__ import annotations

import struct

from hasher_core.design import SHA256_IV
from hasher_core.header import compress


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
