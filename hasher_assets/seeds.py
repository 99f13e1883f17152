"""Stage 3 — ``seeds``: search each frame for a 32-byte seed whose recursion lands on its token.

The search (DESIGN §4.4) runs vectorised over many frames per kernel call; every finished frame is
committed to the partition's progress store as it finishes, so a killed run resumes where it was.
The output is the frames with ``best_seed`` filled and the search metrics of DESIGN §4.5. A run over
a range of partitions searches their frames together (the kernel's calls stay full whatever the
partitions' size), each partition's finished frames committed to its own store.
"""

import contextlib
from typing import Any, Literal

import dagster as dg
import numpy as np
import pydantic
from pydantic import Field

from hasher_core.design import ALGORITHM_VERSION
from hasher_core.errors import FramesInputError
from hasher_core.rate_log import RateReporter, format_duration
from hasher_core.search import (
    SearchConfig,
    attach_results,
    frame_fingerprints,
    search_frames,
    search_plot_png,
    validate_frames_table,
)
from hasher_core.search.config import Knob, knobs
from hasher_resources.files import atomic_write_bytes
from hasher_resources.progress_store import ProgressStore, StoresByFingerprint
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage

from .executors import step_op_tags
from .metadata import partition_results, png_markdown, preview_markdown
from .partitions import PartitionInput, backfill_policy, by_partition, source_files


def _config_field(knob: Knob) -> tuple[Any, Any]:
    """A pydantic field for one search knob: lists for tuples, Literal for choices, the bounds."""
    kind: Any = knob.kind
    if knob.choices:
        kind = Literal[knob.choices]
    bounds = dict(knob.bounds)
    default = knob.default
    if knob.is_list:
        kind = list[kind]
        default = None if default is None else list(default)
        if knob.length is not None:
            bounds.update(min_length=knob.length, max_length=knob.length)
        if knob.optional:
            kind = kind | None
    return kind, Field(default=default, description=knob.description, **bounds)


#: The search's launchpad config, generated from ``SearchConfig`` (DESIGN §4.3–4.4): one field per
#: knob with the same default, bounds and description, so the two can never disagree.
SeedsConfig = pydantic.create_model(
    "SeedsConfig",
    __base__=dg.Config,
    __doc__="The search: difficulty, population, strategy and the reward (DESIGN §4.3–4.4).",
    **{knob.name: _config_field(knob) for knob in knobs()},
)


