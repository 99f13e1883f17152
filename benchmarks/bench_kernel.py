"""SHA-256 recursion kernel throughput: both CPU paths (SIMD, SHA-NI) at 1 and 2 threads for the
21-pass evaluation and the header nonce scan, against hashlib in the same run; the search's
efficiency and frames solved per hour at the default difficulty; the GPU against its physical limit;
the CUDA kernel's SASS per compression.

``python -m benchmarks.bench_kernel`` (quick, about a minute once Numba's cache is warm) or
``--full``; ``--gpu-only --json F`` is what ``scripts/gpu_check.sh`` runs on a GPU machine.

Counting: one evaluation is 22 double SHA-256 of an 80-byte header, 66 nominal compressions (the
kernels skip work the recursion leaves constant, so they do fewer real ones). One header-scan nonce
is 2 compressions (the midstate path: block 2 of the header and the re-hash). The baseline is
hashlib's streaming SHA-256 over a large buffer (OpenSSL, SHA-NI where the CPU has it), bytes / 64
compressions per second, on as many threads as the row, timed round-robin with the kernels so that
load from other processes hits all of them alike.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.results import publish
from hasher_core import design
from hasher_core.design import DIFFICULTY_BITS, VOCABULARY_SIZE
from hasher_resources import sha256
from hasher_resources.sha256 import cpu, cpu_shani, cuda

COMPRESSIONS_PER_EVALUATION = design.HASHES_PER_EVALUATION * design.COMPRESSIONS_PER_HASH
COMPRESSIONS_PER_SCAN_NONCE = 2  # midstate path: header block 2 + the re-hash
#: Physical limits of an H100 SXM / H200 (docs/performance.md §1.2, 16 SM-clocks per compression).
HOPPER_EVALUATIONS_PER_S = 245e6
HOPPER_MIDSTATE_NONCES_PER_S = 8.2e9
SEARCH_POPULATION = 256


def round_robin(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, tuple[float, float]]:
    """Best and median seconds of each function, timed in turns (one warm-up call each first)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: (min(ts), statistics.median(ts)) for name, ts in times.items()}


def hashlib_streaming(threads: int, megabytes: int) -> Callable[[], object]:
    """A call that hashes ``megabytes`` per thread on ``threads`` threads with hashlib.sha256."""
    buffers = [bytes(megabytes << 20) for _ in range(threads)]
    pool = ThreadPoolExecutor(threads)
    # hashlib releases the GIL on large buffers, so threads hash truly in parallel
    return lambda: list(pool.map(lambda b: hashlib.sha256(b).digest(), buffers))


def random_rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 2**32, (n, 12), dtype=np.uint32), rng.integers(0, 256, (n, 32), dtype=np.uint8)


