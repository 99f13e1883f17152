"""The CUDA backend: constants generated from Python, its device code compiled as host C++ and
checked against the hashlib reference, an sm_90 build without register spills, and (marked
``gpu``) the real thing on a GPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hasher_core import design
from hasher_core.header import golden_token, leading_equal_bits, midstate, target_word
from hasher_resources import sha256
from hasher_resources.sha256 import cuda, cuda_build, device_search, reference
from hasher_tests.resources.sha256.cases import VECTOR_SEED, VECTOR_SLOTS, random_rows

# A few macros' worth of host harness: loop the device functions over rows.
HOST_HARNESS = """
#include "recursion_full.cu"
extern "C" void host_evaluate(const hasher_u32* slots, const hasher_u32* seeds, hasher_u32 header_time,
                              hasher_u32* golden, hasher_u32* keys, long n) {
  for (long r = 0; r < n; ++r)
    hasher_evaluate_one(slots + 12 * r, seeds + 8 * r, header_time, golden + r, keys + 3 * r);
}
extern "C" void host_header_bits(const hasher_u32* mid, const hasher_u32* words, hasher_u32 nonce_start,
                                 unsigned char* out, long n) {
  for (long i = 0; i < n; ++i)
    out[i] = (unsigned char)hasher_header_zero_bits(mid, words[0], words[1], words[2],
                                                    hasher_bswap(nonce_start + (hasher_u32)i));
}
extern "C" void host_seed_match_bits(const hasher_u32* golden, const hasher_u32* tokens, unsigned char* out,
                                     long n) {
  for (long i = 0; i < n; ++i) out[i] = (unsigned char)hasher_clz(golden[i] ^ hasher_target_word(tokens[i]));
}
extern "C" void host_window_bits(const hasher_u32* mid, const hasher_u32* tail, const hasher_u32* starts,
                                 unsigned long long window_size, unsigned long long skip, unsigned char* out,
                                 long n) {
  for (long i = 0; i < n; ++i) {
    const hasher_u32 nonce = hasher_window_nonce(starts, window_size, skip + i);
    out[i] = (unsigned char)hasher_midstate_scan_one(mid, tail, nonce);
  }
}
"""


def test_prelude_defines_every_constant_from_constants_py():
    prelude = cuda.cuda_prelude()
    assert f"#define HASHER_PASSES {design.PASSES}\n" in prelude
    assert f"#define HASHER_JITTER_LOW_CLZ_XOR 0x{design.JITTER_LOW_CLZ_XOR:08x}u\n" in prelude
    assert f"#define HASHER_HEADER_BITS 0x{design.HEADER_BITS:08x}u\n" in prelude
    k_line = next(line for line in prelude.splitlines() if line.startswith("#define HASHER_SHA256_K "))
    assert [int(k.rstrip("u"), 16) for k in k_line.split(" ", 2)[2].split(", ")] == list(design.SHA256_K)
    used = set(re.findall(r"\bHASHER_[A-Z0-9_]+\b", cuda.SOURCE_PATH.read_text()))
    defined = set(re.findall(r"#define (HASHER_[A-Z0-9_]+)", cuda.cuda_source()))
    # the one switch is not a constant: device_search.cu's prelude sets it to leave these kernels out
    defined |= set(re.findall(r"#define (HASHER_[A-Z0-9_]+)", device_search.search_prelude()))
    assert used <= defined, f"recursion.cu uses constants nobody defines: {sorted(used - defined)}"


def test_source_without_the_prelude_refuses_to_compile(tmp_path: Path):
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed")
    src = tmp_path / "bare.cpp"
    src.write_text(f'#include "{cuda.SOURCE_PATH}"\n')
    proc = subprocess.run(["g++", "-x", "c++", "-fsyntax-only", str(src)], capture_output=True, text=True)
    assert proc.returncode != 0 and "HASHER_* constants are generated" in proc.stderr


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed: the host build of the CUDA device code needs it")
    build = tmp_path_factory.mktemp("cuda_host")
    (build / "recursion_full.cu").write_text(cuda.cuda_source())
    (build / "harness.cpp").write_text(HOST_HARNESS)
    lib = build / "libhasher_host.so"
    proc = subprocess.run(
        [
            "g++",
            "-O2",
            "-std=c++17",
            "-Wall",
            "-Werror",
            "-shared",
            "-fPIC",
            "-o",
            str(lib),
            str(build / "harness.cpp"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return ctypes.CDLL(str(lib))


def host_evaluate(lib: ctypes.CDLL, slots: np.ndarray, seeds: np.ndarray, header_time: int):
    n = slots.shape[0]
    golden = np.zeros(n, np.uint32)
    keys = np.zeros((n, 3), np.uint32)
    seed_words = np.ascontiguousarray(seeds).view(np.uint32)  # how the kernel receives them
    lib.host_evaluate(
        slots.ctypes.data_as(ctypes.c_void_p),
        seed_words.ctypes.data_as(ctypes.c_void_p),
        ctypes.c_uint32(header_time),
        golden.ctypes.data_as(ctypes.c_void_p),
        keys.ctypes.data_as(ctypes.c_void_p),
        ctypes.c_long(n),
    )
    return golden, keys


def test_the_cuda_seed_scan_matches_goldens_against_the_token_in_the_top_bits(host_lib):
    """DESIGN §4.3 in the CUDA source: matched bits are counted against token << 15, like the CPU path."""
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, design.VOCABULARY_SIZE, 256).astype(np.uint32)
    golden = rng.integers(0, 2**32, 256, dtype=np.uint64).astype(np.uint32)
    golden[:64] = (tokens[:64] << np.uint32(15)) | (golden[:64] & np.uint32(0x7FFF))  # the token, any tail
    out = np.empty(256, np.uint8)
    ptr = np.ctypeslib.ndpointer
    host_lib.host_seed_match_bits.argtypes = [ptr(np.uint32), ptr(np.uint32), ptr(np.uint8), ctypes.c_long]
    host_lib.host_seed_match_bits(golden, tokens, out, 256)
    assert np.array_equal(out, leading_equal_bits(golden, target_word(tokens)))
    assert (out[:64] >= design.TOKEN_BITS).all() and (golden_token(golden[:64]) == tokens[:64]).all()


def test_host_build_passes_the_design_vector(host_lib):
    golden, keys = host_evaluate(host_lib, VECTOR_SLOTS, VECTOR_SEED, 0)
    assert golden.tolist() == [0x18867801] and keys[0, 2] == 0x2407F191


@pytest.mark.parametrize("header_time", [0, 0xDEADBEEF])
def test_host_build_matches_reference_on_random_rows(host_lib, header_time):
    slots, seeds = random_rows(1500, seed=header_time & 0xFFFF, edges=True)
    golden, keys = host_evaluate(host_lib, slots, seeds, header_time)
    ref_golden, ref_keys = reference.evaluate_with_keys(slots, seeds, header_time)
    assert np.array_equal(golden, ref_golden)
    assert np.array_equal(keys, ref_keys)


def test_host_build_header_scan_matches_reference(host_lib):
    header = bytes(range(80))
    start, n = 2**32 - 500, 2000
    out = np.zeros(n, np.uint8)
    mid = np.array(midstate(header), np.uint32)
    words = np.frombuffer(header[64:80], ">u4").astype(np.uint32)
    host_lib.host_header_bits(
        mid.ctypes.data_as(ctypes.c_void_p),
        words.ctypes.data_as(ctypes.c_void_p),
        ctypes.c_uint32(start),
        out.ctypes.data_as(ctypes.c_void_p),
        ctypes.c_long(n),
    )
    assert np.array_equal(out, reference.scan_header_nonces(header, start, n))


def host_window_bits(
    lib: ctypes.CDLL,
    mid: tuple[int, ...],
    tail: bytes,
    starts: list[int],
    window_size: int,
    skip: int,
    n: int,
) -> np.ndarray:
    """What the threads of ``hasher_scan_midstate`` write, computed by the host build."""
    out = np.zeros(n, np.uint8)
    mid_words = np.array(mid, np.uint32)
    tail_words = np.frombuffer(tail, ">u4").astype(np.uint32)  # how cuda.py uploads it
    start_words = np.array(starts, np.uint32)
    lib.host_window_bits(
        mid_words.ctypes.data_as(ctypes.c_void_p),
        tail_words.ctypes.data_as(ctypes.c_void_p),
        start_words.ctypes.data_as(ctypes.c_void_p),
        ctypes.c_ulonglong(window_size),
        ctypes.c_ulonglong(skip),
        out.ctypes.data_as(ctypes.c_void_p),
        ctypes.c_long(n),
    )
    return out


def host_midstate_bits(lib: ctypes.CDLL, mid: tuple[int, ...], tail: bytes, start: int, n: int) -> np.ndarray:
    """A contiguous scan: the one-window case of the kernel."""
    return host_window_bits(lib, mid, tail, [start], n, 0, n)


def test_host_build_midstate_scan_matches_reference_across_the_nonce_wrap(host_lib):
    rng = np.random.default_rng(5)
    for _ in range(4):
        header = rng.integers(0, 256, 80, dtype=np.uint8).tobytes()
        start, n = 2**32 - 300, 700
        bits = host_midstate_bits(host_lib, midstate(header), header[64:76], start, n)
        assert np.array_equal(bits, reference.scan_header_nonces(header, start, n))
    # any 8 words are a state to start from, not only midstates of real headers: check the
    # device path against the pure-Python compression there too
    mid = tuple(int(w) for w in rng.integers(0, 2**32, 8, dtype=np.uint64))
    tail = rng.integers(0, 256, 12, dtype=np.uint8).tobytes()
    bits = host_midstate_bits(host_lib, mid, tail, 2**32 - 100, 200)
    assert np.array_equal(bits, reference.scan_midstate_nonces(mid, tail, 2**32 - 100, 200))


def test_host_build_window_scan_matches_reference_windows(host_lib):
    # Windows smaller than, equal to and crossing 2**32 - 1, overlapping, and a chunk that starts
    # part-way into its first window (skip): the thread-to-(window, offset) mapping of the kernel.
    header = bytes(range(40, 120))
    mid, tail = midstate(header), header[64:76]
    starts, size = [2**32 - 7, 0, 5, 2**31, 2**32 - 1], 23
    for skip, n in ((0, 5 * size), (9, 5 * size - 9), (30, 40)):
        bits = host_window_bits(host_lib, mid, tail, starts, size, skip, n)
        assert np.array_equal(
            bits, reference.scan_midstate_windows(mid, tail, np.array(starts), size, skip, n)
        )


@pytest.fixture(scope="module")
def sm90_build(tmp_path_factory) -> tuple[Path, str]:
    """The generated kernel source built for Hopper (sm_90) by nvcc, with ptxas's report."""
    _require("nvcc")
    return cuda_build.build_cubin(tmp_path_factory.mktemp("sm90"), "sm_90")


