"""The device search compiled for the host: ``device_search.cu`` built by g++ as C++ and driven by
the same :class:`~hasher_resources.sha256.device_search.DeviceSearch` as on a GPU.

On the host a block's phases run its threads one after another (in reverse order on request, which
proves no phase depends on the order of its threads), blocks run one after another, and atomics
are plain adds; everything else (the layout, the queue, the launch budget, the records, the float32
arithmetic) is the GPU's code. The test suite runs it against the Numba search on machines without a
GPU, and the search benchmark measures the driver's host work with it.

``standin=True`` builds the kernel with a stand-in for the 21-pass recursion that costs almost
nothing (:func:`standin_evaluate` is its numpy twin): the search's own logic at sizes the real
recursion is too slow for on a CPU. :class:`ZeroCostLauncher` goes further, a device that only
does a launch's bookkeeping: the driver's host work at a GPU's launch sizes.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hasher_core.search import device_layout as layout
from hasher_core.search import reward

from . import device_search

#: g++ flags of the host build: IEEE float32 without contraction (as the GPU build), warnings fatal.
GXX_FLAGS = (
    "-O3",
    "-std=c++17",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-fno-strict-aliasing",
    "-Wall",
    "-Werror",
    "-shared",
    "-fPIC",
)

_libraries: dict[bool, ctypes.CDLL] = {}


class HostBuildError(RuntimeError):
    """The host build of the device search failed or g++ is missing (the message says which)."""


def build_host_library(standin: bool = False, directory: Path | None = None) -> Path:
    """Compile the search kernel's source as a shared library for this CPU and return its path.

    Built once per source and flags (cached under ``directory``, default a per-user temp dir).
    Raises HostBuildError when g++ is missing or fails (with its output)."""
    gxx = shutil.which("g++")
    if gxx is None:
        raise HostBuildError(
            "g++ not found: the host build of the device search needs it (apt-get install g++)"
        )
    source = device_search.search_source()
    flags = [*GXX_FLAGS, *(["-DHASHER_SEARCH_STANDIN"] if standin else [])]
    digest = hashlib.sha256((source + "\0".join(flags)).encode()).hexdigest()[:16]
    root = directory or Path(tempfile.gettempdir()) / f"hasher-device-search-{os.getuid()}"
    root.mkdir(parents=True, exist_ok=True)
    library = root / f"device_search_{'standin' if standin else 'sha256'}_{digest}.so"
    if library.exists():
        return library
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        src = Path(tmp) / "device_search.cpp"
        src.write_text(source, encoding="utf-8")
        out = Path(tmp) / library.name
        done = subprocess.run(
            [gxx, "-x", "c++", *flags, "-o", str(out), str(src)], capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            raise HostBuildError(
                f"g++ failed on the device search (exit {done.returncode}):\n{done.stderr[-4000:]}"
            )
        os.replace(out, library)  # atomic: a concurrent build finds a whole library or none
    return library


def host_library(standin: bool = False) -> ctypes.CDLL:
    """The loaded host build (built on first use in this process)."""
    lib = _libraries.get(standin)
    if lib is None:
        lib = ctypes.CDLL(str(build_host_library(standin)))
        pointer, u32 = ctypes.c_void_p, ctypes.c_uint32
        lib.hasher_search_host.argtypes = [pointer] * 10 + [u32, u32, u32, u32, ctypes.c_int, ctypes.c_int]
        lib.hasher_search_host.restype = None
        u64, f32 = ctypes.c_uint64, ctypes.c_float
        lib.hasher_host_fresh_seed.argtypes = [u64, u32, pointer]
        lib.hasher_host_scan_seed.argtypes = [u64, u64, u32, u32, pointer]
        lib.hasher_host_mutant.argtypes = [pointer, f32, u64, u64, pointer]
        lib.hasher_host_reward.argtypes = [u32, pointer, u32, ctypes.c_int, pointer]
        lib.hasher_host_reward.restype = f32
        lib.hasher_host_pairwise.argtypes = [pointer, pointer, u32, pointer, u32, pointer]
        lib.hasher_host_pairwise.restype = f32
        _libraries[standin] = lib
    return lib


class HostLauncher:
    """A :class:`~hasher_resources.sha256.device_search.Launcher` on the host build: buffers are
    numpy arrays, a launch runs ``blocks`` blocks one after another.

    ``blocks``: how many blocks "the device" runs at once (slots); ``reverse_threads``: run each
    phase's threads last to first."""

    def __init__(self, *, standin: bool = False, blocks: int = 4, reverse_threads: bool = False) -> None:
        self.lib = host_library(standin)
        self.blocks = blocks
        self.reverse_threads = reverse_threads
        self.launches = 0

    def resident_blocks(self, threads: int) -> int:
        return self.blocks

    def zeros(self, count: int, dtype: type) -> np.ndarray:
        return np.zeros(max(count, 1), dtype)

    def upload(self, buffer: np.ndarray, host: np.ndarray, offset: int = 0) -> None:
        host = np.ascontiguousarray(host).reshape(-1)
        buffer[offset : offset + host.size] = host

    def download(self, buffer: np.ndarray, count: int) -> np.ndarray:
        return buffer[:count].copy()

    def grow(self, buffer: np.ndarray, count: int) -> np.ndarray:
        grown = np.zeros(count, buffer.dtype)
        grown[: buffer.size] = buffer
        return grown

    def launch(self, blocks: int, threads: int, args: tuple[Any, ...]) -> None:
        arrays, (ring_mask, history_capacity, generations) = args[:10], args[10:]
        pointers = [a.ctypes.data_as(ctypes.c_void_p) for a in arrays]
        self.lib.hasher_search_host(
            *pointers, ring_mask, history_capacity, generations, blocks, threads, int(self.reverse_threads)
        )
        self.launches += 1


