"""Readback of a deployed frame: given its 12 slots, recompute each stored seed's golden on the kernel
and say which token it gives back (the inspection tool behind ``hasher predict --slots``; inference
from text is ``hasher_core.inference``).

The token a golden stands for is its top 17 bits, ``golden >> 15`` (DESIGN §4.3): a row *solves*
when that is its target token. Several rows can share one slot vector (a context seen with several
next tokens, or chunk-embedding frames); every candidate is reported, and the prediction lists the
distinct tokens the solving ones give.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hasher_core import design
from hasher_core.bundle import Bundle
from hasher_core.design import TOKEN_BITS
from hasher_core.errors import PredictInputError
from hasher_core.header import golden_token, leading_equal_bits, target_word

#: ``(slots uint32[N, 12], seeds uint8[N, 32], header_times int[N]) -> goldens uint32[N]``: the kernel
#: resource's ``Sha256Kernel.evaluate_rows``, or anything with its shape.
RowEvaluator = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Candidate:
    """One bundle row whose slots match the frame, with its golden recomputed."""

    row: int
    partition: str
    source_file: str
    chunk_id: int
    window_end: int
    target_token_id: int
    golden: int
    matched_bits: int
    header_time: int

    @property
    def token_id(self) -> int:
        """The token the recomputed golden stands for (``golden >> 15``)."""
        return int(golden_token(self.golden))

    @property
    def solves(self) -> bool:
        """True when the golden gives back the row's target token."""
        return self.token_id == self.target_token_id


@dataclass(frozen=True)
class Prediction:
    """The outcome of a readback: the predicted token ids (if any) and every candidate row."""

    slots: tuple[int, ...]
    bundle_version: str
    candidates: tuple[Candidate, ...]
    token_ids: tuple[int, ...]
    backend: str

    @property
    def solved(self) -> bool:
        return bool(self.token_ids)

    @property
    def token_id(self) -> int | None:
        """The first predicted token (bundle order), or None when no seed solves the frame."""
        return self.token_ids[0] if self.token_ids else None

    def describe(self) -> str:
        """One line a person can read."""
        if not self.candidates:
            return f"no seed for this frame in bundle {self.bundle_version}: not solved"
        if self.solved:
            tokens = ", ".join(str(t) for t in self.token_ids)
            return (
                f"solved: token {tokens} (golden >> 15 = the target token, "
                f"{len(self.candidates)} candidate row(s), bundle {self.bundle_version})"
            )
        best = max(self.candidates, key=lambda c: c.matched_bits)
        return (
            f"not solved: best of {len(self.candidates)} candidate row(s) matches "
            f"{best.matched_bits} of {TOKEN_BITS} token bits (gives token {best.token_id}, "
            f"target {best.target_token_id}, bundle {self.bundle_version})"
        )


def frame_slots(values: Sequence[int] | np.ndarray) -> np.ndarray:
    """12 slot words as uint32; accepts the uint32 values or their int32 bit-cast (as in frames)."""
    words = [int(v) for v in np.asarray(values).reshape(-1).tolist()]
    if len(words) != design.SLOT_COUNT:
        raise PredictInputError(f"a frame has {design.SLOT_COUNT} slots, got {len(words)}")
    bad = [w for w in words if not -(2**31) <= w <= 2**32 - 1]
    if bad:
        raise PredictInputError(f"slot value {bad[0]} does not fit in 32 bits")
    return np.array([w & 0xFFFFFFFF for w in words], dtype=np.uint32)


def candidate_rows(bundle: Bundle, slots: np.ndarray) -> np.ndarray:
    """Indices of the bundle rows whose slots equal ``slots``."""
    return np.flatnonzero(np.all(bundle.slots() == slots[None, :], axis=1))


def predict(
    bundle: Bundle,
    slots: Sequence[int] | np.ndarray,
    evaluate_rows: RowEvaluator,
    *,
    header_time: int | None = None,
    backend: str = "",
) -> Prediction:
    """Recompute the golden of every seed stored for this frame with ``evaluate_rows`` and report
    the token it predicts; ``backend`` names where that ran, for the report.

    ``header_time`` overrides the time each row was trained with (None: use the stored one, the
    only value with which a seed reproduces). Raises :class:`PredictInputError` for slots that are
    not 12 words of 32 bits.
    """
    words = frame_slots(slots)
    rows = candidate_rows(bundle, words)
    table = bundle.seeds.take(rows)
    seeds = bundle.best_seeds()[rows]
    times = table.column("header_time").to_numpy() if header_time is None else np.full(len(rows), header_time)
    goldens = evaluate_rows(np.repeat(words[None, :], len(rows), axis=0), np.ascontiguousarray(seeds), times)
    matched = leading_equal_bits(goldens, target_word(table.column("target_token_id").to_numpy()))
    candidates = tuple(
        Candidate(
            row=int(rows[k]),
            partition=table.column("partition")[k].as_py(),
            source_file=table.column("source_file")[k].as_py(),
            chunk_id=table.column("chunk_id")[k].as_py(),
            window_end=table.column("window_end")[k].as_py(),
            target_token_id=table.column("target_token_id")[k].as_py(),
            golden=int(goldens[k]),
            matched_bits=int(matched[k]),
            header_time=int(times[k]),
        )
        for k in range(len(rows))
    )
    tokens = tuple(dict.fromkeys(c.token_id for c in candidates if c.solves))
    return Prediction(
        slots=tuple(int(w) for w in words),
        bundle_version=bundle.version,
        candidates=candidates,
        token_ids=tokens,
        backend=backend,
    )


def predict_row(bundle: Bundle, row: int, evaluate_rows: RowEvaluator, *, backend: str = "") -> Prediction:
    """:func:`predict` for the frame stored in bundle row ``row`` (0-based)."""
    if not 0 <= row < bundle.num_rows:
        raise PredictInputError(f"frame index {row} outside the bundle's {bundle.num_rows} rows")
    return predict(bundle, bundle.slots()[row], evaluate_rows, backend=backend)


__all__ = [
    "Candidate",
    "Prediction",
    "RowEvaluator",
    "candidate_rows",
    "frame_slots",
    "predict",
    "predict_row",
]
