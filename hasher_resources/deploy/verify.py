"""Deployment verification (DESIGN §5–6): before the pointer swap, a sample of the bundle as written
and read back is recomputed on the kernel resource and, with a device, re-mined on it; the report says
what disagreed, and a failed verification leaves ``current`` where it was.

The device is judged by the same rule as the checkpoints gate (``CrossValidationReport.passed``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from hasher_core.bundle import Bundle
from hasher_core.header import build_header
from hasher_core.search.reproduce import check_reproduction

from ..asic.resource import AsicResource
from ..asic.session import AsicSession
from ..asic.validation import cross_validate
from ..sha256.resource import Sha256Kernel


@dataclass(frozen=True)
class SampleMismatch:
    """One sampled row whose recomputed golden (or derived fields) disagrees with the bundle."""

    row: int
    fingerprint: str
    stored_golden: int
    recomputed_golden: int
    problem: str


@dataclass(frozen=True)
class VerifyReport:
    """What a readback verification checked and what disagreed."""

    verifier: str
    checked: int
    mismatches: tuple[SampleMismatch, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.checked > 0 and not self.mismatches

    def summary(self) -> str:
        if self.ok:
            return f"{self.checked} sampled rows agree on {self.verifier}"
        if not self.checked:
            return f"{self.verifier} checked no rows"
        first = self.mismatches[0]
        return (
            f"{len(self.mismatches)} of {self.checked} sampled rows disagree on {self.verifier}; first: row "
            f"{first.row} ({first.fingerprint}): {first.problem}"
        )

    def as_metadata(self) -> dict[str, Any]:
        return {
            "verifier": self.verifier,
            "checked": self.checked,
            "mismatches": len(self.mismatches),
            "seconds": round(self.seconds, 4),
        }


def sample_rows(bundle: Bundle, sample_size: int) -> np.ndarray:
    """Row indices to re-verify: a uniform sample, reproducible for a given bundle version."""
    n = bundle.num_rows
    if sample_size >= n:
        return np.arange(n)
    rng = np.random.default_rng(int(bundle.content_digest[:16], 16))
    return np.sort(rng.choice(n, size=sample_size, replace=False))


def verify_sample_on_kernel(bundle: Bundle, kernel: Sha256Kernel, sample_size: int = 64) -> VerifyReport:
    """Recompute the golden of a sample of rows on the kernel resource and judge each row by the one
    rule the checkpoints gate applies too (:func:`hasher_core.search.reproduce.check_reproduction`:
    golden, matched bits, solved flag, token)."""
    start = time.perf_counter()
    rows = sample_rows(bundle, sample_size)
    table = bundle.seeds.take(rows)
    recomputed = kernel.evaluate_rows(
        bundle.slots()[rows], bundle.best_seeds()[rows], table.column("header_time").to_numpy()
    )
    found = check_reproduction(table, recomputed)
    fingerprints = table.column("fingerprint").to_pylist()
    mismatches = [
        SampleMismatch(
            int(row),
            fingerprints[k],
            int(found.stored_golden[k]),
            int(found.recomputed[k]),
            "; ".join(found.problems(k)),
        )
        for k, row in enumerate(rows)
        if not found.consistent[k]
    ]
    verifier = f"kernel:{kernel.backend_name()}"
    return VerifyReport(verifier, len(rows), tuple(mismatches), time.perf_counter() - start)


def verify_on_kernel_and_device(
    bundle: Bundle,
    kernel: Sha256Kernel,
    asic: AsicResource | AsicSession,
    *,
    sample_size: int = 64,
    device_sample: int = 8,
    tolerance: float = 0.01,
) -> VerifyReport:
    """Read-back check after a swap (DESIGN §6, "on the device or kernel"): the goldens of a sample on
    the kernel, then the device's own nonces for the headers of the first ``device_sample`` rows,
    judged by the one device pass rule, :meth:`CrossValidationReport.passed` at ``tolerance``."""
    report = verify_sample_on_kernel(bundle, kernel, sample_size)
    if not report.ok or device_sample == 0:
        return report
    slots, seeds = bundle.slots(), bundle.best_seeds()
    times = bundle.seeds.column("header_time").to_pylist()
    rows = range(min(device_sample, bundle.num_rows))
    headers = [build_header(slots[r], seeds[r].tobytes(), int(times[r])) for r in rows]
    device = cross_validate(asic, headers)
    mismatches = ()
    if not device.passed(tolerance):
        problem = (
            "the device returned no nonce for any header"
            if device.nonces_returned == 0
            else f"{device.hardware_errors} of {device.nonces_returned} device nonces fail on the kernel "
            f"(hardware-error rate {device.hardware_error_rate:.4f}, tolerance {tolerance})"
        )
        mismatches = (SampleMismatch(-1, "device", 0, 0, problem),)
    return VerifyReport(
        verifier=f"{report.verifier} + device ({device.headers} headers)",
        checked=report.checked + device.headers,
        mismatches=mismatches,
        seconds=report.seconds + device.device_s + device.verify_s,
    )
