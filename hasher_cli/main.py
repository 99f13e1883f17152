"""The ``hasher`` command line: subcommands over the plain functions and resources, imported when a
subcommand runs (so ``--help`` is instant).

``hasher generate --prompt TEXT`` continues a text with the current deployment (greedy, DESIGN
§6.1); ``hasher predict --text TEXT`` answers one step, ``--slots``/``--frame-index`` read back a
stored frame; ``hasher deployments`` lists what the deployment store holds; ``hasher partitions
sync`` registers a ``source_files`` partition per source file in the Dagster instance
(``$DAGSTER_HOME``); ``hasher status`` summarises what every stage has stored under the data
directory. Exit status of ``predict`` and ``generate``: 0 when the model answered (a token is
predicted), 1 when it could not (not solved, or it abstained), 2 on any error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_SOLVED, EXIT_NOT_SOLVED, EXIT_ERROR = 0, 1, 2
#: ``Sha256Kernel.backend``'s values (not imported from it: ``--help`` stays instant).
BACKENDS = ("auto", "reference", "cpu", "cuda")


def slot_word(text: str) -> int:
    """A slot given on the command line: decimal (negative = int32 bit-cast) or 0x-hex."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal or 0x-hex integer") from None
    if not -(2**31) <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{text} does not fit in 32 bits")
    return value


