"""The midstate: SHA-256 state after header bytes 0–63, finished from there equals hashlib."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hasher_resources.asic.midstate import (
    compress,
    finish_double_sha256,
    hash_zero_bits_from_midstate,
    midstate,
    midstate_words,
    words_of_midstate,
)
from hasher_resources.sha256 import scan_header_nonces
from hasher_resources.sha256.constants import SHA256_IV
from hasher_resources.sha256.header import build_header
from hasher_resources.sha256.reference import double_sha256, header_hash_zero_bits

# DESIGN §4.2 test vector header.
SLOTS = [((i + 1) * 0x11111111) & 0xFFFFFFFF for i in range(12)]
SEED = bytes(range(16)) + bytes(12) + bytes([0x1C, 0x1D, 0x1E, 0x1F])
DESIGN_HEADER = build_header(SLOTS, SEED)


def test_compress_of_padded_abc_is_sha256_of_abc():
    block = b"abc" + b"\x80" + bytes(52) + struct.pack(">Q", 24)
    digest = struct.pack(">8I", *compress(SHA256_IV, block))
    assert digest == hashlib.sha256(b"abc").digest()


def test_midstate_is_a_state_not_a_digest():
    assert midstate(DESIGN_HEADER) != hashlib.sha256(DESIGN_HEADER[:64]).digest()
    assert words_of_midstate(midstate(DESIGN_HEADER)) == midstate_words(DESIGN_HEADER)


def test_design_header_finishes_to_hashlib_double_sha256():
    assert finish_double_sha256(midstate_words(DESIGN_HEADER), DESIGN_HEADER[64:]) == double_sha256(
        DESIGN_HEADER
    )


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=80, max_size=80))
def test_finishing_from_the_midstate_equals_hashlib(header):
    assert finish_double_sha256(midstate_words(header), header[64:]) == double_sha256(header)


@settings(max_examples=10, deadline=None)
@given(st.binary(min_size=80, max_size=80), st.integers(0, 2**32 - 300))
def test_vectorised_zero_bits_match_the_reference_per_nonce(header, start):
    nonces = np.arange(start, start + 256, dtype=np.uint32)
    bits = hash_zero_bits_from_midstate(midstate_words(header), header[64:76], nonces)
    expect = [header_hash_zero_bits(header[:76] + struct.pack("<I", int(n))) for n in nonces]
    assert bits.tolist() == expect


def test_midstate_scan_finds_the_same_nonces_as_the_kernel():
    share_bits = 6
    nonces = np.arange(0, 2048, dtype=np.uint32)
    bits = hash_zero_bits_from_midstate(midstate_words(DESIGN_HEADER), DESIGN_HEADER[64:76], nonces)
    kernel = scan_header_nonces(DESIGN_HEADER, share_bits=share_bits, nonce_count=2048, backend="reference")
    assert nonces[bits >= share_bits].tolist() == kernel.nonces.tolist()
    assert len(kernel.nonces) > 0


GENESIS_HEADER = bytes.fromhex(
    "01000000" + "00" * 32 + "3ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a"
    "29ab5f49"
    "ffff001d"
    "1dac2b7c"
)


def test_zero_bits_count_past_the_first_word_on_the_bitcoin_genesis_block():
    # Block 0's hash is 000000000019d668…: 43 leading zero bits, more than one 32-bit word.
    nonce = struct.unpack("<I", GENESIS_HEADER[76:])[0]
    bits = hash_zero_bits_from_midstate(
        midstate_words(GENESIS_HEADER), GENESIS_HEADER[64:76], np.array([nonce, nonce ^ 1], dtype=np.uint32)
    )
    assert header_hash_zero_bits(GENESIS_HEADER) == 43
    assert bits[0] == 43
    assert bits[1] < 32


@pytest.mark.slow
def test_numba_search_equals_the_numpy_search():
    from hasher_resources.asic import midstate_jit

    nonces = np.concatenate([np.arange(0, 3000), np.arange(2**32 - 100, 2**32)]).astype(np.uint32)
    state = midstate_words(GENESIS_HEADER)
    jit = midstate_jit.hash_zero_bits_from_midstate(state, GENESIS_HEADER[64:76], nonces)
    vec = hash_zero_bits_from_midstate(state, GENESIS_HEADER[64:76], nonces)
    assert jit.tolist() == vec.tolist()
    genesis_nonce = np.array([struct.unpack("<I", GENESIS_HEADER[76:])[0]], dtype=np.uint32)
    assert midstate_jit.hash_zero_bits_from_midstate(state, GENESIS_HEADER[64:76], genesis_nonce)[0] == 43
