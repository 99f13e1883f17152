"""The CUDA backend: loads ``recursion.cu`` through CuPy and runs one thread per evaluation.

The ``.cu`` file holds no constants of its own: :func:`cuda_source` prepends ``#define`` lines
generated from ``hasher_core/design.py``, so the Python and CUDA backends read one source of truth. The
compiled module and the device buffers are kept per device and reused across calls (buffers only
grow), so the hot path allocates nothing. Calls run on CuPy's current device; the kernel resource
selects it with ``cupy.cuda.Device(device_id)``.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from hasher_core import design
from hasher_core.errors import BackendUnavailableError
from hasher_core.header import midstate as header_midstate

SOURCE_PATH = Path(__file__).with_name("recursion.cu")
#: Threads per CUDA block; the kernels declare it in ``__launch_bounds__`` so registers are budgeted for it.
CUDA_BLOCK = 256
#: Resident blocks per SM asked of the register allocator (``__launch_bounds__``): 3 × 256 threads
#: caps registers at 85 per thread, enough for one evaluation's working set without spills.
CUDA_MIN_BLOCKS = 3
#: Nonces per launch in a scan: enough to fill any GPU many times over, 64 MiB of goldens at most.
SCAN_CHUNK = 1 << 24
#: Kernel entry points in recursion.cu.
KERNELS = ("hasher_evaluate", "hasher_scan_seed", "hasher_scan_midstate")

_modules: dict[int, Any] = {}
_buffers: dict[tuple[int, str], Any] = {}
_streams: dict[int, Any] = {}
_pinned: dict[tuple[str, str], np.ndarray] = {}


def cuda_prelude() -> str:
    """The ``#define`` lines recursion.cu needs, generated from ``hasher_core/design.py``."""
    defines = {
        "HASHER_PASSES": design.PASSES,
        "HASHER_MUTATED_WORD_FIRST": design.MUTATED_WORD_FIRST,
        "HASHER_MUTATED_WORD_COUNT": design.MUTATED_WORD_COUNT,
        "HASHER_STABILITY_PASS_0": design.STABILITY_PASSES[0],
        "HASHER_JITTER_PHASE2_START": design.JITTER_PHASE2_START,
        "HASHER_JITTER_PHASE3_START": design.JITTER_PHASE3_START,
        "HASHER_JITTER_CLZ_THRESHOLD": design.JITTER_CLZ_THRESHOLD,
        "HASHER_JITTER_LOW_CLZ_XOR": f"0x{design.JITTER_LOW_CLZ_XOR:08x}u",
        "HASHER_JITTER_HIGH_CLZ_XOR": f"0x{design.JITTER_HIGH_CLZ_XOR:08x}u",
        "HASHER_HEADER_VERSION": f"0x{design.HEADER_VERSION:08x}u",
        "HASHER_HEADER_BITS": f"0x{design.HEADER_BITS:08x}u",
        "HASHER_TOKEN_SHIFT": design.TOKEN_SHIFT,
        "HASHER_CUDA_BLOCK": CUDA_BLOCK,
        "HASHER_CUDA_MIN_BLOCKS": CUDA_MIN_BLOCKS,
    }
    defines |= {f"HASHER_SHA256_IV_{i}": f"0x{v:08x}u" for i, v in enumerate(design.SHA256_IV)}
    defines["HASHER_SHA256_K"] = ", ".join(f"0x{k:08x}u" for k in design.SHA256_K)
    lines = [f"// generated from hasher_core/design.py ({design.ALGORITHM_VERSION})"]
    lines += [f"#define {name} {value}" for name, value in defines.items()]
    return "\n".join(lines) + "\n"


def cuda_source() -> str:
    """The complete CUDA source: generated constants followed by recursion.cu."""
    return cuda_prelude() + SOURCE_PATH.read_text(encoding="utf-8")


def _cupy() -> ModuleType:
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend 'cuda' needs CuPy, which is not installed ({exc}); install hasher[gpu]"
        ) from exc
    return cupy


def device_count() -> int:
    """CUDA devices CuPy can see (0 when CuPy or the driver is missing)."""
    try:
        cupy = _cupy()
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def require_device() -> None:
    """Raise :class:`BackendUnavailableError` saying why the CUDA backend cannot run here."""
    cupy = _cupy()
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        raise BackendUnavailableError(f"backend 'cuda': CuPy finds no usable CUDA driver ({exc})") from exc
    if count == 0:
        raise BackendUnavailableError("backend 'cuda': CuPy sees no CUDA device")


