"""Stage 3 — ``seeds``: search each frame for a 32-byte seed whose recursion lands on its token.

The search (DESIGN §4.4) runs vectorised over many frames per kernel call; every finished frame is
committed to the partition's progress store as it finishes, so a killed run resumes where it was.
The output is the frames with ``best_seed`` filled and the search metrics of DESIGN §4.5.
"""


import base64
from typing import Literal

import dagster as dg
import numpy as np
import pyarrow as pa
from hasher_resources.kernel import Sha256Kernel
from pydantic import Field

from hasher_core.progress import RateReporter, format_duration
from hasher_core.search import (
    SearchConfig,
    frame_fingerprint,
    render_search_plot,
    search_frames,
    validate_frames_table,
)
from hasher_resources.io import ParquetPartition
from hasher_resources.progress import ProgressStore
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


def seeds_table(
    frames: pa.Table, results, config: SearchConfig, fingerprints: list[str], backend: str
) -> pa.Table:
    """The frames with ``best_seed`` filled and the DESIGN §4.5 metric columns appended."""
    n = frames.num_rows
    best_seed = pa.array([bytes(row) for row in results.best_seed], type=pa.binary(32))
    table = frames.set_column(frames.schema.get_field_index("best_seed"), "best_seed", best_seed)
    columns = {
        "golden": pa.array(results.golden.astype(np.uint32)),
        "matched_bits": pa.array(results.matched_bits.astype(np.int8)),
        "hamming": pa.array(results.hamming.astype(np.int8)),
        "reward": pa.array(results.reward.astype(np.float32)),
        "generations": pa.array(results.generations.astype(np.int32)),
        "evaluations": pa.array(results.evaluations.astype(np.int64)),
        "difficulty_bits": pa.array(np.full(n, config.difficulty_bits, np.int8)),
        "solved": pa.array(results.solved.astype(bool)),
        "header_time": pa.array(np.full(n, config.header_time, np.int64)),
        "kernel_backend": pa.array([backend] * n).dictionary_encode(),
        "fingerprint": pa.array(fingerprints),
    }
    for name, column in columns.items():
        table = table.append_column(name, column)
    return table


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
    fingerprints = [frame_fingerprint(slots[i], int(targets[i]), search) for i in range(frames.num_rows)]
    context.log.info(
        f"searching {frames.num_rows:,} frames at {search.difficulty_bits} bits "
        f"(strategy {search.strategy}, population {search.population}, backend {backend})"
    )
    reporter = RateReporter("seeds", frames.num_rows, context.log.info, unit="frames", every_s=5.0)

    def progress(p) -> None:
        reporter.update(
            p.frames_done,
            f"{p.solved:,} solved, {p.evaluations_per_s:,.0f} evaluations/s",
        )

    store_path = storage.stage_dir("seeds_progress") / f"{key}.sqlite"
    with ProgressStore.open(store_path, partition=key, wait_s=30.0) as store:
        resumed = len(store)
        results = search_frames(
            slots,
            targets,
            search,
            lambda s, sd, t: kernel.evaluate_with_keys(s, sd, header_time=t),
            store=store,
            progress=progress,
        )
    reporter.finish(int(results.solved.size), f"{int(results.solved.sum()):,} solved")
    table = seeds_table(frames, results, search, fingerprints, backend)
    plot_path = storage.stage_dir("seeds_plots") / f"{key}.png"
    render_search_plot(results.history, plot_path)
    n = max(frames.num_rows, 1)
    stats = results.stats
    metadata = {
        "dagster/row_count": frames.num_rows,
        "solved": int(results.solved.sum()),
        "solved_pct": round(100 * float(results.solved.sum()) / n, 2),
        "difficulty_bits": search.difficulty_bits,
        "strategy": search.strategy,
        "evaluations": int(results.evaluations.sum()),
        "evaluations_this_run": int(stats.evaluations),
        "mean_generations": round(float(results.generations.mean()) if frames.num_rows else 0.0, 2),
        "evaluations_per_s": round(stats.evaluations_per_s, 1),
        "double_sha256_per_s": round(22 * stats.evaluations_per_s, 1),
        "seconds": round(stats.seconds, 3),
        "elapsed": format_duration(stats.seconds),
        "kernel_backend": backend,
        "frames_resumed_from_store": int(stats.frames_from_store),
        "store_rows_before_run": resumed,
        "unique_frames": int(stats.unique_frames),
        "progress_store": dg.MetadataValue.path(str(store_path)),
        "plot": dg.MetadataValue.md(
            f"![search progress](data:image/png;base64,{base64.b64encode(plot_path.read_bytes()).decode()})"
        ),
        "plot_path": dg.MetadataValue.path(str(plot_path)),
        "preview": dg.MetadataValue.md(
            preview_markdown(
                table.select(
                    ["chunk_id", "window_end", "target_token_id", "golden", "matched_bits", "solved"]
                ),
                ["chunk_id", "window_end", "target_token_id", "golden", "matched_bits", "solved"],
            )
        ),
    }
    return dg.MaterializeResult(value=table, metadata=metadata)
