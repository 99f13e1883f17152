"""The CuPy code paths without a GPU: a stand-in for the part of CuPy's API the backend uses (device
memory as numpy arrays, kernels as their host builds) runs ``CupyLauncher`` and
``cuda.evaluate_with_keys`` for real.

It checks what the host logic does with CuPy: every copy goes through a pinned staging buffer on the
device's one stream, copies match the device buffer's shape and dtype (as ``ndarray.set``/``get``
require), kernel arguments reach the kernel in its order, the kernel is compiled with the float
options, and the results equal the CPU search's. That CuPy itself and the GPU behave as documented is
what ``scripts/gpu_check.sh`` checks on a real device.
"""

from __future__ import annotations

import ctypes
import sys
import types

import numpy as np
import pytest

from hasher_core.design import VOCABULARY_SIZE
from hasher_core.search.config import SearchConfig
from hasher_core.search.loop import search_frames
from hasher_resources.sha256 import cuda, device_search, device_search_host, reference
from hasher_tests.resources.sha256.cases import random_rows
from hasher_tests.resources.sha256.test_device_search import (
    assert_same_results,
    cpu_evaluate,
    require_host_build,
)


class FakeCupy:
    """The CuPy calls the backend makes, on the host. ``copies`` logs (direction, stream, pinned)."""

    def __init__(self, kernel_lib: ctypes.CDLL | None = None) -> None:
        fake = self
        self.copies: list[tuple[str, object, bool]] = []
        self.launches: list[tuple[object, tuple, tuple]] = []
        self.kernels: list[tuple[str, tuple]] = []
        self.pinned_ids: set[int] = set()
        self.current_stream: object = None
        self.lib = kernel_lib

        class Array:
            def __init__(self, data: np.ndarray) -> None:
                self.data = data

            size = property(lambda self: self.data.size)
            dtype = property(lambda self: self.data.dtype)
            shape = property(lambda self: self.data.shape)

            def __getitem__(self, key):
                return Array(self.data[key])

            def __setitem__(self, key, value):  # device-to-device
                self.data[key] = value.data if isinstance(value, Array) else value

            def set(self, arr, stream=None):
                assert isinstance(arr, np.ndarray), "set() takes a numpy array"
                assert arr.shape == self.data.shape and arr.dtype == self.data.dtype, (arr.shape, arr.dtype)
                fake.copies.append(("up", stream or fake.current_stream, fake.is_pinned(arr)))
                self.data[...] = arr

            def get(self, stream=None, out=None, blocking=True):
                assert out is not None and out.shape == self.data.shape and out.dtype == self.data.dtype
                assert blocking
                fake.copies.append(("down", stream or fake.current_stream, fake.is_pinned(out)))
                out[...] = self.data
                return out

        class Stream:
            def __init__(self, non_blocking=False):
                self.non_blocking = non_blocking

            def __enter__(self):
                self.before, fake.current_stream = fake.current_stream, self
                return self

            def __exit__(self, *exc):
                fake.current_stream = self.before

            def synchronize(self):
                pass

        class Device:
            def __init__(self, device_id=0):
                self.id = device_id

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

        class RawKernel:
            num_regs, shared_size_bytes, local_size_bytes = 80, 5968, 0

            def __init__(self, code, name, options=()):
                fake.kernels.append((name, tuple(options)))

            def __call__(self, grid, block, args):
                fake.launches.append((fake.current_stream, grid, block))
                arrays = [a.data if isinstance(a, Array) else a for a in args]
                pointers = [a.ctypes.data_as(ctypes.c_void_p) for a in arrays[:10]]
                fake.lib.hasher_search_host(*pointers, *arrays[10:], grid[0], block[0], 0)

        class RawModule:
            def __init__(self, code, options=(), name_expressions=None):
                fake.kernels.append(("module", tuple(options)))

            def get_function(self, name):
                assert name == "hasher_evaluate"

                def evaluate(grid, block, args):
                    slots, seeds, header_time, golden, keys, n = args
                    fake.launches.append((fake.current_stream, grid, block))
                    n = int(n)
                    g, k = reference.evaluate_with_keys(
                        slots.data.reshape(n, 12), seeds.data.view(np.uint8).reshape(n, 32), int(header_time)
                    )
                    golden.data[:] = g
                    keys.data[:] = k.reshape(-1)

                return evaluate

        properties = {
            "multiProcessorCount": 3,
            "regsPerMultiprocessor": 65536,
            "maxThreadsPerMultiProcessor": 2048,
            "maxBlocksPerMultiProcessor": 32,
            "sharedMemPerMultiprocessor": 233472,
        }
        self.module = types.SimpleNamespace(
            zeros=lambda n, dtype: Array(np.zeros(n, dtype)),
            empty=lambda n, dtype: Array(np.empty(n, dtype)),
            RawKernel=RawKernel,
            RawModule=RawModule,
            cuda=types.SimpleNamespace(
                Device=Device,
                Stream=Stream,
                runtime=types.SimpleNamespace(
                    getDeviceProperties=lambda i: properties, getDeviceCount=lambda: 1
                ),
            ),
        )
        self.cupyx = types.SimpleNamespace(empty_pinned=self.empty_pinned)

    def empty_pinned(self, count, dtype):
        buf = np.empty(count, dtype)
        self.pinned_ids.add(id(buf))
        return buf

    def is_pinned(self, arr: np.ndarray) -> bool:
        base = arr
        while base is not None and id(base) not in self.pinned_ids:
            base = base.base if isinstance(base.base, np.ndarray) else None
        return base is not None


