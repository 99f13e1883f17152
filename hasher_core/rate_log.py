"""Progress lines with rate and ETA at a steady cadence, for any long loop.

Assets pass their Dagster logger's ``info``; CLI tools pass ``print`` or a tqdm bar's ``write``.
The reporter never logs more often than ``every_s`` seconds, except for the final line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


def format_duration(seconds: float) -> str:
    """``93.4`` → ``"1m33s"``; ``None``-like infinities → ``"?"``."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass
class RateReporter:
    """Logs ``"<what>: done/total (pct) at R <unit>/s, ETA …"`` no more often than ``every_s``."""

    what: str
    total: int | None
    log: Callable[[str], None]
    unit: str = "items"
    every_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _start: float = field(init=False)
    _last: float = field(init=False)

    def __post_init__(self) -> None:
        self._start = self._last = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self._start

    def line(self, done: int, extra: str = "") -> str:
        elapsed = max(self.elapsed(), 1e-9)
        rate = done / elapsed
        if self.total:
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            head = f"{self.what}: {done:,}/{self.total:,} {self.unit} ({100 * done / self.total:.1f}%)"
            tail = f", ETA {format_duration(eta)}"
        else:
            head, tail = f"{self.what}: {done:,} {self.unit}", ""
        return f"{head} at {rate:,.0f} {self.unit}/s{tail}" + (f"; {extra}" if extra else "")

    def update(self, done: int, extra: str = "", *, force: bool = False) -> None:
        now = self.clock()
        if force or now - self._last >= self.every_s:
            self._last = now
            self.log(self.line(done, extra))

    def finish(self, done: int, extra: str = "") -> None:
        self.update(done, extra, force=True)
