"""The SHA-256 recursion kernel: one public API over the reference, CPU and CUDA backends.

``evaluate`` runs DESIGN §4.2 for N (frame, seed) rows; ``scan_seed_nonces`` sweeps the nonce of
one frame mining-style against a token target; ``scan_header_nonces`` is plain Bitcoin nonce
search on an 80-byte header, and ``scan_midstate_nonces`` the same search from what a mining chip
is given instead: the SHA-256 state after header bytes 0–63 and bytes 64–75 (the ASIC emulator's
work). ``scan_midstate_windows`` sweeps many windows of consecutive nonces from one midstate in one
backend call (the emulator's chip windows); a single-window sweep is ``scan_midstate_nonces``, so
both go through one code path. Inputs are validated here, once, so each backend can assume
C-contiguous arrays of the right dtype.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from hasher_core.design import EXTRANONCE_BYTES, HEADER_BYTES, SLOT_COUNT, VOCABULARY_SIZE
from hasher_core.errors import KernelInputError
from hasher_core.header import leading_equal_bits, target_word
from hasher_core.names import KERNEL_BACKENDS

from .inputs import (
    check_array,
    check_midstate,
    check_rows,
    check_scan_range,
    check_tail,
    check_u32,
    check_window_starts,
    header_time_groups,
)

BACKENDS = KERNEL_BACKENDS


def _backend_module(name: str) -> ModuleType:
    # Backends load on first use: importing the API must not compile Numba code or import CuPy.
    return importlib.import_module(f"{__package__}.{name}")


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        return bool(_backend_module("cuda").device_count() > 0)
    except Exception:
        return False


def resolve_backend(backend: str) -> str:
    """Map ``"auto"`` to ``"cuda"`` when a GPU is visible, else ``"cpu"``; check explicit names."""
    if backend == "auto":
        return "cuda" if cuda_available() else "cpu"
    if backend not in BACKENDS:
        raise KernelInputError(f"unknown backend {backend!r}; choose one of {(*BACKENDS, 'auto')}")
    if backend == "cuda":
        module = _backend_module("cuda")
        module.require_device()  # raises BackendUnavailableError with the reason
    return backend


def evaluate_with_keys(
    slots: np.ndarray, seeds: np.ndarray, *, header_time: int = 0, backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Goldens uint32[N] and the keys of passes 18, 19, 20 uint32[N, 3] (what the reward needs)."""
    slots, seeds = check_rows(slots, seeds, header_time)
    name = resolve_backend(backend)
    if slots.shape[0] == 0:
        return np.empty(0, np.uint32), np.empty((0, 3), np.uint32)
    return _backend_module(name).evaluate_with_keys(slots, seeds, int(header_time))


def evaluate(
    slots: np.ndarray, seeds: np.ndarray, *, header_time: int = 0, backend: str = "auto"
) -> np.ndarray:
    """Goldens uint32[N] for ``slots`` uint32[N, 12] and ``seeds`` uint8[N, 32] (DESIGN §4.2)."""
    return evaluate_with_keys(slots, seeds, header_time=header_time, backend=backend)[0]


#: Rows per backend call of :func:`evaluate_rows` (bounds the staging a backend allocates).
ROWS_PER_CALL = 65536


def evaluate_rows(
    slots: np.ndarray,
    seeds: np.ndarray,
    header_times: object,
    *,
    backend: str = "auto",
    batch_size: int = ROWS_PER_CALL,
) -> np.ndarray:
    """Goldens uint32[N] for rows that each carry their header time (int[N]): stored seeds re-checked,
    verified after a deploy or replayed by inference; one group of backend calls of at most
    ``batch_size`` rows per distinct header time. Raises :class:`KernelInputError` for bad input."""
    slots, seeds = check_rows(slots, seeds)
    name = resolve_backend(backend)
    golden = np.empty(slots.shape[0], dtype=np.uint32)
    for header_time, rows in header_time_groups(header_times, slots.shape[0]):
        for start in range(0, rows.size, batch_size):
            part = rows[start : start + batch_size]
            golden[part] = evaluate(
                np.ascontiguousarray(slots[part]),
                np.ascontiguousarray(seeds[part]),
                header_time=header_time,
                backend=name,
            )
    return golden


