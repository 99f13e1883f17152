"""Deployment verification: the kernel sample, and the device judged by the gate's own rule."""

from __future__ import annotations

import pytest

from hasher_core.bundle import build_bundle
from hasher_resources.asic.resource import AsicDevice, EmulatedAsicDevice, start_emulator, stop_emulator
from hasher_resources.deploy.verify import verify_on_kernel_and_device, verify_sample_on_kernel
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_tests.core.bundle.test_bundle import make_checkpoints
from hasher_tests.core.search.test_reproduce import marked_unsolved_although_it_reaches_its_difficulty

REFERENCE = Sha256Kernel(backend="reference")


@pytest.fixture(scope="module")
def bundle():
    return build_bundle({"a.txt": make_checkpoints(12, seed=4)}, pipeline_version="test")


@pytest.mark.slow
def test_a_device_whose_nonces_verify_passes(bundle):
    with EmulatedAsicDevice(share_bits=4, nonces_per_work=512, backend="cpu").session() as device:
        report = verify_on_kernel_and_device(bundle, REFERENCE, device, sample_size=8, device_sample=4)
    assert report.ok and "device (4 headers)" in report.verifier and report.checked == 12


@pytest.mark.slow
def test_a_device_returning_wrong_nonces_fails_by_the_gates_rule(bundle):
    proc, url = start_emulator(
        share_bits=4, nonces_per_work=512, backend="cpu", faults=["wrong-nonce:nonce:*"]
    )
    try:
        with AsicDevice(url=url, share_bits=4).session() as device:
            report = verify_on_kernel_and_device(bundle, REFERENCE, device, sample_size=8, device_sample=4)
    finally:
        stop_emulator(proc)
    assert not report.ok
    (problem,) = report.mismatches
    assert "device nonces fail on the kernel" in problem.problem and "tolerance 0.01" in problem.problem


def test_without_a_device_sample_only_the_kernel_is_asked(bundle):
    report = verify_on_kernel_and_device(bundle, REFERENCE, None, sample_size=5, device_sample=0)
    assert report.ok and report.checked == 5 and report.verifier == "kernel:reference"


def test_a_row_marked_unsolved_whose_golden_reaches_its_difficulty_fails_verification():
    """The row the checkpoints gate rejects (same rule): if it ever reaches a bundle, verification says so."""
    table, row = marked_unsolved_although_it_reaches_its_difficulty()
    bundle = build_bundle({"a.txt": table}, pipeline_version="test")
    report = verify_sample_on_kernel(bundle, REFERENCE, sample_size=bundle.num_rows)
    (mismatch,) = report.mismatches
    assert mismatch.fingerprint == table.column("fingerprint")[row].as_py()
    assert mismatch.problem == "solved=True at 17 bits, stored False"