def _require(tool: str) -> None:
    """nvcc is on every machine of this project and the test command installs cuobjdump; elsewhere
    (a lent GPU machine running scripts/gpu_check.sh) these static checks skip, but never in CI."""
    try:
        cuda_build.tool(tool)
    except cuda_build.CudaToolMissing as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


@pytest.mark.slow
def test_sm90_build_has_no_spills_and_no_local_memory(sm90_build):
    cubin, report = sm90_build
    resources = cuda_build.kernel_resources(report)
    assert set(resources) == set(cuda.KERNELS), report
    for kernel, used in resources.items():
        assert (used.stack_frame_bytes, used.spill_store_bytes, used.spill_load_bytes) == (0, 0, 0), (
            f"{kernel}: {used}"
        )
        assert 0 < used.registers <= 255, f"{kernel}: {used}"
    _require("cuobjdump")
    code = cuda_build.sass(cubin)
    assert set(code) == set(cuda.KERNELS)
    for kernel, instructions in code.items():
        assert not cuda_build.local_memory(instructions), f"{kernel} uses local memory"


@pytest.mark.slow
def test_the_pass_loop_costs_about_one_plain_compression_per_compression(sm90_build):
    # docs/performance.md §1.2: a plain kernel compiles to ~1,381 SASS per compression, and ~1,024
    # of them (rotates and LOP3) are the floor; the pass loop does 3 compressions.
    _require("cuobjdump")
    loop = cuda_build.pass_loop(cuda_build.sass(sm90_build[0])["hasher_evaluate"])
    per_compression = len(loop) / cuda_build.COMPRESSIONS_PER_PASS
    assert 1024 <= per_compression <= 1400, per_compression
    assert sum(ins.opcode.startswith("SHF") for ins in loop) > 3 * 400  # rotates are single SHF


