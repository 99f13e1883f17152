"""Input checks of the kernel API (DESIGN §4.1–4.2, §7): every array, word, range and midstate a
caller hands the kernel is validated here, once, so the backends can assume C-contiguous arrays of
the right dtype. Each check raises :class:`~hasher_core.errors.KernelInputError` naming the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hasher_core.design import SEED_BYTES, SLOT_COUNT, TAIL_BYTES
from hasher_core.errors import KernelInputError


def check_array(name: str, a: object, dtype: type, shape_tail: tuple[int, ...]) -> np.ndarray:
    """``a`` unchanged when it is a C-contiguous numpy array of ``dtype`` and shape ``[N, *shape_tail]``;
    else KernelInputError naming ``name``."""
    if not isinstance(a, np.ndarray):
        raise KernelInputError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.dtype(dtype):
        raise KernelInputError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if a.ndim != 1 + len(shape_tail) or a.shape[1:] != shape_tail:
        want = "[N, " + ", ".join(map(str, shape_tail)) + "]" if shape_tail else "[N]"
        raise KernelInputError(f"{name} must have shape {want}, got {list(a.shape)}")
    if not a.flags.c_contiguous:
        raise KernelInputError(f"{name} must be C-contiguous (pass np.ascontiguousarray({name}))")
    return a


def check_rows(slots: object, seeds: object, header_time: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``slots`` uint32[N, 12], ``seeds`` uint8[N, 32] and ``header_time``; raise
    :class:`KernelInputError` naming the problem, else return the arrays unchanged."""
    slots = check_array("slots", slots, np.uint32, (SLOT_COUNT,))
    seeds = check_array("seeds", seeds, np.uint8, (SEED_BYTES,))
    if slots.shape[0] != seeds.shape[0]:
        raise KernelInputError(
            f"slots and seeds must have the same number of rows, got {slots.shape[0]} and {seeds.shape[0]}"
        )
    check_u32("header_time", header_time)
    return slots, seeds


def check_u32(name: str, value: int) -> None:
    """Raise KernelInputError naming ``name`` unless ``value`` fits in 32 bits."""
    if not (0 <= int(value) <= 0xFFFFFFFF):
        raise KernelInputError(f"{name} must fit in 32 bits, got {value}")


def header_time_groups(header_times: object, rows: int) -> list[tuple[int, np.ndarray]]:
    """``(header_time, row indices)`` per distinct header time, in ascending time order.

    ``header_times`` is one integer per row (any integer dtype or a sequence); each must fit in 32
    bits. Raises :class:`KernelInputError` naming the first bad row.
    """
    times = np.asarray(header_times)
    if times.shape != (rows,):
        raise KernelInputError(f"header_times must have shape [{rows}], got {list(times.shape)}")
    if rows and not np.issubdtype(times.dtype, np.integer):
        raise KernelInputError(f"header_times must be integers, got dtype {times.dtype}")
    times = times.astype(np.int64, copy=False)
    bad = np.flatnonzero((times < 0) | (times > 0xFFFFFFFF))
    if bad.size:
        row = int(bad[0])
        raise KernelInputError(f"header_times[{row}] must fit in 32 bits, got {int(times[row])}")
    return [(int(t), np.flatnonzero(times == t)) for t in np.unique(times)]


def check_scan_range(nonce_start: int, nonce_count: int, difficulty: int, name: str, top: int):
    """Check a nonce range (start a nonce, count ≤ 2**32) and a difficulty in ``[0, top]``."""
    check_u32("nonce_start", nonce_start)
    if not (0 <= nonce_count <= 1 << 32):
        raise KernelInputError(f"nonce_count must be in [0, 2**32], got {nonce_count}")
    if not (0 <= difficulty <= top):
        raise KernelInputError(f"{name} must be in [0, {top}], got {difficulty}")


def check_midstate(midstate: object) -> tuple[int, ...]:
    """A midstate as 8 int words: from 8 words (ints or a numpy array) or 32 big-endian bytes."""
    # Fast path first: the common case (words from midstate()) should cost nothing per call.
    if (
        type(midstate) is tuple
        and len(midstate) == 8
        and all(type(w) is int and 0 <= w <= 0xFFFFFFFF for w in midstate)
    ):
        return midstate
    if isinstance(midstate, bytes | bytearray | memoryview):
        if len(midstate) != 32:
            raise KernelInputError(f"midstate must be 32 bytes (8 big-endian words), got {len(midstate)}")
        return tuple(int.from_bytes(midstate[i : i + 4], "big") for i in range(0, 32, 4))
    if isinstance(midstate, str) or not isinstance(midstate, Sequence | np.ndarray):
        raise KernelInputError(f"midstate must be 8 state words or 32 bytes, got {type(midstate).__name__}")
    words = list(midstate)
    if len(words) != 8:
        raise KernelInputError(f"midstate must have 8 state words, got {len(words)}")
    for i, word in enumerate(words):
        is_int = isinstance(word, int | np.integer) and not isinstance(word, bool)
        if not is_int or not 0 <= int(word) <= 0xFFFFFFFF:
            raise KernelInputError(f"midstate word {i} must be an integer in [0, 2**32), got {word!r}")
    return tuple(int(w) for w in words)


def check_tail(tail: object) -> bytes:
    """Header bytes 64–75 as ``bytes`` (12 of them), or KernelInputError."""
    if not isinstance(tail, bytes | bytearray | memoryview):
        raise KernelInputError(f"tail must be bytes (header bytes 64–75), got {type(tail).__name__}")
    if len(tail) != TAIL_BYTES:
        raise KernelInputError(f"tail must be header bytes 64–75 ({TAIL_BYTES} bytes), got {len(tail)}")
    return bytes(tail)


def check_window_starts(window_starts: object) -> np.ndarray:
    """``window_starts`` as int64[W] (every start a nonce, 0 ≤ start < 2**32)."""
    if isinstance(window_starts, np.ndarray):
        if window_starts.ndim != 1:
            raise KernelInputError(
                f"window_starts must be one-dimensional, got shape {list(window_starts.shape)}"
            )
        if window_starts.dtype.kind not in "iu":
            raise KernelInputError(f"window_starts must have an integer dtype, got {window_starts.dtype}")
        starts = window_starts
    elif isinstance(window_starts, Sequence) and not isinstance(window_starts, str | bytes | bytearray):
        for i, start in enumerate(window_starts):
            if not isinstance(start, int | np.integer) or isinstance(start, bool):
                raise KernelInputError(f"window_starts[{i}] must be an integer nonce, got {start!r}")
        starts = np.array([int(s) for s in window_starts], dtype=object)
    else:
        raise KernelInputError(
            "window_starts must be a numpy array or a sequence of integers, "
            f"got {type(window_starts).__name__}"
        )
    if starts.size:
        low, high = int(starts.min()), int(starts.max())
        if low < 0 or high > 0xFFFFFFFF:
            bad = int(np.flatnonzero((starts < 0) | (starts > 0xFFFFFFFF))[0])
            raise KernelInputError(
                f"window_starts[{bad}] must be a nonce in [0, 2**32), got {int(starts[bad])}"
            )
    return np.ascontiguousarray(starts, dtype=np.int64)
