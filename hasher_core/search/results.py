"""Frames in and seeds out for the search (DESIGN §3.5, §4.5), and the run's plot.

``validate_frames_table`` is the boundary where frames enter the search: a missing or wrong-width
slot column, a null, or a token id outside the vocabulary is a :class:`FramesInputError` naming the
column or row. ``attach_results`` lays every result column onto the frames, ``fingerprint``
included, so whoever runs the search (the asset or the CLI) writes seeds a bundle can take.
``search_plot_png`` draws fitness per generation and solved fraction over time with matplotlib's Agg
canvas (no pyplot global state, safe inside a Dagster worker) and returns the PNG's bytes.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from hasher_core.design import SEED_BYTES, SLOT_COUNT
from hasher_core.errors import FramesInputError
from hasher_core.header import golden_token
from hasher_core.schemas import RESULT_COLUMNS, SLOT_COLUMNS, TARGET_COLUMN

from .loop import check_frames

if TYPE_CHECKING:
    from .config import SearchConfig
    from .records import SearchHistory, SearchResults


def _column_values(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise FramesInputError(f"column {name!r} has {column.null_count} null(s), the first at row {first}")
    return column.to_numpy()


def validate_frames_table(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Check the frame columns and return ``(slots uint32[N, 12], targets uint32[N])``.

    Slots must be the 12 ``asic_slot_k`` int32 columns (the uint32 bit-cast, DESIGN §3.5);
    ``target_token_id`` an integer column with every id in ``[0, VOCABULARY_SIZE)``.
    """
    names = set(table.column_names)
    missing = [c for c in (*SLOT_COLUMNS, TARGET_COLUMN) if c not in names]
    if missing:
        raise FramesInputError(f"frames table is missing column(s) {missing}")
    slots = np.empty((table.num_rows, SLOT_COUNT), dtype=np.uint32)
    for k, name in enumerate(SLOT_COLUMNS):
        kind = table.schema.field(name).type
        if kind != pa.int32():
            raise FramesInputError(f"column {name!r} must be int32 (the uint32 slot bit-cast), got {kind}")
        slots[:, k] = _column_values(table, name).view(np.uint32)
    kind = table.schema.field(TARGET_COLUMN).type
    if not pa.types.is_integer(kind):
        raise FramesInputError(f"column {TARGET_COLUMN!r} must be an integer column, got {kind}")
    return check_frames(slots, _column_values(table, TARGET_COLUMN).astype(np.int64))


def attach_results(
    frames: pa.Table, results: SearchResults, config: SearchConfig, kernel_backend: str
) -> pa.Table:
    """The frames with ``best_seed`` filled and the DESIGN §4.5 result columns appended.

    ``best_seed`` keeps its place when the frames already have the (null) column.
    """
    n = frames.num_rows
    if len(results) != n:
        raise ValueError(f"{len(results)} results for {n} frames")
    flat = pa.py_buffer(np.ascontiguousarray(results.best_seed).tobytes())
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * SEED_BYTES).tobytes())
    best_seed = pa.Array.from_buffers(pa.binary(), n, [None, offsets, flat])
    if "best_seed" in frames.column_names:
        frames = frames.set_column(frames.column_names.index("best_seed"), "best_seed", best_seed)
    else:
        frames = frames.append_column("best_seed", best_seed)
    for name in RESULT_COLUMNS:
        if name in frames.column_names:
            frames = frames.drop_columns([name])
    columns = {
        "golden": pa.array(results.golden, pa.uint32()),
        "matched_bits": pa.array(results.matched_bits, pa.uint8()),
        "hamming": pa.array(results.hamming, pa.uint8()),
        "reward": pa.array(results.reward, pa.float32()),
        "generations": pa.array(results.generations, pa.int32()),
        "evaluations": pa.array(results.evaluations, pa.int64()),
        "difficulty_bits": pa.array(np.full(n, config.difficulty_bits, np.int32)),
        "solved": pa.array(results.solved, pa.bool_()),
        "header_time": pa.array(np.full(n, config.header_time, np.int64)),
        "kernel_backend": pa.array([kernel_backend] * n, pa.string()).dictionary_encode(),
        "fingerprint": pa.array(results.fingerprint.tolist(), pa.string()),
        "predicted_token_id": pa.array(golden_token(results.golden).astype(np.int32), pa.int32()),
    }
    for name, values in columns.items():
        frames = frames.append_column(name, values)
    return frames


def search_plot_png(history: SearchHistory) -> bytes:
    """A PNG (bytes): reward per generation (population mean and best) and solved fraction over time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    gens = np.arange(len(history.generation_frames))
    left.plot(gens, history.generation_best_reward, label="best in population")
    left.plot(gens, history.generation_mean_reward, label="population mean")
    left.set_xlabel("generation")
    left.set_ylabel("reward (mean over frames)")
    left.set_title("fitness per generation")
    left.legend(loc="lower right")
    right.plot(history.elapsed_s, history.solved_fraction, drawstyle="steps-post")
    right.set_xlabel("seconds since start")
    right.set_ylabel("solved fraction")
    right.set_ylim(0, 1)
    right.set_title(f"solved over time ({history.frames_total} frames)")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
