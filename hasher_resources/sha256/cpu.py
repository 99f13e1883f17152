"""The CPU backend: the 21-pass recursion and the nonce scans compiled with Numba.

No compiler is needed at install time; the JIT result is cached on disk (``cache=True``). The
kernels work on blocks of ``LANES`` independent evaluations side by side in structure-of-arrays
form (``state[word, lane]``), so every innermost loop runs over lanes and LLVM emits SIMD rotates
and adds for it; a scalar per-hash loop is about six times slower. Blocks are spread over cores
with ``prange`` in one large parallel region per call.

What is computed once per evaluation rather than once per pass (DESIGN §4.2 keeps these fixed):
- rounds 0–8 of block 1, which only read header words 0–8 (version and slots 0–7);
- the whole 64-word schedule of block 2 (header words 16–19 and padding never change), with the
  round constants folded in.
Numba types uint32 arithmetic as int64, so every value that is later shifted right or used twice
is cut back to 32 bits with ``np.uint32(...)``: that keeps rotates correct and lets LLVM narrow the
vector code to 32-bit lanes (``vprold``, ``vpternlogd`` on AVX-512; twice the lanes of int64 code).

Two CPU paths compute the same results bit for bit: this SIMD kernel, for every CPU, and the SHA-NI
kernel in ``cpu_shani`` for x86 CPUs with the SHA extensions. ``select_kernel`` chooses between
them in Python (compiling SHA-NI code for a CPU without it kills the process, so the choice can
never be made inside compiled code): ``HASHER_CPU_KERNEL=auto|shani|simd``, ``auto`` by default.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import numba
import numpy as np
from numba import njit, prange

from hasher_core import design
from hasher_core.errors import BackendUnavailableError, KernelConfigError
from hasher_core.header import build_headers
from hasher_core.header import midstate as header_midstate
from hasher_core.threads import run_serial

#: Evaluations processed side by side in one block; 64 keeps a block's three 64-row schedules in L1.
LANES = 64

#: Nonces per call in a scan (each costs ~200 bytes of staging here), so 2**32-nonce sweeps stay small.
SCAN_CHUNK = 1 << 16

#: Blocks handed to a worker at a time (dynamic scheduling): when another process takes a core, the
#: remaining workers pick up its share instead of the whole call waiting for it.
PARALLEL_CHUNK_BLOCKS = 2

#: Midstate scans of at most this many blocks run on the calling thread (see _scan_windows_blocks_serial):
#: one emulator work item (4,096 nonces, ~0.4 ms on one core) is one of them.
SERIAL_SCAN_BLOCKS = 64

#: Evaluations of at most this many rows run on the calling thread (~3 ms on one core): a parallel
#: region waits until every worker thread is scheduled, 17–24 ms for a single row on a busy 2-core
#: machine, against 0.2 ms for the row itself. Inference steps, deploy verification samples and the
#: auto-choice timings are this small.
SERIAL_EVALUATE_ROWS = 1024

_K = np.array(design.SHA256_K, dtype=np.uint32)
_IV = np.array(design.SHA256_IV, dtype=np.uint32)
_MUTATED = design.MUTATED_WORD_FIRST
_PASSES = design.PASSES
_STAB0 = design.STABILITY_PASSES[0]
_PHASE2 = design.JITTER_PHASE2_START
_PHASE3 = design.JITTER_PHASE3_START
# clz32(d) < threshold  <=>  d >= 2**(32 - threshold)
_LOW_CLZ_LIMIT = 1 << (32 - design.JITTER_CLZ_THRESHOLD)
_LOW_CLZ_XOR = design.JITTER_LOW_CLZ_XOR
_HIGH_CLZ_XOR = design.JITTER_HIGH_CLZ_XOR


@njit(cache=True)
def _rotr(x, n):
    return np.uint32((x >> n) | (x << (32 - n)))


@njit(cache=True)
def _schedule(w):
    """Extend rows 0–15 of ``w[64, LANES]`` to the full message schedule."""
    for t in range(16, 64):
        for lane in range(LANES):
            x = w[t - 15, lane]
            y = w[t - 2, lane]
            s0 = _rotr(x, 7) ^ _rotr(x, 18) ^ np.uint32(x >> 3)
            s1 = _rotr(y, 17) ^ _rotr(y, 19) ^ np.uint32(y >> 10)
            w[t, lane] = np.uint32(w[t - 16, lane] + s0 + w[t - 7, lane] + s1)


@njit(cache=True)
def _rounds(v, w, first, last, k):
    """Rounds ``first … last-1`` on state ``v[8, LANES]`` with round constants ``k`` (zeros when ``w``
    already holds W+K)."""
    for t in range(first, last):
        kt = k[t]
        for lane in range(LANES):
            a = v[0, lane]
            b = v[1, lane]
            c = v[2, lane]
            d = v[3, lane]
            e = v[4, lane]
            f = v[5, lane]
            g = v[6, lane]
            h = v[7, lane]
            # t1 and t2 are cut to 32 bits: each has two uses, and LLVM narrows Numba's int64 arithmetic
            # back to 32-bit SIMD lanes only when every expression tree ends in a truncation.
            t1 = np.uint32(
                h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + (g ^ (e & (f ^ g))) + kt + w[t, lane]
            )
            t2 = np.uint32((_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) | (c & (a | b))))
            v[7, lane] = g
            v[6, lane] = f
            v[5, lane] = e
            v[4, lane] = np.uint32(d + t1)
            v[3, lane] = c
            v[2, lane] = b
            v[1, lane] = a
            v[0, lane] = np.uint32(t1 + t2)


@njit(cache=True)
def _second_hash(s, w3, v, iv, k):
    """SHA-256 of the 32-byte digest ``s[8, LANES]`` into ``v`` (final state, IV added)."""
    for t in range(8):
        for lane in range(LANES):
            w3[t, lane] = s[t, lane]
    _schedule(w3)
    for t in range(8):
        for lane in range(LANES):
            v[t, lane] = iv[t]
    _rounds(v, w3, 0, 64, k)
    for t in range(8):
        for lane in range(LANES):
            v[t, lane] = np.uint32(v[t, lane] + iv[t])


@njit(cache=True)
def _digest_padding(w3):
    """Rows 8–15 of the second hash's block: 0x80 terminator and the 256-bit length."""
    for lane in range(LANES):
        w3[8, lane] = np.uint32(0x80000000)
        for t in range(9, 15):
            w3[t, lane] = np.uint32(0)
        w3[15, lane] = np.uint32(256)


