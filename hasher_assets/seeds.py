"""Stage 3 — ``seeds``: search each frame for a 32-byte seed whose recursion lands on its token.

The search (DESIGN §4.4) runs vectorised over many frames per kernel call; every finished frame is
committed to the partition's progress store as it finishes, so a killed run resumes where it was.
The output is the frames with ``best_seed`` filled and the search metrics of DESIGN §4.5.
"""

import base64
from typing import Literal

import dagster as dg
import pyarrow as pa
from pydantic import Field

from hasher_core.rate_log import RateReporter, format_duration
from hasher_core.search import (
    SearchConfig,
    attach_results,
    render_search_plot,
    search_frames,
    validate_frames_table,
)
from hasher_resources.io import ParquetPartition
from hasher_resources.progress import ProgressStore
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage

from .knowledge_base import preview_markdown
from .partitions import source_files


class SeedsConfig(dg.Config):
    """The search: difficulty, population, strategy and the reward (DESIGN §4.3–4.4)."""

    difficulty_bits: int = Field(
        default=20, ge=1, le=32, description="Leading bits of golden that must match"
    )
    difficulty_schedule: list[int] | None = Field(
        default=None, description="Difficulty per epoch, rising to difficulty_bits (e.g. [12, 16, 20])"
    )
    population: int = Field(default=256, ge=4, description="Candidate seeds per frame per generation")
    elite_ratio: float = Field(default=0.25, gt=0, lt=1)
    max_generations: int = Field(default=4096, ge=1, description="Give up on a frame after this many")
    strategy: Literal["grpo", "scan"] = "grpo"
    reward_weights: list[float] = Field(default=[0.6, 0.3, 0.1], min_length=3, max_length=3)
    header_time: int = Field(
        default=0, ge=0, le=0xFFFFFFFF, description="Header bytes 68–71, never the clock"
    )
    rng_seed: int = Field(default=0, ge=0)
    frames_per_call: int = Field(default=256, ge=1, description="Frames searched together per kernel call")

    def search_config(self) -> SearchConfig:
        config = SearchConfig(
            difficulty_bits=self.difficulty_bits,
            difficulty_schedule=tuple(self.difficulty_schedule) if self.difficulty_schedule else None,
            population=self.population,
            elite_ratio=self.elite_ratio,
            max_generations=self.max_generations,
            strategy=self.strategy,
            reward_weights=tuple(self.reward_weights),
            header_time=self.header_time,
            rng_seed=self.rng_seed,
            frames_per_call=self.frames_per_call,
        )
        config.validate()
        return config


@dg.asset(
    partitions_def=source_files,
    group_name="train",
    kinds={"sha256", "numba"},
    io_manager_key="parquet_io_manager",
    pool="sha256",
    description="Per-frame seed search: best_seed, golden, matched_bits, solved … (DESIGN §4).",
)
def seeds(
    context: dg.AssetExecutionContext,
    config: SeedsConfig,
    training_frames: ParquetPartition,
    kernel: Sha256Kernel,
    storage: HasherStorage,
) -> dg.MaterializeResult:
    key = context.partition_key
    search = config.search_config()
    frames = training_frames.read()
    slots, targets = validate_frames_table(frames)
    backend = kernel.backend_name()
    context.log.info(
        f"searching {frames.num_rows:,} frames at {search.difficulty_bits} bits "
        f"(strategy {search.strategy}, population {search.population}, backend {backend})"
    )
    reporter = RateReporter("seeds", frames.num_rows, context.log.info, unit="frames", every_s=5.0)

    def progress(p) -> None:
        reporter.update(p.frames_done, f"{p.solved:,} solved, {p.evaluations_per_s:,.0f} evaluations/s")

    store_path = storage.stage_dir("seeds_progress") / f"{key}.sqlite"
    with ProgressStore.open(store_path, partition=key, wait_s=30.0) as store:
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
    table = attach_results(frames, results, search, backend)
    table = table.append_column("fingerprint", pa.array(results.fingerprint.tolist(), pa.string()))
    plot_path = render_search_plot(results.history, storage.stage_dir("seeds_plots") / f"{key}.png")
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
        "kernel_backend": backend,
        "unique_frames": int(results.unique_frames),
        "frames_resumed_from_store": int(results.from_store.sum()),
        "progress_store": dg.MetadataValue.path(str(store_path)),
        "plot": dg.MetadataValue.md(
            f"![search progress](data:image/png;base64,{base64.b64encode(plot_path.read_bytes()).decode()})"
        ),
        "plot_path": dg.MetadataValue.path(str(plot_path)),
        "preview": dg.MetadataValue.md(preview_markdown(table, columns)),
    }
    return dg.MaterializeResult(value=table, metadata=metadata)
