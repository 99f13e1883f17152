"""The inference index of a bundle (DESIGN §6.1): what a deployed model looks contexts up in, built
once when the bundle is built and stored beside the seed table as ``.npy`` arrays that a reader
memory-maps, so opening a model rebuilds nothing and touches only the pages a question needs.

A *frame* here is one distinct slot vector of the seed table (rows sharing slots are one context
seen with several next tokens). The index answers three questions:

- **Which frame has exactly these slots?** A sorted table of 64-bit slot hashes, searched from
  where the hash would sit (the hashes are uniform; a bisection finishes the search); the slots of
  the frame found are compared word for word.
- **Which row answers a frame?** The most frequent target among its rows, ties to the first row in
  source (bundle) order, a solved row of that target when there is one. The answering row's seed,
  header time, source, chunk and whether it ends its chunk are stored per frame.
- **Which frame is nearest?** Euclidean distance over the 24 dequantised features, exactly the
  answer a scan of every frame in float32 gives (DESIGN §6.1), ties to the first frame in source
  order. The dequantisation ``(q + 32768) / 65535`` is one affine map for every feature, so the
  order of distances is the order of integer distances over the quantised features ``q``. The
  search prunes with bounds that never exclude the answer:

  1. the features are rotated onto their principal axes (PCA, fitted at build time); frames are
     grouped into cells by their first ``GRID_AXES`` rotated coordinates (quantile bins), each cell
     keeping the box its frames span. Cells are visited nearest box first and a cell whose box is
     farther than the best distance so far (plus the margin below) is never opened;
  2. inside a cell each frame has its first ``SCAN_AXES`` rotated coordinates as int8 codes: one
     multiply-add per code gives ``|y_q - ŷ|``, and ``|y_q - ŷ| - |y - ŷ|_max`` is a lower bound of
     the true distance (the rotation preserves distances; ``|y - ŷ|_max`` is the largest coding
     error of any frame, measured at build time);
  3. frames that survive get their exact integer distance.

  Every frame within ``margin`` of the best integer distance is returned, and the caller measures
  those few in float32 exactly as a scan of every frame would; the margin is many times the float32
  rounding of a distance, so the float32 minimum, and its first-in-source-order tie, is among them.

  A query near trained text opens a few cells (~0.3 ms at a million frames); one far from all of it
  (an unrelated prompt) opens most of them, and then the int8 pass over every frame is the cost
  (~2 ms on one core): the features are high-dimensional enough that no partition of them prunes
  such a query, which is why that pass is made cheap rather than avoided.

Layering: this module builds arrays and serialises them to bytes; the model
(``hasher_core.inference.model``) asks the questions; the deployment store
(``hasher_resources.deploy.bundle_files``) writes the files and maps them back from disk.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pyarrow as pa

from hasher_core import design
from hasher_core.errors import BundleFormatError
from hasher_core.jit import njit
from hasher_core.threads import run_serial

from .rows import seeds_array, slots_array

#: Version of the on-disk index; a reader refuses another one and says what to do.
INDEX_FORMAT = "hasher-index-v1"
#: The index's files in a bundle directory (``index.json`` holds the parameters and the sources).
PARAMS_FILE = "index.json"
ARRAY_FILES = {
    "slots": "index-slots.npy",  # uint32[F, 12], frames in scan (cell) order
    "answer": "index-answer.npy",  # ANSWER_DTYPE[F]: the answering row of each frame
    "hashes": "index-hashes.npy",  # uint64[F], slot hashes sorted ascending
    "hash_frames": "index-hash-frames.npy",  # int32[F], the frame of each sorted hash
    "codes": "index-codes.npy",  # int8[SCAN_AXES, F], rotated coordinates, column-major
    "norm2": "index-norm2.npy",  # float32[F], squared norm of each frame's decoded codes
    "cell_start": "index-cell-start.npy",  # int64[C + 1], frames of cell c: [start[c], start[c+1])
    "cell_box": "index-cell-box.npy",  # float64[C, 2, GRID_AXES], low and high corner of each cell
    "cell_ball": "index-cell-ball.npy",  # float64[C, SCAN_AXES + 1], each cell's centre and radius
    "row_place": "index-row-place.npy",  # ROW_DTYPE[N]: where each row of the seed table is in its text
    "frame_rows": "index-frame-rows.npy",  # int32[N], the rows of each frame, frame by frame
    "frame_row_start": "index-frame-row-start.npy",  # int64[F + 1], frame f's: [start[f], start[f+1])
}
INDEX_FILES = (PARAMS_FILE, *ARRAY_FILES.values())

#: What answers a frame: its answering row and that row's seed, header time and place in the text.
ANSWER_DTYPE = np.dtype(
    [
        ("rank", "<i4"),  # the frame's position in source (bundle) order: the tie rule
        ("row", "<i8"),  # the answering row of the seed table
        ("rows", "<i4"),  # rows sharing the frame's slots
        ("ambiguous", "?"),  # whether those rows have different targets
        ("seed", "u1", (design.SEED_BYTES,)),
        ("header_time", "<i8"),
        ("window_end", "<i4"),
        ("chunk_id", "<i4"),
        ("source", "<i4"),  # index into the sources list
        ("chunk_end", "?"),  # the answering row is the last frame of its chunk
        ("target", "<i4"),  # the answering row's trained token
        ("solved", "?"),  # its search solved it
        ("difficulty", "u1"),  # the bits it was searched at
    ]
)
#: Where a row of the seed table is in its text: what tells a recitation's next frame (the model's
#: ``_continues``) and where a chunk ends.
ROW_DTYPE = np.dtype(
    [("source", "<i4"), ("chunk_id", "<i4"), ("window_end", "<i4"), ("chunk_end", "?"), ("pad", "u1", (3,))]
)

#: Rotated coordinates coded per frame for the lower bound (measured at 1 M frames: 16 prunes about
#: as well as 24 for two thirds of the work; 8 or 12 leave too many frames to measure exactly), and
#: those the cells are cut along.
SCAN_AXES = 16
GRID_AXES = 4
#: Frames per cell the grid aims at, and the most bins along one axis: large cells keep the
#: per-frame loop long (SIMD lanes full), fine ones prune more; measured at 1 M frames.
CELL_FRAMES = 1024
MAX_BINS = 5
#: Distances within ``MARGIN_ABS + MARGIN_REL * best`` (integer feature units) of the best are
#: returned to be measured in float32: the float32 distance's rounding is below 0.04 + 3e-6 × best.
MARGIN_ABS = 2.0
MARGIN_REL = 1e-4


@njit(cache=True)
def _slot_hashes(slots):  # pragma: no cover - compiled
    out = np.empty(slots.shape[0], np.uint64)
    for r in range(slots.shape[0]):
        h = np.uint64(0x9E3779B97F4A7C15)
        for k in range(slots.shape[1]):
            h = (h ^ np.uint64(slots[r, k])) * np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
        h ^= h >> np.uint64(32)
        h *= np.uint64(0xD6E8FEB86659FD93)
        h ^= h >> np.uint64(32)
        out[r] = h
    return out


def slot_hashes(slots: np.ndarray) -> np.ndarray:
    """A 64-bit hash (uint64[N]) of each row of slots uint32[N, 12]: equal slots, equal hashes."""
    return _slot_hashes(np.ascontiguousarray(slots, np.uint32))


@njit(cache=True)
def _first_at_least(hashes, h):  # pragma: no cover - compiled
    """The first position whose hash is >= ``h`` (``np.searchsorted``). Slot hashes are uniform, so
    the search starts where ``h`` would sit and gallops from there: a lookup touches a page or two
    of a memory-mapped table, not the ~20 of a bisection."""
    n = hashes.shape[0]
    if n == 0:
        return 0
    guess = min(n - 1, np.int64(np.float64(h) / 18446744073709551616.0 * n))
    lo, hi = 0, n
    step = 1
    if hashes[guess] < h:
        lo = guess + 1
        while lo + step - 1 < n and hashes[lo + step - 1] < h:
            lo += step
            step *= 2
        hi = min(n, lo + step)
    else:
        hi = guess
        while hi - step >= 0 and hashes[hi - step] >= h:
            hi -= step
            step *= 2
        lo = max(0, hi - step + 1)
    while lo < hi:
        mid = (lo + hi) // 2
        if hashes[mid] < h:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _lookup(slots, hashes, hash_frames, frame_slots, query_hashes):  # pragma: no cover - compiled
    out = np.full(slots.shape[0], -1, np.int64)
    for r in range(slots.shape[0]):
        h = query_hashes[r]
        i = _first_at_least(hashes, h)
        while i < hashes.shape[0] and hashes[i] == h:
            f = hash_frames[i]
            same = True
            for k in range(slots.shape[1]):
                if frame_slots[f, k] != slots[r, k]:
                    same = False
                    break
            if same:
                out[r] = f
                break
            i += 1
    return out


@njit(cache=True)
def _features_of(words, out):  # pragma: no cover - compiled
    # hasher_core.frames.windows.unpack_slots for one row: even features in the high half.
    for k in range(words.shape[0]):
        w = np.int64(words[k])
        hi = (w >> 16) & 0xFFFF
        lo = w & 0xFFFF
        out[2 * k] = hi - 65536 if hi >= 32768 else hi
        out[2 * k + 1] = lo - 65536 if lo >= 32768 else lo


@njit(cache=True)
def _nearest_candidates(
    frame_slots,
    codes,
    norm2,
    cell_start,
    cell_box,
    cell_ball,
    q,
    yq,
    weights,
    yq2,
    full_yq,
    error_norm,
    slack,
    margin_abs,
    margin_rel,
):  # pragma: no cover - compiled
    """Frames (scan positions, int64[M]) within the margin of the least integer distance to ``q``.

    ``slack`` is the float32 rounding allowed on each frame's sum (see ``InferenceIndex.nearest``)."""
    cells = cell_start.shape[0] - 1
    grid = cell_box.shape[2]
    axes = codes.shape[0]
    box_lb = np.empty(cells)
    for c in range(cells):
        if cell_start[c + 1] == cell_start[c]:
            box_lb[c] = np.inf
            continue
        s = 0.0
        for d in range(grid):
            x = yq[d]
            if x < cell_box[c, 0, d]:
                t = cell_box[c, 0, d] - x
                s += t * t
            elif x > cell_box[c, 1, d]:
                t = x - cell_box[c, 1, d]
                s += t * t
        # The ball around the cell's centre holding its frames: |y_q - centre| - radius, over every
        # coded axis (the box is over the grid's few): what prunes a query far from everything.
        t = 0.0
        for d in range(cell_ball.shape[1] - 1):
            g = full_yq[d] - cell_ball[c, d]
            t += g * g
        t = np.sqrt(t) - cell_ball[c, cell_ball.shape[1] - 1] - error_norm
        if t > 0 and t * t > s:
            s = t * t
        box_lb[c] = s
    order = np.argsort(box_lb)
    largest = 0
    for c in range(cells):
        largest = max(largest, cell_start[c + 1] - cell_start[c])
    acc = np.empty(largest, np.float32)
    survivors = np.empty(largest, np.int64)
    features = np.empty(frame_slots.shape[1] * 2, np.int64)
    best = np.int64(1) << np.int64(62)
    reach = np.inf  # bound on the distance of any frame still wanted: best + margin
    cand_pos = np.empty(64, np.int64)
    cand_d = np.empty(64, np.int64)
    found = 0
    for k in range(cells):
        c = order[k]
        if box_lb[c] > reach * reach * (1.0 + 1e-9) + 1.0:
            break
        a, b = cell_start[c], cell_start[c + 1]
        m = b - a
        n2 = norm2[a:b]
        if axes == SCAN_AXES:  # the trip count known when compiled: each sum stays in a register
            block = codes[:, a:b]
            for i in range(m):
                s = n2[i]
                for d in range(SCAN_AXES):
                    s += weights[d] * np.float32(block[d, i])
                acc[i] = s
        else:
            for i in range(m):
                acc[i] = n2[i]
            for d in range(axes):
                row = codes[d, a:b]
                w = weights[d]
                for i in range(m):
                    acc[i] += w * np.float32(row[i])
        # |y_q - ŷ| is at most |y_q - y| + |y - ŷ|: a frame is wanted only if |y_q - ŷ| - error
        # <= reach. Survivors are collected without branches (whether one passes is unpredictable).
        bound = (reach + error_norm) ** 2
        limit = np.float32(min(bound + slack - yq2, 3e38))
        passed = 0
        for i in range(m):
            survivors[passed] = a + i
            passed += acc[i] <= limit
        for j in range(passed):
            f = survivors[j]
            _features_of(frame_slots[f], features)
            dist = np.int64(0)
            for t in range(features.shape[0]):
                g = features[t] - q[t]
                dist += g * g
            if dist < best:
                best = dist
                root = np.sqrt(np.float64(best))
                reach = root + margin_abs + margin_rel * root
            if np.float64(dist) <= reach * reach:
                if found == cand_pos.shape[0]:
                    cand_pos = np.concatenate((cand_pos, np.empty(found, np.int64)))
                    cand_d = np.concatenate((cand_d, np.empty(found, np.int64)))
                cand_pos[found] = f
                cand_d[found] = dist
                found += 1
    keep = 0
    for i in range(found):
        if np.float64(cand_d[i]) <= reach * reach:
            cand_pos[keep] = cand_pos[i]
            keep += 1
    return cand_pos[:keep].copy()


