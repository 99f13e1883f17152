"""The ``hasher`` command line: subcommands over the plain functions and resources, imported when a
subcommand runs (so ``--help`` is instant).

``hasher generate --prompt TEXT`` continues a text with the current deployment (greedy, DESIGN
§6.1); ``hasher predict --text TEXT`` answers one step, ``--slots``/``--frame-index`` read back a
stored frame; ``hasher serve`` serves the deployment over HTTP (``hasher_cli.serve``);
``hasher deployments`` lists what the deployment store holds and what of it is damaged, ``hasher
deployments rollback`` deploys an earlier version again; ``hasher partitions
sync`` registers a ``source_files`` partition per source file in the Dagster instance
(``$DAGSTER_HOME``, checked first by ``hasher_cli.dagster_home``) and says on stderr what it skipped;
``hasher status`` summarises what every stage has stored under the data directory; ``hasher pools``
shows which runs hold the concurrency pools (``sha256``, ``asic``) and ``hasher pools free RUN_ID``
frees the slots of a run that died holding them. Exit status of
``predict`` and ``generate``: 0 when the model answered (a token is predicted), 1 when it could not
(not solved, or it abstained), 2 on any error; of ``partitions sync``: 0, or 1 when it found no source
file or could not read an input file at all. Prompts (``--prompt``, ``--prompt-file``, ``-`` for
standard input) follow ``hasher_cli.text_io``'s rules.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hasher_core.names import AUTO, KERNEL_BACKENDS, PARTITION_STAGES

EXIT_SOLVED, EXIT_NOT_SOLVED, EXIT_ERROR = 0, 1, 2
#: ``Sha256Kernel.backend``'s values.
BACKENDS = (AUTO, *KERNEL_BACKENDS)


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
    frame.add_argument(
        "--text", metavar="TEXT", help="a context: the model's next token for it ('-': read standard input)"
    )
    frame.add_argument("--text-file", type=Path, metavar="PATH", help="--text read from a file")
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
        description="Greedy generation from the current deployment (docs/design.md §6.1): the prompt's last "
        "window of tokens is embedded as in training and looked up among the deployed frames (then its "
        "shorter suffixes from a word on, which is how a recitation crosses into the next, overlapping "
        "chunk; the nearest frame when none is deployed), and the token the seed's golden stands for is "
        "appended, again and again, until the end of the training text, an abstention or --max-tokens. "
        "Prints the continuation (why it stopped goes to stderr); exit 0, or 1 when the model abstained "
        "before producing a token.",
    )
    _add_store_arguments(g)
    g.add_argument("--version", default=None, help="a deployed version (default: the current one)")
    prompt = g.add_mutually_exclusive_group(required=True)
    prompt.add_argument(
        "--prompt",
        help="the text to continue ('-': read standard input; UTF-8, or UTF-16/32 with a BOM)",
    )
    prompt.add_argument(
        "--prompt-file",
        type=Path,
        metavar="PATH",
        help="read the prompt from a file (no size limit; UTF-8, UTF-16 or UTF-32; trailing newlines "
        'dropped, as in --prompt "$(cat PATH)")',
    )
    g.add_argument(
        "--max-tokens", type=token_count, default=64, help="stop after this many tokens (default 64)"
    )
    g.add_argument(
        "--max-distance",
        type=distance,
        default=None,
        help="abstain (and stop) when the nearest deployed context is farther than this "
        "(default 0.15; with the offline embedder a context one token past a trained one lies at "
        "0.02-0.06, unrelated prompts at 0.24-0.58)",
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

    d = sub.add_parser(
        "deployments",
        help="list deployed versions, the current one and the backups, and what is damaged",
        description="Lists the store's versions and backups, each verified, and what killed deploys "
        "left; exit 1 when the current deployment is damaged. `rollback` deploys an earlier version "
        "again.",
    )
    _add_store_arguments(d)
    d.set_defaults(run=_deployments)
    d_sub = d.add_subparsers(dest="action", metavar="ACTION")
    rb = d_sub.add_parser(
        "rollback",
        help="deploy an earlier version again (default: the one before the current one)",
        description="Deploys an earlier version again from its directory or, when that is damaged, "
        "from its newest intact backup; verified on the kernel before the pointer moves, like any "
        "deploy. `--to` the current version repairs a damaged current deployment from a backup.",
    )
    _add_store_arguments(rb)
    rb.add_argument("--to", metavar="VERSION", default=None, help="the version to go back to")
    rb.add_argument("--backend", default="auto", choices=BACKENDS, help="kernel backend (default auto)")
    rb.set_defaults(run=_rollback)

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

    from hasher_cli import serve  # argparse only at import: --help stays instant

    serve.add_parser(sub, _add_store_arguments, BACKENDS)
    pl = sub.add_parser(
        "pools",
        help="which runs hold the concurrency pools ($DAGSTER_HOME); free a dead run's slots",
        description="Lists every claimed slot of every pool with its run's status and whether a "
        "process of that run still runs on this machine (its lease). A run killed here is released "
        "by the next step that waits for its pool; `hasher pools free RUN_ID` releases one that "
        "hasher cannot judge (it ran on another machine): the run is marked failed.",
    )
    pl.set_defaults(run=_pools)
    pl_sub = pl.add_subparsers(dest="action", metavar="ACTION")
    pl_free = pl_sub.add_parser("free", help="mark a run that holds pool slots failed and free its slots")
    pl_free.add_argument("run_id", help="the run's id (hasher pools lists them)")
    pl_free.add_argument(
        "--force", action="store_true", help="even when a process of the run still runs on this machine"
    )
    pl_free.set_defaults(run=_pools_free)

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
    from .text_io import print_json, text_argument

    prompt = text_argument(args.prompt, args.prompt_file, "--prompt")  # before the model: fail fast
    model, max_distance = _model(args)
    generation = model.generate(prompt, args.max_tokens, max_distance)
    if args.json:
        print_json(generation.as_json())
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
    from .text_io import print_json, text_argument

    text = text_argument(args.text, args.text_file, "--text")
    model, max_distance = _model(args)
    from hasher_core.frames.tokens import encode_ordinary

    step = model.step(encode_ordinary(model.encoding, text).tolist(), max_distance)
    if args.json:
        print_json({**step.as_json(), "bundle": model.bundle.version})
    elif step.token_id is None:
        print(f"abstained: {step.reason}")
    else:
        how = "exact context" if step.exact else f"nearest context, distance {step.distance:.3f}"
        print(
            f"{step.text!r} (token {step.token_id}; {how}: {step.source_file} window_end {step.window_end})"
        )
    return EXIT_NOT_SOLVED if step.token_id is None else EXIT_SOLVED


def _predict(args: argparse.Namespace) -> int:
    if args.text is not None or args.text_file is not None:
        return _predict_text(args)
    from hasher_core.inference.readback import predict, predict_row

    from .text_io import print_json

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
        print_json(
            {
                "solved": prediction.solved,
                "token_ids": list(prediction.token_ids),
                "bundle_version": prediction.bundle_version,
                "slots": [f"0x{w:08x}" for w in prediction.slots],
                "candidates": [c.__dict__ for c in prediction.candidates],
            }
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
    health = _store(args).inspect()
    print(f"store: {health.root}")
    print(f"current: {health.current or '(nothing deployed)'}")
    if health.damaged:
        print(f"  DAMAGED: {health.current_problem}")
        print(f"  {health.recovery}")
    for version, problem in health.versions.items():
        print(f"  {'*' if version == health.current else ' '} {version}  {problem or 'intact'}")
    for name, problem in health.backups.items():
        print(f"  backup {name}  {problem or 'intact'}")
    for path in health.stale:
        print(f"  left by a killed deploy: {path} (the next deploy removes it)")
    return EXIT_NOT_SOLVED if health.damaged else 0


def _rollback(args: argparse.Namespace) -> int:
    store = _store(args)
    report = store.rollback(
        args.to, kernel_backend=args.backend, log=lambda line: print(line, file=sys.stderr)
    )
    print(f"current: {report.version} ({report.status}; was {report.previous_version or 'nothing'})")
    return 0


def _instance():
    from hasher_resources.files import check_writable_dir

    from .dagster_home import check_dagster_home

    home = check_dagster_home()  # before Dagster opens (and may create) anything
    check_writable_dir(home, "DAGSTER_HOME", "the Dagster instance's runs and partitions")
    import dagster as dg  # late: only these subcommands need Dagster

    return dg.DagsterInstance.get()


def _partitions_sync(args: argparse.Namespace) -> int:
    from hasher_assets.partitions import sync_partitions
    from hasher_resources.storage import CANNOT_BE_READ, NO_SOURCE_FILES_READ, HasherStorage

    storage = HasherStorage()
    with _instance() as instance:
        sync = sync_partitions(instance, storage)
    for key in sync.keys:
        print(key)
    for path, why in sync.skipped.items():
        print(f"hasher partitions sync: skipped {path}: {why}", file=sys.stderr)
    if not sync.keys:
        print(
            f"hasher partitions sync: no source files found: {_where_sources_are(storage)}", file=sys.stderr
        )
    # Never "exit 0 with nothing": 1 when nothing was found or an input file could not be read at all.
    unreadable = any(why.startswith((CANNOT_BE_READ, NO_SOURCE_FILES_READ)) for why in sync.skipped.values())
    return EXIT_NOT_SOLVED if not sync.keys or unreadable else 0


def _where_sources_are(storage) -> str:
    """What the miner directory and the inbox hold, for a scan that found no source file."""
    from hasher_core.knowledge import DISCOVERY_ORDER

    miner, inbox = storage.miner_path, storage.inbox_path
    if not miner.is_dir():
        found_miner = f"HASHER_MINER_DIR {miner} does not exist"
    elif not any((miner / name).is_file() for name in DISCOVERY_ORDER):
        found_miner = f"HASHER_MINER_DIR {miner} holds none of {', '.join(DISCOVERY_ORDER)}"
    else:
        found_miner = f"HASHER_MINER_DIR {miner} holds no readable source file (see above)"
    if not inbox.is_dir():
        found_inbox = f"HASHER_INBOX_DIR {inbox} does not exist"
    else:
        found_inbox = f"HASHER_INBOX_DIR {inbox} holds no .txt or .md file"
    return f"{found_miner}; {found_inbox}"


def _partitions_list(args: argparse.Namespace) -> int:
    with _instance() as instance:
        for key in sorted(instance.get_dynamic_partitions("source_files")):
            print(key)
    return 0


def _pools(args: argparse.Namespace) -> int:
    from hasher_resources.pools import holders

    said = {
        "running": "running on this machine",
        "gone": "every process of it has ended: the next step waiting for this pool frees it",
        "unknown": "no lease on this machine: if it is dead, hasher pools free {run_id}",
    }
    with _instance() as instance:
        storage = instance.event_log_storage
        held = holders(instance)
        for pool in sorted(storage.get_concurrency_keys()):
            info = storage.get_concurrency_info(pool)
            mine = [h for h in held if h.pool == pool]
            waiting = len(info.pending_steps) - len(mine)
            print(f"{pool}: {len(mine)} of {info.slot_count} slot(s) held, {waiting} step(s) waiting")
            for h in mine:
                lease = said[h.lease].format(run_id=h.run_id)
                print(f"  run {h.run_id} step {h.step_key}: {h.run_status}, {lease}")
    return 0


def _pools_free(args: argparse.Namespace) -> int:
    from hasher_resources.pools import free_run

    with _instance() as instance:
        freed = free_run(instance, args.run_id, force=args.force)
    print(f"freed pool(s) {', '.join(freed)} of run {args.run_id}; the run is marked failed")
    return 0


def _status(args: argparse.Namespace) -> int:
    root = _data_dir(args)
    print(f"data directory: {root}")
    stages = PARTITION_STAGES
    keys = sorted({p.stem for stage in stages for p in (root / stage).glob("*.parquet")})
    _print_skipped_inputs(root)
    if keys:
        _print_stages(root, stages, keys)
    else:
        print("  nothing materialised yet")
    health = _store(args).inspect(everything=False)
    current = health.current
    if not keys and current is None and not health.damaged:
        return 0
    print(
        f"deployment: {current or '(nothing deployed)'}"
        + (f" at {health.root / 'current'}" if current else "")
        + (f" — DAMAGED: {health.current_problem}; {health.recovery}" if health.damaged else "")
    )
    return 0


def _print_stages(root: Path, stages: Sequence[str], keys: list[str]) -> None:
    """One line per partition: rows each stage stored, and the seeds solved at their difficulty."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from hasher_resources.parquet_io import partition_path

    notes: list[str] = []
    width = max((len(k) for k in keys), default=10)
    print(f"  {'partition':<{width}}  {'chunks':>7} {'frames':>8} {'solved':>15} {'checkpointed':>12}")
    for key in keys:
        cells = []
        for stage in stages:
            path = partition_path(root, stage, key)
            cells.append(pq.ParquetFile(path).metadata.num_rows if path.exists() else None)
        solved = ""
        seeds = partition_path(root, "seeds", key)
        if seeds.exists():
            table = pq.read_table(seeds, columns=["solved", "difficulty_bits"])
            if table.num_rows:
                bits = table.column("difficulty_bits")[0].as_py()
                solved = f"{pc.sum(table.column('solved')).as_py() or 0}@{bits}bits"
            else:
                solved = "0"
        show = ["-" if c is None else f"{c:,}" for c in cells]
        print(f"  {key:<{width}}  {show[0]:>7} {show[1]:>8} {solved:>15} {show[3]:>12}")
        if cells[0] == 0:
            notes.append(f"{key}: no chunks (the source has no words): nothing to train")
        elif cells[0] and cells[1] == 0:
            notes.append(f"{key}: no frames (every chunk is under 2 tokens): nothing to train")
    for note in notes:
        print(f"  note: {note}")


def _print_skipped_inputs(data_dir: Path) -> None:
    """What the last scan (``hasher partitions sync`` or the sensor) skipped, and why."""
    from hasher_resources.storage import read_scan_report

    report = read_scan_report(data_dir)
    if report and report.get("skipped"):
        print("inputs the last scan (hasher partitions sync or the sensor) skipped:")
        for path, why in report["skipped"].items():
            print(f"  {path}: {why}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hasher`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    for stream in (sys.stdout, sys.stderr):
        # A locale that cannot encode an answer (Chinese text on a Latin-1 terminal) gets escapes, never
        # a UnicodeEncodeError after the model has answered.
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        from hasher_resources.settings import load_settings

        load_settings()  # a bad HASHER_* variable stops every command, named in one line
        return int(args.run(args))
    except Exception as e:  # every failure is reported once, as one line, with exit status 2
        print(f"hasher {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