class RowKernel:
    """:func:`evaluate_rows` on one backend, resolved once, without the Dagster resource: how the
    ``hasher`` command answers (its ``--threads`` set Numba's threads for the whole process)."""

    def __init__(self, backend: str = "auto") -> None:
        self._backend = resolve_backend(backend)

    def backend_name(self) -> str:
        return self._backend

    def evaluate_rows(self, slots: np.ndarray, seeds: np.ndarray, header_times: object) -> np.ndarray:
        """Goldens uint32[N] (see :func:`evaluate_rows`)."""
        return evaluate_rows(slots, seeds, header_times, backend=self._backend)


@dataclass(frozen=True)
class NonceScanResult:
    """What a nonce sweep found: every nonce at or above the difficulty, and the best one seen."""

    nonces: np.ndarray  # uint32, nonces meeting the difficulty, in scan order (wrapping past 2**32 - 1)
    bits: np.ndarray  # uint8, their matched (or zero) bits
    best_nonce: int
    best_bits: int
    scanned: int
    backend: str


#: Nonces per backend call when a backend names no ``SCAN_CHUNK``: keeps a sweep of up to 2**32
#: nonces in bounded memory (a few bytes per nonce of the chunk).
SCAN_CHUNK = 1 << 20


class _ScanAccumulator:
    """Folds per-chunk bits into hits (bits >= difficulty, scan order) and the first best nonce."""

    def __init__(self, difficulty: int) -> None:
        self.difficulty = difficulty
        self.nonces: list[np.ndarray] = []
        self.bits: list[np.ndarray] = []
        self.best_nonce = 0
        self.best_bits = -1
        self.scanned = 0

    def add(self, start: int, bits: np.ndarray) -> None:
        """One chunk's bits, one value per nonce from ``start``."""
        hits = np.flatnonzero(bits >= self.difficulty)
        best = int(np.argmax(bits)) if bits.size else 0
        self.add_hits(start, int(bits.size), hits, bits[hits], best, int(bits[best]) if bits.size else -1)

    def add_hits(
        self, start: int, count: int, offsets: np.ndarray, bits: np.ndarray, best: int, best_bits: int
    ) -> None:
        """One chunk already reduced (by a backend): hit offsets from ``start`` and the chunk's best."""
        nonces = ((start + offsets.astype(np.uint64)) & 0xFFFFFFFF).astype(np.uint32)
        self.add_nonces(count, nonces, bits, (start + best) & 0xFFFFFFFF, best_bits)

    def add_nonces(self, count: int, nonces: np.ndarray, bits: np.ndarray, best_nonce: int, best_bits: int):
        """One chunk of ``count`` nonces already reduced to its hits (as nonces) and its first best."""
        self.nonces.append(nonces.astype(np.uint32, copy=False))
        self.bits.append(bits.astype(np.uint8, copy=False))
        if count and best_bits > self.best_bits:
            self.best_bits = best_bits
            self.best_nonce = best_nonce
        self.scanned += count

    def result(self, backend: str) -> NonceScanResult:
        return NonceScanResult(
            nonces=_joined(self.nonces, np.uint32),
            bits=_joined(self.bits, np.uint8),
            best_nonce=self.best_nonce,
            best_bits=max(self.best_bits, 0),
            scanned=self.scanned,
            backend=backend,
        )


def _joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    if len(parts) == 1:  # most scans are one chunk: no copy
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(0, dtype)


def _chunks(module: ModuleType, nonce_start: int, nonce_count: int):
    """(start, count) pieces of a nonce range, each small enough for one backend call."""
    chunk = int(getattr(module, "SCAN_CHUNK", SCAN_CHUNK))
    for offset in range(0, nonce_count, chunk):
        yield (nonce_start + offset) & 0xFFFFFFFF, min(chunk, nonce_count - offset)


