"""The CPU backend: which CPU path runs a call, and the backend API the kernel dispatches to.

Two leaf kernels compute the same results bit for bit: ``cpu_simd``, Numba SIMD code for every CPU,
and ``cpu_shani``, the x86 SHA extensions for CPUs that have them. This module chooses between them
in Python (compiling SHA-NI code for a CPU without it kills the process, so the choice can never be
made inside compiled code): ``HASHER_CPU_KERNEL=auto|shani|simd``, ``auto`` by default. No compiler
is needed at install time; the JIT result is cached on disk (``hasher_core.jit``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import numba
import numpy as np

from hasher_core import design
from hasher_core.errors import BackendUnavailableError, KernelConfigError
from hasher_core.header import midstate as header_midstate
from hasher_core.names import AUTO, CPU_PATHS
from hasher_core.threads import run_serial

from . import cpu_simd
from .cpu_words import IV, SERIAL_EVALUATE_ROWS, header_words_into, serial_call  # noqa: F401 (re-exported)

#: Nonces per call in a scan (each costs ~200 bytes of staging here), so 2**32-nonce sweeps stay small.
SCAN_CHUNK = 1 << 16

#: Scans of at most this many SIMD blocks run on the calling thread (one emulator work item, 4,096
#: nonces, ~0.4 ms on one core, is one of them): waking the worker pool costs more
#: than they do, and on a busy machine a parallel region waits for every worker to be scheduled.
SERIAL_SCAN_BLOCKS = 64

#: The environment variable that forces a CPU path, and its values.
KERNEL_ENV = "HASHER_CPU_KERNEL"
CPU_KERNELS = (AUTO, *CPU_PATHS)

_choice = threading.local()  # .requested: a kernel_choice() override for this thread


def _requested(requested: str | None) -> tuple[str, str]:
    """The request in force (argument, this thread's ``kernel_choice``, the environment, ``auto``)
    and where it came from; raises KernelConfigError for a value outside CPU_KERNELS."""
    source = "Sha256Kernel.cpu_kernel"
    if requested is None:
        requested = getattr(_choice, "requested", None)
    if requested is None:
        from hasher_resources.settings import setting  # validated there: a bad value names the variable

        return str(setting(KERNEL_ENV)), KERNEL_ENV
    value = requested.strip().lower()
    if value not in CPU_KERNELS:
        raise KernelConfigError(f"{source}={requested!r} is not one of {', '.join(CPU_KERNELS)}")
    return value, source


def check_request(requested: str | None = None) -> tuple[str, bool]:
    """The request in force (``'auto'``, ``'shani'`` or ``'simd'``) and whether SHA-NI can run,
    without timing anything: what a run checks at start. Raises like ``select_kernel``."""
    value, source = _requested(requested)
    if value == "simd":
        return value, False
    from . import cpu_shani

    usable, why = cpu_shani.sha_ni_usable()
    if value == "shani" and not usable:
        raise BackendUnavailableError(
            f"{source}=shani but the SHA-NI path cannot run here: {why}; use auto or simd"
        )
    return value, usable


def runnable_paths() -> tuple[str, ...]:
    """The CPU paths that can run here: SIMD (every CPU) first, then SHA-NI where ``sha_ni_usable()``."""
    from . import cpu_shani

    usable = cpu_shani.sha_ni_usable()[0]
    return tuple(p for p in sorted(CPU_PATHS, key=lambda p: p != "simd") if usable or p == "simd")


def select_kernel(requested: str | None = None, operation: str = "evaluate") -> str:
    """The CPU path that runs ``operation`` (``'evaluate'`` or ``'scan'``): ``'shani'`` or ``'simd'``.

    ``requested`` is ``'auto'``, ``'shani'``, ``'simd'`` or None (then ``kernel_choice``'s value
    for this thread, else ``$HASHER_CPU_KERNEL``, else ``'auto'``). ``auto`` is SIMD where SHA-NI
    cannot run (``cpu_shani.sha_ni_usable()``: the CPU lacks it or Numba's target excludes it);
    where both can, it is the faster of the two for that operation on this CPU, timed once per
    process (``auto_choice``): SHA-NI is 2.4× SIMD per core on AMD Zen, but no faster than
    AVX-512 SIMD on Intel's Golden Cove cores, whose ``sha256rnds2`` issues at a third of Zen's rate.

    Raises KernelConfigError for an unknown value (naming HASHER_CPU_KERNEL when it came from
    there) and BackendUnavailableError when ``shani`` is asked for where it cannot run.
    """
    value, usable = check_request(requested)
    if value != "auto":
        return value
    return auto_choice(operation)[0] if usable else "simd"


def explain_kernel(requested: str | None = None, operation: str = "evaluate") -> str:
    """Why ``select_kernel(requested, operation)`` runs the path it does, in one line for metadata."""
    path = select_kernel(requested, operation)
    value, source = _requested(requested)
    if value != "auto":
        return f"{path}: {source}={value}"
    from . import cpu_shani

    usable, why = cpu_shani.sha_ni_usable()
    if not usable:
        return f"simd: auto, and {why}"
    rates = ", ".join(f"{name} {rate:,.0f}" for name, rate in auto_choice(operation)[1].items())
    unit = "evaluations/s" if operation == "evaluate" else "nonces/s"
    return f"{path}: auto, the faster here (one-thread {unit}: {rates})"


#: Evaluations per timing of the auto choice (six SIMD blocks, 128 SHA-NI groups), nonces per timing
#: of a scan, and the best of how many rounds counts.
AUTO_ROWS = 6 * cpu_simd.LANES
AUTO_NONCES = 64 * cpu_simd.LANES
AUTO_ROUNDS = 5
_auto: dict[str, tuple[str, dict[str, float]]] = {}
_auto_lock = threading.Lock()


def measure_paths(operation: str = "evaluate") -> dict[str, float]:
    """One-thread evaluations/s (``'evaluate'``) or nonces/s (``'scan'``) of each CPU path: best of
    AUTO_ROUNDS calls, timed in turns. Compiles that operation's two kernels on first use (Numba's
    cache makes that ~0.5 s later). Raises BackendUnavailableError where SHA-NI cannot run
    (compiling it there would abort) and KernelConfigError for another operation."""
    from . import cpu_shani

    usable, why = cpu_shani.sha_ni_usable()
    if not usable:
        raise BackendUnavailableError(f"cannot time the SHA-NI path: {why}")
    if operation == "evaluate":
        rng = np.random.default_rng(0)
        slots = rng.integers(0, 2**32, (AUTO_ROWS, design.SLOT_COUNT), dtype=np.uint32)
        seeds = rng.integers(0, 256, (AUTO_ROWS, design.SEED_BYTES), dtype=np.uint8)
        words, jitter = header_words(slots, seeds, 0), np.ascontiguousarray(slots[:, 1:4])
        count = AUTO_ROWS
        calls = {
            "simd": lambda: cpu_simd.evaluate_words(words, jitter),
            "shani": lambda: cpu_shani.evaluate_words(words, jitter),
        }
    elif operation == "scan":
        count = AUTO_NONCES
        args = (IV.copy(), np.zeros(3, np.uint32), np.zeros(1, np.int64), count, 0, count)
        calls = {
            "simd": lambda: cpu_simd.scan_windows(*args, serial=True),
            "shani": lambda: cpu_shani.scan_windows(*args, serial=True),
        }
    else:
        raise KernelConfigError(f"operation must be 'evaluate' or 'scan', got {operation!r}")
    best = dict.fromkeys(calls, 0.0)
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        for call in calls.values():
            call()  # compile or load from the cache
        for _ in range(AUTO_ROUNDS):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                best[name] = max(best[name], count / max(time.perf_counter() - start, 1e-9))
    finally:
        numba.set_num_threads(before)
    return best


def auto_choice(operation: str = "evaluate") -> tuple[str, dict[str, float]]:
    """The path ``auto`` takes for ``operation`` where both can run, and the one-thread rates it was
    chosen by: measured once per process and operation (``measure_paths``), SHA-NI unless SIMD was
    faster."""
    with _auto_lock:
        if operation not in _auto:
            rates = measure_paths(operation)
            _auto[operation] = ("simd" if rates["simd"] > rates["shani"] else "shani", rates)
        return _auto[operation]


@contextlib.contextmanager
def kernel_choice(requested: str | None) -> Iterator[str]:
    """Use ``requested`` (see ``select_kernel``; None: the environment) for calls from this thread
    inside the block; yields the request in force (``'auto'``, ``'shani'`` or ``'simd'``). Raises
    like ``select_kernel``, before the block runs."""
    path, _ = check_request(requested)
    before = getattr(_choice, "requested", None)
    _choice.requested = requested if requested is not None else before
    try:
        yield path
    finally:
        _choice.requested = before


def set_threads(threads: int | None) -> None:
    """Use ``threads`` worker threads for the following calls from this thread (None: all cores)."""
    numba.set_num_threads(threads if threads else numba.config.NUMBA_NUM_THREADS)


def header_words(slots: np.ndarray, seeds: np.ndarray, header_time: int) -> np.ndarray:
    """Big-endian header words uint32[N, 20] of ``build_headers(slots, seeds, header_time)``
    (``slots`` uint32[N, 12], ``seeds`` uint8[N, 32]), the form SHA-256 reads the header in; built
    in compiled code (the byte array and its byte swap cost ~10 % of a SHA-NI evaluation)."""
    words = np.empty((slots.shape[0], design.HEADER_BYTES // 4), dtype=np.uint32)
    header_words_into(np.ascontiguousarray(slots), np.ascontiguousarray(seeds), header_time, words)
    return words


def evaluate_with_keys(
    slots: np.ndarray, seeds: np.ndarray, header_time: int
) -> tuple[np.ndarray, np.ndarray]:
    """Goldens uint32[N] and keys of passes 18–20 uint32[N, 3] for validated inputs."""
    words, jitter = header_words(slots, seeds, header_time), slots[:, 1:4]
    if select_kernel() == "shani":
        from . import cpu_shani

        return cpu_shani.evaluate_words(words, jitter)
    return cpu_simd.evaluate_words(words, jitter)


def scan_seed_nonces(
    slots: np.ndarray, extranonce: bytes, nonce_start: int, nonce_count: int, header_time: int
) -> np.ndarray:
    """Goldens uint32[nonce_count] for one frame and extranonce over consecutive nonces."""
    nonces = (np.arange(nonce_count, dtype=np.uint64) + np.uint64(nonce_start)).astype(np.uint32)
    seeds = np.zeros((nonce_count, design.SEED_BYTES), dtype=np.uint8)
    seeds[:, : design.EXTRANONCE_BYTES] = np.frombuffer(extranonce, dtype=np.uint8)
    seeds[:, design.SEED_NONCE_OFFSET :] = nonces.astype(">u4").view(np.uint8).reshape(nonce_count, 4)
    rows = np.broadcast_to(slots, (nonce_count, design.SLOT_COUNT))
    return evaluate_with_keys(np.ascontiguousarray(rows), seeds, header_time)[0]


def scan_midstate_windows(
    midstate: tuple[int, ...], tail: bytes, starts: np.ndarray, window_size: int, skip: int, count: int
) -> np.ndarray:
    """Leading zero bits (uint8[count]) of the mining hash at positions ``skip … skip+count-1`` of
    the windows (``window_size`` nonces from each of ``starts``, int64) laid end to end, from the
    state after header bytes 0–63 and header bytes 64–75. One Numba call for all windows."""
    args = (
        np.array(midstate, dtype=np.uint32),
        np.frombuffer(tail, dtype=">u4").astype(np.uint32),
        starts if starts.dtype == np.int64 else starts.astype(np.int64),  # the API passes int64 slices
        window_size,
        skip,
        count,
    )
    # A few thousand nonces, or one thread asked for: the worker pool costs more than they do.
    serial = run_serial(-(-count // cpu_simd.LANES), SERIAL_SCAN_BLOCKS)
    if select_kernel(operation="scan") == "shani":
        from . import cpu_shani

        return cpu_shani.scan_windows(*args, serial=serial)
    return cpu_simd.scan_windows(*args, serial=serial)


def scan_midstate_nonces(
    midstate: tuple[int, ...], tail: bytes, nonce_start: int, nonce_count: int
) -> np.ndarray:
    """Leading zero bits (uint8) of the mining hash for each nonce in the range: the one-window scan."""
    return scan_midstate_windows(
        midstate, tail, np.array([nonce_start], np.int64), nonce_count, 0, nonce_count
    )


def scan_header_nonces(header: bytes, nonce_start: int, nonce_count: int) -> np.ndarray:
    """Leading zero bits (uint8) of the mining hash of ``header`` for each nonce in the range."""
    # Bytes 0–63 never change: compress them once (in Python, ~50 µs per call of 65536 nonces).
    return scan_midstate_nonces(header_midstate(header), header[64:76], nonce_start, nonce_count)
