"""Stage 3 (DESIGN §4): the seed search. ``config``: the knobs; ``reward``: the numpy specification of
a generation; ``fused`` / ``fused_math``: its compiled twin; ``loop``: ``search_frames``; ``records``:
what it produces; ``results``: frames in, seeds out, and the plot."""

from typing import Any

from .config import STRATEGIES, SearchConfig
from .loop import Evaluator, check_frames, frame_fingerprint, frame_fingerprints, search_frames
from .records import FinishedFrame, ProgressStore, SearchHistory, SearchProgress, SearchResults

_RESULTS = ("attach_results", "search_plot_png", "validate_frames_table")


def __getattr__(name: str) -> Any:
    # ``results`` needs pyarrow and matplotlib, imported on first use: the search itself runs on a
    # GPU check machine that has only numpy, Numba and CuPy (scripts/gpu_check.sh).
    if name in _RESULTS:
        from . import results

        return getattr(results, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "STRATEGIES",
    "Evaluator",
    "FinishedFrame",
    "ProgressStore",
    "SearchConfig",
    "SearchHistory",
    "SearchProgress",
    "SearchResults",
    "attach_results",
    "check_frames",
    "frame_fingerprint",
    "frame_fingerprints",
    "search_frames",
    "search_plot_png",
    "validate_frames_table",
]