def _evaluate_blocks_py(words, jitter_slots, golden, keys, k, iv):  # pragma: no cover - compiled
    """``words`` uint32[N, 20] big-endian header words, ``jitter_slots`` uint32[N, 3] (slots 1–3);
    N is a multiple of LANES. Writes ``golden[N]`` and ``keys[N, 3]``."""
    zeros = np.zeros(64, dtype=np.uint32)
    for block in prange(words.shape[0] // LANES):
        base = block * LANES
        w = np.empty((64, LANES), dtype=np.uint32)
        wk2 = np.empty((64, LANES), dtype=np.uint32)
        w3 = np.empty((64, LANES), dtype=np.uint32)
        v = np.empty((8, LANES), dtype=np.uint32)
        s = np.empty((8, LANES), dtype=np.uint32)
        mid = np.empty((8, LANES), dtype=np.uint32)
        js = np.empty((3, LANES), dtype=np.uint32)
        for t in range(16):
            for lane in range(LANES):
                w[t, lane] = words[base + lane, t]
        for t in range(3):
            for lane in range(LANES):
                js[t, lane] = jitter_slots[base + lane, t]
        # Block 2 (header words 16–19 + padding) is the same in every pass: schedule it once, K folded in.
        for t in range(4):
            for lane in range(LANES):
                wk2[t, lane] = words[base + lane, 16 + t]
        for lane in range(LANES):
            wk2[4, lane] = np.uint32(0x80000000)
            for t in range(5, 15):
                wk2[t, lane] = np.uint32(0)
            wk2[15, lane] = np.uint32(640)
        _schedule(wk2)
        for t in range(64):
            for lane in range(LANES):
                wk2[t, lane] = np.uint32(wk2[t, lane] + k[t])
        _digest_padding(w3)
        # Rounds 0–8 of block 1 read only words 0–8, which no pass changes.
        for t in range(8):
            for lane in range(LANES):
                mid[t, lane] = iv[t]
        _rounds(mid, w, 0, _MUTATED, k)
        for p in range(_PASSES + 1):
            _schedule(w)
            for t in range(8):
                for lane in range(LANES):
                    v[t, lane] = mid[t, lane]
            _rounds(v, w, _MUTATED, 64, k)
            for t in range(8):
                for lane in range(LANES):
                    s[t, lane] = np.uint32(v[t, lane] + iv[t])
                    v[t, lane] = s[t, lane]
            _rounds(v, wk2, 0, 64, zeros)
            for t in range(8):
                for lane in range(LANES):
                    s[t, lane] = np.uint32(s[t, lane] + v[t, lane])
            _second_hash(s, w3, v, iv, k)
            if p == _PASSES:
                for lane in range(LANES):
                    golden[base + lane] = v[0, lane]
                break
            if p >= _STAB0:
                for lane in range(LANES):
                    keys[base + lane, p - _STAB0] = v[0, lane]
            for lane in range(LANES):
                key = v[0, lane]
                if p < _PHASE2:
                    j = np.uint32(key ^ js[0, lane])
                elif p < _PHASE3:
                    j = np.uint32(_rotr(key, 16) ^ js[1, lane])
                else:
                    d = np.uint32(key ^ js[2, lane])
                    j = np.uint32(key ^ _LOW_CLZ_XOR) if d >= _LOW_CLZ_LIMIT else np.uint32(d ^ _HIGH_CLZ_XOR)
                w[_MUTATED, lane] = np.uint32(w[_MUTATED, lane] ^ j)
                w[_MUTATED + 1, lane] = np.uint32(w[_MUTATED + 1, lane] ^ _rotr(j, 24))
                w[_MUTATED + 2, lane] = np.uint32(w[_MUTATED + 2, lane] ^ _rotr(j, 16))
                w[_MUTATED + 3, lane] = np.uint32(w[_MUTATED + 3, lane] ^ _rotr(j, 8))


_evaluate_blocks = njit(parallel=True, cache=True)(_evaluate_blocks_py)
#: The same kernel on the calling thread, for inputs too small to share (see SERIAL_EVALUATE_ROWS).
_evaluate_blocks_serial = njit(cache=True)(_evaluate_blocks_py)


@njit(cache=True)
def _clz32(x):
    n = 0
    if x == 0:
        return 32
    while (x & np.uint32(0x80000000)) == 0:
        x = np.uint32(x << 1)
        n += 1
    return n


@njit(cache=True)
def _bswap32(x):
    return np.uint32(((x & 0xFF) << 24) | ((x & 0xFF00) << 8) | ((x >> 8) & 0xFF00) | (x >> 24))


def _scan_windows_blocks_py(
    midstate, tail, starts, window_size, skip, count, zero_bits, k, iv
):  # pragma: no cover
    """``midstate`` uint32[8]: the state after header bytes 0–63 (computed once per header, the
    Bitcoin midstate); ``tail`` uint32[3]: big-endian header words 16–18 (bytes 64–75).

    Nonces come from windows of ``window_size`` consecutive nonces starting at ``starts`` (int64),
    laid end to end; this call hashes positions ``skip … skip+count-1`` of that sequence (position
    p: nonce ``starts[p // window_size] + p % window_size`` mod 2^32). Lanes are packed across
    window boundaries, so windows smaller than LANES waste no lanes; padding lanes past ``count``
    hash nonce 0 and are not read. Writes, per position, the leading zero bits of the byte-reversed
    double SHA-256 (capped at 255): two compressions per nonce."""
    mid = np.empty((8, LANES), dtype=np.uint32)
    for t in range(8):
        for lane in range(LANES):
            mid[t, lane] = midstate[t]
    for block in prange((count + LANES - 1) // LANES):
        base = block * LANES
        w = np.empty((64, LANES), dtype=np.uint32)
        w3 = np.empty((64, LANES), dtype=np.uint32)
        v = np.empty((8, LANES), dtype=np.uint32)
        s = np.empty((8, LANES), dtype=np.uint32)
        for lane in range(LANES):
            nonce = 0
            if base + lane < count:
                position = skip + base + lane
                window = position // window_size
                nonce = (starts[window] + position - window * window_size) & 0xFFFFFFFF
            w[0, lane] = tail[0]
            w[1, lane] = tail[1]
            w[2, lane] = tail[2]
            # The nonce sits little-endian in bytes 76–79, so the big-endian message word is swapped.
            w[3, lane] = _bswap32(np.uint32(nonce))
            w[4, lane] = np.uint32(0x80000000)
            for t in range(5, 15):
                w[t, lane] = np.uint32(0)
            w[15, lane] = np.uint32(640)
        _schedule(w)
        for t in range(8):
            for lane in range(LANES):
                v[t, lane] = mid[t, lane]
        _rounds(v, w, 0, 64, k)
        for t in range(8):
            for lane in range(LANES):
                s[t, lane] = np.uint32(mid[t, lane] + v[t, lane])
        _digest_padding(w3)
        _second_hash(s, w3, v, iv, k)
        for lane in range(LANES):
            # A Bitcoin hash is read byte-reversed: digest word 7, byte-swapped, holds its top bits.
            bits = 0
            for t in range(7, -1, -1):
                z = _clz32(_bswap32(v[t, lane]))
                bits += z
                if z < 32:
                    break
            zero_bits[base + lane] = min(bits, 255)


_scan_windows_blocks = njit(parallel=True, cache=True)(_scan_windows_blocks_py)
#: The same kernel on one thread, for scans too small to share: waking the worker pool costs more
#: than they do, and on a busy machine a parallel region waits for every worker to be scheduled.
_scan_windows_blocks_serial = njit(cache=True)(_scan_windows_blocks_py)


#: The environment variable that forces a CPU path, and its values.
KERNEL_ENV = "HASHER_CPU_KERNEL"
CPU_KERNELS = ("auto", "shani", "simd")

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
AUTO_ROWS = 6 * LANES
AUTO_NONCES = 64 * LANES
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
            "simd": lambda: _evaluate_simd(words, jitter),
            "shani": lambda: cpu_shani.evaluate_words(words, jitter),
        }
    elif operation == "scan":
        count = AUTO_NONCES
        args = (_IV.copy(), np.zeros(3, np.uint32), np.zeros(1, np.int64), count, 0, count)
        bits = np.empty(count, dtype=np.uint8)
        calls = {
            "simd": lambda: _scan_windows_blocks_serial(*args, bits, _K, _IV),
            "shani": lambda: cpu_shani.scan_windows(*args, bits, serial=True),
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


def _padded_rows(a: np.ndarray) -> np.ndarray:
    """``a`` with its rows padded to a multiple of LANES (zeros), contiguous."""
    n = a.shape[0]
    pad = -n % LANES
    if pad == 0:
        return np.ascontiguousarray(a)
    out = np.zeros((n + pad, *a.shape[1:]), dtype=a.dtype)
    out[:n] = a
    return out


def header_words(slots: np.ndarray, seeds: np.ndarray, header_time: int) -> np.ndarray:
    """Big-endian header words uint32[N, 20], the form SHA-256 reads the header in."""
    return build_headers(slots, seeds, header_time).view(">u4").astype(np.uint32)


def evaluate_with_keys(
    slots: np.ndarray, seeds: np.ndarray, header_time: int
) -> tuple[np.ndarray, np.ndarray]:
    """Goldens uint32[N] and keys of passes 18–20 uint32[N, 3] for validated inputs."""
    words, jitter = header_words(slots, seeds, header_time), slots[:, 1:4]
    if select_kernel() == "shani":
        from . import cpu_shani

        return cpu_shani.evaluate_words(words, jitter)
    return _evaluate_simd(words, jitter)


def _evaluate_simd(words: np.ndarray, jitter: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The SIMD path of ``evaluate_with_keys`` on header words uint32[N, 20] and slots 1–3 uint32[N, 3]."""
    n = words.shape[0]
    words = _padded_rows(words)
    jitter_slots = _padded_rows(jitter)
    golden = np.empty(words.shape[0], dtype=np.uint32)
    keys = np.empty((words.shape[0], len(design.STABILITY_PASSES)), dtype=np.uint32)
    if serial_call(n):
        _evaluate_blocks_serial(words, jitter_slots, golden, keys, _K, _IV)
    else:
        with numba.parallel_chunksize(PARALLEL_CHUNK_BLOCKS):
            _evaluate_blocks(words, jitter_slots, golden, keys, _K, _IV)
    return golden[:n], keys[:n]


def serial_call(rows: int) -> bool:
    """Whether an evaluation of ``rows`` rows runs on the calling thread (``hasher_core.threads``)."""
    return run_serial(rows, SERIAL_EVALUATE_ROWS)


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
    blocks = -(-count // LANES)
    zero_bits = np.empty(blocks * LANES, dtype=np.uint8)
    args = (
        np.array(midstate, dtype=np.uint32),
        np.frombuffer(tail, dtype=">u4").astype(np.uint32),
        starts if starts.dtype == np.int64 else starts.astype(np.int64),  # the API passes int64 slices
        window_size,
        skip,
        count,
        zero_bits,
        _K,
        _IV,
    )
    # A few thousand nonces, or one thread asked for: the worker pool costs more than they do.
    serial = run_serial(blocks, SERIAL_SCAN_BLOCKS)
    if select_kernel(operation="scan") == "shani":
        from . import cpu_shani

        cpu_shani.scan_windows(*args[:7], serial=serial)
    elif serial:
        _scan_windows_blocks_serial(*args)
    else:
        with numba.parallel_chunksize(PARALLEL_CHUNK_BLOCKS):
            _scan_windows_blocks(*args)
    return zero_bits[:count]


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
