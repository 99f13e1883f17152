"""Seed search benchmark: frames solved per hour, GRPO vs scan at equal hash budgets, and the
search efficiency (evaluations/s of the whole search ÷ evaluations/s of the bare kernel).

``python -m benchmarks.bench_seeds`` (quick, well under a minute on 2 cores with the CPU kernel)
or ``--full``. Appends its tables to benchmarks/RESULTS.md.

SHA-256 is a random oracle, so both strategies should need about 2^D evaluations per solve; what
can differ is host overhead (throughput) and wasted evaluations. Where a run solves too few frames
to measure a rate (24 bits at CPU speed), solved/hour is extrapolated from the measured
evaluations/s and the 2^-D solve probability per evaluation, and the table says so. The mean best
matched bits per frame at a fixed budget compares the strategies even without solves: for a
random oracle it depends on the number of evaluations only.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.results import record
from hasher_core.design import VOCABULARY_SIZE
from hasher_core.search.config import SearchConfig
from hasher_core.search.loop import search_frames
from hasher_resources.progress_store import SqliteProgressStore
from hasher_resources.sha256 import cuda_available, evaluate_with_keys

POPULATION = 256
# (difficulty, frames, evaluation budget per frame)
QUICK = [(16, 8, 1 << 16), (20, 4, 1 << 16), (24, 4, 1 << 16)]
FULL = [(16, 64, 1 << 18), (20, 16, 1 << 21), (24, 8, 1 << 22)]
# Efficiency at the default kernel batch (frames_per_call = 256 frames × population 256): frames at
# 32 bits (none finishes early), generations per frame in quick and full mode.
BATCH_FRAMES = 256
BATCH_GENERATIONS = {"quick": 8, "full": 32}
MIN_SOLVES_FOR_A_RATE = 5


def pick_backend(name: str) -> str:
    if name != "auto":
        return name
    if cuda_available():
        return "cuda"
    return "cpu" if importlib.util.find_spec("hasher_resources.sha256.cpu") else "reference"


def generations_for(budget: int, config: SearchConfig) -> int:
    """Generations that spend ``budget`` evaluations per frame (GRPO re-hashes no elite)."""
    if config.strategy == "scan":
        return max(1, budget // config.population)
    fresh = config.population - config.elites
    return max(1, 1 + (budget - config.population) // fresh)


def bare_kernel_rate(backend: str, rows: int, seconds: float) -> float:
    """Evaluations/s of the kernel alone on batches shaped like the search's kernel calls."""
    rng = np.random.default_rng(0)
    slots = rng.integers(0, 2**32, (rows, 12), dtype=np.uint32)
    seeds = rng.integers(0, 256, (rows, 32), dtype=np.uint8)
    seeds[:, 16:28] = 0
    evaluate_with_keys(slots, seeds, backend=backend)  # warm-up (JIT, transfers)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        evaluate_with_keys(slots, seeds, backend=backend)
        done += rows
    return done / (time.perf_counter() - start)


