"""Stage 3 (DESIGN §4): the seed search. ``config``: the knobs; ``reward``: the numpy specification of
a generation; ``fused`` / ``fused_math``: its compiled twin; ``loop``: ``search_frames``; ``records``:
what it produces; ``results``: frames in, seeds out, and the plot."""

from .config import STRATEGIES, SearchConfig
from .loop import Evaluator, check_frames, frame_fingerprint, frame_fingerprints, search_frames
from .records import FinishedFrame, FrameStore, SearchHistory, SearchProgress, SearchResults
from .results import attach_results, search_plot_png, validate_frames_table

__all__ = [
    "STRATEGIES",
    "Evaluator",
    "FinishedFrame",
    "FrameStore",
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
