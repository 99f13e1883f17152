"""Stage 3 — ``seeds``: search each frame for a 32-byte seed whose recursion lands on its token.

The search (DESIGN §4.4) runs vectorised over many frames per kernel call; every finished frame is
committed to the partition's progress store as it finishes, so a killed run resumes where it was.
The output is the frames with ``best_seed`` filled and the search metrics of DESIGN §4.5.
"""

from typing import Any, Literal

import dagster as dg
import pydantic
from pydantic import Field

from hasher_core.rate_log import RateReporter, format_duration
from hasher_core.search import (
    SearchConfig,
    attach_results,
    search_frames,
    search_plot_png,
    validate_frames_table,
)
from hasher_core.search.config import Knob, knobs
from hasher_resources.files import atomic_write_bytes
from hasher_resources.parquet_io import ParquetPartition
from hasher_resources.search_store import ProgressStore
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage

from .executors import step_op_tags
from .metadata import png_markdown, preview_markdown
from .partitions import source_files


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


@dg.asset(
    partitions_def=source_files,
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
    training_frames: ParquetPartition,
    kernel: Sha256Kernel,
    storage: HasherStorage,
) -> dg.MaterializeResult:
    key = context.partition_key
    search = search_config(config)
    frames = training_frames.read()
    slots, targets = validate_frames_table(frames)
    backend = kernel.backend_name()
    kernel_info = kernel.describe()  # backend plus its device, or threads and CPU path (shani / simd)
    context.log.info(
        f"searching {frames.num_rows:,} frames at {search.difficulty_bits} bits "
        f"(strategy {search.strategy}, population {search.population}, kernel "
        + ", ".join(f"{k.removeprefix('kernel_')} {v}" for k, v in kernel_info.items())
        + ")"
    )
    reporter = RateReporter("seeds", frames.num_rows, context.log.info, unit="frames", every_s=5.0)

    def progress(p) -> None:
        reporter.update(p.frames_done, f"{p.solved:,} solved, {p.evaluations_per_s:,.0f} evaluations/s")

    store_path = storage.progress_path() / f"{key}.sqlite"
    with ProgressStore.open(store_path, partition=key, wait_s=30.0) as store:
        if stale := store.other_versions():
            versions = ", ".join(sorted(stale))
            context.log.warning(
                f"progress store {store_path} holds {sum(stale.values()):,} seeds of {versions} (another "
                f"objective): none is reused; this run searches for {store.algorithm_version}"
            )
        results = search_frames(
            slots,
            targets,
            search,
            lambda s, sd, t: kernel.evaluate_with_keys(s, sd, header_time=t),
            store=store,
            progress=progress,
        )
    solved = int(results.solved.sum())
    reporter.finish(frames.num_rows, f"{solved:,} solved")
    note = None
    if not frames.num_rows:
        note = "no seeds: the partition has no frames (see training_frames' note), so nothing was searched"
    elif not solved:
        note = (
            f"no frame solved at {search.difficulty_bits} bits within {search.max_generations} generations: "
            "every row keeps its best seed, unsolved"
        )
    if note:
        context.log.warning(f"partition {key!r}: {note}")
    table = attach_results(frames, results, search, backend)
    plot = search_plot_png(results.history)
    plot_path = atomic_write_bytes(storage.stage_dir("seeds_plots") / f"{key}.png", plot)
    rate = results.run_evaluations / results.wall_seconds if results.wall_seconds > 0 else 0.0
    kernel_rate = results.run_evaluations / results.kernel_seconds if results.kernel_seconds > 0 else 0.0
    columns = ["chunk_id", "window_end", "target_token_id", "golden", "matched_bits", "solved"]
    metadata = {
        "dagster/row_count": frames.num_rows,
        "solved": solved,
        "solved_pct": round(100 * solved / max(frames.num_rows, 1), 2),
        "difficulty_bits": search.difficulty_bits,
        "strategy": search.strategy,
        "evaluations": int(results.evaluations.sum()),
        "evaluations_this_run": int(results.run_evaluations),
        "mean_generations": round(float(results.generations.mean()) if frames.num_rows else 0.0, 2),
        "evaluations_per_s": round(rate, 1),
        "double_sha256_per_s": round(22 * rate, 1),
        "kernel_evaluations_per_s": round(kernel_rate, 1),
        "search_efficiency": round(rate / kernel_rate, 3) if kernel_rate else 0.0,
        "seconds": round(results.wall_seconds, 3),
        "elapsed": format_duration(results.wall_seconds),
        **kernel_info,
        "unique_frames": int(results.unique_frames),
        "frames_resumed_from_store": int(results.from_store.sum()),
        "progress_store": dg.MetadataValue.path(str(store_path)),
        "plot": png_markdown(plot, "search progress"),
        "plot_path": dg.MetadataValue.path(str(plot_path)),
        "preview": dg.MetadataValue.md(preview_markdown(table, columns)),
    }
    if note:
        metadata["note"] = note
    return dg.MaterializeResult(value=table, metadata=metadata)