def scan_seed_nonces(
    slots: np.ndarray,
    extranonce: bytes,
    target_token_id: int,
    *,
    difficulty_bits: int,
    nonce_count: int,
    nonce_start: int = 0,
    header_time: int = 0,
    backend: str = "auto",
) -> NonceScanResult:
    """Sweep the nonce (seed bytes 28–31) of one frame: which goldens share ``difficulty_bits``
    leading bits with the target word of ``target_token_id`` (``token << 15``, DESIGN §4.3), so at
    17 bits a hit is a seed whose golden stands for the token. Raises KernelInputError for a token
    outside the vocabulary or a bad input."""
    slots = check_array("slots", np.asarray(slots).reshape(1, -1), np.uint32, (SLOT_COUNT,))[0]
    if len(extranonce) != EXTRANONCE_BYTES:
        raise KernelInputError(f"extranonce must be {EXTRANONCE_BYTES} bytes, got {len(extranonce)}")
    check_scan_range(nonce_start, nonce_count, difficulty_bits, "difficulty_bits", 32)
    check_u32("header_time", header_time)
    name = resolve_backend(backend)
    module = _backend_module(name)
    if not 0 <= int(target_token_id) < VOCABULARY_SIZE:
        raise KernelInputError(f"target_token_id must be in [0, {VOCABULARY_SIZE}), got {target_token_id}")
    word = target_word(int(target_token_id))
    found = _ScanAccumulator(difficulty_bits)
    reduce_in_backend = getattr(module, "scan_seed_hits", None)  # the GPU reduces on the device
    for start, count in _chunks(module, nonce_start, nonce_count):
        if reduce_in_backend is not None:
            # The CUDA kernel forms the target word itself (recursion.cu, from HASHER_TOKEN_SHIFT).
            hits = reduce_in_backend(
                slots,
                bytes(extranonce),
                start,
                count,
                int(header_time),
                int(target_token_id),
                difficulty_bits,
            )
            found.add_hits(start, count, *hits)
        else:
            goldens = module.scan_seed_nonces(slots, bytes(extranonce), start, count, int(header_time))
            found.add(start, leading_equal_bits(goldens, word))
    return found.result(name)


def _share_scan(
    name: str, kind: str, args: tuple, share_bits: int, nonce_start: int, nonce_count: int
) -> NonceScanResult:
    """Chunked Bitcoin share search on backend ``name``: ``scan_{kind}_nonces(*args, start, count)``
    gives zero bits per nonce, ``scan_{kind}_hits`` (when the backend has it) reduces on its own."""
    module = _backend_module(name)
    found = _ScanAccumulator(share_bits)
    scan = getattr(module, f"scan_{kind}_nonces")
    reduce_in_backend = getattr(module, f"scan_{kind}_hits", None)
    for start, count in _chunks(module, nonce_start, nonce_count):
        if reduce_in_backend is not None:
            found.add_hits(start, count, *reduce_in_backend(*args, start, count, share_bits))
        else:
            found.add(start, scan(*args, start, count))
    return found.result(name)


def scan_header_nonces(
    header: bytes,
    *,
    share_bits: int,
    nonce_count: int,
    nonce_start: int = 0,
    backend: str = "auto",
) -> NonceScanResult:
    """Bitcoin-style nonce search on an 80-byte header: nonces whose double SHA-256, read as a
    little-endian 256-bit number, has at least ``share_bits`` leading zero bits."""
    if len(header) != HEADER_BYTES:
        raise KernelInputError(f"header must be {HEADER_BYTES} bytes, got {len(header)}")
    check_scan_range(nonce_start, nonce_count, share_bits, "share_bits", 255)
    name = resolve_backend(backend)
    return _share_scan(name, "header", (bytes(header),), share_bits, nonce_start, nonce_count)


def window_nonces(window_starts: np.ndarray, window_size: int, positions: np.ndarray) -> np.ndarray:
    """The nonces at ``positions`` (int64) of the windows laid end to end: position ``p`` is offset
    ``p % window_size`` of window ``p // window_size`` (mod 2**32)."""
    positions = np.asarray(positions, dtype=np.int64)
    if window_starts.size == 1:  # one window (every contiguous scan): no division needed
        return ((positions + int(window_starts[0])) & 0xFFFFFFFF).astype(np.uint32)
    window = positions // window_size
    return ((window_starts[window] + (positions - window * window_size)) & 0xFFFFFFFF).astype(np.uint32)


def _window_chunks(module: ModuleType, windows: int, window_size: int):
    """(first window, position in it, count) pieces of the windows laid end to end, each at most the
    backend's ``SCAN_CHUNK`` nonces: many small windows share a call, a large one is split."""
    chunk = int(getattr(module, "SCAN_CHUNK", SCAN_CHUNK))
    total = windows * window_size
    for position in range(0, total, chunk):
        first, skip = divmod(position, window_size)
        yield first, skip, min(chunk, total - position)