def _count(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a {what} (an integer >= 1)")
    return value


def token_count(text: str) -> int:
    """A ``--max-tokens``: an integer >= 1."""
    return _count(text, "token count")


def thread_count(text: str) -> int:
    """A ``--threads``: an integer >= 1."""
    return _count(text, "thread count")


def distance(text: str) -> float:
    """A ``--max-distance``: a finite number >= 0 (a distance over the dequantised features)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a distance (a finite number >= 0)")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hasher", description="HASHER pipeline tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "predict",
        help="predict the token of a frame from a deployed bundle",
        description="Recompute the golden of the frame's deployed seed(s) and print the predicted token. "
        "Exit 0: solved, 1: not solved, 2: error.",
    )
    _add_store_arguments(p)
    p.add_argument("--version", default=None, help="a deployed version (default: the current one)")
    frame = p.add_mutually_exclusive_group(required=True)
    frame.add_argument("--slots", nargs=12, type=slot_word, metavar="S", help="the frame's 12 slot words")
    frame.add_argument(
        "--frame-index", type=int, metavar="N", help="the frame stored in bundle row N (0-based)"
    )
    frame.add_argument("--text", metavar="TEXT", help="a context: the model's next token for it")
    p.add_argument(
        "--max-distance", type=distance, default=None, help="with --text: abstain beyond this distance"
    )
    p.add_argument("--header-time", type=int, default=None, help="override the stored header time")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="kernel backend (default auto)")
    p.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        help="CPU threads the kernel hashes on (default: every core; one step's few rows run on one thread "
        "either way)",
    )
    p.add_argument("--json", action="store_true", help="print the prediction as JSON")
    p.add_argument("--show", type=int, default=5, metavar="N", help="candidate rows to list (best first)")
    p.set_defaults(run=_predict)

    g = sub.add_parser(
        "generate",
        help="continue a text with the deployed model",
        description="Greedy generation from the current deployment (DESIGN §6.1): the prompt's last "
        "window of tokens is embedded as in training and looked up among the deployed frames (then its "
        "shorter suffixes from a word on, which is how a recitation crosses into the next, overlapping "
        "chunk; the nearest frame when none is deployed), and the token the seed's golden stands for is "
        "appended, again and again, until the end of the training text, an abstention or --max-tokens. "
        "Prints the continuation (why it stopped goes to stderr); exit 0, or 1 when the model abstained "
        "before producing a token.",
    )
    _add_store_arguments(g)
    g.add_argument("--version", default=None, help="a deployed version (default: the current one)")
    g.add_argument("--prompt", required=True, help="the text to continue")
    g.add_argument(
        "--max-tokens", type=token_count, default=64, help="stop after this many tokens (default 64)"
    )
    g.add_argument(
        "--max-distance",
        type=distance,
        default=None,
        help="abstain (and stop) when the nearest deployed context is farther than this "
        "(default 0.5; a context one token past a trained one lies near 0.02, unrelated prompts at "
        "0.3-0.6 with the offline embedder)",
    )
    g.add_argument("--backend", default="auto", choices=BACKENDS, help="kernel backend (default auto)")
    g.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        help="CPU threads the kernel hashes on (default: every core; one step's few rows run on one thread "
        "either way)",
    )
    g.add_argument("--json", action="store_true", help="print the whole generation as one JSON object")
    g.set_defaults(run=_generate)

    d = sub.add_parser("deployments", help="list deployed versions, the current one and the backups")
    _add_store_arguments(d)
    d.set_defaults(run=_deployments)

    parts = sub.add_parser("partitions", help="dynamic partitions of the Dagster instance ($DAGSTER_HOME)")
    parts_sub = parts.add_subparsers(dest="action", required=True, metavar="ACTION")
    sync = parts_sub.add_parser(
        "sync",
        help="register a source_files partition per source file found now; print every key",
        description="Scans $HASHER_MINER_DIR and $HASHER_INBOX_DIR like the sensor does, adds the missing "
        "partitions to the instance in $DAGSTER_HOME and prints every key, one per line.",
    )
    sync.set_defaults(run=_partitions_sync)
    parts_list = parts_sub.add_parser("list", help="print the registered source_files partitions")
    parts_list.set_defaults(run=_partitions_list)

    st = sub.add_parser("status", help="what each stage has stored under the data directory")
    _add_store_arguments(st)
    st.set_defaults(run=_status)
    return parser


def _add_store_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--deployment-root",
        type=Path,
        default=None,
        help="the deployment store (default: $HASHER_DATA_DIR or ~/.local/share/hasher)",
    )


def _data_dir(args: argparse.Namespace) -> Path:
    from hasher_resources.files import default_data_dir

    return (args.deployment_root or default_data_dir()).expanduser()


def _store(args: argparse.Namespace):  # -> DeploymentStore; imported late so `--help` stays instant
    from hasher_resources.deploy.store import DeploymentStore

    return DeploymentStore(_data_dir(args))


def _model(args: argparse.Namespace):  # -> (Model, max_distance)
    from hasher_core.inference import DEFAULT_MAX_DISTANCE
    from hasher_resources.model import load_model

    # Mapped: checksums verified, the index memory-mapped; nothing is rebuilt or read whole. The
    # kernel is the plain one (not the Dagster resource): the command stays a small process.
    bundle = _store(args).map_bundle(args.version)
    max_distance = DEFAULT_MAX_DISTANCE if args.max_distance is None else args.max_distance
    return load_model(bundle, _kernel(args)), max_distance


def _kernel(args: argparse.Namespace):  # -> sha256.api.RowKernel
    from hasher_resources.sha256.api import RowKernel

    if args.threads is not None:
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    return RowKernel(args.backend)


def _generate(args: argparse.Namespace) -> int:
    model, max_distance = _model(args)
    generation = model.generate(args.prompt, args.max_tokens, max_distance)
    if args.json:
        print(json.dumps(generation.as_json(), indent=2, ensure_ascii=False))
    else:
        print(generation.continuation)
        guesses = [s.distance for s in generation.steps if not s.exact and s.token_id is not None]
        if guesses:
            print(
                f"hasher generate: {len(guesses)} of {len(generation.tokens)} token(s) are guesses from the "
                f"nearest deployed frame (distance {min(guesses):.3f}-{max(guesses):.3f}); --json shows "
                "each step",
                file=sys.stderr,
            )
        reached_max = generation.stopped.startswith("max_tokens")
        why = f"stopped at --max-tokens {args.max_tokens}" if reached_max else generation.stopped
        print(f"hasher generate: {why}", file=sys.stderr)
    return EXIT_SOLVED if generation.tokens else EXIT_NOT_SOLVED


def _predict_text(args: argparse.Namespace) -> int:
    model, max_distance = _model(args)
    from hasher_core.frames.tokens import encode_ordinary

    step = model.step(encode_ordinary(model.encoding, args.text).tolist(), max_distance)
    if args.json:
        print(json.dumps({**step.as_json(), "bundle": model.bundle.version}, indent=2, ensure_ascii=False))
    elif step.token_id is None:
        print(f"abstained: the nearest deployed context is at distance {step.distance:.3f} > {max_distance}")
    else:
        how = "exact context" if step.exact else f"nearest context, distance {step.distance:.3f}"
        print(
            f"{step.text!r} (token {step.token_id}; {how}: {step.source_file} window_end {step.window_end})"
        )
    return EXIT_NOT_SOLVED if step.token_id is None else EXIT_SOLVED


def _predict(args: argparse.Namespace) -> int:
    if args.text is not None:
        return _predict_text(args)
    from hasher_core.inference.readback import predict, predict_row

    bundle = _store(args).map_bundle(args.version)
    kernel = _kernel(args)
    backend = kernel.backend_name()
    if args.frame_index is not None:
        if args.header_time is not None:
            raise ValueError("--header-time goes with --slots; a bundle row carries its own header time")
        prediction = predict_row(bundle, args.frame_index, kernel.evaluate_rows, backend=backend)
    else:
        prediction = predict(
            bundle, args.slots, kernel.evaluate_rows, header_time=args.header_time, backend=backend
        )
    if args.json:
        print(
            json.dumps(
                {
                    "solved": prediction.solved,
                    "token_ids": list(prediction.token_ids),
                    "bundle_version": prediction.bundle_version,
                    "slots": [f"0x{w:08x}" for w in prediction.slots],
                    "candidates": [c.__dict__ for c in prediction.candidates],
                },
                indent=2,
            )
        )
    else:
        print(prediction.describe())
        # Frames of one chunk share its embedding and so its slots: show the closest rows only.
        ranked = sorted(prediction.candidates, key=lambda c: (-c.solves, -c.matched_bits, c.row))
        if args.frame_index is not None:  # the row asked for comes first
            ranked.sort(key=lambda c: c.row != args.frame_index)
        for c in ranked[: args.show]:
            print(
                f"  row {c.row}: {c.partition} chunk {c.chunk_id} window_end {c.window_end}: "
                f"target {c.target_token_id & 0xFFFFFFFF}, golden {c.golden} (0x{c.golden:08x}), "
                f"{c.matched_bits} bits -> token {c.token_id}{' (solves)' if c.solves else ''}"
            )
        if len(ranked) > args.show:
            print(f"  … and {len(ranked) - args.show} more row(s) with these slots (--show N, or --json)")
    return EXIT_SOLVED if prediction.solved else EXIT_NOT_SOLVED


def _deployments(args: argparse.Namespace) -> int:
    store = _store(args)
    current = store.current_version()
    print(f"store: {store.root}")
    print(f"current: {current or '(nothing deployed)'}")
    for version in store.versions():
        print(f"  {'*' if version == current else ' '} {version}")
    for backup in store.backups():
        print(f"  backup {backup.name}")
    return 0


def _instance():
    import dagster as dg  # late: only these subcommands need Dagster

    if not os.environ.get("DAGSTER_HOME"):
        raise RuntimeError("DAGSTER_HOME is not set: dynamic partitions live in a persistent instance")
    return dg.DagsterInstance.get()


def _partitions_sync(args: argparse.Namespace) -> int:
    from hasher_assets.partitions import register_partitions
    from hasher_resources.storage import HasherStorage

    with _instance() as instance:
        for key in register_partitions(instance, HasherStorage()):
            print(key)
    return 0


def _partitions_list(args: argparse.Namespace) -> int:
    with _instance() as instance:
        for key in sorted(instance.get_dynamic_partitions("source_files")):
            print(key)
    return 0


def _status(args: argparse.Namespace) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = _data_dir(args)
    print(f"data directory: {root}")
    stages = ["knowledge_base", "training_frames", "seeds", "checkpoints"]
    keys = sorted({p.stem for stage in stages for p in (root / stage).glob("*.parquet")})
    if not keys:
        print("  nothing materialised yet")
        return 0
    width = max((len(k) for k in keys), default=10)
    print(f"  {'partition':<{width}}  {'chunks':>7} {'frames':>8} {'solved':>15} {'checkpointed':>12}")
    for key in keys:
        cells = []
        for stage in stages:
            path = root / stage / f"{key}.parquet"
            cells.append(pq.ParquetFile(path).metadata.num_rows if path.exists() else None)
        solved = ""
        seeds = root / "seeds" / f"{key}.parquet"
        if seeds.exists():
            table = pq.read_table(seeds, columns=["solved", "difficulty_bits"])
            bits = table.column("difficulty_bits")[0].as_py() if table.num_rows else "?"
            solved = f"{pc.sum(table.column('solved')).as_py() or 0}@{bits}bits"
        show = ["-" if c is None else f"{c:,}" for c in cells]
        print(f"  {key:<{width}}  {show[0]:>7} {show[1]:>8} {solved:>15} {show[3]:>12}")
    store = _store(args)
    current = store.current_version()
    print(
        f"deployment: {current or '(nothing deployed)'}"
        + (f" at {store.root / 'current'}" if current else "")
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hasher`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        from hasher_resources.settings import load_settings

        load_settings()  # a bad HASHER_* variable stops every command, named in one line
        return int(args.run(args))
    except Exception as e:  # every failure is reported once, as one line, with exit status 2
        print(f"hasher {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
