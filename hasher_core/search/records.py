"""What the seed search records (DESIGN §4.5–4.6): a finished frame, the store protocol it is committed
through, the progress reports a user watches, the history behind the plot, and the per-row results.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hasher_core.design import HASHES_PER_EVALUATION, SEED_BYTES
from hasher_core.rate_log import format_duration


@dataclass(frozen=True)
class FinishedFrame:
    """One finished frame (solved or out of generations): its best seed and how it scores (DESIGN §4.5)."""

    fingerprint: str
    best_seed: bytes
    golden: int
    matched_bits: int
    hamming: int
    reward: float
    generations: int
    evaluations: int
    solved: bool

    def __post_init__(self) -> None:
        if len(self.best_seed) != SEED_BYTES:
            raise ValueError(f"frame {self.fingerprint}: best_seed must be {SEED_BYTES} bytes")


class ProgressStore(Protocol):
    """Where finished frames are committed as they finish, keyed by fingerprint (DESIGN §4.6).

    The embedded implementation is SQLite: ``hasher_resources.progress_store.SqliteProgressStore``.
    """

    def get_many(self, fingerprints: list[str]) -> dict[str, FinishedFrame]:
        """The stored results among ``fingerprints`` (missing ones are absent)."""
        ...

    def put_many(self, results: list[FinishedFrame]) -> None:
        """Commit finished frames durably, in one transaction."""
        ...


@dataclass(frozen=True)
class SearchProgress:
    """One progress report: what a user watching the run wants to see."""

    frames_done: int
    frames_total: int
    solved: int
    frames_from_store: int
    evaluations: int  # run by this process
    evaluations_per_s: float
    elapsed_s: float
    eta_s: float | None

    def line(self) -> str:
        """``"seeds: 120/512 frames (23.4%), 97 solved, 1.2e+07 evaluations at 310,000/s, ETA 7m02s"``."""
        pct = 100.0 * self.frames_done / self.frames_total if self.frames_total else 100.0
        eta = "?" if self.eta_s is None else format_duration(self.eta_s)
        return (
            f"seeds: {self.frames_done:,}/{self.frames_total:,} frames ({pct:.1f}%), {self.solved:,} solved, "
            f"{self.evaluations:,} evaluations at {self.evaluations_per_s:,.0f}/s, ETA {eta}"
        )


@dataclass
class SearchHistory:
    """The series behind the run's plot.

    Per generation index g (over the frames that reached it): the mean of the population's mean
    reward and of its best reward. Over time: frames done and solved after each sample.
    """

    frames_total: int = 0
    generation_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    generation_mean_reward: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    generation_best_reward: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    elapsed_s: list[float] = field(default_factory=list)
    frames_done: list[int] = field(default_factory=list)
    solved: list[int] = field(default_factory=list)

    def set_generations(self, frames: np.ndarray, sum_mean: np.ndarray, sum_best: np.ndarray) -> None:
        """Per generation index: frames that reached it and the sums of their mean and best
        rewards (trailing generations no frame reached are dropped)."""
        size = int(np.flatnonzero(frames)[-1]) + 1 if frames.any() else 0
        self.generation_frames = frames[:size].copy()
        seen = np.maximum(self.generation_frames, 1)
        self.generation_mean_reward = sum_mean[:size] / seen
        self.generation_best_reward = sum_best[:size] / seen

    @property
    def solved_fraction(self) -> np.ndarray:
        total = max(self.frames_total, 1)
        return np.asarray(self.solved, dtype=np.float64) / total


@dataclass
class SearchResults:
    """Per input row (duplicates fanned out), columnar; plus what the run did.

    ``evaluations``/``generations`` are each frame's own search cost (a duplicate row repeats its
    twin's numbers); ``run_evaluations`` is what this process actually ran.
    """

    fingerprint: np.ndarray  # str[F]
    best_seed: np.ndarray  # uint8[F, 32]
    golden: np.ndarray  # uint32[F]
    matched_bits: np.ndarray  # uint8[F]
    hamming: np.ndarray  # uint8[F], Hamming distance golden vs target
    reward: np.ndarray  # float32[F]
    generations: np.ndarray  # int32[F]
    evaluations: np.ndarray  # int64[F]
    solved: np.ndarray  # bool[F]
    from_store: np.ndarray  # bool[F]: taken from the progress store, not searched in this run
    difficulty_bits: int
    unique_frames: int
    frames_searched: int
    run_evaluations: int
    kernel_seconds: float
    wall_seconds: float
    history: SearchHistory

    def __len__(self) -> int:
        return len(self.golden)

    def rows(self, part: slice) -> SearchResults:
        """The results of the input rows ``part`` (one partition's slice of a search over several):
        its rows and distinct frames; the run's figures (evaluations, seconds, history) stay the
        whole search's."""
        per_row = ("fingerprint", "best_seed", "golden", "matched_bits", "hamming", "reward", "generations")
        per_row += ("evaluations", "solved", "from_store")
        fingerprints, searched = self.fingerprint[part], ~self.from_store[part]
        return dataclasses.replace(
            self,
            unique_frames=len(set(fingerprints.tolist())),
            frames_searched=len(set(fingerprints[searched].tolist())),
            **{name: getattr(self, name)[part] for name in per_row},
        )

    def note(self, max_generations: int) -> str | None:
        """What a user should know when the run found nothing to keep: no frames at all (an empty
        partition, DESIGN §3.2), or no frame solved within ``max_generations``; None otherwise."""
        if not len(self):
            return (
                "no seeds: the partition has no frames (see training_frames' note), so nothing was searched"
            )
        if not self.solved.any():
            return (
                f"no frame solved at {self.difficulty_bits} bits within {max_generations} generations: "
                "every row keeps its best seed, unsolved"
            )
        return None

    def summary(self) -> dict[str, float | int]:
        """The run's figures, the one source for the ``seeds`` asset's metadata and the search CLI's
        summary. Rows (``frames``, ``frames_from_store``) and distinct frames (``unique_frames_*``)
        are counted apart; so are the two kinds of
        evaluations: ``evaluations_this_run`` is what this process ran (the rates divide it), and
        ``evaluations_all_frames`` is what every distinct frame's seed cost, in this run or in the
        run that stored it. ``search_efficiency`` is the share of the wall time spent in the kernel."""
        n = len(self)
        wall = max(self.wall_seconds, 1e-9)
        kernel = max(self.kernel_seconds, 1e-9)
        _, first_rows = np.unique(self.fingerprint, return_index=True)
        rate = self.run_evaluations / wall
        return {
            "frames": n,
            "frames_from_store": int(self.from_store.sum()),
            "unique_frames": self.unique_frames,
            "unique_frames_searched": self.frames_searched,
            "unique_frames_from_store": self.unique_frames - self.frames_searched,
            "solved": int(self.solved.sum()),
            "solved_pct": round(100.0 * float(self.solved.mean()), 2) if n else 0.0,
            "difficulty_bits": self.difficulty_bits,
            "evaluations_this_run": int(self.run_evaluations),
            "evaluations_all_frames": int(self.evaluations[first_rows].sum()),
            "mean_generations": round(float(self.generations.mean()), 2) if n else 0.0,
            "evaluations_per_s": round(rate, 1),
            "double_sha256_per_s": round(HASHES_PER_EVALUATION * rate, 1),
            "kernel_evaluations_per_s": round(self.run_evaluations / kernel, 1),
            "search_efficiency": round(self.kernel_seconds / wall, 3) if self.run_evaluations else 0.0,
            "seconds": round(self.wall_seconds, 3),
        }
