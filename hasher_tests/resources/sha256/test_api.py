"""The public kernel API (hasher_resources.sha256): DESIGN §4.2 vector, input checks, nonce scans.

Runs on the reference backend only, so nothing here waits for a JIT compile.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hasher_core import design, header
from hasher_core.errors import BackendUnavailableError, KernelInputError
from hasher_core.header import build_header, compress, midstate
from hasher_resources import sha256
from hasher_resources.sha256 import reference
from hasher_tests.resources.sha256.cases import VECTOR_SEED, VECTOR_SLOTS, VECTOR_TOKEN, random_rows


def test_design_vector_header_bytes():
    header = build_header(VECTOR_SLOTS[0], VECTOR_SEED[0].tobytes())
    assert header.hex().startswith("02000000" + "11111111")
    assert header.hex().endswith("000102030405060708090a0b0c0d0e0f" + "00000000" + "ffff001d" + "1f1e1d1c")


def test_design_vector_golden_and_keys_on_reference():
    golden, all_keys = header.recursion(
        build_header(VECTOR_SLOTS[0], VECTOR_SEED[0].tobytes()), VECTOR_SLOTS[0]
    )
    assert (all_keys[0], all_keys[20], golden) == (0x8B86D993, 0x2407F191, 0x18867801)
    g, keys = sha256.evaluate_with_keys(VECTOR_SLOTS, VECTOR_SEED, backend="reference")
    assert g.tolist() == [0x18867801]
    assert keys[0].tolist() == [all_keys[18], all_keys[19], 0x2407F191]


def test_empty_input_gives_empty_result():
    g, keys = sha256.evaluate_with_keys(
        np.empty((0, 12), np.uint32), np.empty((0, 32), np.uint8), backend="reference"
    )
    assert g.shape == (0,) and g.dtype == np.uint32
    assert keys.shape == (0, 3) and keys.dtype == np.uint32


@pytest.mark.parametrize(
    ("slots", "seeds", "message"),
    [
        (np.zeros((2, 12), np.int32), np.zeros((2, 32), np.uint8), "slots must have dtype uint32, got int32"),
        (
            np.zeros((2, 11), np.uint32),
            np.zeros((2, 32), np.uint8),
            "slots must have shape [N, 12], got [2, 11]",
        ),
        (
            np.zeros((2, 12), np.uint32),
            np.zeros((2, 31), np.uint8),
            "seeds must have shape [N, 32], got [2, 31]",
        ),
        (np.zeros((2, 12), np.uint32), np.zeros((3, 32), np.uint8), "same number of rows, got 2 and 3"),
        (np.zeros((2, 24), np.uint32)[:, ::2], np.zeros((2, 32), np.uint8), "slots must be C-contiguous"),
        ([[0] * 12], np.zeros((1, 32), np.uint8), "slots must be a numpy array, got list"),
    ],
)
def test_bad_rows_are_rejected_with_the_reason(slots, seeds, message):
    before = (np.array(slots, copy=True), seeds.copy())
    with pytest.raises(KernelInputError) as err:
        sha256.evaluate(slots, seeds, backend="reference")
    assert message in str(err.value)
    # the caller's arrays are untouched
    assert np.array_equal(np.asarray(slots), before[0]) and np.array_equal(seeds, before[1])


def test_header_time_out_of_range_is_rejected():
    slots, seeds = random_rows(1)
    with pytest.raises(KernelInputError, match="header_time must fit in 32 bits, got 4294967296"):
        sha256.evaluate(slots, seeds, header_time=2**32, backend="reference")


def test_unknown_backend_is_rejected():
    slots, seeds = random_rows(1)
    with pytest.raises(KernelInputError, match="unknown backend 'gpu'"):
        sha256.evaluate(slots, seeds, backend="gpu")


@pytest.mark.skipif(sha256.cuda_available(), reason="this machine has a GPU")
def test_cuda_requested_without_gpu_is_an_error_not_a_fallback():
    slots, seeds = random_rows(2)
    with pytest.raises(BackendUnavailableError, match="backend 'cuda'"):
        sha256.evaluate(slots, seeds, backend="cuda")
    assert sha256.resolve_backend("auto") == "cpu"


def test_evaluate_does_not_modify_its_inputs():
    slots, seeds = random_rows(5)
    copies = (slots.copy(), seeds.copy())
    sha256.evaluate(slots, seeds, backend="reference")
    assert np.array_equal(slots, copies[0]) and np.array_equal(seeds, copies[1])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_leading_equal_bits_counts_the_shared_prefix(a, b):
    expected = 32 if a == b else 32 - (a ^ b).bit_length()
    assert int(header.leading_equal_bits(a, b)) == expected


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=0, max_size=55))
def test_compress_matches_hashlib_on_one_padded_block(message):
    block = message + b"\x80" + bytes(55 - len(message)) + struct.pack(">Q", 8 * len(message))
    state = compress(design.SHA256_IV, block)
    assert struct.pack(">8I", *state) == hashlib.sha256(message).digest()


def test_midstate_is_the_state_after_the_first_64_bytes():
    header = bytes(range(80))
    tail = header[64:] + b"\x80" + bytes(39) + struct.pack(">Q", 640)
    assert struct.pack(">8I", *compress(midstate(header), tail)) == hashlib.sha256(header).digest()
    with pytest.raises(ValueError, match="header must be 80 bytes, got 79"):
        midstate(header[:79])


def test_seed_scan_matches_evaluate_per_nonce():
    slots = VECTOR_SLOTS[0]
    extranonce = bytes(range(16))
    result = sha256.scan_seed_nonces(
        slots,
        extranonce,
        VECTOR_TOKEN,
        difficulty_bits=0,
        nonce_count=3,
        nonce_start=0x1C1D1E1E,
        backend="reference",
    )
    assert result.nonces.tolist() == [0x1C1D1E1E, 0x1C1D1E1F, 0x1C1D1E20]
    # DESIGN §4.3: the vector's golden 0x18867801 stands for token 0x18867801 >> 15: 17 bits match.
    assert result.bits[1] == 17 and result.best_nonce == 0x1C1D1E1F and result.best_bits == 17
    assert result.scanned == 3 and result.backend == "reference"


def test_scans_are_chunked_and_wrap_past_the_last_nonce(monkeypatch):
    header = bytes(range(80))
    whole = reference.scan_header_nonces(header, 2**32 - 5, 12)
    monkeypatch.setattr(reference, "SCAN_CHUNK", 5, raising=False)
    result = sha256.scan_header_nonces(
        header, share_bits=0, nonce_count=12, nonce_start=2**32 - 5, backend="reference"
    )
    assert result.scanned == 12
    assert result.nonces.tolist() == [*range(2**32 - 5, 2**32), *range(7)]
    assert result.bits.tolist() == whole.tolist()
    first_best = int(np.argmax(whole))
    assert result.best_nonce == (2**32 - 5 + first_best) & 0xFFFFFFFF and result.best_bits == whole.max()


def test_header_scan_reports_only_nonces_meeting_the_share_difficulty():
    header = bytes(80)
    result = sha256.scan_header_nonces(header, share_bits=6, nonce_count=200, backend="reference")
    for nonce, bits in zip(result.nonces.tolist(), result.bits.tolist(), strict=True):
        h = header[:76] + struct.pack("<I", nonce)
        digest = hashlib.sha256(hashlib.sha256(h).digest()).digest()
        assert bits >= 6 and 256 - int.from_bytes(digest[::-1], "big").bit_length() == bits
    assert len(result.nonces) == int((reference.scan_header_nonces(header, 0, 200) >= 6).sum())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nonce_count": -1}, "nonce_count must be in [0, 2**32], got -1"),
        ({"nonce_count": 2**32 + 1}, "nonce_count must be in [0, 2**32]"),
        ({"nonce_count": 1, "nonce_start": 2**32}, "nonce_start must fit in 32 bits"),
        ({"nonce_count": 1, "share_bits": 256}, "share_bits must be in [0, 255], got 256"),
    ],
)
def test_bad_header_scan_ranges_are_rejected(kwargs, message):
    kwargs = {"share_bits": 1} | kwargs
    with pytest.raises(KernelInputError) as err:
        sha256.scan_header_nonces(bytes(80), backend="reference", **kwargs)
    assert message in str(err.value)


def test_bad_seed_scan_inputs_are_rejected():
    with pytest.raises(KernelInputError, match="extranonce must be 16 bytes, got 15"):
        sha256.scan_seed_nonces(
            VECTOR_SLOTS[0], bytes(15), 0, difficulty_bits=1, nonce_count=1, backend="reference"
        )
    with pytest.raises(KernelInputError, match="difficulty_bits must be in"):
        sha256.scan_seed_nonces(
            VECTOR_SLOTS[0], bytes(16), 0, difficulty_bits=33, nonce_count=1, backend="reference"
        )
    with pytest.raises(KernelInputError, match="header must be 80 bytes, got 81"):
        sha256.scan_header_nonces(bytes(81), share_bits=1, nonce_count=1, backend="reference")


def _fields(result: sha256.NonceScanResult) -> tuple:
    return (result.nonces.tolist(), result.bits.tolist(), result.best_nonce, result.best_bits, result.scanned)


def test_scans_use_a_backends_own_reduction_when_it_has_one(monkeypatch):
    header, calls = bytes(range(80)), []

    def scan_header_hits(header, start, count, difficulty):
        calls.append(count)
        bits = reference.scan_header_nonces(header, start, count)
        hits = np.flatnonzero(bits >= difficulty)
        return hits.astype(np.uint32), bits[hits], int(np.argmax(bits)), int(bits.max())

    def scan(**kwargs):
        return sha256.scan_header_nonces(
            header, share_bits=2, nonce_count=20, nonce_start=2**32 - 10, **kwargs
        )

    monkeypatch.setattr(reference, "SCAN_CHUNK", 7, raising=False)
    plain = scan(backend="reference")
    monkeypatch.setattr(reference, "scan_header_hits", scan_header_hits, raising=False)
    reduced = scan(backend="reference")
    assert calls == [7, 7, 6]
    assert _fields(reduced) == _fields(plain) and len(plain.nonces) > 0


def test_seed_scan_uses_a_backends_own_reduction_when_it_has_one(monkeypatch):
    def scan_seed_hits(slots, extranonce, start, count, header_time, target, difficulty):
        goldens = reference.scan_seed_nonces(slots, extranonce, start, count, header_time)
        bits = header.leading_equal_bits(goldens, header.target_word(target))
        hits = np.flatnonzero(bits >= difficulty)
        return hits.astype(np.uint32), bits[hits], int(np.argmax(bits)), int(bits.max())

    def scan():
        return sha256.scan_seed_nonces(
            VECTOR_SLOTS[0], bytes(range(16)), VECTOR_TOKEN, difficulty_bits=1, nonce_count=9,
            nonce_start=0x1C1D1E1B, backend="reference",
        )  # fmt: skip

    monkeypatch.setattr(reference, "SCAN_CHUNK", 4, raising=False)
    plain = scan()
    monkeypatch.setattr(reference, "scan_seed_hits", scan_seed_hits, raising=False)
    assert _fields(scan()) == _fields(plain)
    assert plain.best_nonce == 0x1C1D1E1F and plain.best_bits == 17


def _same_scan(a: sha256.NonceScanResult, b: sha256.NonceScanResult) -> bool:
    return _fields(a) == _fields(b) and a.nonces.dtype == b.nonces.dtype and a.bits.dtype == b.bits.dtype


@settings(max_examples=6, deadline=None)
@given(st.binary(min_size=80, max_size=80), st.integers(0, 2**32 - 1))
def test_midstate_scan_equals_the_header_scan_on_the_reference(header, start):
    kwargs = {"share_bits": 3, "nonce_count": 150, "nonce_start": start, "backend": "reference"}
    from_mid = sha256.scan_midstate_nonces(midstate(header), header[64:76], **kwargs)
    assert _same_scan(from_mid, sha256.scan_header_nonces(header, **kwargs))


def test_midstate_scan_wraps_past_the_last_nonce_in_chunks(monkeypatch):
    header = bytes(range(80))
    monkeypatch.setattr(reference, "SCAN_CHUNK", 7, raising=False)
    kwargs = {"share_bits": 1, "nonce_count": 40, "nonce_start": 2**32 - 20, "backend": "reference"}
    result = sha256.scan_midstate_nonces(midstate(header), header[64:76], **kwargs)
    assert result.scanned == 40 and (result.nonces < 20).any() and (result.nonces >= 2**32 - 20).any()
    assert _same_scan(result, sha256.scan_header_nonces(header, **kwargs))


def test_midstate_scan_finds_the_bitcoin_genesis_share_past_the_first_word():
    # Block 0's hash is 000000000019d668…: 43 leading zero bits, more than one 32-bit word.
    genesis = bytes.fromhex(
        "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e"
        "67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c"
    )
    nonce = struct.unpack("<I", genesis[76:])[0]
    result = sha256.scan_midstate_nonces(
        midstate(genesis), genesis[64:76], share_bits=32, nonce_count=9, nonce_start=nonce - 4,
        backend="reference",
    )  # fmt: skip
    assert result.nonces.tolist() == [nonce] and result.bits.tolist() == [43]
    assert result.best_nonce == nonce and result.best_bits == 43


def test_midstate_may_be_given_as_words_bytes_or_an_array():
    header = bytes(range(80, 160))
    words = midstate(header)
    kwargs = {"share_bits": 2, "nonce_count": 60, "backend": "reference"}
    expect = sha256.scan_midstate_nonces(words, header[64:76], **kwargs)
    assert len(expect.nonces) > 0
    for form in (list(words), np.array(words, np.uint32), struct.pack(">8I", *words)):
        assert _same_scan(sha256.scan_midstate_nonces(form, bytearray(header[64:76]), **kwargs), expect)


@pytest.mark.parametrize(
    ("mid", "tail", "kwargs", "message"),
    [
        ((1,) * 7, bytes(12), {}, "midstate must have 8 state words, got 7"),
        (bytes(31), bytes(12), {}, "midstate must be 32 bytes (8 big-endian words), got 31"),
        (
            (1,) * 7 + (2**32,),
            bytes(12),
            {},
            "midstate word 7 must be an integer in [0, 2**32), got 4294967296",
        ),
        ((0,) * 7 + (-1,), bytes(12), {}, "midstate word 7 must be an integer in [0, 2**32), got -1"),
        ((0,) * 7 + (1.0,), bytes(12), {}, "midstate word 7 must be an integer"),
        ("abcdefgh", bytes(12), {}, "midstate must be 8 state words or 32 bytes, got str"),
        (None, bytes(12), {}, "midstate must be 8 state words or 32 bytes, got NoneType"),
        ((0,) * 8, bytes(16), {}, "tail must be header bytes 64–75 (12 bytes), got 16"),
        ((0,) * 8, "x" * 12, {}, "tail must be bytes (header bytes 64–75), got str"),
        ((0,) * 8, bytes(12), {"share_bits": 256}, "share_bits must be in [0, 255], got 256"),
        ((0,) * 8, bytes(12), {"nonce_count": -1}, "nonce_count must be in [0, 2**32], got -1"),
        ((0,) * 8, bytes(12), {"nonce_start": 2**32}, "nonce_start must fit in 32 bits"),
        ((0,) * 8, bytes(12), {"backend": "gpu"}, "unknown backend 'gpu'"),
    ],
)
def test_bad_midstate_scan_inputs_are_rejected(mid, tail, kwargs, message):
    kwargs = {"share_bits": 1, "nonce_count": 1, "backend": "reference"} | kwargs
    with pytest.raises(KernelInputError) as err:
        sha256.scan_midstate_nonces(mid, tail, **kwargs)
    assert message in str(err.value)


def test_midstate_scan_uses_a_backends_own_reduction_when_it_has_one(monkeypatch):
    header, calls = bytes(range(3, 83)), []

    def scan_midstate_windows_hits(mid, tail, starts, window_size, skip, count, difficulty):
        calls.append(count)
        bits = reference.scan_midstate_windows(mid, tail, starts, window_size, skip, count)
        hits = np.flatnonzero(bits >= difficulty)
        return hits.astype(np.uint32), bits[hits], int(np.argmax(bits)), int(bits.max())

    def scan():
        return sha256.scan_midstate_nonces(
            midstate(header), header[64:76], share_bits=2, nonce_count=20, nonce_start=2**32 - 10,
            backend="reference",
        )  # fmt: skip

    monkeypatch.setattr(reference, "SCAN_CHUNK", 8, raising=False)
    plain = scan()
    monkeypatch.setattr(reference, "scan_midstate_windows_hits", scan_midstate_windows_hits, raising=False)
    assert _fields(scan()) == _fields(plain) and calls == [8, 8, 4] and len(plain.nonces) > 0