def scan_midstate_windows(
    midstate: Sequence[int] | bytes,
    tail: bytes,
    *,
    share_bits: int,
    window_starts: np.ndarray | Sequence[int],
    window_size: int,
    backend: str = "auto",
) -> NonceScanResult:
    """:func:`scan_midstate_nonces` over many windows at once: ``window_size`` consecutive nonces
    (mod 2**32) from each of ``window_starts``, in few backend calls (one when they fit in its
    ``SCAN_CHUNK``) instead of one per window.

    The result is that of scanning the windows one after another and joining the results: hits in
    window order (then nonce order), the first best nonce in that order, ``scanned`` = windows ×
    ``window_size``. Windows may overlap or wrap past 2**32 − 1; a nonce in two windows is
    reported twice. This is the ASIC emulator's work item: one window per chip.
    """
    words = check_midstate(midstate)
    tail = check_tail(tail)
    starts = check_window_starts(window_starts)
    if isinstance(window_size, bool) or not isinstance(window_size, int | np.integer):
        raise KernelInputError(f"window_size must be an integer, got {type(window_size).__name__}")
    if not (0 <= window_size <= 1 << 32):
        raise KernelInputError(f"window_size must be in [0, 2**32], got {window_size}")
    if not (0 <= share_bits <= 255):
        raise KernelInputError(f"share_bits must be in [0, 255], got {share_bits}")
    return _window_scan(resolve_backend(backend), words, tail, share_bits, starts, int(window_size))


def _window_scan(
    name: str, words: tuple[int, ...], tail: bytes, share_bits: int, starts: np.ndarray, window_size: int
) -> NonceScanResult:
    """Validated windows scanned on backend ``name``: ``scan_midstate_windows(..., first-window
    starts, window_size, skip, count)`` gives zero bits per nonce, ``scan_midstate_windows_hits``
    (when the backend has it) reduces on its own. Chunk-relative offsets become nonces here."""
    module = _backend_module(name)
    found = _ScanAccumulator(share_bits)
    reduce_in_backend = getattr(module, "scan_midstate_windows_hits", None)
    for first, skip, count in _window_chunks(module, starts.size, window_size):
        # Only the windows this chunk touches go to the backend; positions count from ``skip`` in the first.
        local = starts if starts.size == 1 else starts[first : first + (skip + count - 1) // window_size + 1]
        if reduce_in_backend is not None:
            offsets, bits, best, best_bits = reduce_in_backend(
                words, tail, local, window_size, skip, count, share_bits
            )
        else:
            chunk_bits = module.scan_midstate_windows(words, tail, local, window_size, skip, count)
            offsets = np.flatnonzero(chunk_bits >= share_bits)
            bits = chunk_bits[offsets]
            best = int(np.argmax(chunk_bits))
            best_bits = int(chunk_bits[best])
        window, offset = divmod(skip + best, window_size)
        best_nonce = (int(local[window]) + offset) & 0xFFFFFFFF
        nonces = window_nonces(local, window_size, np.asarray(offsets, dtype=np.int64) + skip)
        found.add_nonces(count, nonces, bits, best_nonce, best_bits)
    return found.result(name)


def scan_midstate_nonces(
    midstate: Sequence[int] | bytes,
    tail: bytes,
    *,
    share_bits: int,
    nonce_count: int,
    nonce_start: int = 0,
    backend: str = "auto",
) -> NonceScanResult:
    """:func:`scan_header_nonces` from what a mining chip is given instead of the header (DESIGN §7).

    ``midstate`` is the SHA-256 state after compressing header bytes 0–63 — 8 words, as
    :func:`hasher_core.header.midstate` returns them, or those words as 32 big-endian
    bytes (not cgminer's wire order, which is little-endian per word). ``tail`` is header bytes
    64–75; the nonce goes little-endian into bytes 76–79. Same result as ``scan_header_nonces`` on
    the header these come from, two compressions per nonce on every backend. It is the one-window
    case of :func:`scan_midstate_windows` (the same backend code).
    """
    words = check_midstate(midstate)
    tail = check_tail(tail)
    check_scan_range(nonce_start, nonce_count, share_bits, "share_bits", 255)
    name = resolve_backend(backend)
    return _window_scan(name, words, tail, share_bits, np.array([nonce_start], np.int64), int(nonce_count))


__all__ = [
    "BACKENDS",
    "NonceScanResult",
    "cuda_available",
    "evaluate",
    "evaluate_with_keys",
    "resolve_backend",
    "scan_header_nonces",
    "scan_midstate_nonces",
    "scan_midstate_windows",
    "scan_seed_nonces",
    "window_nonces",
]