def device_name() -> str:
    """Name of CuPy's current device, for benchmark tables and run metadata."""
    cupy = _cupy()
    device = cupy.cuda.Device()
    name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def _kernel(name: str) -> Any:
    cupy = _cupy()
    device = cupy.cuda.Device().id
    module = _modules.get(device)
    if module is None:
        module = cupy.RawModule(code=cuda_source(), options=("-std=c++17",), name_expressions=None)
        _modules[device] = module
    return module.get_function(name)


def _buffer(name: str, count: int, dtype: type) -> Any:
    """A device array of at least ``count`` elements, reused across calls (grown, never shrunk)."""
    cupy = _cupy()
    key = (cupy.cuda.Device().id, name)
    buf = _buffers.get(key)
    if buf is None or buf.size < count:
        buf = cupy.empty(max(count, 1), dtype=dtype)
        _buffers[key] = buf
    return buf[:count]


def stream() -> Any:
    """The CUDA stream of CuPy's current device (one per device, non-blocking): the rows' copies,
    the kernels and the device search's copies and launches all go through it."""
    cupy = _cupy()
    device = cupy.cuda.Device().id
    found = _streams.get(device)
    if found is None:
        found = _streams[device] = cupy.cuda.Stream(non_blocking=True)
    return found


def pinned(name: str, count: int, dtype: Any) -> np.ndarray:
    """A page-locked host array of ``count`` elements for copies named ``name`` (reused, grown,
    never shrunk): copies from pinned memory run at the bus's speed, pageable ones are staged by
    the driver first. A caller synchronizes its stream before the next use of the same name."""
    import cupyx

    dtype = np.dtype(dtype)
    key = (name, dtype.str)
    buf = _pinned.get(key)
    if buf is None or buf.size < count:
        buf = cupyx.empty_pinned(max(count, 1024), dtype)
        _pinned[key] = buf
    return buf[:count]


