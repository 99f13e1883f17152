"""The ``cuda`` backend's device-resident seed search: generations run on the GPU, only finished
frames and a few counters cross the bus (DESIGN §4.4; the search's host loop on a GPU was paced by
the host at 6–13 % of the device).

What it owns: the source of the search kernel (``device_search.cu`` after ``recursion.cu``, with the
generated constants of ``cuda.cuda_prelude`` and ``hasher_core.search.device_layout``), the launch
geometry, and :class:`DeviceSearch`, the :class:`~hasher_core.search.driver.SearchDriver` that
``search_frames`` runs on a GPU.

How a search runs. The frames go to a ring on the device once (64 bytes each). The kernel runs
persistent blocks, as many as the GPU holds at once, one frame per block at a time; a launch gives
every block the same budget of generations, during which a block whose frame finishes writes a
48-byte record and takes the next frame from the ring. Each launch returns the records and six
counters; the host commits the finished frames to the progress store, reports progress, refills
the ring, and sizes the next launch so it lasts about :data:`LAUNCH_SECONDS` (growing at most
:data:`LAUNCH_GROWTH`-fold per launch). So a Dagster run keeps its rate/ETA lines, a terminated run
stops within one launch, and a killed run loses at most the frames of one launch. Unfinished frames
stay on the device between launches; results do not depend on where or when a frame ran (every
draw comes from the frame's own counter-based stream), so they equal the CPU search's bit for bit.

The driver talks to the device through a :class:`Launcher`: :class:`CupyLauncher` on a GPU (pinned
host buffers, one stream per device), or the host build of the same kernel
(``device_search_host.HostLauncher``), which is how the test suite runs this file's logic
without a GPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hasher_core.search import device_layout as layout
from hasher_core.search.config import SearchConfig
from hasher_core.search.driver import PendingFrames, SearchSink

from . import cuda

SOURCE_PATH = Path(__file__).with_name("device_search.cu")
KERNEL = "hasher_search"
#: Most threads per block; the kernel declares it in ``__launch_bounds__`` with
#: :data:`SEARCH_MIN_BLOCKS`, which caps registers at 85 per thread (the recursion needs 80).
SEARCH_BLOCK = 256
SEARCH_MIN_BLOCKS = 3
#: Compiler options of the float32 arithmetic: no FMA contraction, IEEE division and square root,
#: denormals kept (the kernel's __fadd_rn/__fmul_rn already forbid contraction; these make sure).
FLOAT_OPTIONS = ("--fmad=false", "--prec-div=true", "--prec-sqrt=true", "--ftz=false")
#: Device time a launch aims at: long enough that the host's work per launch is noise, short enough
#: that progress, cancellation and what a kill loses stay at a second or less.
LAUNCH_SECONDS = 0.5
#: A launch may take at most this many times the previous one's generations (the first launch runs
#: one generation to measure the device; generation 0 costs more than the rest, so the estimate
#: errs long, never short).
LAUNCH_GROWTH = 16
#: Frames the device ring holds (64 bytes each): enough that no block waits for frames in one launch.
RING_FRAMES = 1 << 16
#: History entries (generations) allocated at first; grown as frames reach later generations.
HISTORY_START = 4096


def search_prelude() -> str:
    """The ``#define`` lines of the search kernel: the recursion's constants, the layout, the block."""
    lines = [cuda.cuda_prelude().rstrip("\n"), "// generated from hasher_core/search/device_layout.py"]
    lines += [f"#define {name} {value}" for name, value in layout.c_defines().items()]
    lines += [
        f"#define HASHER_SEARCH_BLOCK {SEARCH_BLOCK}",
        f"#define HASHER_SEARCH_MIN_BLOCKS {SEARCH_MIN_BLOCKS}",
        "#define HASHER_DEVICE_FUNCTIONS_ONLY 1",
    ]
    return "\n".join(lines) + "\n"


def search_source() -> str:
    """The complete source of the search kernel: constants, recursion.cu's device functions, the search."""
    return (
        search_prelude()
        + cuda.SOURCE_PATH.read_text(encoding="utf-8")
        + SOURCE_PATH.read_text(encoding="utf-8")
    )


