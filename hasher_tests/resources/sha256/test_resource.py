"""Sha256Kernel: the kernel as a Dagster resource, inside and outside Dagster."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from hasher_core.errors import BackendUnavailableError, KernelConfigError, KernelInputError
from hasher_resources import sha256
from hasher_resources.sha256 import cpu, reference
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_tests.resources.sha256.cases import VECTOR_SEED, VECTOR_SLOTS, VECTOR_TOKEN, random_rows


def test_plain_instantiation_outside_dagster():
    kernel = Sha256Kernel(backend="reference")
    assert kernel.evaluate(VECTOR_SLOTS, VECTOR_SEED).tolist() == [0x18867801]
    assert kernel.backend_name() == "reference"
    assert kernel.describe() == {"kernel_backend": "reference"}


def test_inputs_larger_than_a_batch_are_chunked_without_changing_results():
    slots, seeds = random_rows(23)
    golden, keys = Sha256Kernel(backend="reference", batch_size=5).evaluate_with_keys(
        slots, seeds, header_time=4
    )
    ref_golden, ref_keys = reference.evaluate_with_keys(slots, seeds, 4)
    assert np.array_equal(golden, ref_golden) and np.array_equal(keys, ref_keys)


def test_bad_rows_are_rejected_before_any_batch_runs():
    slots, seeds = random_rows(10)
    with pytest.raises(KernelInputError, match="same number of rows, got 10 and 9"):
        Sha256Kernel(backend="reference", batch_size=3).evaluate(slots, seeds[:9])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 0}, "Sha256Kernel.batch_size must be >= 1, got 0"),
        ({"threads": 0}, "Sha256Kernel.threads must be >= 1 or None, got 0"),
        ({"device_id": -1}, "Sha256Kernel.device_id must be >= 0, got -1"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(KernelConfigError) as err:
        Sha256Kernel(backend="reference", **settings).backend_name()
    assert message in str(err.value)


@pytest.mark.skipif(sha256.cuda_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_fails_loudly():
    kernel = Sha256Kernel(backend="cuda")
    with pytest.raises(BackendUnavailableError, match="backend 'cuda'"):
        kernel.evaluate(VECTOR_SLOTS, VECTOR_SEED)


@pytest.mark.skipif(sha256.cuda_available(), reason="this machine has a GPU")
def test_auto_picks_the_cpu_without_a_gpu():
    assert Sha256Kernel().backend_name() == "cpu"


def test_scans_run_on_the_resolved_backend():
    kernel = Sha256Kernel(backend="reference")
    found = kernel.scan_seed_nonces(
        VECTOR_SLOTS[0],
        bytes(range(16)),
        VECTOR_TOKEN,
        difficulty_bits=17,
        nonce_count=2,
        nonce_start=0x1C1D1E1E,
    )
    assert found.nonces.tolist() == [0x1C1D1E1F] and found.backend == "reference"
    shares = kernel.scan_header_nonces(bytes(80), share_bits=0, nonce_count=4, nonce_start=10)
    assert shares.nonces.tolist() == [10, 11, 12, 13]


@pytest.mark.slow
def test_cpu_threads_setting_is_applied_and_restored():
    import numba

    before = numba.get_num_threads()
    kernel = Sha256Kernel(backend="cpu", threads=1, batch_size=64)
    slots, seeds = random_rows(130, seed=5)
    assert np.array_equal(kernel.evaluate(slots, seeds), reference.evaluate_with_keys(slots, seeds)[0])
    described = kernel.describe()
    assert described.pop("kernel_cpu_path_reason").startswith(cpu.select_kernel())
    assert described == {"kernel_backend": "cpu", "kernel_threads": 1, "kernel_cpu_path": cpu.select_kernel()}
    assert numba.get_num_threads() == before


def test_an_asset_uses_the_resource_and_reports_the_backend():
    @dg.asset
    def goldens(kernel: Sha256Kernel) -> dg.MaterializeResult:
        golden = kernel.evaluate(VECTOR_SLOTS, VECTOR_SEED)
        return dg.MaterializeResult(metadata={**kernel.describe(), "golden": int(golden[0])})

    result = dg.materialize([goldens], resources={"kernel": Sha256Kernel(backend="reference")})
    assert result.success
    metadata = result.asset_materializations_for_node("goldens")[0].metadata
    assert metadata["kernel_backend"].value == "reference"
    assert metadata["golden"].value == 0x18867801


def test_evaluate_rows_groups_by_header_time_and_matches_per_row_evaluation():
    slots, seeds = random_rows(40, seed=9)
    times = np.array([0, 7, 0xFFFFFFFF, 7] * 10, dtype=np.int64)
    kernel = Sha256Kernel(backend="cpu", batch_size=16)
    want = np.array(
        [
            reference.evaluate_with_keys(slots[i : i + 1], seeds[i : i + 1], int(times[i]))[0][0]
            for i in range(40)
        ]
    )
    assert np.array_equal(kernel.evaluate_rows(slots, seeds, times), want)
    assert kernel.evaluate_rows(slots[:0], seeds[:0], times[:0]).shape == (0,)


@pytest.mark.parametrize(
    ("times", "message"),
    [([0, -1, 0], r"header_times\[1\] must fit in 32 bits, got -1"),
     ([0, 2**32, 0], r"header_times\[1\] must fit in 32 bits"),
     ([0, 1], r"header_times must have shape \[3\]"),
     ([0.5, 1.0, 2.0], "header_times must be integers")],
)  # fmt: skip
def test_evaluate_rows_rejects_bad_header_times(times, message):
    slots, seeds = random_rows(3, seed=1)
    with pytest.raises(KernelInputError, match=message):
        Sha256Kernel(backend="reference").evaluate_rows(slots, seeds, np.array(times))


def test_on_backend_keeps_the_settings_and_changes_only_the_backend():
    kernel = Sha256Kernel(backend="cpu", threads=1, batch_size=64, device_id=0)
    other = kernel.on_backend("reference")
    assert (other.backend, other.threads, other.batch_size) == ("reference", 1, 64)
    assert other.backend_name() == "reference" and kernel.backend_name() == "cpu"
    assert kernel.on_backend("reference") is other  # made once: a range run asks once per partition
    assert kernel.on_backend("cpu") is not other


def test_the_search_runs_on_the_device_only_on_cuda(monkeypatch):
    from hasher_resources.sha256 import api, device_search
    from hasher_resources.sha256 import cuda as cuda_backend

    assert Sha256Kernel(backend="cpu").search_driver() is None
    assert Sha256Kernel(backend="reference").search_driver() is None
    monkeypatch.setattr(api, "resolve_backend", lambda name: name)  # as on a machine with two GPUs
    monkeypatch.setattr(cuda_backend, "device_count", lambda: 2)
    driver = Sha256Kernel(backend="cuda", device_id=1).search_driver()
    assert isinstance(driver, device_search.DeviceSearch) and driver.device_id == 1
