"""The Numba CPU backend, on its SIMD and its SHA-NI path, against the hashlib reference (DESIGN §4.2), bit
for bit.

Marked slow: a cold run JIT-compiles the kernels (tens of seconds on 2 cores; cached afterwards).
"""

from __future__ import annotations

import numpy as np
import pytest

from hasher_core.header import midstate
from hasher_resources import sha256
from hasher_resources.sha256 import cpu, cpu_simd, reference
from hasher_tests.resources.sha256.cases import VECTOR_SEED, VECTOR_SLOTS, VECTOR_TOKEN, random_rows

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("cpu_path")]  # every test on both CPU paths


def test_design_vector_on_cpu():
    golden, keys = sha256.evaluate_with_keys(VECTOR_SLOTS, VECTOR_SEED, backend="cpu")
    assert golden.tolist() == [0x18867801]
    assert keys[0, 2] == 0x2407F191


@pytest.mark.parametrize("header_time", [0, 0x5F5E1000])
def test_cpu_matches_reference_on_random_rows(header_time):
    slots, seeds = random_rows(1500, seed=header_time, edges=True)
    golden, keys = sha256.evaluate_with_keys(slots, seeds, header_time=header_time, backend="cpu")
    ref_golden, ref_keys = reference.evaluate_with_keys(slots, seeds, header_time)
    assert np.array_equal(golden, ref_golden)
    assert np.array_equal(keys, ref_keys)


@pytest.mark.parametrize("n", [1, cpu_simd.LANES - 1, cpu_simd.LANES + 1])
def test_row_counts_that_are_not_a_whole_block(n):
    slots, seeds = random_rows(n + 2, seed=n, edges=True)
    slots, seeds = slots[2:].copy(), seeds[2:].copy()
    assert np.array_equal(
        sha256.evaluate(slots, seeds, backend="cpu"), reference.evaluate_with_keys(slots, seeds)[0]
    )


@pytest.mark.parametrize("n", [1, cpu.SERIAL_EVALUATE_ROWS, cpu.SERIAL_EVALUATE_ROWS + 1])
def test_small_evaluations_run_on_the_calling_thread_and_agree_with_the_reference(n, monkeypatch):
    slots, seeds = random_rows(n, seed=n, edges=n >= 3)
    serial = cpu.serial_call(n)
    assert serial == (n <= cpu.SERIAL_EVALUATE_ROWS)
    assert np.array_equal(
        sha256.evaluate(slots, seeds, backend="cpu"), reference.evaluate_with_keys(slots, seeds)[0]
    )
    # The other compilation gives the same bits: force it.
    monkeypatch.setattr(cpu, "serial_call", lambda rows: not serial)
    assert np.array_equal(
        sha256.evaluate(slots, seeds, backend="cpu"), reference.evaluate_with_keys(slots, seeds)[0]
    )


def test_one_numba_thread_runs_every_evaluation_serially():
    import numba

    cpu.set_threads(1)
    try:
        assert cpu.serial_call(10 * cpu.SERIAL_EVALUATE_ROWS)
    finally:
        cpu.set_threads(None)
    assert cpu.serial_call(10 * cpu.SERIAL_EVALUATE_ROWS) == (numba.get_num_threads() == 1)


def test_thread_count_does_not_change_results():
    slots, seeds = random_rows(4 * cpu_simd.LANES, seed=7, edges=True)
    cpu.set_threads(1)
    one = sha256.evaluate(slots, seeds, backend="cpu")
    cpu.set_threads(None)
    assert np.array_equal(one, sha256.evaluate(slots, seeds, backend="cpu"))


def test_seed_scan_matches_reference_across_the_nonce_wrap():
    extranonce = bytes(range(16, 32))
    start = 2**32 - 70
    goldens = cpu.scan_seed_nonces(VECTOR_SLOTS[0], extranonce, start, 150, 3)
    assert np.array_equal(goldens, reference.scan_seed_nonces(VECTOR_SLOTS[0], extranonce, start, 150, 3))


def test_seed_scan_finds_the_design_vector_nonce():
    result = sha256.scan_seed_nonces(
        VECTOR_SLOTS[0], bytes(range(16)), VECTOR_TOKEN, difficulty_bits=17,
        nonce_count=200, nonce_start=0x1C1D1E1F - 100, backend="cpu",
    )  # fmt: skip
    assert 0x1C1D1E1F in result.nonces.tolist()
    assert result.backend == "cpu"


def test_header_scan_matches_reference_across_the_nonce_wrap():
    header = bytes(range(80))
    start = 2**32 - 300
    assert np.array_equal(
        cpu.scan_header_nonces(header, start, 1000), reference.scan_header_nonces(header, start, 1000)
    )


def test_header_scan_finds_a_known_share():
    # Bitcoin's genesis block header: its hash has 43 leading zero bits at nonce 2083236893.
    header = bytes.fromhex(
        "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e"
        "67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c"
    )
    result = sha256.scan_header_nonces(
        header,
        share_bits=32,
        nonce_count=2 * cpu_simd.LANES,
        nonce_start=2083236893 - cpu_simd.LANES,
        backend="cpu",
    )
    assert result.nonces.tolist() == [2083236893]
    assert result.bits.tolist() == [43]


@pytest.mark.parametrize("count", [1, 40, cpu.SERIAL_SCAN_BLOCKS * cpu_simd.LANES + 3, 3000])
def test_midstate_scan_equals_the_header_scan_across_the_nonce_wrap(count):
    # Sizes on both sides of SERIAL_SCAN_BLOCKS: the one-thread and the parallel compilation.
    rng = np.random.default_rng(count)
    for _ in range(3):
        header = rng.integers(0, 256, 80, dtype=np.uint8).tobytes()
        kwargs = {
            "share_bits": 4,
            "nonce_count": count,
            "nonce_start": 2**32 - 1 - count // 2,
            "backend": "cpu",
        }
        from_mid = sha256.scan_midstate_nonces(midstate(header), header[64:76], **kwargs)
        whole = sha256.scan_header_nonces(header, **kwargs)
        assert from_mid.backend == "cpu" and from_mid.scanned == count
        assert (
            from_mid.nonces.tolist() == whole.nonces.tolist()
            and from_mid.bits.tolist() == whole.bits.tolist()
        )
        assert (from_mid.best_nonce, from_mid.best_bits) == (whole.best_nonce, whole.best_bits)


def test_midstate_scan_matches_the_reference_oracle():
    header = bytes(range(7, 87))
    start = 2**32 - 200
    bits = cpu.scan_midstate_nonces(midstate(header), header[64:76], start, 600)
    assert np.array_equal(bits, reference.scan_midstate_nonces(midstate(header), header[64:76], start, 600))