def standin_evaluate(slots: np.ndarray, seeds: np.ndarray, header_time: int) -> tuple[np.ndarray, np.ndarray]:
    """The stand-in recursion of the ``standin`` build, vectorised: a pseudo-random function of
    (slots uint32[N, 12], seeds uint8[N, 32], header_time) with the kernel's outputs (golden
    uint32[N], keys uint32[N, 3]). An evaluator for ``search_frames`` that costs almost nothing."""
    z = reward.mix64(np.full(len(slots), np.uint64(header_time) + np.uint64(1), np.uint64))
    for w in slots.astype(np.uint64).T:
        z = reward.mix64(z ^ w)
    for w in np.ascontiguousarray(seeds).view("<u8").T:
        z = reward.mix64(z ^ w)
    words = [reward.mix64(z + np.uint64(i)) >> np.uint64(32) for i in range(4)]
    return words[0].astype(np.uint32), np.stack(words[1:], axis=1).astype(np.uint32)


class ZeroCostLauncher(HostLauncher):
    """A device that costs nothing, for measuring the driver's own host work at a GPU's launch
    sizes: a launch does a real launch's bookkeeping (claims from the frame ring, each block's budget
    of generations, one record per finished frame, the counters) but evaluates nothing, and every
    frame finishes after ``generations_per_frame`` generations (2^17 / 192 ≈ 683 for GRPO at the
    default difficulty). ``blocks`` is the device's resident blocks (528 = 132 SMs × 4 on an H100).
    Its records carry the frame, the generations and evaluations, and a golden equal to the target;
    their seeds are zero."""

    def __init__(self, *, blocks: int, generations_per_frame: int) -> None:
        self.blocks = blocks
        self.generations_per_frame = generations_per_frame
        self.reverse_threads = False
        self.launches = 0
        self._progress: np.ndarray | None = None  # generations each slot's frame has run

    def launch(self, blocks: int, threads: int, args: tuple[Any, ...]) -> None:
        config, state, _, _, queue, counters, records = args[:7]
        ring_mask, budget = int(args[10]), int(args[12])
        population, elites = int(config[layout.CFG_POPULATION]), int(config[layout.CFG_ELITES])
        steady = population - (elites if config[layout.CFG_GRPO] else 0)
        states = state.reshape(-1, layout.STATE_WORDS)
        entries = queue.reshape(-1, layout.QUEUE_WORDS)
        out = records.reshape(-1, layout.RECORD_WORDS)
        per_frame = self.generations_per_frame
        evaluations = longest = 0
        for b in range(blocks):
            left = budget
            while left:
                if states[b, layout.STATE_FRAME] == layout.NO_FRAME:
                    claim = int(counters[layout.COUNTER_HEAD])
                    counters[layout.COUNTER_HEAD] += 1
                    if claim >= counters[layout.COUNTER_END]:
                        break
                    entry = entries[claim & ring_mask]
                    states[b, layout.STATE_FRAME] = entry[layout.QUEUE_FRAME]
                    states[b, layout.STATE_TARGET] = entry[layout.QUEUE_TARGET]
                    states[b, layout.STATE_GENERATION] = 0
                done = int(states[b, layout.STATE_GENERATION])
                run = min(left, per_frame - done)
                evaluations += run * steady + (population - steady if done == 0 else 0)
                left -= run
                states[b, layout.STATE_GENERATION] = done + run
                counters[layout.COUNTER_REACHED] = max(int(counters[layout.COUNTER_REACHED]), done + run)
                if done + run == per_frame:
                    at = int(counters[layout.COUNTER_FINISHED])
                    counters[layout.COUNTER_FINISHED] += 1
                    frame_evaluations = population + (per_frame - 1) * steady
                    out[at] = 0
                    out[at, layout.RECORD_FRAME] = states[b, layout.STATE_FRAME]
                    out[at, layout.RECORD_GOLDEN] = states[b, layout.STATE_TARGET]
                    out[at, layout.RECORD_MATCHED] = 32
                    out[at, layout.RECORD_GENERATIONS] = per_frame
                    out[at, layout.RECORD_EVALUATIONS_LO] = frame_evaluations & 0xFFFFFFFF
                    out[at, layout.RECORD_EVALUATIONS_HI] = frame_evaluations >> 32
                    states[b, layout.STATE_FRAME] = layout.NO_FRAME
            longest = max(longest, budget - left)
        counters[layout.COUNTER_EVALUATIONS] += evaluations
        counters[layout.COUNTER_LONGEST] = longest
        self.launches += 1
