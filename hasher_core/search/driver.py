"""Search drivers: who runs the generations of ``search_frames`` (DESIGN §4.4–4.6).

``search_frames`` owns what does not depend on where the generations run: deduplication,
fingerprints, the progress store, progress reports, the per-row results. By default it runs the
host loop (``loop._run``: one kernel call per generation, selection and mutation on the CPU). A
:class:`SearchDriver` replaces that loop with one that runs many generations per call elsewhere, e.g.
the device-resident search of the ``cuda`` backend (``hasher_resources.sha256.device_search``).

A driver gets the frames still to search (:class:`PendingFrames`: slots, target words, the stream
keys of ``loop.frame_key``) and reports through a :class:`SearchSink`: finished frames as soon as it
has them (they are committed to the store at once), the evaluations it ran, and at the end the
per-generation history. It must give every frame exactly the seed, golden, generations and
evaluations the host loop gives: a frame's result may not depend on the driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .config import SearchConfig
from .records import FinishedFrame, SearchHistory

#: Seconds between two time samples of the history (frames done / solved over time).
SAMPLE_EVERY_S = 0.25


@dataclass(frozen=True)
class PendingFrames:
    """The distinct frames a driver must search, in the order they should start.

    ``slots`` uint32[n, 12]; ``target_words`` uint32[n] (``token << 15``, DESIGN §4.3); ``keys``
    uint64[n], each frame's stream key (``loop.frame_key``); ``fingerprints`` str[n].
    """

    slots: np.ndarray
    target_words: np.ndarray
    keys: np.ndarray
    fingerprints: list[str]

    def __len__(self) -> int:
        return len(self.fingerprints)


class SearchSink:
    """Where a driver reports: ``search_frames`` builds one per run.

    ``finish(results, positions)`` records frames (positions index :class:`PendingFrames`) and
    commits them to the store; ``report(force)`` emits a progress line when one is due.
    """

    def __init__(
        self,
        finish: Callable[[list[FinishedFrame], list[int]], None],
        report: Callable[[bool], None],
        history: SearchHistory,
        stats: dict,
        clock: Callable[[], float],
        start: float,
    ) -> None:
        self._finish, self._report, self._history = finish, report, history
        self._stats, self._clock, self._start = stats, clock, start
        self._last_sample = -1.0

    def finished(self, positions: list[int], results: list[FinishedFrame]) -> None:
        """Frames that finished (solved or out of generations), committed to the store now."""
        if results:
            self._finish(results, positions)

    def evaluated(self, evaluations: int, kernel_seconds: float) -> None:
        """Evaluations run (this process) and the seconds the device or kernel took for them."""
        self._stats["evals"] += int(evaluations)
        self._stats["kernel_s"] += float(kernel_seconds)

    def tick(self) -> None:
        """After each unit of work: a time sample for the plot, and a progress report when due."""
        now = self._clock() - self._start
        if now - self._last_sample >= SAMPLE_EVERY_S:
            self._last_sample = now
            self._history.elapsed_s.append(now)
            self._history.frames_done.append(self._stats["done"])
            self._history.solved.append(self._stats["solved"])
        self._report(False)

    def set_history(self, frames: np.ndarray, sum_mean: np.ndarray, sum_best: np.ndarray) -> None:
        """Per generation index: frames that reached it and the sums of their mean and best rewards."""
        self._history.set_generations(frames, sum_mean, sum_best)


class SearchDriver(Protocol):
    """Runs the generations of a search somewhere other than the host loop."""

    def run(self, config: SearchConfig, frames: PendingFrames, sink: SearchSink) -> None:
        """Search every frame of ``frames`` under ``config`` (validated), reporting to ``sink``."""
        ...