def dequantised(slots: np.ndarray) -> np.ndarray:
    """The 24 features a frame's slots hold (DESIGN §3.4), back in the sigmoid's [0, 1]: float32[N, 24]."""
    from hasher_core.frames.windows import unpack_slots

    return (unpack_slots(slots).astype(np.float32) + np.float32(32768.0)) / np.float32(65535.0)


@dataclass(frozen=True)
class InferenceIndex:
    """The arrays of :data:`ARRAY_FILES` (numpy arrays or memory maps) and the parameters.

    ``answer`` may be anything indexed like an array of :data:`ANSWER_DTYPE` records by a position
    or an array of them (the deployment store reads records from disk one question at a time)."""

    params: Mapping[str, Any]
    slots: np.ndarray
    answer: np.ndarray
    hashes: np.ndarray
    hash_frames: np.ndarray
    codes: np.ndarray
    norm2: np.ndarray
    cell_start: np.ndarray
    cell_box: np.ndarray
    cell_ball: np.ndarray
    row_place: np.ndarray
    frame_rows: np.ndarray
    frame_row_start: np.ndarray

    @property
    def frames(self) -> int:
        """Distinct slot vectors deployed."""
        return int(self.slots.shape[0])

    @property
    def sources(self) -> list[str]:
        """Source file names; ``answer["source"]`` indexes this list."""
        return list(self.params["sources"])

    def lookup(self, slots: np.ndarray) -> np.ndarray:
        """The frame (scan position, int64[N]) with exactly each row of ``slots`` uint32[N, 12]; -1
        where none has."""
        slots = np.ascontiguousarray(slots, np.uint32).reshape(-1, design.SLOT_COUNT)
        return _lookup(slots, self.hashes, self.hash_frames, self.slots, slot_hashes(slots))

    def rows_of(self, frame: int) -> np.ndarray:
        """The rows of the seed table (int64[k], ascending) whose slots are frame ``frame``'s."""
        lo, hi = (int(x) for x in self.frame_row_start[np.array([frame, frame + 1])])
        return np.asarray(self.frame_rows[np.arange(lo, hi)], np.int64)

    def place(self, row: int) -> np.void:
        """Where row ``row`` of the seed table is in its text (a :data:`ROW_DTYPE` record)."""
        return self.row_place[int(row)]

    def nearest(self, words: np.ndarray) -> tuple[int, float]:
        """The frame nearest to slots ``words`` uint32[12] over the dequantised features and its
        float32 distance: the least of ``norm(features - f)`` over every frame, ties to the first
        frame in source order (what a scan of every frame with ``np.argmin`` answers)."""
        words = np.ascontiguousarray(words, np.uint32).reshape(design.SLOT_COUNT)
        from hasher_core.frames.windows import unpack_slots

        q = unpack_slots(words[None, :])[0].astype(np.int64)
        mean = np.asarray(self.params["mean"], np.float64)
        axes = np.asarray(self.params["axes"], np.float64)
        scale = np.asarray(self.params["scale"], np.float64)
        yq = (q - mean) @ axes
        weights = (-2.0 * yq * scale).astype(np.float32)
        yq2 = float(yq @ yq)
        # float32 rounding of |ŷ|^2 - 2 y_q·ŷ, bounded from the magnitudes of its terms.
        slack = (
            4e-7 * (float(self.params["max_norm2"]) + 127.0 * float(np.abs(weights).sum())) * (len(scale) + 2)
            + 1e-6 * yq2
        )
        candidates = _nearest_candidates(
            self.slots,
            self.codes,
            self.norm2,
            self.cell_start,
            self.cell_box,
            self.cell_ball,
            q,
            yq[: self.cell_box.shape[2]].copy(),
            weights,
            yq2,
            yq,
            float(self.params["error_norm"]),
            slack,
            MARGIN_ABS,
            MARGIN_REL,
        )
        # The float32 distance a scan of every frame measures, on the few frames within the margin.
        gaps = np.linalg.norm(dequantised(self.slots[candidates]) - dequantised(words[None, :])[0], axis=1)
        ties = np.flatnonzero(gaps == gaps.min())
        pick = ties[np.argmin(self.answer[candidates[ties]]["rank"])]
        return int(candidates[pick]), float(gaps[pick])

    def files(self) -> dict[str, bytes]:
        """The index as bundle files: ``{file name: bytes}`` (``.npy`` arrays and ``index.json``)."""
        out = {PARAMS_FILE: (json.dumps(dict(self.params), sort_keys=True) + "\n").encode()}
        for name, file in ARRAY_FILES.items():
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(getattr(self, name)), allow_pickle=False)
            out[file] = buf.getvalue()
        return out

    @classmethod
    def from_files(cls, files: Mapping[str, bytes | np.ndarray], where: str) -> InferenceIndex:
        """The index from its files: bytes (read into memory) or arrays (e.g. ``np.load(mmap_mode="r")``).

        Raises :class:`BundleFormatError` naming the file (under ``where``) that is missing, of
        another index format, or whose shape or dtype disagrees with the parameters.
        """
        raw = files.get(PARAMS_FILE)
        if raw is None:
            raise BundleFormatError(f"{where}/{PARAMS_FILE}", "missing")
        try:
            params = json.loads(raw) if isinstance(raw, bytes | bytearray) else dict(raw)
            frames, rows = int(params["frames"]), int(params["rows"])
        except (ValueError, KeyError, TypeError) as e:
            raise BundleFormatError(f"{where}/{PARAMS_FILE}", f"not valid index parameters ({e!r})") from None
        if params.get("format") != INDEX_FORMAT:
            raise BundleFormatError(
                f"{where}/{PARAMS_FILE}",
                f"index format {params.get('format')!r}, this release reads {INDEX_FORMAT!r}: redeploy the "
                "bundle (materialise `deployment` again) to rebuild its index",
            )
        arrays: dict[str, np.ndarray] = {}
        for name, file in ARRAY_FILES.items():
            value = files.get(file)
            if value is None:
                raise BundleFormatError(f"{where}/{file}", "missing")
            try:
                arrays[name] = (
                    np.load(io.BytesIO(value), allow_pickle=False)
                    if isinstance(value, bytes | bytearray)
                    else value
                )
            except ValueError as e:
                raise BundleFormatError(f"{where}/{file}", f"not a readable .npy array ({e})") from None
        cells = int(params["cells"])
        scan_axes, grid_axes = int(params["scan_axes"]), int(params["grid_axes"])
        expected = {
            "slots": (np.dtype("<u4"), (frames, design.SLOT_COUNT)),
            "answer": (ANSWER_DTYPE, (frames,)),
            "hashes": (np.dtype("<u8"), (frames,)),
            "hash_frames": (np.dtype("<i4"), (frames,)),
            "codes": (np.dtype("i1"), (scan_axes, frames)),
            "norm2": (np.dtype("<f4"), (frames,)),
            "cell_start": (np.dtype("<i8"), (cells + 1,)),
            "cell_box": (np.dtype("<f8"), (cells, 2, grid_axes)),
            "cell_ball": (np.dtype("<f8"), (cells, scan_axes + 1)),
            "row_place": (ROW_DTYPE, (rows,)),
            "frame_rows": (np.dtype("<i4"), (rows,)),
            "frame_row_start": (np.dtype("<i8"), (frames + 1,)),
        }
        for name, (dtype, shape) in expected.items():
            a = arrays[name]
            if a.dtype != dtype or a.shape != shape:
                raise BundleFormatError(
                    f"{where}/{ARRAY_FILES[name]}",
                    f"holds {a.dtype} {list(a.shape)}, the index parameters say {dtype} {list(shape)}",
                )
        start = arrays["cell_start"]
        if start[0] != 0 or start[-1] != frames or (cells and np.any(np.diff(start) < 0)):
            raise BundleFormatError(
                f"{where}/{ARRAY_FILES['cell_start']}", "cells do not cover the frames in order"
            )
        return cls(params=params, **arrays)


