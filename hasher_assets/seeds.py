"""Stage 3 — ``seeds``: search each frame for a 32-byte seed whose recursion lands on its token.

The search (DESIGN §4.4) runs vectorised over many frames per kernel call; every finished frame is
committed to the partition's progress store as it finishes, so a killed run resumes where it was.
The output is the frames with ``best_seed`` filled and the search metrics of DESIGN §4.5.
"""

from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pyarrow as pa
import pydantic
from pydantic import Field

from hasher_core.rate_log import RateReporter, format_duration
from hasher_core.search import SearchConfig, attach_results, search_plot_png, validate_frames_table
from hasher_core.search.config import Knob, knobs
from hasher_resources.files import atomic_write_bytes
from hasher_resources.parquet_io import ParquetPartition
from hasher_resources.progress_store import search_resumable
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
    __doc__="The seed search: difficulty, population, strategy, reward weights and randomness. Every "
    "field but frames_per_call is part of each frame's fingerprint: changing it searches the frames "
    "again instead of reusing the progress store.",
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
    description="Each frame's best_seed: 32 bytes whose 21-pass SHA-256 recursion gives a golden whose "
    "top difficulty_bits bits match target_token_id << 15 (17 = the exact token, about 2^17 "
    "evaluations per frame), with golden, matched_bits, solved, reward, generations, evaluations and "
    "fingerprint. Finished frames are committed to a progress store as they finish, so rerunning a "
    "killed or failed run resumes where it stopped. Unsolved frames keep their best seed "
    "(solved=false): raise max_generations and rerun; seeds below 17 bits predict no token.",
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
    kernel_info = kernel.describe()  # backend plus its device, or threads and CPU path (shani / simd)
    driver = kernel.search_driver()  # on a GPU the generations run on the device
    kernel_info["kernel_search_loop"] = "device" if driver is not None else "host"
    kernel_line = ", ".join(f"{k.removeprefix('kernel_')} {v}" for k, v in kernel_info.items())
    context.log.info(
        f"searching {frames.num_rows:,} frames at {search.difficulty_bits} bits "
        f"(strategy {search.strategy}, population {search.population}, kernel {kernel_line})"
    )
    reporter = RateReporter("seeds", frames.num_rows, context.log.info, unit="frames", every_s=5.0)
    store_path = storage.progress_path() / f"{key}.sqlite"
    results = search_resumable(
        store_path,
        slots,
        targets,
        search,
        lambda s, sd, t: kernel.evaluate_with_keys(s, sd, header_time=t),
        partition=key,
        wait_s=30.0,
        progress=lambda p: reporter.update(
            p.frames_done, f"{p.solved:,} solved, {p.evaluations_per_s:,.0f} evaluations/s"
        ),
        warn=context.log.warning,
        driver=driver,
    )
    reporter.finish(frames.num_rows, f"{int(results.solved.sum()):,} solved")
    if note := results.note(search.max_generations):
        context.log.warning(f"partition {key!r}: {note}")
    table = attach_results(frames, results, search, kernel.backend_name())
    plot = search_plot_png(results.history)
    plot_path = atomic_write_bytes(storage.stage_dir("seeds_plots") / f"{key}.png", plot)
    metadata = {
        **results.summary(),
        "strategy": search.strategy,
        "elapsed": format_duration(results.wall_seconds),
        **kernel_info,
        "progress_store": dg.MetadataValue.path(str(store_path)),
    }
    if note:
        metadata["note"] = note
    return dg.MaterializeResult(value=table, metadata=_metadata(table, metadata, plot, plot_path))


def _metadata(table: pa.Table, figures: dict, plot: bytes, plot_path: Path) -> dict[str, object]:
    columns = ["chunk_id", "window_end", "target_token_id", "golden", "matched_bits", "solved"]
    return {
        "dagster/row_count": table.num_rows,
        **figures,
        "plot": png_markdown(plot, "search progress"),
        "plot_path": dg.MetadataValue.path(str(plot_path)),
        "preview": dg.MetadataValue.md(preview_markdown(table, columns)),
    }