def on_path(path: str, threads: int, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with CPU path ``path`` and ``threads`` Numba threads."""

    def call() -> object:
        cpu.set_threads(threads)
        with cpu.kernel_choice(path):
            return fn()

    return call


def cpu_rows(args: argparse.Namespace) -> tuple[list[list[object]], dict[str, float], list[str]]:
    """Evaluate and header-scan rows per CPU path and thread count, and the headline ratios."""
    reps = 7 if args.full else 5
    n = args.rows or (65536 if args.full else 16384)
    nonces = n * 32
    hash_mb = 128 if args.full else 32
    slots, seeds = random_rows(n)
    header = bytes(range(80))
    usable, why = cpu_shani.sha_ni_usable()
    paths = cpu.runnable_paths()
    rows: list[list[object]] = []
    figures: dict[str, float] = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        fns: dict[str, Callable[[], object]] = {"hashlib": hashlib_streaming(threads, hash_mb)}
        for path in paths:
            fns[f"{path} evaluate"] = on_path(path, threads, lambda: cpu.evaluate_with_keys(slots, seeds, 0))
            fns[f"{path} scan"] = on_path(path, threads, lambda: cpu.scan_header_nonces(header, 0, nonces))
        timed = round_robin(fns, reps)
        base = threads * (hash_mb << 20) / 64 / timed["hashlib"][0]  # compressions/s
        rows.append(["hashlib streaming SHA-256", threads, "-", f"{base / threads / 1e6:.1f}", "1.00", ""])
        for path in paths:
            for what, count, per in (("evaluate", n, COMPRESSIONS_PER_EVALUATION),
                                     ("scan", nonces, COMPRESSIONS_PER_SCAN_NONCE)):  # fmt: skip
                best, med = timed[f"{path} {what}"]
                compr = count / best * per
                figures[f"{path} {what} {threads}"] = count / best
                ratio = compr / base
                figures[f"{path} {what} {threads} ratio"] = ratio
                unit = "evaluations/s" if what == "evaluate" else "nonces/s"
                label = "21-pass evaluate" if what == "evaluate" else "header nonce scan"
                rate = f"{count / best:,.0f} {unit} ({count / med:,.0f})"
                per_core = f"{compr / threads / 1e6:.1f}"
                rows.append([f"cpu {path}: {label}", threads, rate, per_core, f"{ratio:.2f}", ""])
    cpu.set_threads(None)
    notes = [] if usable else [f"SHA-NI path not measured: {why}."]
    for path in paths:
        one, two = figures.get(f"{path} evaluate 1"), figures.get(f"{path} evaluate 2")
        if one and two:
            figures[f"{path} scaling"] = two / one
            notes.append(f"{path}: 2 threads = {two / one:.2f}× one thread for evaluate.")
    return rows, figures, notes


def search_rows(args: argparse.Namespace) -> tuple[list[list[object]], list[str]]:
    """The seed search on the default CPU path: efficiency (search evals/s ÷ in-run kernel evals/s)
    and the frames per hour at the default difficulty that rate gives."""
    # Imported here: the search needs pyarrow, which a GPU check machine (--gpu-only) may not have.
    from hasher_core.search.config import SearchConfig
    from hasher_core.search.loop import search_frames

    frames, generations = (256, 16) if args.full else (64, 8)
    rng = np.random.default_rng(32)
    slots = rng.integers(0, 2**32, (frames, 12), dtype=np.uint32)
    targets = rng.integers(0, VOCABULARY_SIZE, frames)

    def evaluate(s: np.ndarray, sd: np.ndarray, header_time: int):
        return sha256.evaluate_with_keys(s, sd, header_time=header_time, backend="cpu")

    rows = []
    for strategy in ("grpo", "scan"):
        config = SearchConfig(
            difficulty_bits=32, population=SEARCH_POPULATION, strategy=strategy, max_generations=generations
        )
        search_frames(slots[:1], targets[:1], SearchConfig(difficulty_bits=32, strategy=strategy,
                                                           max_generations=2), evaluate)  # fmt: skip
        r = search_frames(slots, targets, config, evaluate)
        summary = r.summary()
        rate = r.run_evaluations / r.wall_seconds
        per_hour = 3600 * rate / 2**DIFFICULTY_BITS
        rows.append([f"seed search ({strategy}, {cpu.select_kernel()})", "all", f"{rate:,.0f} evaluations/s",
                     "", "", f"efficiency {summary['search_efficiency']:.3f}; "
                     f"{per_hour:,.0f} frames solved/hour at D = {DIFFICULTY_BITS}"])  # fmt: skip
    notes = [
        f"Search: {frames} frames × population {SEARCH_POPULATION} at 32 bits for {generations} generations "
        "(no frame finishes early); efficiency = search evaluations/s ÷ the kernel's own rate inside the "
        f"same run; frames solved/hour = search evaluations/s × 3600 / 2^{DIFFICULTY_BITS} (the "
        "expected evaluations per solve of a random oracle)."
    ]
    return rows, notes


def gpu_rows(args: argparse.Namespace) -> tuple[list[list[object]], dict[str, float], list[str]]:
    """Evaluate, seed scan and header scan on the GPU, as fractions of Hopper's physical limits."""
    if not sha256.cuda_available():
        return [], {}, ["No CUDA device visible (CuPy missing or no GPU): GPU rows not measured."]
    name = cuda.device_name()
    hopper = "H100" in name or "H200" in name
    reps = 7 if args.full else 5
    count = (1 << 22) if args.full else (1 << 20)
    slots, seeds = random_rows(count)
    scan_count = 1 << 26
    header = bytes(range(80))
    timed = round_robin(
        {
            "evaluate": lambda: sha256.evaluate(slots, seeds, backend="cuda"),
            "seed scan": lambda: sha256.scan_seed_nonces(
                slots[0], bytes(16), 1234, difficulty_bits=17, nonce_count=1 << 24, backend="cuda"
            ),
            "header scan": lambda: sha256.scan_header_nonces(
                header, share_bits=32, nonce_count=scan_count, backend="cuda"
            ),
        },
        reps,
    )
    figures = {
        "gpu evaluations/s": count / timed["evaluate"][0],
        "gpu seed scan evaluations/s": (1 << 24) / timed["seed scan"][0],
        "gpu header nonces/s": scan_count / timed["header scan"][0],
    }
    evals, nonces = figures["gpu evaluations/s"], figures["gpu header nonces/s"]
    rows = []
    for label, key, unit, per, physical in (
        ("cuda evaluate (incl. transfers)", "gpu evaluations/s", "evaluations/s", COMPRESSIONS_PER_EVALUATION,
         HOPPER_EVALUATIONS_PER_S),
        ("cuda seed nonce scan (reduced on device)", "gpu seed scan evaluations/s", "evaluations/s",
         COMPRESSIONS_PER_EVALUATION, HOPPER_EVALUATIONS_PER_S),
        ("cuda header nonce scan (midstate)", "gpu header nonces/s", "nonces/s", COMPRESSIONS_PER_SCAN_NONCE,
         HOPPER_MIDSTATE_NONCES_PER_S),
    ):  # fmt: skip
        value = figures[key]
        limit = f"{value / physical:.1%} of the H100/H200 limit" if hopper else "-"
        compr = f"{value * per / 1e6:,.0f}"
        rows.append([f"{label}, {name}", "device", f"{value:,.0f} {unit}", compr, "", limit])
    if hopper:
        figures["gpu evaluate fraction of limit"] = evals / HOPPER_EVALUATIONS_PER_S
        figures["gpu header scan fraction of limit"] = nonces / HOPPER_MIDSTATE_NONCES_PER_S
    notes = [
        f"GPU: {name}. Physical limits (docs/performance.md §1.2, H100 SXM / H200): "
        f"{HOPPER_EVALUATIONS_PER_S / 1e6:.0f} M 21-pass evaluations/s, "
        f"{HOPPER_MIDSTATE_NONCES_PER_S / 1e9:.1f} G midstate nonces/s."
    ]
    return rows, figures, notes


def sass_rows() -> tuple[list[list[object]], dict[str, float], list[str]]:
    """SASS instructions per compression of the CUDA pass loop (sm_90), when nvcc is here."""
    from hasher_resources.sha256 import cuda_build

    try:
        with tempfile.TemporaryDirectory() as tmp:
            cubin, report = cuda_build.build_cubin(Path(tmp), "sm_90")
            code = cuda_build.sass(cubin)
    except (cuda_build.CudaToolMissing, RuntimeError) as exc:
        return [], {}, [f"CUDA SASS not counted: {exc}"]
    resources = cuda_build.kernel_resources(report)
    loop = cuda_build.pass_loop(code["hasher_evaluate"])
    per = len(loop) / cuda_build.COMPRESSIONS_PER_PASS
    used = resources["hasher_evaluate"]
    spills = sum(r.spill_store_bytes + r.spill_load_bytes + r.stack_frame_bytes for r in resources.values())
    local = sum(len(cuda_build.local_memory(ins)) for ins in code.values())
    row = ["cuda hasher_evaluate, sm_90 SASS (static)", "-", f"{len(loop):,} instructions per pass",
           "", "", f"{per:,.0f} per compression; {used.registers} registers; "
           f"spill/stack bytes {spills}; local-memory instructions {local}"]  # fmt: skip
    return (
        [row],
        {"sass per compression": per},
        [
            "SASS: nvcc -cubin -arch=sm_90 of the generated source, cuobjdump -sass; the pass loop is the "
            "22-pass loop of hasher_evaluate (3 compressions per pass). Plain-kernel reference ≈1,381 per "
            "compression, ALU-pipe floor ≈1,024 (docs/performance.md §1.2)."
        ],
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger batches and more repetitions")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts to run (default 1,2)")
    parser.add_argument("--rows", type=int, default=0, help="CPU evaluations per call (default 16384)")
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU rows (scripts/gpu_check.sh)")
    parser.add_argument("--json", type=Path, help="also write the headline figures to this JSON file")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args, _ = parser.parse_known_args(argv)  # python -m benchmarks passes every benchmark the same flags

    headers = ["what", "threads", "rate best (median)", "M compressions/s per core", "÷ hashlib per core",
               "notes"]  # fmt: skip
    rows: list[list[object]] = []
    notes: list[str] = []
    figures: dict[str, float] = {}
    if not args.gpu_only:
        part, found, said = cpu_rows(args)
        rows += part
        figures |= found
        notes += said
        part, said = search_rows(args)
        rows += part
        notes += said
    for section in (gpu_rows(args), sass_rows()):
        rows += section[0]
        figures |= section[1]
        notes += section[2]
    notes.append(
        "Rates are the best of the round-robin repetitions (median in brackets); ÷ hashlib compares "
        "compressions/s per core with hashlib.sha256 streaming on the same number of threads in the same "
        f"rounds. Load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}."
    )
    title = "SHA-256 kernels: CPU paths, search, GPU" + (" (full)" if args.full else " (quick)")
    publish(title, headers, rows, notes, figures, json_path=args.json, no_record=args.no_record)
    return figures


if __name__ == "__main__":
    main()
