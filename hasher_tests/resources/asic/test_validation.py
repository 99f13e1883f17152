"""Cross-hardware validation: device nonces re-checked on the kernel, rates as metadata, one pass rule."""

from __future__ import annotations

import dagster as dg
import pytest

from hasher_core.errors import AsicTimeoutError
from hasher_core.header import build_header
from hasher_resources.asic.emulator import Emulator, FaultRule, serve_in_thread
from hasher_resources.asic.resource import AsicDevice
from hasher_resources.asic.session import AsicSession
from hasher_resources.asic.validation import CrossValidationReport, cross_validate
from hasher_tests.resources.asic.emulated import SHARE_BITS, small_board

HEADERS = [build_header([k * 7 + i for i in range(12)], bytes(range(32))) for k in range(10)]


pytestmark = pytest.mark.timeout(30)  # no test here may hang


def _emulator(*faults: str) -> Emulator:
    return Emulator(small_board(), [FaultRule.parse(f) for f in faults])


def _session(url: str) -> AsicSession:
    return AsicSession(url, share_bits=SHARE_BITS, timeout_s=0.2, retries=2, chain_count=1, chip_count=4)


def test_an_honest_device_is_fully_consistent():
    with serve_in_thread(_emulator()) as url, _session(url) as dev:
        report = cross_validate(dev, HEADERS, batch_size=4)
    assert report.headers == 10
    assert report.consistency_rate == 1.0 and report.hardware_error_rate == 0.0
    assert report.nonces_returned == report.nonces_verified > 0
    assert report.headers_without_nonces == 0
    assert report.kernel_backend == "reference"


def test_wrong_nonces_lower_consistency_and_are_listed():
    with (
        serve_in_thread(_emulator("wrong-nonce:nonce:1", "wrong-nonce:nonce:3")) as url,
        _session(url) as dev,
    ):
        report = cross_validate(dev, HEADERS, batch_size=4)
    assert report.hardware_errors == 2
    assert report.consistent_headers == 8 and report.consistency_rate == pytest.approx(0.8)
    assert report.hardware_error_rate == pytest.approx(2 / report.nonces_returned)
    assert {m.header_index for m in report.mismatches} == {0, 8}  # first work of tasks 1 and 3
    assert all(m.zero_bits < SHARE_BITS for m in report.mismatches)


def test_metadata_is_flat_and_carries_rates_and_device_counters():
    with serve_in_thread(_emulator("crc:status:2", "wrong-nonce:nonce:1")) as url, _session(url) as dev:
        meta = cross_validate(dev, HEADERS[:3]).as_metadata()
    assert meta["asic_headers"] == 3
    assert meta["asic_hardware_errors"] == 1
    assert 0 < meta["asic_hardware_error_rate"] < 1
    assert meta["asic_retries"] >= 1 and meta["asic_crc_errors"] >= 1
    assert "header 0 nonce 0x" in meta["asic_mismatches"]
    assert all(isinstance(v, int | float | str) for v in meta.values())


def test_no_headers_is_trivially_consistent():
    with serve_in_thread(_emulator()) as url, _session(url) as dev:
        report = cross_validate(dev, [])
    assert report.consistency_rate == 1.0 and report.nonces_returned == 0


def test_a_silent_device_fails_validation_loudly():
    with (
        serve_in_thread(_emulator("drop:status:*")) as url,
        _session(url) as dev,
        pytest.raises(AsicTimeoutError, match="went silent"),
    ):
        cross_validate(dev, HEADERS[:2])


def test_a_resource_is_validated_through_its_open_session():
    with serve_in_thread(_emulator()) as url:
        device = AsicDevice(url=url, share_bits=SHARE_BITS, timeout_s=0.2, chain_count=1, chip_count=4)
        with dg.build_resources({"asic": device}) as resources:
            report = cross_validate(resources.asic, HEADERS[:3])
    assert report.headers == 3 and report.passed(0.0)


def _report(*, headers: int = 10, consistent: int = 10, returned: int = 20, errors: int = 0):
    return CrossValidationReport(
        headers=headers,
        consistent_headers=consistent,
        headers_without_nonces=0,
        nonces_returned=returned,
        nonces_verified=returned - errors,
        hardware_errors=errors,
        share_bits=SHARE_BITS,
        kernel_backend="reference",
        device_s=0.1,
        verify_s=0.1,
    )


def test_a_device_whose_nonces_all_verify_passes():
    with serve_in_thread(_emulator()) as url, _session(url) as dev:
        report = cross_validate(dev, HEADERS[:4])
    assert report.passed(0.0) and report.passed(0.01)
    assert _report().passed(0.0)


def test_a_device_that_returns_no_nonce_fails_at_any_tolerance():
    silent = _report(returned=0)
    assert silent.consistency_rate == 1.0 and silent.hardware_error_rate == 0.0
    assert not silent.passed(0.0) and not silent.passed(1.0)
    with serve_in_thread(_emulator()) as url, _session(url) as dev:
        assert not cross_validate(dev, []).passed(1.0)


def test_hardware_errors_pass_up_to_the_tolerance_and_fail_above_it():
    report = _report(returned=20, errors=1)  # 5 % hardware errors, every header consistent
    assert report.hardware_error_rate == pytest.approx(0.05)
    assert report.passed(0.05) and report.passed(0.1)
    assert not report.passed(0.04) and not report.passed(0.0)


def test_inconsistent_headers_pass_only_within_the_tolerance():
    report = _report(headers=10, consistent=9, returned=100, errors=1)
    assert report.consistency_rate == pytest.approx(0.9)
    assert report.passed(0.1) and not report.passed(0.05)
