"""Run the seed search on a frames Parquet file from the shell, with durable progress and resume.

``python -m hasher_core.search_cli --frames in.parquet --store progress.sqlite --out out.parquet``

The same code path the ``seeds`` asset uses, without Dagster: a run killed at any point (``kill
-9`` included) and started again with the same arguments skips the frames already in the store
and writes the same output as an uninterrupted run. The output appears only when complete
(temporary file, fsync, rename). Progress lines go to stderr; a JSON summary to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from hasher_core.errors import FramesInputError, ProgressStoreError, SearchConfigError
from hasher_core.search import SearchConfig, attach_results, search_frames, validate_frames_table
from hasher_resources.progress import ProgressStore
from hasher_resources.sha256 import BACKENDS, evaluate_with_keys, resolve_backend


def _parser() -> argparse.ArgumentParser:
    d = SearchConfig()
    p = argparse.ArgumentParser(prog="python -m hasher_core.search_cli", description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=Path, required=True, help="training_frames Parquet file")
    p.add_argument("--out", type=Path, required=True, help="where to write the frames with seeds")
    p.add_argument("--store", type=Path, required=True, help="SQLite progress store (created if missing)")
    p.add_argument("--partition", default=None, help="partition name for the lock (default: store name)")
    p.add_argument("--lock-wait-s", type=float, default=0.0, help="wait this long for another run's lock")
    p.add_argument("--backend", default="auto", choices=[*BACKENDS, "auto"])
    p.add_argument("--difficulty-bits", type=int, default=d.difficulty_bits)
    p.add_argument("--difficulty-schedule", default="", help="comma-separated difficulties, e.g. 12,16,20")
    p.add_argument("--population", type=int, default=d.population)
    p.add_argument("--elite-ratio", type=float, default=d.elite_ratio)
    p.add_argument("--max-generations", type=int, default=d.max_generations)
    p.add_argument("--strategy", default=d.strategy)
    p.add_argument("--header-time", type=int, default=d.header_time)
    p.add_argument("--rng-seed", type=int, default=d.rng_seed)
    p.add_argument("--frames-per-call", type=int, default=d.frames_per_call)
    p.add_argument("--progress-every-s", type=float, default=5.0)
    return p


def write_parquet_atomically(table, path: Path) -> None:
    """Write ``table`` to ``path`` so that a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        schedule = tuple(int(x) for x in args.difficulty_schedule.split(",") if x.strip()) or None
        config = SearchConfig(
            difficulty_bits=args.difficulty_bits,
            difficulty_schedule=schedule,
            population=args.population,
            elite_ratio=args.elite_ratio,
            max_generations=args.max_generations,
            strategy=args.strategy,
            header_time=args.header_time,
            rng_seed=args.rng_seed,
            frames_per_call=args.frames_per_call,
        ).validate()
        backend = resolve_backend(args.backend)
        frames = pq.read_table(args.frames)
        slots, targets = validate_frames_table(frames)

        def evaluate(s, seeds, header_time):
            return evaluate_with_keys(s, seeds, header_time=header_time, backend=backend)

        bar = (
            tqdm(total=len(targets), unit="frame", desc="seeds", file=sys.stderr)
            if sys.stderr.isatty()
            else None
        )

        def progress(p) -> None:
            if bar is None:  # not a terminal (a log, a pipe): one line per update
                print(p.line(), file=sys.stderr, flush=True)
                return
            bar.update(p.frames_done - bar.n)
            bar.set_postfix(solved=p.solved, evals_per_s=f"{p.evaluations_per_s:,.0f}", refresh=False)

        with ProgressStore.open(args.store, partition=args.partition, wait_s=args.lock_wait_s) as store:
            results = search_frames(
                slots,
                targets,
                config,
                evaluate,
                store=store,
                progress=progress,
                progress_every_s=args.progress_every_s if bar is None else 0.5,
            )
        if bar is not None:
            bar.close()
        write_parquet_atomically(attach_results(frames, results, config, backend), args.out)
    except (FramesInputError, SearchConfigError, ProgressStoreError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({**results.summary(), "backend": backend, "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