def build_index(seeds: pa.Table) -> InferenceIndex:
    """The inference index of a seed table (``SEED_TABLE_SCHEMA``, rows in bundle order, at least one).

    Time and memory are proportional to the rows (one sort of 64-bit slot hashes, one of cell ids,
    a 24 × 24 covariance); see the module docstring for what is stored and why.
    """
    slots = slots_array(seeds)
    n = slots.shape[0]
    hashes = slot_hashes(slots)
    frame_of_row, first_row, by_hash = _frames_of_rows(slots, hashes)
    frames = first_row.size

    targets = seeds.column("target_token_id").to_numpy()
    solved = seeds.column("solved").to_numpy(zero_copy_only=False)
    difficulty = seeds.column("difficulty_bits").to_numpy()
    # A row whose record says its seed gives back its token answers first (DESIGN §4.3).
    exact_token = solved & (difficulty >= design.TOKEN_BITS)
    answer_row, rows, ambiguous = _answering_rows(frame_of_row, first_row, targets, exact_token)

    source_dict = seeds.column("source_file").combine_chunks().dictionary_encode()
    source = source_dict.indices.to_numpy().astype(np.int64)
    chunk_id = seeds.column("chunk_id").to_numpy().astype(np.int64)
    window_end = seeds.column("window_end").to_numpy().astype(np.int64)
    chunk_end = _last_of_chunk(source, chunk_id, window_end)

    answer = np.zeros(frames, ANSWER_DTYPE)
    answer["rank"] = np.arange(frames)
    answer["row"] = answer_row
    answer["rows"] = rows
    answer["ambiguous"] = ambiguous
    answer["seed"] = seeds_array(seeds.select(["best_seed"]).take(pa.array(answer_row)))
    answer["header_time"] = seeds.column("header_time").to_numpy()[answer_row]
    answer["window_end"] = window_end[answer_row]
    answer["chunk_id"] = chunk_id[answer_row]
    answer["source"] = source[answer_row]
    answer["chunk_end"] = chunk_end[answer_row]
    answer["target"] = targets[answer_row]
    answer["solved"] = solved[answer_row]
    answer["difficulty"] = difficulty[answer_row]
    frame_slots = slots[first_row]
    row_place = np.zeros(n, ROW_DTYPE)
    row_place["source"], row_place["chunk_id"] = source, chunk_id
    row_place["window_end"], row_place["chunk_end"] = window_end, chunk_end

    scan = _scan_structure(frame_slots)
    order = scan.pop("order")
    frame_slots, answer = frame_slots[order], answer[order]
    position = np.empty(frames, np.int64)
    position[order] = np.arange(frames)
    frame_hashes = hashes[first_row]
    row_frame = position[frame_of_row]
    frame_rows = np.argsort(row_frame, kind="stable").astype(np.int32)  # rows ascend within a frame
    frame_row_start = np.zeros(frames + 1, np.int64)
    frame_row_start[1:] = np.cumsum(np.bincount(row_frame, minlength=frames))
    params = {
        "format": INDEX_FORMAT,
        "frames": frames,
        "rows": n,
        "sources": source_dict.dictionary.to_pylist(),
        **scan.pop("params"),
    }
    return InferenceIndex(
        params=params,
        slots=np.ascontiguousarray(frame_slots, np.uint32),
        answer=answer,
        hashes=np.ascontiguousarray(frame_hashes[by_hash]),
        hash_frames=position[by_hash].astype(np.int32),
        row_place=row_place,
        frame_rows=frame_rows,
        frame_row_start=frame_row_start,
        **scan,
    )