def test_local_memory_and_loops_are_recognised_in_sass_text():
    code = [
        cuda_build.Instruction(0x10, "IADD3", "R1, R2, R3, RZ"),
        cuda_build.Instruction(0x20, "STL", "[R1], R2"),
        cuda_build.Instruction(0x30, "LDL.64", "R4, [R1]"),
        cuda_build.Instruction(0x40, "BRA", "0x10"),
        cuda_build.Instruction(0x50, "BRA", "0x50"),
    ]
    assert [i.address for i in cuda_build.local_memory(code)] == [0x20, 0x30]
    assert [i.address for i in cuda_build.pass_loop(code)] == [0x10, 0x20, 0x30, 0x40]
    report = (
        "ptxas info    : Compiling entry function 'k' for 'sm_90'\n"
        "ptxas info    : Function properties for k\n"
        "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Used 90 registers"
    )
    assert cuda_build.kernel_resources(report) == {"k": cuda_build.KernelResources(90, 8, 4, 4)}


def _nvrtc() -> ctypes.CDLL | None:
    """NVRTC, the runtime compiler CuPy's RawModule uses, if this machine has it (no GPU needed)."""
    candidates = [ctypes.util.find_library("nvrtc")]
    try:
        import nvidia.cuda_nvrtc  # the pip wheel CuPy can use

        candidates += sorted(str(p) for p in Path(nvidia.cuda_nvrtc.__path__[0]).glob("lib/libnvrtc.so*"))
    except ImportError:
        pass
    for name in filter(None, candidates):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def nvrtc_ptx(source: str, name: str, options: tuple[str, ...] = ()) -> str:
    """The PTX NVRTC makes of ``source`` for compute_90 with ``options`` (as CuPy compiles it);
    skips where NVRTC is not installed, fails with NVRTC's log when it does not compile."""
    lib = _nvrtc()
    if lib is None:
        pytest.skip("NVRTC not installed (CuPy's runtime compiler)")
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None) == 0
    flags = [b"-arch=compute_90", b"-std=c++17", *(o.encode() for o in options)]
    status = lib.nvrtcCompileProgram(prog, len(flags), (ctypes.c_char_p * len(flags))(*flags))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    assert status == 0, log.value.decode()
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetPTX(prog, ptx)
    return ptx.value.decode()


