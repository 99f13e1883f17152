"""The checkpoints gate's second opinion (DESIGN §5): every seed row recomputed on a backend other
than the one that searched it, judged by the one reproduction rule
(:func:`hasher_core.search.reproduce.check_reproduction`), and the device hashing check on a sample of
the rows that passed (a check of the device's own hashing, not of the seeds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from hasher_core.design import SEED_BYTES
from hasher_core.header import build_header
from hasher_core.search import validate_frames_table
from hasher_core.search.reproduce import check_reproduction

from .asic.resource import AsicResource
from .asic.validation import CrossValidationReport, cross_validate
from .sha256.resource import Sha256Kernel


def independent_backend(search_backend: str) -> str:
    """The backend that did not produce the seeds: the reference unless the search used it."""
    return "cpu" if search_backend == "reference" else "reference"


def recheck(table: pa.Table, kernel: Sha256Kernel) -> tuple[np.ndarray, np.ndarray]:
    """Recompute every row's golden on ``kernel``; returns ``(consistent mask bool[N], recomputed
    goldens uint32[N])``. A row is consistent when it reproduces by the one rule of
    :func:`hasher_core.search.reproduce.check_reproduction` (DESIGN §5)."""
    slots, _ = validate_frames_table(table)
    seeds = np.frombuffer(b"".join(table.column("best_seed").to_pylist()), np.uint8).reshape(-1, SEED_BYTES)
    golden = kernel.evaluate_rows(slots, seeds, table.column("header_time").to_numpy())
    return check_reproduction(table, golden).consistent, golden


@dataclass(frozen=True)
class Recheck:
    """The gate's verdict on each row: whether it reproduced, its recomputed golden, and which backend
    re-checked the rows of each search backend."""

    consistent: np.ndarray  # bool[N]
    recomputed: np.ndarray  # uint32[N]
    verified_on: dict[str, str]  # search backend -> verify backend

    @property
    def rows(self) -> int:
        return int(self.consistent.size)

    @property
    def mismatches(self) -> int:
        return int(self.rows - self.consistent.sum())

    @property
    def mismatch_rate(self) -> float:
        return self.mismatches / self.rows if self.rows else 0.0

    def verify_backend(self, kernel: Sha256Kernel) -> str:
        """The backend(s) that re-checked, ``+``-joined (the kernel's independent one when no row)."""
        return "+".join(sorted(set(self.verified_on.values()))) or independent_backend(kernel.backend_name())

    def mismatch_table(self, table: pa.Table) -> pa.Table:
        """The rows that did not reproduce, with their ``recomputed_golden``."""
        bad = ~self.consistent
        return table.filter(pa.array(bad)).append_column("recomputed_golden", pa.array(self.recomputed[bad]))


def recheck_independently(table: pa.Table, kernel: Sha256Kernel) -> Recheck:
    """:func:`recheck` with every row on a backend other than the one that searched it (the row's
    ``kernel_backend``; unknown counts as the kernel resource's): reference-searched rows on the CPU
    kernel, all others on the reference."""
    consistent = np.zeros(table.num_rows, dtype=bool)
    recomputed = np.zeros(table.num_rows, dtype=np.uint32)
    searched = [b or kernel.backend_name() for b in table.column("kernel_backend").to_pylist()]
    verified_on: dict[str, str] = {}
    for search_backend in sorted(set(searched)):
        rows = np.flatnonzero(np.array(searched, dtype=object) == search_backend)
        verified_on[search_backend] = independent_backend(search_backend)
        # The gate's second opinion runs on the kernel resource's threads/device, on another backend.
        ok, golden = recheck(table.take(pa.array(rows)), kernel.on_backend(verified_on[search_backend]))
        consistent[rows], recomputed[rows] = ok, golden
    return Recheck(consistent, recomputed, verified_on)


def sample_headers(table: pa.Table, count: int) -> list[bytes]:
    """Headers of up to ``count`` checkpointed frames (solved ones first) for the device."""
    sample = table.sort_by([("solved", "descending"), ("chunk_id", "ascending")]).slice(0, count)
    slots, _ = validate_frames_table(sample)
    seeds = sample.column("best_seed").to_pylist()
    times = sample.column("header_time").to_pylist()
    return [build_header(slots[i], seeds[i], int(times[i])) for i in range(sample.num_rows)]


def device_hashing_check(
    asic: AsicResource, table: pa.Table, sample: int, tolerance: float
) -> tuple[dict[str, Any], CrossValidationReport | None]:
    """The device mines the headers of up to ``sample`` rows of ``table`` and its nonces are verified
    on the kernel, judged by :meth:`CrossValidationReport.passed` at ``tolerance``. Returns the
    check's record (``{"checked": False}`` when skipped: no sample or no row) and the report."""
    if sample <= 0 or not table.num_rows:
        return {"checked": False}, None
    report = cross_validate(asic, sample_headers(table, sample))
    return {"checked": True, "passed": report.passed(tolerance), **report.as_metadata()}, report