def block_threads(config: SearchConfig) -> int:
    """Threads per block for ``config``: one per member evaluated in a steady generation (GRPO's
    elites keep their goldens), in whole warps, at most :data:`SEARCH_BLOCK`."""
    rows = int(config.population) - (config.elites if config.strategy == "grpo" else 0)
    return min(SEARCH_BLOCK, 32 * math.ceil(rows / 32))


@dataclass(frozen=True)
class SmLimits:
    """What one streaming multiprocessor holds (CUDA occupancy rules)."""

    registers: int = 65536
    threads: int = 2048
    blocks: int = 32
    shared_bytes: int = 233472
    register_unit: int = 256  # registers are allocated per warp in units of this many


def blocks_per_sm(threads: int, registers_per_thread: int, shared_bytes: int, sm: SmLimits) -> int:
    """Blocks of ``threads`` threads one SM runs at once, by its register, thread, block and shared
    memory limits (at least 1)."""
    warps = math.ceil(threads / 32)
    per_warp = math.ceil(max(registers_per_thread, 1) * 32 / sm.register_unit) * sm.register_unit
    by_registers = sm.registers // (per_warp * warps)
    by_shared = sm.shared_bytes // shared_bytes if shared_bytes else sm.blocks
    return max(1, min(by_registers, sm.threads // (32 * warps), sm.blocks, by_shared))


class Launcher(Protocol):
    """The device under :class:`DeviceSearch`: buffers, copies and the kernel."""

    def resident_blocks(self, threads: int) -> int:
        """Blocks of ``threads`` threads the device runs at once."""
        ...

    def zeros(self, count: int, dtype: type) -> Any:
        """A device buffer of ``count`` zeros."""
        ...

    def upload(self, buffer: Any, host: np.ndarray, offset: int = 0) -> None:
        """Copy ``host`` (contiguous) into ``buffer[offset : offset + host.size]``."""
        ...

    def download(self, buffer: Any, count: int) -> np.ndarray:
        """A host copy of ``buffer[:count]``."""
        ...

    def grow(self, buffer: Any, count: int) -> Any:
        """A buffer of ``count`` elements starting with ``buffer``'s contents, zeros after."""
        ...

    def launch(self, blocks: int, threads: int, args: tuple) -> None:
        """Run the search kernel and wait for it."""
        ...


@dataclass(frozen=True)
class LaunchStats:
    """One launch: its budget, the device's time, the time until the next launch started (host work
    included), evaluations, frames finished, and frames still waiting in the ring after it."""

    generations: int
    device_seconds: float
    cycle_seconds: float
    evaluations: int
    finished: int
    waiting: int


@dataclass
class DriverStats:
    """What the last :meth:`DeviceSearch.run` did: the benchmark's host and bus figures."""

    evaluations: int = 0
    device_seconds: float = 0.0
    wall_seconds: float = 0.0
    bytes_to_device: int = 0
    bytes_to_host: int = 0
    blocks: int = 0
    threads: int = 0
    launch_log: list[LaunchStats] = field(default_factory=list)

    @property
    def launches(self) -> int:
        return len(self.launch_log)

    @property
    def generations_per_launch(self) -> list[int]:
        return [launch.generations for launch in self.launch_log]

    @property
    def host_seconds(self) -> float:
        """Wall time not spent waiting for the device."""
        return max(self.wall_seconds - self.device_seconds, 0.0)

    @property
    def bus_bytes(self) -> int:
        return self.bytes_to_device + self.bytes_to_host

    def steady_evaluations_per_s(self) -> float:
        """Evaluations/s over the launches after which frames were still waiting (no block idled
        for want of a frame), host work between launches included: the search's pace before a
        partition's tail, when the last frames run while the other blocks have nothing left."""
        steady = [launch for launch in self.launch_log if launch.waiting > 0]
        seconds = sum(launch.cycle_seconds for launch in steady)
        return sum(launch.evaluations for launch in steady) / seconds if seconds > 0 else 0.0


class DeviceSearch:
    """The search driver of the ``cuda`` backend (see the module docstring).

    ``launcher``: a :class:`Launcher`, or a callable returning one (called once per search);
    default: :class:`CupyLauncher` on ``device_id``. ``generations_per_launch`` fixes each block's
    budget per launch (tests); ``None`` sizes launches to ``launch_seconds`` of device time.
    """

    def __init__(
        self,
        launcher: Launcher | Callable[[], Launcher] | None = None,
        *,
        device_id: int = 0,
        launch_seconds: float = LAUNCH_SECONDS,
        generations_per_launch: int | None = None,
        ring_frames: int = RING_FRAMES,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if generations_per_launch is not None and generations_per_launch < 1:
            raise ValueError(f"generations_per_launch must be >= 1, got {generations_per_launch}")
        self._launcher = launcher
        self.device_id = device_id
        self.launch_seconds = launch_seconds
        self.generations_per_launch = generations_per_launch
        self.ring_frames = ring_frames
        self.clock = clock
        self.stats = DriverStats()

    def _make_launcher(self) -> Launcher:
        if self._launcher is None:
            return CupyLauncher(self.device_id)
        if callable(self._launcher) and not hasattr(self._launcher, "launch"):
            return self._launcher()
        return self._launcher  # type: ignore[return-value]

    def run(self, config: SearchConfig, frames: PendingFrames, sink: SearchSink) -> None:
        """Search every frame of ``frames`` on the device, reporting to ``sink`` after each launch.

        Raises ValueError for a config the device cannot run (``max_generations`` beyond 2^31 - 1)
        and RuntimeError when a launch makes no progress (a kernel fault, never a silent hang)."""
        cfg = layout.config_words(config)
        started = self.clock()
        launcher = self._make_launcher()
        run = _Run(launcher, config, frames, self, cfg)
        self.stats = run.stats
        try:
            run.search(sink)
        finally:
            run.stats.wall_seconds = self.clock() - started


class _Run:
    """One search on one launcher: device buffers, the ring, the launch loop."""

    def __init__(
        self,
        launcher: Launcher,
        config: SearchConfig,
        frames: PendingFrames,
        owner: DeviceSearch,
        cfg: np.ndarray,
    ) -> None:
        self.launcher, self.config, self.frames, self.owner = launcher, config, frames, owner
        n = len(frames)
        self.threads = block_threads(config)
        self.blocks = max(1, min(launcher.resident_blocks(self.threads), n))
        self.ring = 1 << max(0, math.ceil(math.log2(max(1, min(n, owner.ring_frames)))))
        self.capacity = self.blocks + self.ring  # records one launch can write
        self.stats = DriverStats(blocks=self.blocks, threads=self.threads)
        pop_words, scratch_words = layout.slot_words(config)
        zeros = launcher.zeros
        self.d_config = zeros(cfg.size, np.uint32)
        self._up(self.d_config, cfg)
        self.d_state = zeros(self.blocks * layout.STATE_WORDS, np.uint32)
        empty = np.zeros((self.blocks, layout.STATE_WORDS), np.uint32)
        empty[:, layout.STATE_FRAME] = layout.NO_FRAME
        self._up(self.d_state, empty.reshape(-1))
        self.d_population = zeros(self.blocks * pop_words, np.uint32)
        self.d_scratch = zeros(self.blocks * scratch_words, np.uint32)
        self.d_queue = zeros(self.ring * layout.QUEUE_WORDS, np.uint32)
        self.d_counters = zeros(layout.COUNTERS, np.uint64)
        self.d_records = zeros(self.capacity * layout.RECORD_WORDS, np.uint32)
        self.history_capacity = min(int(config.max_generations), HISTORY_START)
        self.d_history_frames = zeros(self.history_capacity, np.uint32)
        self.d_history_mean = zeros(self.history_capacity, np.float64)
        self.d_history_best = zeros(self.history_capacity, np.float64)

    def _up(self, buffer: Any, host: np.ndarray, offset: int = 0) -> None:
        self.launcher.upload(buffer, host, offset)
        self.stats.bytes_to_device += host.nbytes

    def _down(self, buffer: Any, count: int, dtype: type) -> np.ndarray:
        out = self.launcher.download(buffer, count)
        self.stats.bytes_to_host += count * np.dtype(dtype).itemsize
        return out

    def _refill(self, head: int, end: int) -> int:
        """Queue the next frames into the ring's free entries; returns the new end."""
        n = len(self.frames)
        take = min(self.ring - (end - head), n - end)
        if take <= 0:
            return end
        idx = np.arange(end, end + take)
        f = self.frames
        entries = layout.queue_entries(f.slots[idx], f.target_words[idx], f.keys[idx], idx)
        at = end % self.ring
        first = min(take, self.ring - at)  # the ring may wrap once
        self._up(self.d_queue, entries[:first].reshape(-1), at * layout.QUEUE_WORDS)
        if first < take:
            self._up(self.d_queue, entries[first:].reshape(-1), 0)
        return end + take

    def _close_cycle(self, seconds: float) -> None:
        """Record the last launch's whole cycle: the device's time and the host's after it."""
        last = self.stats.launch_log[-1]
        self.stats.launch_log[-1] = LaunchStats(
            last.generations, last.device_seconds, seconds, last.evaluations, last.finished, last.waiting
        )

    def _ensure_history(self, generations_run: int) -> None:
        """Room for every generation index a frame can have reached after ``generations_run``."""
        need = min(int(self.config.max_generations), generations_run)
        if need <= self.history_capacity:
            return
        grown = min(int(self.config.max_generations), max(need, 2 * self.history_capacity))
        self.d_history_frames = self.launcher.grow(self.d_history_frames, grown)
        self.d_history_mean = self.launcher.grow(self.d_history_mean, grown)
        self.d_history_best = self.launcher.grow(self.d_history_best, grown)
        self.history_capacity = grown

    def search(self, sink: SearchSink) -> None:
        n = len(self.frames)
        owner, clock = self.owner, self.owner.clock
        difficulty = int(self.config.difficulty_bits)
        generations = owner.generations_per_launch or 1
        head = end = finished = budget_run = reached = 0
        cycle_start = clock()
        while finished < n:
            end = self._refill(head, end)
            self._up(self.d_counters, np.array([head, end, 0, 0, 0, 0], np.uint64))
            budget_run += generations
            self._ensure_history(budget_run)
            args = (
                self.d_config,
                self.d_state,
                self.d_population,
                self.d_scratch,
                self.d_queue,
                self.d_counters,
                self.d_records,
                self.d_history_frames,
                self.d_history_mean,
                self.d_history_best,
                np.uint32(self.ring - 1),
                np.uint32(self.history_capacity),
                np.uint32(generations),
            )
            t0 = clock()
            if self.stats.launch_log:  # the previous launch's cycle ends where this launch starts
                self._close_cycle(t0 - cycle_start)
            cycle_start = t0
            self.launcher.launch(self.blocks, self.threads, args)
            seconds = clock() - t0
            counters = self._down(self.d_counters, layout.COUNTERS, np.uint64)
            head = min(int(counters[layout.COUNTER_HEAD]), end)
            done = int(counters[layout.COUNTER_FINISHED])
            evaluations = int(counters[layout.COUNTER_EVALUATIONS])
            reached = max(reached, int(counters[layout.COUNTER_REACHED]))
            if done > self.capacity:
                raise RuntimeError(f"device search wrote {done} records into room for {self.capacity}")
            records = self._down(self.d_records, done * layout.RECORD_WORDS, np.uint32) if done else None
            self.stats.evaluations += evaluations
            self.stats.device_seconds += seconds
            self.stats.launch_log.append(
                LaunchStats(generations, seconds, 0.0, evaluations, done, max(end - head, 0) + (n - end))
            )
            if records is not None:
                positions, results = layout.finished_frames(records, self.frames, difficulty)
                sink.finished(positions, results)
            sink.evaluated(evaluations, seconds)
            sink.tick()
            finished += done
            if done == 0 and evaluations == 0:
                raise RuntimeError(
                    f"device search made no progress in launch {self.stats.launches} "
                    f"({finished} of {n} frames finished, queue {head}/{end}): the kernel did not run"
                )
            longest = int(counters[layout.COUNTER_LONGEST])
            if owner.generations_per_launch is None and seconds > 0 and longest > 0:
                # The launch lasted as long as its busiest block: time per generation is seconds ÷ the
                # most generations one block ran (blocks left without frames stop early).
                scaled = int(owner.launch_seconds * longest / seconds)
                generations = max(1, min(scaled, LAUNCH_GROWTH * generations))
        self._close_cycle(clock() - cycle_start)
        reached = min(self.history_capacity, reached)  # the generation indices any frame reached
        counts = self._down(self.d_history_frames, reached, np.uint32) if reached else np.zeros(0, np.uint32)
        mean = self._down(self.d_history_mean, reached, np.float64) if reached else np.zeros(0)
        best = self._down(self.d_history_best, reached, np.float64) if reached else np.zeros(0)
        sink.set_history(counts.astype(np.int64), mean, best)


_kernel: Any = None


class CupyLauncher:
    """The search kernel on a CUDA device through CuPy: the backend's one stream per device and
    pinned (page-locked) host buffers for every copy (``cuda.stream``, ``cuda.pinned``)."""

    def __init__(self, device_id: int = 0) -> None:
        global _kernel
        cupy = cuda._cupy()
        self._cupy = cupy
        self.device_id = device_id
        with cupy.cuda.Device(device_id):
            if _kernel is None:
                _kernel = cupy.RawKernel(search_source(), KERNEL, options=("-std=c++17", *FLOAT_OPTIONS))
            self.kernel = _kernel
            # Reading an attribute compiles the kernel for this device now, before a launch is timed.
            self.registers = int(self.kernel.num_regs)
            self.shared_bytes = int(self.kernel.shared_size_bytes)
            self.local_bytes = int(self.kernel.local_size_bytes)
            self.stream = cuda.stream()
            self.properties = cupy.cuda.runtime.getDeviceProperties(device_id)

    def sm_limits(self) -> SmLimits:
        p, d = self.properties, SmLimits()
        return SmLimits(
            registers=int(p.get("regsPerMultiprocessor", d.registers)),
            threads=int(p.get("maxThreadsPerMultiProcessor", d.threads)),
            blocks=int(p.get("maxBlocksPerMultiProcessor", d.blocks)),
            shared_bytes=int(p.get("sharedMemPerMultiprocessor", d.shared_bytes)),
        )

    def resident_blocks(self, threads: int) -> int:
        sms = int(self.properties.get("multiProcessorCount", 1))
        return sms * blocks_per_sm(threads, self.registers, self.shared_bytes, self.sm_limits())

    def zeros(self, count: int, dtype: type) -> Any:
        with self._cupy.cuda.Device(self.device_id), self.stream:
            return self._cupy.zeros(max(count, 1), dtype)

    def upload(self, buffer: Any, host: np.ndarray, offset: int = 0) -> None:
        host = np.ascontiguousarray(host).reshape(-1)
        staging = cuda.pinned("search up", host.size, host.dtype)
        np.copyto(staging, host)
        with self._cupy.cuda.Device(self.device_id):
            buffer[offset : offset + host.size].set(staging, stream=self.stream)
            self.stream.synchronize()  # the staging buffer is reused by the next copy

    def download(self, buffer: Any, count: int) -> np.ndarray:
        staging = cuda.pinned("search down", count, buffer.dtype)
        with self._cupy.cuda.Device(self.device_id):
            buffer[:count].get(stream=self.stream, out=staging)
            self.stream.synchronize()
        return staging.copy()

    def grow(self, buffer: Any, count: int) -> Any:
        grown = self.zeros(count, buffer.dtype)
        with self._cupy.cuda.Device(self.device_id), self.stream:
            grown[: buffer.size] = buffer  # a copy on the device, nothing crosses the bus
        return grown

    def launch(self, blocks: int, threads: int, args: tuple) -> None:
        with self._cupy.cuda.Device(self.device_id), self.stream:
            self.kernel((blocks,), (threads,), args)
        self.stream.synchronize()