def efficiency_row(difficulty: int, strategy: str, frames: int, r, kernel_rate: float) -> list:
    """One row of the efficiency table for a finished search ``r``."""
    s = r.summary()
    rate = r.run_evaluations / r.wall_seconds
    population_rows = int(r.generations.sum()) * POPULATION  # members scored, elites included
    host_us = 1e6 * (r.wall_seconds - r.kernel_seconds) / max(population_rows, 1)
    return [
        difficulty,
        strategy,
        f"{POPULATION}×{frames}",
        f"{rate:,.0f}",
        f"{s['kernel_evaluations_per_s']:,.0f}",
        f"{s['search_efficiency']:.3f}",
        f"{host_us:.3f}",
        f"{kernel_rate:,.0f}",
        f"{rate / kernel_rate:.3f}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger frame counts and budgets")
    parser.add_argument("--backend", default="auto", help="reference | cpu | cuda | auto")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)
    backend = pick_backend(args.backend)
    sizes = FULL if args.full else QUICK

    def evaluate(slots, seeds, header_time):
        return evaluate_with_keys(slots, seeds, header_time=header_time, backend=backend)

    # Warm-up: compile (or load from Numba's cache) the search's own step before timing anything.
    warm = np.zeros((1, 12), np.uint32), np.zeros(1, np.int64)
    for strategy in ("grpo", "scan"):
        search_frames(*warm, SearchConfig(difficulty_bits=32, strategy=strategy, max_generations=2), evaluate)
    rows, efficiency_rows = [], []
    for difficulty, frames, budget in sizes:
        rng = np.random.default_rng(difficulty)
        slots = rng.integers(0, 2**32, (frames, 12), dtype=np.uint32)
        targets = rng.integers(0, VOCABULARY_SIZE, frames)
        kernel_rate = bare_kernel_rate(backend, POPULATION * frames, seconds=1.0 if args.full else 0.5)
        for strategy in ("grpo", "scan"):
            base = SearchConfig(difficulty_bits=difficulty, population=POPULATION, strategy=strategy)
            config = SearchConfig(**{**base.__dict__, "max_generations": generations_for(budget, base)})
            # With a progress store, as the asset runs: its commits are part of the host work measured.
            with (
                tempfile.TemporaryDirectory() as tmp,
                SqliteProgressStore.open(Path(tmp) / "bench.sqlite") as store,
            ):
                r = search_frames(slots, targets, config, evaluate, store=store)
            solved = int(r.solved.sum())
            rate = r.run_evaluations / r.wall_seconds
            if solved >= MIN_SOLVES_FOR_A_RATE:
                per_hour, how = 3600 * solved / r.wall_seconds, "measured"
            else:
                per_hour, how = 3600 * rate / 2**difficulty, "extrapolated: evals/s × 2^-D"
            rows.append(
                [
                    difficulty,
                    strategy,
                    frames,
                    f"{r.evaluations.mean():,.0f}",
                    f"{solved}/{frames}",
                    f"{r.matched_bits.mean():.2f}",
                    f"{solved * 2**difficulty / max(r.run_evaluations, 1):.2f}",
                    f"{rate:,.0f}",
                    f"{per_hour:,.1f}",
                    how,
                ]
            )
            efficiency_rows.append(efficiency_row(difficulty, strategy, frames, r, kernel_rate))
    mode = "full" if args.full else "quick"
    # The default batch: frames_per_call frames side by side, as the asset runs a large partition.
    rng = np.random.default_rng(32)
    slots = rng.integers(0, 2**32, (BATCH_FRAMES, 12), dtype=np.uint32)
    targets = rng.integers(0, VOCABULARY_SIZE, BATCH_FRAMES)
    kernel_rate = bare_kernel_rate(backend, POPULATION * BATCH_FRAMES, seconds=1.0 if args.full else 0.5)
    for strategy in ("grpo", "scan"):
        config = SearchConfig(
            difficulty_bits=32,
            population=POPULATION,
            strategy=strategy,
            max_generations=BATCH_GENERATIONS[mode],
            frames_per_call=BATCH_FRAMES,
        )
        with (
            tempfile.TemporaryDirectory() as tmp,
            SqliteProgressStore.open(Path(tmp) / "bench.sqlite") as store,
        ):
            r = search_frames(slots, targets, config, evaluate, store=store)
        efficiency_rows.append(efficiency_row(32, strategy, BATCH_FRAMES, r, kernel_rate))
    notes = (
        f"Backend `{backend}`, population {POPULATION}, elite ratio 0.25; both strategies get the same "
        "evaluation budget per frame (GRPO does not re-hash its elites). `solves × 2^D / evals` is 1.0 for "
        "an ideal random-oracle search; with few solves it is dominated by Poisson noise. "
        f"Solved/hour is measured where a run solved ≥ {MIN_SOLVES_FOR_A_RATE} frames, "
        "otherwise extrapolated."
    )
    title = f"Seed search: GRPO vs scan at equal budgets ({mode}, {backend})"
    headers = [
        "D bits",
        "strategy",
        "frames",
        "evals/frame",
        "solved",
        "mean best bits",
        "solves × 2^D / evals",
        "search evals/s",
        "solved/hour",
        "how",
    ]
    eff_headers = [
        "D bits",
        "strategy",
        "kernel batch",
        "search evals/s",
        "kernel evals/s in the run",
        "efficiency (in-run)",
        "host µs per population row",
        "bare kernel evals/s (separate)",
        "search ÷ separate bare",
    ]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    eff_notes = (
        "Efficiency = evaluations/s of the whole search (RNG, reward, selection, bookkeeping, store) ÷ "
        "evaluations/s of the bare kernel. In-run: the kernel's rate inside the same search (its calls timed "
        "one by one), immune to other processes' load. Separate: the kernel alone on population × frames "
        f"rows just before the search; only comparable on an idle machine. Host µs per population row: "
        "(wall − kernel time) ÷ (generations × population), elites included. The 32-bit rows run "
        f"{BATCH_FRAMES} frames per kernel call (the default frames_per_call) for "
        f"{BATCH_GENERATIONS[mode]} generations each. Load average at the end: {load}."
    )
    if args.no_record:
        from benchmarks.results import table

        print(f"\n{title}\n{table(headers, rows)}\n{notes}\n\n{table(eff_headers, efficiency_rows)}")
        return
    record(title, headers, rows, notes)
    record(f"Seed search efficiency ({mode}, {backend})", eff_headers, efficiency_rows, eff_notes)


if __name__ == "__main__":
    main()
