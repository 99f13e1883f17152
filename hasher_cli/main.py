"""The ``hasher`` command line: subcommands over the plain functions and resources, imported when a
subcommand runs (so ``--help`` is instant).

``hasher predict`` reads a deployed bundle and says which token a frame's seed predicts;
``hasher deployments`` lists what the deployment store holds; ``hasher partitions sync`` registers
a ``source_files`` partition per source file in the Dagster instance (``$DAGSTER_HOME``);
``hasher status`` summarises what every stage has stored under the data directory.
Exit status of ``predict``: 0 when the frame is solved (a token is predicted), 1 when it is not,
2 on any error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_SOLVED, EXIT_NOT_SOLVED, EXIT_ERROR = 0, 1, 2


def slot_word(text: str) -> int:
    """A slot given on the command line: decimal (negative = int32 bit-cast) or 0x-hex."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal or 0x-hex integer") from None
    if not -(2**31) <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{text} does not fit in 32 bits")
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
    p.add_argument("--header-time", type=int, default=None, help="override the stored header time")
    p.add_argument("--backend", default="auto", help="kernel backend: auto, reference, cpu, cuda")
    p.add_argument("--json", action="store_true", help="print the prediction as JSON")
    p.add_argument("--show", type=int, default=5, metavar="N", help="candidate rows to list (best first)")
    p.set_defaults(run=_predict)

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
    from hasher_resources.deploy_store import DeploymentStore

    return DeploymentStore(_data_dir(args))


def _predict(args: argparse.Namespace) -> int:
    from hasher_core.predict import predict, predict_row
    from hasher_resources.sha256.resource import Sha256Kernel

    bundle = _store(args).open_bundle(args.version, verify=True)
    kernel = Sha256Kernel(backend=args.backend)
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
                f"{c.matched_bits}/32 bits{' -> token ' + str(c.golden) if c.solves else ''}"
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
        return int(args.run(args))
    except Exception as e:  # every failure is reported once, as one line, with exit status 2
        print(f"hasher {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
