"""The two CPU paths (SIMD and SHA-NI) and the dispatch between them: same bits as hashlib on edge
sizes, edge headers and real Bitcoin blocks; a CPU without SHA-NI (simulated through Numba's target
features in a subprocess) still answers through SIMD, and forcing SHA-NI there is a clear error.

Marked slow: a cold run JIT-compiles both paths.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hasher_core.errors import BackendUnavailableError, KernelConfigError
from hasher_core.header import build_headers
from hasher_resources import sha256
from hasher_resources.settings import SettingsError
from hasher_resources.sha256 import cpu, cpu_shani, cpu_simd, reference
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_tests.resources.sha256.cases import random_rows

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]

#: (header hex, block hash as block explorers print it): the genesis block and three from the chain.
BLOCKS = [
    (
        "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e"
        "67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c",
        "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f",
    ),
    (  # block 1
        "010000006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000982051fd1e4ba744bbbe680e"
        "1fee14677ba1a3c3540bf7b1cdb606e857233e0e61bc6649ffff001d01e36299",
        "00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048",
    ),
    (  # block 100000
        "0100000050120119172a610421a6c3011dd330d9df07b63616c2cc1f1cd00200000000006657a9252aacd5c0b2940996"
        "ecff952228c3067cc38d4885efb5a4ac4247e9f337221b4d4c86041b0f2b5710",
        "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506",
    ),
    (  # block 125552, the Bitcoin wiki's "block hashing algorithm" example
        "0100000081cd02ab7e569e8bcd9317e2fe99f2de44d49ab2b8851ba4a308000000000000e320b6c2fffc8d750423db8b"
        "1eb942ae710e951ed797f7affc8892b0f1fc122bc7f5d74df2b9441a42a14695",
        "00000000000000001e8d6829a8a21adc5d38d0a473b144b6765798e61f98bd1d",
    ),
]


def _zero_bits(block_hash: str) -> int:
    value = int(block_hash, 16)
    return 256 - value.bit_length()


@pytest.mark.parametrize(("header_hex", "block_hash"), BLOCKS)
def test_real_block_headers_are_found_by_the_header_scan_on_each_cpu_path(cpu_path, header_hex, block_hash):
    header = bytes.fromhex(header_hex)
    # The oracle first: hashlib's double SHA-256, byte-reversed, is the published block hash.
    assert hashlib.sha256(hashlib.sha256(header).digest()).digest()[::-1].hex() == block_hash
    nonce = int.from_bytes(header[76:80], "little")
    result = sha256.scan_header_nonces(
        header,
        share_bits=32,
        nonce_count=3 * cpu_simd.LANES + 1,
        nonce_start=nonce - cpu_simd.LANES,
        backend="cpu",
    )
    assert result.nonces.tolist() == [nonce]
    assert result.bits.tolist() == [_zero_bits(block_hash)]


@pytest.mark.parametrize("header_time", [0, 1, 0x5F5E1000, 2**32 - 1])
def test_the_header_words_both_paths_read_are_the_design_header_read_big_endian(header_time):
    slots, seeds = random_rows(40, seed=header_time % 97, edges=True)
    expect = build_headers(slots, seeds, header_time).view(">u4").astype(np.uint32)
    assert np.array_equal(cpu.header_words(slots, seeds, header_time), expect)
    # Views that are not contiguous (the seed scan broadcasts one frame's slots) read the same.
    assert np.array_equal(cpu.header_words(slots[::2], seeds[::2], header_time), expect[::2])


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 11, cpu_simd.LANES + 1])
def test_every_row_count_gives_the_reference_bits(cpu_path, n):
    slots, seeds = random_rows(n + 3, seed=n, edges=True)  # rows 0-2: all-zero / all-ones
    slots, seeds = slots[:n].copy(), seeds[:n].copy()
    golden, keys = cpu.evaluate_with_keys(slots, seeds, 0x5F5E1000)
    ref_golden, ref_keys = reference.evaluate_with_keys(slots, seeds, 0x5F5E1000)
    assert golden.shape == (n,) and keys.shape == (n, 3)
    assert np.array_equal(golden, ref_golden) and np.array_equal(keys, ref_keys)


@pytest.mark.parametrize("fill", [0x00, 0xFF])
def test_all_zero_and_all_ones_headers_scan_like_the_reference(cpu_path, fill):
    header = bytes([fill]) * 80
    start = 2**32 - 100  # and across the nonce wrap
    assert np.array_equal(
        cpu.scan_header_nonces(header, start, 500), reference.scan_header_nonces(header, start, 500)
    )


@pytest.mark.usefixtures("cpu_path")
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 9), st.integers(0, 2**32 - 1), st.integers(0, 2**31))
def test_any_rows_and_header_time_give_the_reference_bits(n, header_time, seed):
    slots, seeds = random_rows(n, seed=seed)
    golden, keys = cpu.evaluate_with_keys(slots, seeds, header_time)
    ref_golden, ref_keys = reference.evaluate_with_keys(slots, seeds, header_time)
    assert np.array_equal(golden, ref_golden) and np.array_equal(keys, ref_keys)


def test_auto_takes_the_faster_path_where_both_can_run(monkeypatch):
    monkeypatch.delenv(cpu.KERNEL_ENV, raising=False)
    monkeypatch.setattr(cpu_shani, "sha_ni_usable", lambda: (True, "test"))
    for rates, expect in (({"simd": 1.0, "shani": 2.4}, "shani"), ({"simd": 4.1, "shani": 3.6}, "simd")):
        monkeypatch.setattr(cpu, "_auto", {})  # measured once per process: forget it
        monkeypatch.setattr(cpu, "measure_paths", lambda operation, rates=rates: rates)
        assert cpu.select_kernel() == cpu.select_kernel("auto") == expect
        assert Sha256Kernel(backend="cpu").describe()["kernel_cpu_path"] == expect
        assert cpu.explain_kernel().startswith(f"{expect}: auto, the faster here (one-thread evaluations/s")
    assert cpu.select_kernel("simd") == "simd" and cpu.select_kernel("shani") == "shani"


def test_auto_times_each_operation_on_its_own_kernels(monkeypatch):
    monkeypatch.delenv(cpu.KERNEL_ENV, raising=False)
    monkeypatch.setattr(cpu_shani, "sha_ni_usable", lambda: (True, "test"))
    monkeypatch.setattr(cpu, "_auto", {})
    measured = []

    def rates(operation):
        measured.append(operation)
        return {"simd": 2.0, "shani": 1.0} if operation == "evaluate" else {"simd": 1.0, "shani": 2.0}

    monkeypatch.setattr(cpu, "measure_paths", rates)
    assert cpu.select_kernel(operation="scan") == "shani" and cpu.select_kernel() == "simd"
    assert cpu.select_kernel(operation="scan") == "shani" and measured == ["scan", "evaluate"]
    assert cpu.explain_kernel(operation="scan").startswith(
        "shani: auto, the faster here (one-thread nonces/s"
    )


def test_a_run_checks_its_cpu_path_at_start_without_timing_anything(monkeypatch):
    monkeypatch.delenv(cpu.KERNEL_ENV, raising=False)
    monkeypatch.setattr(cpu, "_auto", {})
    monkeypatch.setattr(cpu, "measure_paths", lambda operation: pytest.fail("timed at run start"))
    assert Sha256Kernel(backend="cpu").backend_name() == "cpu"


def test_auto_is_simd_without_measuring_where_sha_ni_cannot_run(monkeypatch):
    monkeypatch.delenv(cpu.KERNEL_ENV, raising=False)
    monkeypatch.setattr(cpu_shani, "sha_ni_usable", lambda: (False, "this CPU has no SHA extensions"))
    monkeypatch.setattr(cpu, "_auto", {})
    monkeypatch.setattr(cpu, "measure_paths", lambda operation: pytest.fail("measured without SHA-NI"))
    assert cpu.select_kernel() == "simd"
    assert cpu.explain_kernel() == "simd: auto, and this CPU has no SHA extensions"


def test_the_environment_forces_a_path(monkeypatch):
    monkeypatch.setenv(cpu.KERNEL_ENV, "simd")
    assert cpu.select_kernel() == "simd"
    assert Sha256Kernel(backend="cpu").describe()["kernel_cpu_path_reason"] == "simd: HASHER_CPU_KERNEL=simd"


@pytest.mark.parametrize("operation", ["evaluate", "scan"])
def test_measured_rates_are_real_rates(operation):
    if not cpu_shani.sha_ni_usable()[0]:
        with pytest.raises(BackendUnavailableError, match="cannot time the SHA-NI path"):
            cpu.measure_paths(operation)
        return
    rates = cpu.measure_paths(operation)
    assert set(rates) == {"simd", "shani"} and all(rate > 1000 for rate in rates.values())


@pytest.mark.parametrize(
    ("env", "field", "error", "message"),
    [
        (
            "sse4",
            None,
            SettingsError,
            "HASHER_CPU_KERNEL='sse4' is invalid: allowed values: auto, shani, simd",
        ),
        (None, "avx", KernelConfigError, "Sha256Kernel.cpu_kernel='avx' is not one of auto, shani, simd"),
    ],
)
def test_an_unknown_cpu_path_is_refused_naming_where_it_came_from(monkeypatch, env, field, error, message):
    if env:
        monkeypatch.setenv(cpu.KERNEL_ENV, env)
    with pytest.raises(error, match=message):
        Sha256Kernel(backend="cpu", cpu_kernel=field).backend_name()


def test_kernel_choice_is_restored_after_the_block(monkeypatch):
    monkeypatch.setenv(cpu.KERNEL_ENV, "simd")
    with cpu.kernel_choice("auto"):
        assert cpu.select_kernel() in ("shani", "simd")
    assert cpu.select_kernel() == "simd"


def test_a_cpu_without_sha_ni_answers_through_simd_and_refuses_shani(tmp_path):
    """The child's Numba targets this CPU's features less ``sha`` (an AVX-512 Xeon without SHA-NI):
    compiling SHA-NI code there would abort the process inside LLVM, so this also proves that no
    path compiles it when the dispatch says no."""
    import llvmlite.binding as llvm

    host = llvm.get_host_cpu_features().flatten()
    no_sha = ",".join(f for f in host.split(",") if f not in ("+sha", "-sha")) + ",-sha"
    child = textwrap.dedent(
        """
        import numpy as np
        from hasher_core.errors import BackendUnavailableError
        from hasher_resources import sha256
        from hasher_resources.sha256 import cpu, cpu_shani, reference
        from hasher_resources.sha256.resource import Sha256Kernel
        from hasher_tests.resources.sha256.cases import random_rows

        usable, why = cpu_shani.sha_ni_usable()
        assert not usable, why
        assert cpu.select_kernel() == "simd"
        slots, seeds = random_rows(70, seed=3, edges=True)
        expect = reference.evaluate_with_keys(slots, seeds)[0]
        assert np.array_equal(sha256.evaluate(slots, seeds, backend="cpu"), expect)
        genesis = bytes.fromhex(GENESIS)
        found = sha256.scan_header_nonces(
            genesis, share_bits=32, nonce_count=128, nonce_start=2083236893 - 64, backend="cpu"
        )
        assert found.nonces.tolist() == [2083236893], found
        assert Sha256Kernel(backend="cpu").describe()["kernel_cpu_path"] == "simd"
        try:
            Sha256Kernel(backend="cpu", cpu_kernel="shani").backend_name()
        except BackendUnavailableError as exc:
            print("REFUSED:", exc)
        else:
            raise SystemExit("shani was not refused")
        """
    ).replace("GENESIS", repr(BLOCKS[0][0]))
    env = {
        **os.environ,
        "NUMBA_CPU_FEATURES": no_sha,
        "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"),  # a cache built for SHA-NI must not be used
        "PYTHONPATH": str(ROOT),
    }
    env.pop(cpu.KERNEL_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "REFUSED: Sha256Kernel.cpu_kernel=shani but the SHA-NI path cannot run here" in done.stdout
    assert "does not enable +sha" in done.stdout and "use auto or simd" in done.stdout


def test_forcing_shani_through_the_environment_on_such_a_cpu_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(cpu.KERNEL_ENV, "shani")
    monkeypatch.setattr(cpu_shani, "sha_ni_usable", lambda: (False, "this CPU has no SHA extensions"))
    with pytest.raises(BackendUnavailableError, match="HASHER_CPU_KERNEL=shani but the SHA-NI path"):
        cpu.select_kernel()
