"""``scan_midstate_windows``: many windows of consecutive nonces from one midstate in one backend
call, checked against the per-window ``scan_midstate_nonces`` on every available backend."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hasher_core.errors import KernelInputError
from hasher_core.header import midstate
from hasher_core.names import KERNEL_BACKENDS
from hasher_resources import sha256
from hasher_resources.sha256 import cpu, cpu_simd, reference

HEADER = bytes(range(21, 101))
MID, TAIL = midstate(HEADER), HEADER[64:76]
BACKENDS = [b for b in KERNEL_BACKENDS if b != "cuda" or sha256.cuda_available()]
# Wrapping past 2**32 - 1, overlapping (0 and 5 share nonces), the last nonce, and a repeat.
EDGE_STARTS = [2**32 - 7, 0, 5, 2**31, 2**32 - 1, 0]


def _fields(result: sha256.NonceScanResult) -> tuple:
    return (result.nonces.tolist(), result.bits.tolist(), result.best_nonce, result.best_bits, result.scanned)


def per_window(starts: list[int], size: int, share_bits: int, backend: str) -> tuple:
    """What the windows scan must equal: each window scanned alone, results joined in window order."""
    nonces, bits, best_nonce, best_bits, scanned = [], [], 0, -1, 0
    for start in starts:
        one = sha256.scan_midstate_nonces(
            MID, TAIL, share_bits=share_bits, nonce_count=size, nonce_start=start, backend=backend
        )
        nonces += one.nonces.tolist()
        bits += one.bits.tolist()
        if one.scanned and one.best_bits > best_bits:  # the first best in scan order
            best_nonce, best_bits = one.best_nonce, one.best_bits
        scanned += one.scanned
    return nonces, bits, best_nonce, max(best_bits, 0), scanned


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [1, 16, cpu_simd.LANES + 6])
def test_windows_scan_equals_the_per_window_scans(backend, size):
    result = sha256.scan_midstate_windows(
        MID, TAIL, share_bits=3, window_starts=EDGE_STARTS, window_size=size, backend=backend
    )
    expect = per_window(EDGE_STARTS, size, 3, backend)
    assert _fields(result) == expect and result.backend == backend
    assert result.nonces.dtype == np.uint32 and result.bits.dtype == np.uint8
    assert result.scanned == len(EDGE_STARTS) * size and (size < 16 or len(expect[0]) > 0)


@pytest.mark.usefixtures("cpu_path")
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
def test_compiled_windows_match_the_reference_oracle_like_the_emulator_uses_them(backend):
    # 64 chips of 16 nonces, as the emulator lays them out (16 blocks: the parallel compilation); the
    # last window wraps past 2**32 - 1.
    starts = np.arange(64, dtype=np.uint64) * (2**32 // 64)
    starts[-1] = 2**32 - 9
    kwargs = {"share_bits": 4, "window_starts": starts, "window_size": 16}
    compiled = sha256.scan_midstate_windows(MID, TAIL, backend=backend, **kwargs)
    oracle = sha256.scan_midstate_windows(MID, TAIL, backend="reference", **kwargs)
    assert _fields(compiled) == _fields(oracle) and compiled.scanned == 1024 and len(oracle.nonces) > 30


@pytest.mark.usefixtures("cpu_path")
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.integers(0, 2**32 - 1) | st.integers(2**32 - 40, 2**32 - 1), min_size=0, max_size=5),
    st.integers(0, 90),
    st.integers(0, 8),
)
def test_cpu_windows_equal_the_reference_per_window_scans(starts, size, share_bits):
    result = sha256.scan_midstate_windows(
        MID, TAIL, share_bits=share_bits, window_starts=starts, window_size=size, backend="cpu"
    )
    assert _fields(result) == per_window(starts, size, share_bits, "reference")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("chunk", [1, 7, 64, 100])
def test_chunks_split_windows_and_join_them_without_changing_the_result(monkeypatch, backend, chunk):
    # Chunks smaller than, equal to and larger than a window: a chunk may start part-way into a window.
    module = reference if backend == "reference" else cpu
    kwargs = {"share_bits": 2, "window_starts": EDGE_STARTS[:4], "window_size": 30, "backend": backend}
    whole = sha256.scan_midstate_windows(MID, TAIL, **kwargs)
    calls = []
    scan = module.scan_midstate_windows

    def counted(*args):
        calls.append(args[-1])
        return scan(*args)

    monkeypatch.setattr(module, "SCAN_CHUNK", chunk, raising=False)
    monkeypatch.setattr(module, "scan_midstate_windows", counted)
    assert _fields(sha256.scan_midstate_windows(MID, TAIL, **kwargs)) == _fields(whole)
    assert sum(calls) == 120 and len(calls) == -(-120 // chunk) and max(calls) <= chunk


def test_all_windows_of_a_work_item_are_one_backend_call(monkeypatch):
    calls = []
    scan = cpu.scan_midstate_windows
    monkeypatch.setattr(cpu, "scan_midstate_windows", lambda *args: calls.append(args[2].size) or scan(*args))
    starts = np.arange(256, dtype=np.uint64) * (2**32 // 256)
    result = sha256.scan_midstate_windows(
        MID, TAIL, share_bits=8, window_starts=starts, window_size=16, backend="cpu"
    )
    assert calls == [256] and result.scanned == 4096


@pytest.mark.usefixtures("cpu_path")
def test_windows_find_the_bitcoin_genesis_share_in_the_right_window():
    genesis = bytes.fromhex(
        "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e"
        "67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c"
    )
    nonce = struct.unpack("<I", genesis[76:])[0]
    result = sha256.scan_midstate_windows(
        midstate(genesis), genesis[64:76], share_bits=32, window_starts=[7, nonce - 3, 2**32 - 2],
        window_size=5, backend="cpu",
    )  # fmt: skip
    assert result.nonces.tolist() == [nonce] and result.bits.tolist() == [43]
    assert (result.best_nonce, result.best_bits, result.scanned) == (nonce, 43, 15)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize(("starts", "size"), [([], 16), ([1, 2], 0), (np.empty(0, np.uint32), 5)])
def test_nothing_to_scan_is_an_empty_result(backend, starts, size):
    result = sha256.scan_midstate_windows(
        MID, TAIL, share_bits=0, window_starts=starts, window_size=size, backend=backend
    )
    assert _fields(result) == ([], [], 0, 0, 0)
    assert result.nonces.dtype == np.uint32 and result.bits.dtype == np.uint8


def test_window_starts_may_be_any_integer_array_or_sequence_and_are_not_modified():
    kwargs = {"share_bits": 2, "window_size": 20, "backend": "cpu"}
    expect = _fields(sha256.scan_midstate_windows(MID, TAIL, window_starts=[3, 2**32 - 4], **kwargs))
    forms = [
        np.array([3, 2**32 - 4], np.uint32),
        np.array([3, 2**32 - 4], np.uint64),
        np.array([3, 2**32 - 4], np.int64),
        (np.uint32(3), np.int64(2**32 - 4)),
        np.array([[3, 0], [2**32 - 4, 0]], np.uint32)[:, 0],  # not contiguous
    ]
    for form in forms:
        before = np.array(form, copy=True)
        assert _fields(sha256.scan_midstate_windows(MID, TAIL, window_starts=form, **kwargs)) == expect
        assert np.array_equal(np.asarray(form), before)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"window_starts": np.zeros((2, 2), np.uint32)},
            "window_starts must be one-dimensional, got shape [2, 2]",
        ),
        ({"window_starts": np.zeros(2, np.float64)}, "window_starts must have an integer dtype, got float64"),
        ({"window_starts": [0, 2**32]}, "window_starts[1] must be a nonce in [0, 2**32), got 4294967296"),
        ({"window_starts": np.array([4, -1, 3])}, "window_starts[1] must be a nonce in [0, 2**32), got -1"),
        ({"window_starts": [0, 1.0]}, "window_starts[1] must be an integer nonce, got 1.0"),
        ({"window_starts": [True]}, "window_starts[0] must be an integer nonce, got True"),
        ({"window_starts": "0123"}, "window_starts must be a numpy array or a sequence of integers, got str"),
        ({"window_starts": 5}, "window_starts must be a numpy array or a sequence of integers, got int"),
        ({"window_size": -1}, "window_size must be in [0, 2**32], got -1"),
        ({"window_size": 2**32 + 1}, "window_size must be in [0, 2**32], got 4294967297"),
        ({"window_size": 1.5}, "window_size must be an integer, got float"),
        ({"window_size": True}, "window_size must be an integer, got bool"),
        ({"share_bits": 256}, "share_bits must be in [0, 255], got 256"),
        ({"share_bits": -1}, "share_bits must be in [0, 255], got -1"),
        ({"tail": bytes(13)}, "tail must be header bytes 64–75 (12 bytes), got 13"),
        ({"tail": "x" * 12}, "tail must be bytes (header bytes 64–75), got str"),
        ({"midstate": (0,) * 7}, "midstate must have 8 state words, got 7"),
        ({"backend": "gpu"}, "unknown backend 'gpu'"),
    ],
)
def test_bad_window_scan_inputs_are_rejected(override, message):
    kwargs = {"midstate": MID, "tail": TAIL, "share_bits": 1, "window_starts": [0], "window_size": 4}
    kwargs |= {"backend": "reference"} | override
    mid, tail = kwargs.pop("midstate"), kwargs.pop("tail")
    with pytest.raises(KernelInputError) as err:
        sha256.scan_midstate_windows(mid, tail, **kwargs)
    assert message in str(err.value)


def test_window_nonces_lays_windows_end_to_end_mod_2_32():
    starts = np.array([2**32 - 2, 10], np.int64)
    assert sha256.window_nonces(starts, 3, np.arange(6)).tolist() == [2**32 - 2, 2**32 - 1, 0, 10, 11, 12]