def test_nvrtc_compiles_the_source_as_cupy_would():
    ptx = nvrtc_ptx(cuda.cuda_source(), "recursion.cu")
    assert all(f".entry {kernel}(" in ptx for kernel in cuda.KERNELS)


gpu = pytest.mark.skipif(not sha256.cuda_available(), reason="needs CuPy and a CUDA device")


@pytest.mark.gpu
@gpu
def test_gpu_design_vector():
    golden, keys = sha256.evaluate_with_keys(VECTOR_SLOTS, VECTOR_SEED, backend="cuda")
    assert golden.tolist() == [0x18867801] and keys[0, 2] == 0x2407F191


@pytest.mark.gpu
@gpu
def test_gpu_matches_reference_and_reuses_buffers():
    slots, seeds = random_rows(3000, seed=11, edges=True)
    ref_golden, ref_keys = reference.evaluate_with_keys(slots, seeds, 9)
    golden, keys = sha256.evaluate_with_keys(slots, seeds, header_time=9, backend="cuda")
    assert np.array_equal(golden, ref_golden) and np.array_equal(keys, ref_keys)
    # a smaller call after a larger one runs on the same (bigger) device buffers
    small_golden, _ = sha256.evaluate_with_keys(slots[:100], seeds[:100], header_time=9, backend="cuda")
    assert np.array_equal(small_golden, ref_golden[:100])


@pytest.mark.gpu
@gpu
def test_gpu_scans_match_reference_across_the_nonce_wrap():
    extranonce = bytes(range(16, 32))
    start = 2**32 - 700
    goldens = cuda.scan_seed_nonces(VECTOR_SLOTS[0], extranonce, start, 1000, 3)
    assert np.array_equal(goldens, reference.scan_seed_nonces(VECTOR_SLOTS[0], extranonce, start, 1000, 3))
    header = bytes(range(80))
    bits = cuda.scan_header_nonces(header, start, 5000)
    assert np.array_equal(bits, reference.scan_header_nonces(header, start, 5000))
    from_mid = cuda.scan_midstate_nonces(midstate(header), header[64:76], start, 5000)
    assert np.array_equal(from_mid, bits)


