"""SHA-256 recursion kernel throughput per backend and thread count, against hashlib in the same run.

``python -m benchmarks.bench_kernel`` (quick, well under a minute once Numba's cache is warm) or
``--full``. One evaluation is 22 double SHA-256 of an 80-byte header, counted as 66 compressions
(the CPU and CUDA kernels skip work that the recursion leaves constant, so they do fewer real ones;
the nominal count is what a plain implementation would need). The baseline is hashlib's streaming
SHA-256 over a large buffer (OpenSSL, SHA-NI where the CPU has it): bytes / 64 compressions per
second, measured on as many threads as the row it is compared with, so contention hits both alike.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from benchmarks.results import record
from hasher_resources import sha256
from hasher_resources.sha256 import cpu, cuda

COMPRESSIONS_PER_EVALUATION = 66  # (21 passes + golden) × (2 header blocks + 1 re-hash)
COMPRESSIONS_PER_HEADER_NONCE = 3  # counted like the recursion; the midstate path needs 2
#: Physical limit of an H100 SXM / H200 (performance-anchors §1.2): 16.3 G compressions/s.
H100_COMPRESSIONS_PER_S = 16.3e9


def timed(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """Best and median wall seconds of ``reps`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def hashlib_streaming_rate(threads: int, megabytes: int, reps: int) -> float:
    """Compressions/s of hashlib.sha256 over ``megabytes`` per thread, ``threads`` buffers at once."""
    buffers = [bytes(megabytes << 20) for _ in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        # hashlib releases the GIL on large buffers, so threads hash truly in parallel
        best, _ = timed(lambda: list(pool.map(lambda b: hashlib.sha256(b).digest(), buffers)), reps)
    return threads * (megabytes << 20) / 64 / best


def random_rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 2**32, (n, 12), dtype=np.uint32), rng.integers(0, 256, (n, 32), dtype=np.uint8)


def fmt(x: float) -> str:
    return f"{x:,.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger batches and more repetitions")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts to run (default 1,2)")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args, _ = parser.parse_known_args(argv)  # python -m benchmarks passes every benchmark the same flags

    reps = 7 if args.full else 5
    cpu_rows = 65536 if args.full else 16384
    hash_mb = 256 if args.full else 48
    thread_counts = [int(t) for t in args.threads.split(",")]
    headers = [
        "backend",
        "threads / device",
        "rows",
        "evaluations/s best (median)",
        "M compressions/s",
        "M compressions/s per core",
        "hashlib streaming M compr/s per core",
        "ratio to hashlib",
    ]
    rows: list[list[object]] = []

    slots, seeds = random_rows(256)
    best, med = timed(lambda: sha256.evaluate(slots, seeds, backend="reference"), 1)
    rate = 256 / best
    h1 = hashlib_streaming_rate(1, hash_mb, reps)
    rows.append(["reference (hashlib)", 1, 256, f"{fmt(rate)} ({fmt(256 / med)})",
                 f"{rate * 66 / 1e6:.2f}", f"{rate * 66 / 1e6:.2f}", f"{h1 / 1e6:.2f}",
                 f"{rate * 66 / h1:.3f}"])  # fmt: skip

    slots, seeds = random_rows(cpu_rows)
    header = bytes(range(80))
    scan_rows = []
    for threads in thread_counts:
        cpu.set_threads(threads)
        best, med = timed(lambda: sha256.evaluate(slots, seeds, backend="cpu"), reps)
        rate = cpu_rows / best
        base = hashlib_streaming_rate(threads, hash_mb, reps)
        compr = rate * COMPRESSIONS_PER_EVALUATION
        rows.append(["cpu (numba)", threads, cpu_rows, f"{fmt(rate)} ({fmt(cpu_rows / med)})",
                     f"{compr / 1e6:.1f}", f"{compr / threads / 1e6:.1f}", f"{base / threads / 1e6:.1f}",
                     f"{compr / base:.2f}"])  # fmt: skip
        nonces = cpu_rows * 32
        best, _ = timed(lambda: cpu.scan_header_nonces(header, 0, nonces), reps)  # noqa: B023
        scan_rows.append(
            ["cpu header scan", threads, nonces, f"{fmt(nonces / best)} nonces/s", "", "", "", ""]
        )
    cpu.set_threads(None)

    notes = [
        "Evaluations = DESIGN §4.2 recursions (22 double SHA-256 each, "
        f"{COMPRESSIONS_PER_EVALUATION} nominal compressions). hashlib baseline: hashlib.sha256 over a "
        f"{hash_mb} MiB buffer per thread, same threads, same run. Ratio = kernel compressions/s ÷ hashlib "
        "compressions/s at the same thread count.",
    ]
    if sha256.cuda_available():
        name = cuda.device_name()
        hopper = "H100" in name or "H200" in name

        def gpu_row(label: str, count: int, best: float, med: float) -> list[object]:
            compr = count / best * COMPRESSIONS_PER_EVALUATION
            limit = f"{compr / H100_COMPRESSIONS_PER_S:.0%} of H100/H200 limit" if hopper else "–"
            return [label, name, count, f"{fmt(count / best)} ({fmt(count / med)})", f"{compr / 1e6:.0f}",
                    "–", "–", limit]  # fmt: skip

        gpu_rows = (1 << 22) if args.full else (1 << 20)
        slots, seeds = random_rows(gpu_rows)
        best, med = timed(lambda: sha256.evaluate(slots, seeds, backend="cuda"), reps)
        rows.append(gpu_row("cuda (evaluate, incl. transfers)", gpu_rows, best, med))
        count = 1 << 24
        best, med = timed(
            lambda: sha256.scan_seed_nonces(
                slots[0], bytes(16), 1234, difficulty_bits=16, nonce_count=count, backend="cuda"
            ),
            reps,
        )
        rows.append(gpu_row("cuda (seed nonce scan, reduced on device)", count, best, med))
        count = 1 << 26
        best, _ = timed(
            lambda: sha256.scan_header_nonces(header, share_bits=24, nonce_count=count, backend="cuda"), reps
        )
        scan_rows.append(["cuda header scan", name, count, f"{fmt(count / best)} nonces/s", "", "", "", ""])
        notes.append(
            f"GPU: {name}; physical limit model from performance-anchors §1.2 (16.3 G compressions/s)."
        )
    else:
        notes.append("No CUDA device visible (CuPy missing or no GPU): GPU rows not measured in this run.")

    rows += scan_rows
    title = "SHA-256 recursion kernel" + (" (full)" if args.full else " (quick)")
    if args.no_record:
        from benchmarks.results import table

        print(f"\n{title}\n{table(headers, rows)}\n" + "\n".join(notes))
    else:
        record(title, headers, rows, notes="\n".join(notes))


if __name__ == "__main__":
    main()