def _grid(n: int) -> tuple[int]:
    return ((n + CUDA_BLOCK - 1) // CUDA_BLOCK,)


def evaluate_with_keys(
    slots: np.ndarray, seeds: np.ndarray, header_time: int
) -> tuple[np.ndarray, np.ndarray]:
    """Goldens uint32[N] and keys of passes 18–20 uint32[N, 3] for validated inputs."""
    n = slots.shape[0]
    d_slots = _buffer("slots", n * design.SLOT_COUNT, np.uint32)
    d_seeds = _buffer("seeds", n * design.SEED_BYTES // 4, np.uint32)
    d_golden = _buffer("golden", n, np.uint32)
    d_keys = _buffer("keys", n * 3, np.uint32)
    up_slots = pinned("slots", d_slots.size, np.uint32)
    up_seeds = pinned("seeds", d_seeds.size, np.uint32)
    np.copyto(up_slots, slots.reshape(-1))
    # 32 seed bytes per row read as 8 little-endian words; the kernel byte-swaps what it needs.
    np.copyto(up_seeds, seeds.view(np.uint32).reshape(-1))
    golden, keys = pinned("golden", n, np.uint32), pinned("keys", n * 3, np.uint32)
    s = stream()
    with s:
        d_slots.set(up_slots, stream=s)
        d_seeds.set(up_seeds, stream=s)
        _kernel("hasher_evaluate")(
            _grid(n),
            (CUDA_BLOCK,),
            (d_slots, d_seeds, np.uint32(header_time), d_golden, d_keys, np.uint64(n)),
        )
        d_golden.get(stream=s, out=golden)
        d_keys.get(stream=s, out=keys)
    s.synchronize()
    return golden.copy(), keys.copy().reshape(n, 3)


def _run_seed_scan(
    slots: np.ndarray,
    extranonce: bytes,
    nonce_start: int,
    nonce_count: int,
    header_time: int,
    target_token_id: int,
) -> tuple[Any, Any]:
    d_slots = _buffer("scan_slots", design.SLOT_COUNT, np.uint32)
    d_extranonce = _buffer("scan_extranonce", design.EXTRANONCE_BYTES // 4, np.uint32)
    d_golden = _buffer("scan_golden", nonce_count, np.uint32)
    d_bits = _buffer("scan_bits", nonce_count, np.uint8)
    d_slots.set(np.ascontiguousarray(slots, dtype=np.uint32))
    d_extranonce.set(np.frombuffer(extranonce, dtype="<u4").astype(np.uint32))
    if nonce_count:
        args = (
            d_slots, d_extranonce, np.uint32(nonce_start), np.uint32(header_time), np.uint32(target_token_id)
        )  # fmt: skip
        _kernel("hasher_scan_seed")(
            _grid(nonce_count), (CUDA_BLOCK,), (*args, d_golden, d_bits, np.uint64(nonce_count))
        )
    return d_golden, d_bits


def _run_window_scan(
    midstate: tuple[int, ...], tail: bytes, starts: np.ndarray, window_size: int, skip: int, count: int
) -> Any:
    """Zero bits on the device for positions ``skip … skip+count-1`` of the windows laid end to end."""
    d_mid = _buffer("scan_mid", 8, np.uint32)
    d_tail = _buffer("scan_tail", 3, np.uint32)
    d_starts = _buffer("scan_starts", starts.size, np.uint32)
    d_bits = _buffer("scan_zero_bits", count, np.uint8)
    d_mid.set(np.array(midstate, dtype=np.uint32))
    d_tail.set(np.frombuffer(tail, dtype=">u4").astype(np.uint32))
    d_starts.set(np.asarray(starts).astype(np.uint32))
    if count:
        args = (d_mid, d_tail, d_starts, np.uint64(window_size), np.uint64(skip), d_bits, np.uint64(count))
        _kernel("hasher_scan_midstate")(_grid(count), (CUDA_BLOCK,), args)
    return d_bits


def _reduce_on_device(d_bits: Any, difficulty: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Offsets (uint32, ascending) and bits of the hits, and the first best offset and its bits.
    Only the hits cross the bus, not one value per nonce."""
    cupy = _cupy()
    if d_bits.size == 0:
        return np.empty(0, np.uint32), np.empty(0, np.uint8), 0, 0
    hits = cupy.flatnonzero(d_bits >= difficulty)
    best = int(cupy.argmax(d_bits))  # first occurrence, like numpy
    return hits.astype(cupy.uint32).get(), d_bits[hits].get(), best, int(d_bits[best].get())


def scan_seed_nonces(
    slots: np.ndarray, extranonce: bytes, nonce_start: int, nonce_count: int, header_time: int
) -> np.ndarray:
    """Goldens uint32[nonce_count] for one frame and extranonce over consecutive nonces."""
    d_golden, _ = _run_seed_scan(slots, extranonce, nonce_start, nonce_count, header_time, 0)
    return d_golden.get()


def scan_seed_hits(
    slots: np.ndarray,
    extranonce: bytes,
    nonce_start: int,
    nonce_count: int,
    header_time: int,
    target_token_id: int,
    difficulty: int,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The seed scan reduced on the GPU: (hit offsets, their matched bits, best offset, best bits).
    Bits are matched against the target word ``target_token_id << 15``, formed on the device."""
    _, d_bits = _run_seed_scan(slots, extranonce, nonce_start, nonce_count, header_time, target_token_id)
    return _reduce_on_device(d_bits, difficulty)


def scan_midstate_windows(
    midstate: tuple[int, ...], tail: bytes, starts: np.ndarray, window_size: int, skip: int, count: int
) -> np.ndarray:
    """Leading zero bits (uint8[count]) at positions ``skip … skip+count-1`` of the windows
    (``window_size`` nonces from each of ``starts``) laid end to end: one launch for all of them."""
    return _run_window_scan(midstate, tail, starts, window_size, skip, count).get()


def scan_midstate_windows_hits(
    midstate: tuple[int, ...],
    tail: bytes,
    starts: np.ndarray,
    window_size: int,
    skip: int,
    count: int,
    difficulty: int,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The window scan reduced on the GPU: (hit positions from ``skip``, their zero bits, best
    position, best bits)."""
    return _reduce_on_device(_run_window_scan(midstate, tail, starts, window_size, skip, count), difficulty)


def scan_midstate_nonces(
    midstate: tuple[int, ...], tail: bytes, nonce_start: int, nonce_count: int
) -> np.ndarray:
    """Leading zero bits (uint8) of the mining hash for each nonce, from a midstate and bytes 64–75."""
    return scan_midstate_windows(midstate, tail, np.array([nonce_start]), nonce_count, 0, nonce_count)


def scan_midstate_hits(
    midstate: tuple[int, ...], tail: bytes, nonce_start: int, nonce_count: int, difficulty: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The midstate scan reduced on the GPU: (hit offsets, their zero bits, best offset, best bits)."""
    starts = np.array([nonce_start])
    return scan_midstate_windows_hits(midstate, tail, starts, nonce_count, 0, nonce_count, difficulty)


def scan_header_nonces(header: bytes, nonce_start: int, nonce_count: int) -> np.ndarray:
    """Leading zero bits (uint8) of the mining hash of ``header`` for each nonce in the range."""
    return scan_midstate_nonces(header_midstate(header), header[64:76], nonce_start, nonce_count)


def scan_header_hits(
    header: bytes, nonce_start: int, nonce_count: int, difficulty: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The header scan reduced on the GPU: (hit offsets, their zero bits, best offset, best bits)."""
    return scan_midstate_hits(header_midstate(header), header[64:76], nonce_start, nonce_count, difficulty)