@pytest.mark.gpu
@gpu
def test_gpu_midstate_scan_equals_the_header_scan_on_random_headers():
    rng = np.random.default_rng(17)
    for _ in range(4):
        header = rng.integers(0, 256, 80, dtype=np.uint8).tobytes()
        kwargs = {"share_bits": 6, "nonce_count": 50_000, "nonce_start": 2**32 - 20_000}
        on_gpu = sha256.scan_midstate_nonces(midstate(header), header[64:76], backend="cuda", **kwargs)
        on_cpu = sha256.scan_header_nonces(header, backend="cpu", **kwargs)
        assert on_gpu.backend == "cuda" and on_gpu.scanned == 50_000
        assert (
            on_gpu.nonces.tolist() == on_cpu.nonces.tolist() and on_gpu.bits.tolist() == on_cpu.bits.tolist()
        )
        assert (on_gpu.best_nonce, on_gpu.best_bits) == (on_cpu.best_nonce, on_cpu.best_bits)


@pytest.mark.gpu
@gpu
def test_gpu_scans_reduced_on_the_device_match_reference():
    header = bytes(range(80))
    on_gpu = sha256.scan_header_nonces(
        header, share_bits=5, nonce_count=3000, nonce_start=2**32 - 1000, backend="cuda"
    )
    on_ref = sha256.scan_header_nonces(
        header, share_bits=5, nonce_count=3000, nonce_start=2**32 - 1000, backend="reference"
    )
    assert on_gpu.backend == "cuda"
    assert (on_gpu.nonces.tolist(), on_gpu.bits.tolist()) == (on_ref.nonces.tolist(), on_ref.bits.tolist())
    assert (on_gpu.best_nonce, on_gpu.best_bits, on_gpu.scanned) == (
        on_ref.best_nonce,
        on_ref.best_bits,
        3000,
    )
    kwargs = {"difficulty_bits": 3, "nonce_count": 700, "nonce_start": 2**32 - 300}
    seeds_gpu = sha256.scan_seed_nonces(VECTOR_SLOTS[0], bytes(16), 12345, backend="cuda", **kwargs)
    seeds_ref = sha256.scan_seed_nonces(VECTOR_SLOTS[0], bytes(16), 12345, backend="reference", **kwargs)
    assert seeds_gpu.nonces.tolist() == seeds_ref.nonces.tolist()
    assert seeds_gpu.bits.tolist() == seeds_ref.bits.tolist()
    assert (seeds_gpu.best_nonce, seeds_gpu.best_bits) == (seeds_ref.best_nonce, seeds_ref.best_bits)


@pytest.mark.gpu
@gpu
def test_gpu_window_scan_equals_the_cpu_window_scan():
    header = bytes(range(7, 87))
    starts = np.arange(256, dtype=np.uint64) * (2**32 // 256)
    starts[-1] = 2**32 - 5  # one window wraps
    for size in (1, 16, 300):
        kwargs = {"share_bits": 4, "window_starts": starts, "window_size": size}
        on_gpu = sha256.scan_midstate_windows(midstate(header), header[64:76], backend="cuda", **kwargs)
        on_cpu = sha256.scan_midstate_windows(midstate(header), header[64:76], backend="cpu", **kwargs)
        assert on_gpu.backend == "cuda" and on_gpu.scanned == 256 * size
        assert (on_gpu.nonces.tolist(), on_gpu.bits.tolist()) == (
            on_cpu.nonces.tolist(),
            on_cpu.bits.tolist(),
        )
        assert (on_gpu.best_nonce, on_gpu.best_bits) == (on_cpu.best_nonce, on_cpu.best_bits)


@pytest.mark.gpu
@gpu
def test_gpu_agrees_with_cpu_on_a_full_launch():
    slots, seeds = random_rows(1 << 17, seed=3, edges=True)
    assert np.array_equal(
        sha256.evaluate(slots, seeds, backend="cuda"), sha256.evaluate(slots, seeds, backend="cpu")
    )
