"""Cross-hardware validation (DESIGN §5, §7): the device's nonces must verify on the kernel.

For each checkpointed frame's header the device (board or emulator) returns the nonces it found;
each one is re-hashed through the SHA-256 kernel (``scan_header_nonces`` over that single nonce,
the hashlib reference backend by default: the emulator hashes with the compiled kernel from a
midstate, the check with OpenSSL from the whole header, so neither vouches for itself).
A header is *consistent* when every nonce returned for it verifies; a header with no
nonce is counted apart (a board sweeping at difficulty 1 finds none about e^-1 ≈ 37 % of the time).
The rates become checkpoint metadata, and :meth:`CrossValidationReport.passed` is the one rule that
decides whether the device agrees well enough.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from hasher_resources.sha256 import scan_header_nonces

from .resource import AsicResource
from .session import AsicSession

MAX_LISTED_MISMATCHES = 20


@dataclass(frozen=True)
class NonceMismatch:
    """A nonce the device returned that does not meet the share target on the kernel."""

    header_index: int
    nonce: int
    zero_bits: int


@dataclass(frozen=True)
class CrossValidationReport:
    """How well the device agrees with the kernel on a set of headers."""

    headers: int
    consistent_headers: int
    headers_without_nonces: int
    nonces_returned: int
    nonces_verified: int
    hardware_errors: int
    share_bits: int
    kernel_backend: str
    device_s: float
    verify_s: float
    mismatches: tuple[NonceMismatch, ...] = ()
    device_counters: dict[str, int] = field(default_factory=dict)

    @property
    def consistency_rate(self) -> float:
        """Share of headers whose returned nonces all verify (1.0 for no headers)."""
        return self.consistent_headers / self.headers if self.headers else 1.0

    @property
    def hardware_error_rate(self) -> float:
        """Share of returned nonces that fail the kernel check."""
        return self.hardware_errors / self.nonces_returned if self.nonces_returned else 0.0

    def passed(self, tolerance: float) -> bool:
        """The device pass rule: it returned at least one nonce (a device that returns none proves
        nothing), at least ``1 − tolerance`` of the headers are consistent, and at most
        ``tolerance`` of the returned nonces are hardware errors."""
        return (
            self.nonces_returned > 0
            and self.consistency_rate >= 1.0 - tolerance
            and self.hardware_error_rate <= tolerance
        )

    def as_metadata(self) -> dict[str, float | int | str]:
        """Flat values for Dagster materialization / asset-check metadata."""
        meta: dict[str, float | int | str] = {
            "asic_headers": self.headers,
            "asic_consistency_rate": round(self.consistency_rate, 6),
            "asic_hardware_error_rate": round(self.hardware_error_rate, 6),
            "asic_headers_without_nonces": self.headers_without_nonces,
            "asic_nonces_returned": self.nonces_returned,
            "asic_nonces_verified": self.nonces_verified,
            "asic_hardware_errors": self.hardware_errors,
            "asic_share_bits": self.share_bits,
            "asic_kernel_backend": self.kernel_backend,
            "asic_device_seconds": round(self.device_s, 4),
            "asic_verify_seconds": round(self.verify_s, 4),
        }
        for name in ("crc_errors", "retries", "timeouts", "lost_nonces", "resubmissions"):
            if name in self.device_counters:
                meta[f"asic_{name}"] = self.device_counters[name]
        if self.mismatches:
            meta["asic_mismatches"] = "; ".join(
                f"header {m.header_index} nonce {m.nonce:#010x} ({m.zero_bits} bits)" for m in self.mismatches
            )
        return meta


def cross_validate(
    device: AsicSession | AsicResource,
    headers: Sequence[bytes],
    *,
    kernel_backend: str = "reference",
    batch_size: int = 64,
) -> CrossValidationReport:
    """Send every header to the device and check each returned nonce on the kernel.

    ``device`` is an open :class:`AsicSession` or an :class:`AsicResource` (board or emulator) set
    up by Dagster. Device errors (timeouts, a vanished port, CRC failures after retries) propagate
    as typed :class:`hasher_core.errors.AsicError`: a gate cannot pass on a device it cannot hear.
    """
    session = device.active if isinstance(device, AsicResource) else device
    if headers and session.emulated is None:
        session.status()  # learn whether this is a board, which sets the share target it promises
    share_bits = session.verify_bits
    counters_before = asdict(session.counters)
    per_header: dict[int, list[int]] = {}
    t0 = time.perf_counter()
    for start in range(0, len(headers), batch_size):
        for report in session.submit(headers[start : start + batch_size]):
            if report.header_index >= 0:
                per_header.setdefault(start + report.header_index, []).append(report.nonce)
    device_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    mismatches: list[NonceMismatch] = []
    consistent = returned = verified = 0
    backend_used = kernel_backend
    for index, header in enumerate(headers):
        ok = True
        for nonce in per_header.get(index, []):
            result = scan_header_nonces(
                bytes(header), share_bits=share_bits, nonce_count=1, nonce_start=nonce, backend=kernel_backend
            )
            backend_used = result.backend
            returned += 1
            if result.best_bits >= share_bits:
                verified += 1
            else:
                ok = False
                mismatches.append(NonceMismatch(index, nonce, result.best_bits))
        consistent += ok
    verify_s = time.perf_counter() - t1
    counters_after = asdict(session.counters)
    return CrossValidationReport(
        headers=len(headers),
        consistent_headers=consistent,
        headers_without_nonces=sum(1 for i in range(len(headers)) if i not in per_header),
        nonces_returned=returned,
        nonces_verified=verified,
        hardware_errors=returned - verified,
        share_bits=share_bits,
        kernel_backend=backend_used,
        device_s=device_s,
        verify_s=verify_s,
        mismatches=tuple(mismatches[:MAX_LISTED_MISMATCHES]),
        device_counters={k: counters_after[k] - counters_before[k] for k in counters_after},
    )