def search_config(config: dg.Config) -> SearchConfig:
    """The validated :class:`SearchConfig` of a ``SeedsConfig`` (lists back to tuples)."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model_dump().items()}
    return SearchConfig(**values).validate()


#: Partitions whose frames one search takes together in a run over a range of partitions: each
#: holds its progress store (a lock and an SQLite file) open while the search runs.
SEARCH_GROUP_PARTITIONS = 128


@dg.asset(
    partitions_def=source_files,
    backfill_policy=backfill_policy(),
    group_name="train",
    kinds={"sha256", "numba"},
    io_manager_key="parquet_io_manager",
    pool="sha256",
    op_tags=step_op_tags("seeds"),
    description="Per-frame seed search: best_seed, golden, matched_bits, solved … (DESIGN §4).",
)
def seeds(
    context: dg.AssetExecutionContext,
    config: SeedsConfig,  # type: ignore[valid-type]
    training_frames: PartitionInput,
    kernel: Sha256Kernel,
    storage: HasherStorage,
) -> dg.MaterializeResult:
    search = search_config(config)
    frames = {key: handle.read() for key, handle in by_partition(context, training_frames).items()}
    total = sum(t.num_rows for t in frames.values())
    kernel_info = kernel.describe()  # backend plus its device, or threads and CPU path (shani / simd)
    context.log.info(
        f"searching {total:,} frames of {len(frames)} partition(s) at {search.difficulty_bits} bits "
        f"(strategy {search.strategy}, population {search.population}, kernel "
        + ", ".join(f"{k.removeprefix('kernel_')} {v}" for k, v in kernel_info.items())
        + ")"
    )
    reporter = RateReporter("seeds", total, context.log.info, unit="frames", every_s=5.0)
    done = {"frames": 0, "solved": 0}
    keys = list(frames)
    results: dict[str, tuple[object, dict[str, object]]] = {}
    for lo in range(0, len(keys), SEARCH_GROUP_PARTITIONS):
        group = {key: frames[key] for key in keys[lo : lo + SEARCH_GROUP_PARTITIONS]}
        found, history = _search_group(context, group, search, kernel, storage, reporter, done)
        plot = search_plot_png(history)
        plot_path = atomic_write_bytes(storage.stage_dir("seeds_plots") / f"{keys[lo]}.png", plot)
        for key, (table, mine, store_path) in found.items():
            metadata = {**_metadata(table, mine, search, store_path, plot_path), **kernel_info}
            if len(keys) == 1:  # a run over many partitions keeps one plot file, not one copy each
                metadata["plot"] = png_markdown(plot, "search progress")
            results[key] = (table, metadata)
            done["frames"] += table.num_rows
            done["solved"] += int(mine.solved.sum())
    reporter.finish(total, f"{done['solved']:,} solved")
    return partition_results(context, results)


def _search_group(context, group, search, kernel, storage, reporter, done):
    """One search over the frames of the partitions ``group`` ({key: frames table}), each partition's
    finished frames committed to its own progress store. Returns ``({key: (seeds table, its rows'
    results, store path)}, the search's history)``."""
    slots, targets, owners, bounds = [], [], {}, {}
    offset = 0
    for key, table in group.items():
        try:
            s, t = validate_frames_table(table)
        except FramesInputError as e:
            raise FramesInputError(f"partition {key!r}: {e}") from e
        slots.append(s)
        targets.append(t)
        for fingerprint in frame_fingerprints(s, t, search):
            mine = owners.setdefault(fingerprint, [])
            if not mine or mine[-1] != key:
                mine.append(key)
        bounds[key] = slice(offset, offset + len(t))
        offset += len(t)

    def progress(p) -> None:
        rate = f"{p.evaluations_per_s:,.0f} evaluations/s"
        reporter.update(done["frames"] + p.frames_done, f"{done['solved'] + p.solved:,} solved, {rate}")

    progress_dir = storage.progress_path()  # once: it checks the filesystem's type
    paths = {key: progress_dir / f"{key}.sqlite" for key in group}
    with contextlib.ExitStack() as stack:
        stores = {
            key: stack.enter_context(ProgressStore.open(path, partition=key, wait_s=30.0))
            for key, path in paths.items()
        }
        stale = {key: other for key, store in stores.items() if (other := store.other_versions())}
        if stale:
            versions = ", ".join(sorted({v for other in stale.values() for v in other}))
            context.log.warning(
                f"progress stores of {', '.join(sorted(stale)[:5])}{' …' * (len(stale) > 5)} hold "
                f"{sum(sum(o.values()) for o in stale.values()):,} seeds of {versions} (another objective): "
                f"none is reused; this run searches for {ALGORITHM_VERSION}"
            )
        found = search_frames(
            np.concatenate(slots),
            np.concatenate(targets),
            search,
            lambda s, sd, t: kernel.evaluate_with_keys(s, sd, header_time=t),
            store=StoresByFingerprint(stores, owners),
            progress=progress,
        )
    backend = kernel.backend_name()
    out = {}
    for key, table in group.items():
        mine = found.rows(bounds[key])
        out[key] = (attach_results(table, mine, search, backend), mine, paths[key])
    return out, found.history


def _metadata(table, results, search, store_path, plot_path) -> dict[str, object]:
    """One partition's metadata: its rows, solves and evaluations; the search's rates (a run over
    several partitions searches them together: rates and seconds are the whole search's)."""
    rows = table.num_rows
    solved = int(results.solved.sum())
    rate = results.run_evaluations / results.wall_seconds if results.wall_seconds > 0 else 0.0
    kernel_rate = results.run_evaluations / results.kernel_seconds if results.kernel_seconds > 0 else 0.0
    columns = ["chunk_id", "window_end", "target_token_id", "golden", "matched_bits", "solved"]
    return {
        "dagster/row_count": rows,
        "solved": solved,
        "solved_pct": round(100 * solved / max(rows, 1), 2),
        "difficulty_bits": search.difficulty_bits,
        "strategy": search.strategy,
        "evaluations": int(results.evaluations.sum()),
        "evaluations_this_run": int(results.run_evaluations),
        "mean_generations": round(float(results.generations.mean()) if rows else 0.0, 2),
        "evaluations_per_s": round(rate, 1),
        "double_sha256_per_s": round(22 * rate, 1),
        "kernel_evaluations_per_s": round(kernel_rate, 1),
        "search_efficiency": round(rate / kernel_rate, 3) if kernel_rate else 0.0,
        "seconds": round(results.wall_seconds, 3),
        "elapsed": format_duration(results.wall_seconds),
        "unique_frames": len(set(results.fingerprint.tolist())),
        "frames_resumed_from_store": int(results.from_store.sum()),
        "progress_store": dg.MetadataValue.path(str(store_path)),
        "plot_path": dg.MetadataValue.path(str(plot_path)),
        "preview": dg.MetadataValue.md(preview_markdown(table, columns)),
    }
