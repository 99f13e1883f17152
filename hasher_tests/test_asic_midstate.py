"""The TxTask midstate: SHA-256 state after header bytes 0–63 in cgminer's byte order, and the
kernel's midstate scan finding from it what hashlib finds on the whole header."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hasher_core.header import build_header, double_sha256, double_sha256_from_midstate
from hasher_core.header import midstate as kernel_midstate
from hasher_resources.asic.midstate import midstate, midstate_words, words_of_midstate
from hasher_resources.sha256 import scan_header_nonces, scan_midstate_nonces

# DESIGN §4.2 test vector header.
SLOTS = [((i + 1) * 0x11111111) & 0xFFFFFFFF for i in range(12)]
SEED = bytes(range(16)) + bytes(12) + bytes([0x1C, 0x1D, 0x1E, 0x1F])
DESIGN_HEADER = build_header(SLOTS, SEED)

GENESIS_HEADER = bytes.fromhex(
    "01000000" + "00" * 32 + "3ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a"
    "29ab5f49"
    "ffff001d"
    "1dac2b7c"
)


def test_midstate_is_a_state_not_a_digest():
    assert midstate(DESIGN_HEADER) != hashlib.sha256(DESIGN_HEADER[:64]).digest()
    assert words_of_midstate(midstate(DESIGN_HEADER)) == midstate_words(DESIGN_HEADER)
    assert midstate_words(DESIGN_HEADER) == kernel_midstate(DESIGN_HEADER)


def test_wire_midstate_is_little_endian_per_word():
    words = midstate_words(GENESIS_HEADER)
    assert midstate(GENESIS_HEADER) == b"".join(w.to_bytes(4, "little") for w in words)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=80, max_size=80))
def test_finishing_from_the_wire_midstate_equals_hashlib(header):
    state = words_of_midstate(midstate(header))
    nonce = struct.unpack("<I", header[76:])[0]
    assert double_sha256_from_midstate(state, header[64:76], nonce) == double_sha256(header)


def test_bad_midstate_lengths_are_rejected():
    with pytest.raises(ValueError, match="at least 64 header bytes, got 63"):
        midstate(bytes(63))
    with pytest.raises(ValueError, match="a midstate is 32 bytes, got 31"):
        words_of_midstate(bytes(31))


def test_kernel_scan_from_the_wire_midstate_finds_what_the_header_scan_finds():
    state = words_of_midstate(midstate(DESIGN_HEADER))
    from_mid = scan_midstate_nonces(
        state, DESIGN_HEADER[64:76], share_bits=6, nonce_count=600, backend="reference"
    )
    whole = scan_header_nonces(DESIGN_HEADER, share_bits=6, nonce_count=600, backend="reference")
    assert from_mid.nonces.tolist() == whole.nonces.tolist() and len(whole.nonces) > 0


def test_genesis_share_is_found_from_the_wire_midstate():
    # Block 0's hash is 000000000019d668…: 43 leading zero bits, more than one 32-bit word.
    nonce = struct.unpack("<I", GENESIS_HEADER[76:])[0]
    state = words_of_midstate(midstate(GENESIS_HEADER))
    found = scan_midstate_nonces(
        state, GENESIS_HEADER[64:76], share_bits=32, nonce_count=3, nonce_start=nonce - 1, backend="reference"
    )
    assert found.nonces.tolist() == [nonce] and found.bits.tolist() == [43]