@pytest.fixture
def fake_cupy(monkeypatch):
    require_host_build(False)
    fake = FakeCupy(device_search_host.host_library(False))
    monkeypatch.setattr(cuda, "_cupy", lambda: fake.module)
    monkeypatch.setitem(sys.modules, "cupyx", fake.cupyx)
    for name in ("_modules", "_buffers", "_streams", "_pinned"):
        monkeypatch.setattr(cuda, name, {})
    monkeypatch.setattr(device_search, "_kernel", None)
    return fake


def test_the_cupy_launcher_runs_the_search_through_pinned_buffers_on_one_stream(fake_cupy):
    rng = np.random.default_rng(4)
    slots = rng.integers(0, 2**32, (90, 12), dtype=np.uint32)
    targets = rng.integers(0, VOCABULARY_SIZE, 90)
    config = SearchConfig(difficulty_bits=8, population=40)
    launcher = device_search.CupyLauncher(0)
    driver = device_search.DeviceSearch(launcher, generations_per_launch=2)
    device = search_frames(slots, targets, config, None, driver=driver)
    assert_same_results(search_frames(slots, targets, config, cpu_evaluate), device)

    assert fake_cupy.kernels == [(device_search.KERNEL, ("-std=c++17", *device_search.FLOAT_OPTIONS))]
    # 30 members to evaluate per generation: one warp per block; 80 registers each: 25 blocks per SM
    assert driver.stats.threads == 32 and driver.stats.blocks == launcher.resident_blocks(32) == 3 * 25
    streams = {stream for stream, _, _ in fake_cupy.launches} | {stream for _, stream, _ in fake_cupy.copies}
    assert streams == {cuda.stream()} and cuda.stream().non_blocking
    assert all(pinned for _, _, pinned in fake_cupy.copies), "a copy from or to pageable memory"
    assert len(fake_cupy.launches) == driver.stats.launches > 1


def test_cuda_evaluate_copies_rows_through_pinned_buffers_on_one_stream(fake_cupy):
    slots, seeds = random_rows(300, seed=2, edges=True)
    golden, keys = cuda.evaluate_with_keys(slots, seeds, 7)
    want_golden, want_keys = reference.evaluate_with_keys(slots, seeds, 7)
    assert np.array_equal(golden, want_golden) and np.array_equal(keys, want_keys)
    smaller, _ = cuda.evaluate_with_keys(slots[:50], seeds[:50], 7)  # reused, larger buffers
    assert np.array_equal(smaller, want_golden[:50])
    assert [d for d, _, _ in fake_cupy.copies] == ["up", "up", "down", "down"] * 2
    assert all(pinned for _, _, pinned in fake_cupy.copies)
    assert {s for s, _, _ in fake_cupy.launches} | {s for _, s, _ in fake_cupy.copies} == {cuda.stream()}
    # the results are copies: the next call may overwrite the staging buffers
    again, _ = cuda.evaluate_with_keys(slots[50:100], seeds[50:100], 7)
    assert np.array_equal(smaller, want_golden[:50]) and np.array_equal(again, want_golden[50:100])