@njit(cache=True, nogil=True)
def _runs(order, hashes, slots):  # pragma: no cover - compiled
    """Over rows sorted by hash: the run (consecutive equal hashes) of each sorted row, and whether
    a run holds different slots (a hash collision)."""
    run = np.empty(order.shape[0], np.int64)
    collision = False
    current = -1
    for i in range(order.shape[0]):
        r = order[i]
        if i == 0 or hashes[r] != hashes[order[i - 1]]:
            current += 1
        else:
            p = order[i - 1]
            for k in range(slots.shape[1]):
                if slots[r, k] != slots[p, k]:
                    collision = True
                    break
        run[i] = current
    return run, collision


def _frames_of_rows(slots: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(frame of each row int64[N], first row of each frame int64[F], the frames in ascending
    hash order int64[F])``, frames numbered in order of their first row. Rows are grouped by hash;
    a hash shared by different slots (a collision, ~N²/2^65) falls back to grouping by the slot
    words themselves."""
    n = slots.shape[0]
    order = np.argsort(hashes)
    run, collision = _runs(order, hashes, slots)
    if collision:
        rows = np.ascontiguousarray(slots).view(np.dtype((np.void, slots.shape[1] * 4))).ravel()
        _, run_first, run_of_row = np.unique(rows, return_index=True, return_inverse=True)
        run_of_row = run_of_row.reshape(-1)
        run_by_hash = np.argsort(hashes[run_first], kind="stable")
    else:
        starts = np.flatnonzero(np.diff(run, prepend=-1))
        run_first = np.minimum.reduceat(order, starts)  # a run's rows come in any order: take the least
        run_of_row = np.empty(n, np.int64)
        run_of_row[order] = run
        run_by_hash = np.arange(run_first.size)
    # Number frames by their first row without sorting: first rows are distinct rows.
    is_first = np.zeros(n, bool)
    is_first[run_first] = True
    rank = (np.cumsum(is_first) - 1)[run_first]
    first_row = np.empty(run_first.size, np.int64)
    first_row[rank] = run_first
    return rank[run_of_row], first_row, rank[run_by_hash]


def _answering_rows(
    frame_of_row: np.ndarray, first_row: np.ndarray, targets: np.ndarray, solved: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: the answering row (most frequent target, ties to the target seen first, a solved
    row of it if any, else its first row), the rows sharing it and whether their targets differ."""
    frames = first_row.size
    rows = np.bincount(frame_of_row, minlength=frames)
    answer = first_row.astype(np.int64).copy()
    ambiguous = np.zeros(frames, bool)
    shared = np.flatnonzero(rows[frame_of_row] > 1)
    if shared.size:
        f, t = frame_of_row[shared], targets[shared].astype(np.int64)
        order = np.lexsort((shared, t, f))  # by frame, target, row
        f, t, r, s = f[order], t[order], shared[order], solved[shared][order]
        starts = np.flatnonzero(np.concatenate(([True], (f[1:] != f[:-1]) | (t[1:] != t[:-1]))))
        count = np.diff(np.append(starts, f.size))
        first = r[starts]  # rows ascend within a (frame, target) run
        solved_rows = np.where(s, r, np.iinfo(np.int64).max)
        first_solved = np.minimum.reduceat(solved_rows, starts)
        run_frame = f[starts]
        # Winner per frame: most rows, ties to the target whose first row comes first.
        pick = np.lexsort((first, -count, run_frame))
        winner = pick[np.concatenate(([True], run_frame[pick][1:] != run_frame[pick][:-1]))]
        chosen = np.where(first_solved[winner] != np.iinfo(np.int64).max, first_solved[winner], first[winner])
        answer[run_frame[winner]] = chosen
        targets_per_frame = np.bincount(run_frame, minlength=frames)
        ambiguous = targets_per_frame > 1
    return answer, rows, ambiguous


def _last_of_chunk(source: np.ndarray, chunk_id: np.ndarray, window_end: np.ndarray) -> np.ndarray:
    """bool[N]: whether each row is the last frame of its chunk (its ``(source_file, chunk_id)``)."""
    keys = source << np.int64(32) | (chunk_id & 0xFFFFFFFF)
    _, chunk = np.unique(keys, return_inverse=True)
    last = np.full(int(chunk.max()) + 1 if chunk.size else 0, np.iinfo(np.int64).min)
    np.maximum.at(last, chunk, window_end)
    return last[chunk] == window_end


#: Frames the principal axes and the quantile bins are fitted on (every k-th frame): any orthonormal
#: axes keep the bounds exact, so a sample changes only how much the bounds prune.
FIT_SAMPLE = 65_536


#: Frames a worker thread rotates at a time; builds of at most SERIAL_BUILD_FRAMES frames stay on
#: the calling thread (``hasher_core.threads``).
ROTATE_BLOCK = 4096
SERIAL_BUILD_FRAMES = 65536


def _rotate_py(slots, mean, axes, out):  # pragma: no cover - compiled
    """out[f] = (features of frame f - mean) @ axes, float64[F, A]; returns max |out| per axis."""
    dims = slots.shape[1] * 2
    blocks = (slots.shape[0] + ROTATE_BLOCK - 1) // ROTATE_BLOCK
    extents = np.zeros((blocks, axes.shape[1]))
    for block in numba.prange(blocks):
        x = np.empty(dims)
        y = np.empty(axes.shape[1])
        for f in range(block * ROTATE_BLOCK, min(slots.shape[0], (block + 1) * ROTATE_BLOCK)):
            for k in range(slots.shape[1]):
                w = np.int64(slots[f, k])
                hi = (w >> 16) & 0xFFFF
                lo = w & 0xFFFF
                x[2 * k] = (hi - 65536 if hi >= 32768 else hi) - mean[2 * k]
                x[2 * k + 1] = (lo - 65536 if lo >= 32768 else lo) - mean[2 * k + 1]
            y[:] = 0.0
            for j in range(dims):  # over j outside, so the loop over axes runs on SIMD lanes
                for d in range(axes.shape[1]):
                    y[d] += x[j] * axes[j, d]
            for d in range(axes.shape[1]):
                out[f, d] = y[d]
                extents[block, d] = max(extents[block, d], abs(y[d]))
    extent = np.zeros(axes.shape[1])
    for block in range(blocks):
        for d in range(axes.shape[1]):
            extent[d] = max(extent[d], extents[block, d])
    return extent


_rotate = njit(cache=True, nogil=True, parallel=True)(_rotate_py)
_rotate_serial = njit(cache=True, nogil=True)(_rotate_py)


@njit(cache=True, nogil=True)
def _cells(rotated, edges, bins):  # pragma: no cover - compiled
    """The cell of each frame: its bins along the first ``edges.shape[0]`` axes, as one number."""
    cell = np.empty(rotated.shape[0], np.int16)
    for f in range(rotated.shape[0]):
        c = 0
        for d in range(edges.shape[0]):
            c = c * bins + np.searchsorted(edges[d], rotated[f, d], side="right")
        cell[f] = c
    return cell


def _code_py(rotated, order, scale, cell_start, codes, norm2, box):  # pragma: no cover - compiled
    """In scan order (``order``): each frame's int8 codes and the squared norm of what they decode
    to, and each cell's box over the first ``box.shape[2]`` axes; returns the largest coding error."""
    cells = cell_start.shape[0] - 1
    worst = np.zeros(cells)
    for c in numba.prange(cells):
        for d in range(box.shape[2]):
            box[c, 0, d] = np.inf
            box[c, 1, d] = -np.inf
        for i in range(cell_start[c], cell_start[c + 1]):
            f = order[i]
            err = 0.0
            n2 = 0.0
            for d in range(rotated.shape[1]):
                v = rotated[f, d]
                q = min(127.0, max(-127.0, np.rint(v / scale[d])))
                codes[d, i] = np.int8(q)
                decoded = q * scale[d]
                err += (v - decoded) * (v - decoded)
                n2 += decoded * decoded
                if d < box.shape[2]:
                    box[c, 0, d] = min(box[c, 0, d], v)
                    box[c, 1, d] = max(box[c, 1, d], v)
            norm2[i] = np.float32(n2)
            worst[c] = max(worst[c], err)
        if cell_start[c + 1] == cell_start[c]:
            for d in range(box.shape[2]):
                box[c, 0, d] = 0.0
                box[c, 1, d] = 0.0
    return np.sqrt(worst.max()) if cells else 0.0


_code = njit(cache=True, nogil=True, parallel=True)(_code_py)
_code_serial = njit(cache=True, nogil=True)(_code_py)


@njit(cache=True, nogil=True)
def _balls(rotated, order, cell_start):  # pragma: no cover - compiled
    """Per cell: the mean of its frames' rotated coordinates and the largest distance from it."""
    cells, axes = cell_start.shape[0] - 1, rotated.shape[1]
    ball = np.zeros((cells, axes + 1))
    for c in range(cells):
        n = cell_start[c + 1] - cell_start[c]
        if n == 0:
            ball[c, axes] = np.inf
            continue
        for i in range(cell_start[c], cell_start[c + 1]):
            for d in range(axes):
                ball[c, d] += rotated[order[i], d]
        for d in range(axes):
            ball[c, d] /= n
        radius = 0.0
        for i in range(cell_start[c], cell_start[c + 1]):
            r = 0.0
            for d in range(axes):
                g = rotated[order[i], d] - ball[c, d]
                r += g * g
            radius = max(radius, r)
        ball[c, axes] = np.sqrt(radius) * (1 + 1e-9) + 1e-6
    return ball


def _scan_structure(frame_slots: np.ndarray) -> dict[str, Any]:
    """PCA axes, the cell grid, the int8 codes and their error bound for the frames' slots
    uint32[F, 12]; ``order`` is the scan order of the frames (by cell, then source order)."""
    from hasher_core.frames.windows import unpack_slots

    frames = frame_slots.shape[0]
    sample = unpack_slots(frame_slots[:: max(1, frames // FIT_SAMPLE)]).astype(np.float64)
    mean = sample.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(sample - mean, rowvar=False) if len(sample) > 1 else np.eye(24))
    axes = np.ascontiguousarray(vectors[:, np.argsort(values)[::-1][:SCAN_AXES]])
    rotated = np.empty((frames, SCAN_AXES))
    serial = run_serial(frames, SERIAL_BUILD_FRAMES)
    extent = (_rotate_serial if serial else _rotate)(
        np.ascontiguousarray(frame_slots, np.uint32), mean, axes, rotated
    )
    bins = int(min(MAX_BINS, max(1, round((frames / CELL_FRAMES) ** (1 / GRID_AXES)))))
    sampled = rotated[:: max(1, frames // FIT_SAMPLE), :GRID_AXES]
    quantiles = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    edges = np.ascontiguousarray([np.quantile(sampled[:, d], quantiles) for d in range(GRID_AXES)])
    cell = _cells(rotated, edges.reshape(GRID_AXES, -1), bins)
    order = np.argsort(cell, kind="stable")  # int16 cells (at most 8^4): a radix sort
    cells = bins**GRID_AXES
    cell_start = np.searchsorted(cell[order], np.arange(cells + 1)).astype(np.int64)
    scale = np.where(extent > 0, extent / 127.0, 1.0)
    codes = np.empty((SCAN_AXES, frames), np.int8)
    norm2 = np.empty(frames, np.float32)
    box = np.empty((cells, 2, GRID_AXES))
    worst = (_code_serial if serial else _code)(rotated, order, scale, cell_start, codes, norm2, box)
    ball = _balls(rotated, order, cell_start)
    return {
        "order": order,
        "codes": codes,
        "norm2": norm2,
        "cell_start": cell_start,
        "cell_box": box,
        "cell_ball": ball,
        "params": {
            "scan_axes": SCAN_AXES,
            "grid_axes": GRID_AXES,
            "cells": cells,
            "mean": mean.tolist(),
            "axes": axes.tolist(),
            "scale": scale.tolist(),
            # The coding error bound, widened past the rounding of the rotation itself.
            "error_norm": float(worst) * (1 + 1e-9) + 1e-6,
            "max_norm2": float(norm2.max()) if frames else 0.0,
        },
    }


__all__ = [
    "ANSWER_DTYPE",
    "INDEX_FILES",
    "INDEX_FORMAT",
    "InferenceIndex",
    "build_index",
    "dequantised",
    "slot_hashes",
]
