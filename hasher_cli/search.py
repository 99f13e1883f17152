"""Run the seed search on a frames Parquet file from the shell, with durable progress and resume.

``python -m hasher_cli.search --frames in.parquet --store progress.sqlite --out out.parquet``

The same code path the ``seeds`` asset uses, without Dagster: a run killed at any point (``kill
-9`` included) and started again with the same arguments skips the frames already in the store
and writes the same output as an uninterrupted run. The output appears only when complete
(temporary file, fsync, rename). Progress lines go to stderr; a JSON summary to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from hasher_core.errors import HasherError
from hasher_core.search import SearchConfig, attach_results, validate_frames_table
from hasher_core.search.config import knobs
from hasher_resources.parquet_io import write_table_atomic
from hasher_resources.progress_store import search_resumable
from hasher_resources.sha256 import BACKENDS
from hasher_resources.sha256.resource import Sha256Kernel


def _comma_list(kind: type) -> Callable[[str], tuple]:
    """An argparse type: ``"12,16,20"`` → ``(12, 16, 20)`` of ``kind``."""

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of {kind.__name__}"
            ) from None

    return parse


def add_search_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per :class:`SearchConfig` field, generated from :func:`knobs` (type, default,
    choices, description): ``--difficulty-bits``, ``--difficulty-schedule 12,16,20``,
    ``--reward-weights 0.6,0.3,0.1`` …"""
    for knob in knobs():
        flag = "--" + knob.name.replace("_", "-")
        help_text = f"{knob.description} (default: {knob.default})"
        kind = _comma_list(knob.kind) if knob.is_list else knob.kind
        parser.add_argument(flag, type=kind, default=knob.default, choices=knob.choices, help=help_text)


def search_config_from(args: argparse.Namespace) -> SearchConfig:
    """The :class:`SearchConfig` the flags of :func:`add_search_flags` describe, validated.

    Raises :class:`~hasher_core.errors.SearchConfigError` naming a bad setting."""
    values = {knob.name: getattr(args, knob.name) for knob in knobs()}
    if values["difficulty_schedule"] == ():
        values["difficulty_schedule"] = None
    return SearchConfig(**values).validate()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hasher_cli.search", description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=Path, required=True, help="training_frames Parquet file")
    p.add_argument("--out", type=Path, required=True, help="where to write the frames with seeds")
    p.add_argument("--store", type=Path, required=True, help="SQLite progress store (created if missing)")
    p.add_argument("--partition", default=None, help="partition name for the lock (default: store name)")
    p.add_argument("--lock-wait-s", type=float, default=0.0, help="wait this long for another run's lock")
    p.add_argument("--backend", default="auto", choices=[*BACKENDS, "auto"])
    p.add_argument("--progress-every-s", type=float, default=5.0)
    add_search_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hasher_cli.search``: 0 on success, 2 on an error (one line on stderr)."""
    args = _parser().parse_args(argv)
    try:
        config = search_config_from(args)
        kernel = Sha256Kernel(backend=args.backend)
        backend = kernel.backend_name()
        frames = pq.read_table(args.frames)
        slots, targets = validate_frames_table(frames)

        def evaluate(s, seeds, header_time):
            return kernel.evaluate_with_keys(s, seeds, header_time)

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

        results = search_resumable(
            args.store,
            slots,
            targets,
            config,
            evaluate,
            partition=args.partition,
            wait_s=args.lock_wait_s,
            progress=progress,
            progress_every_s=args.progress_every_s if bar is None else 0.5,
            warn=lambda line: print(f"warning: {line}", file=sys.stderr, flush=True),
            driver=kernel.search_driver(),
        )
        if bar is not None:
            bar.close()
        write_table_atomic(attach_results(frames, results, config, backend), args.out)
    except (HasherError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({**results.summary(), "backend": backend, "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
