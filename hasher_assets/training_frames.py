"""Stage 2 — ``training_frames``: tokens, windows and 12-slot neural frames (DESIGN §3).

Streams the partition's knowledge base batch by batch through the offline cl100k tokenizer and the
Go-compatible projection mapper into one Parquet file of frames (schema DESIGN §3.5).
"""

from typing import Literal

import dagster as dg
import pyarrow as pa
from pydantic import Field

from hasher_core.design import PROJECTION_SEED, STRIDE, WINDOW_SIZE
from hasher_core.frames.gorand import projection_matrix
from hasher_core.frames.tokens import load_cl100k
from hasher_core.rate_log import RateReporter
from hasher_core.recipe import frame_recipe, recipe_to_metadata
from hasher_resources.embedder import Embedder
from hasher_resources.frames_writer import write_frames
from hasher_resources.parquet_io import ParquetPartition, StagedParquet
from hasher_resources.storage import HasherStorage

from .executors import step_op_tags
from .metadata import preview_markdown
from .partitions import source_files


class TrainingFramesConfig(dg.Config):
    """Window geometry, projection seed and where each frame's embedding comes from."""

    window_size: int = Field(default=WINDOW_SIZE, ge=1, description="W: the longest context, in tokens")
    stride: int = Field(default=STRIDE, ge=1, description="S: targets advance by this many tokens")
    seed: int = Field(default=PROJECTION_SEED, description="Go math/rand seed of the 24×768 projection")
    embedding_source: Literal["window", "chunk"] = Field(
        default="window",
        description="window: embed each window's context (what inference can rebuild from text); "
        "chunk: every frame of a chunk takes the chunk's knowledge-base embedding",
    )
    batch_size: int = Field(default=32, ge=1, description="Texts per embedder call (window source)")
    compression: Literal["zstd", "snappy"] = "zstd"


def empty_frames_note(chunks: int, skipped_chunks: int, tokenizer_failed: int, frames: int) -> str | None:
    """Why a partition has no frames (DESIGN §3.2: a chunk under 2 tokens has none), or None."""
    if frames:
        return None
    if not chunks:
        return "no frames: the knowledge base of this partition has no chunks"
    short = skipped_chunks - tokenizer_failed
    why = f"{short} chunk(s) under 2 tokens" if short else ""
    if tokenizer_failed:
        why += (", " if why else "") + f"{tokenizer_failed} the tokenizer could not take (see problems)"
    return (
        f"no frames: every chunk is too short ({why}); a frame needs a context token and the next "
        "token, so seeds and checkpoints of this partition are empty"
    )


@dg.asset(
    partitions_def=source_files,
    group_name="ingest",
    kinds={"parquet", "tiktoken"},
    io_manager_key="parquet_io_manager",
    op_tags=step_op_tags("training_frames"),
    description="Neural frames: context windows → 12 uint32 slots + the next token (DESIGN §3).",
)
def training_frames(
    context: dg.AssetExecutionContext,
    config: TrainingFramesConfig,
    knowledge_base: ParquetPartition,
    storage: HasherStorage,
    embedder: Embedder,
) -> dg.MaterializeResult:
    key = context.partition_key
    chunks = knowledge_base.num_rows()
    progress = RateReporter("training_frames", chunks, context.log.info, unit="chunks")
    staging = storage.stage_dir(".staging") / f"training_frames.{key}.{context.run.run_id}.parquet"
    recipe = frame_recipe(
        embedder=embedder.recipe(),
        window_size=config.window_size,
        stride=config.stride,
        embedding_source=config.embedding_source,
        projection_seed=config.seed,
    )
    report = write_frames(
        knowledge_base.iter_batches(batch_rows=2048),
        staging,
        compression=config.compression,
        encoding=load_cl100k(),
        window=config.window_size,
        stride=config.stride,
        projection=projection_matrix(config.seed),
        embedding_source=config.embedding_source,
        embedder=embedder if config.embedding_source == "window" else None,
        embed_batch_size=config.batch_size,
        progress=lambda r: progress.update(r.chunks, f"{r.frames:,} frames"),
        metadata=recipe_to_metadata(recipe),
    )
    if report.ambiguous_frames:
        context.log.info(
            f"{report.ambiguous_frames} frames in {report.ambiguous_contexts} contexts seen with more than "
            "one next token (repeated text): inference answers the most frequent one"
        )
    for problem in report.problems:
        context.log.warning(problem)
    if report.colliding_frames:
        context.log.warning(f"{report.colliding_frames} frames share their slots with a different text")
    progress.finish(report.chunks, f"{report.frames:,} frames")
    note = empty_frames_note(report.chunks, report.skipped_chunks, report.tokenizer_failed, report.frames)
    if note:
        context.log.warning(f"partition {key!r}: {note}")
    frames = ParquetPartition(staging, key)
    preview = next(frames.iter_batches(batch_rows=5), None)
    metadata = {
        **report.as_metadata(),
        "problems": dg.MetadataValue.json(report.problems),
        "dagster/row_count": report.frames,
        "window_size": config.window_size,
        "stride": config.stride,
        "projection_seed": config.seed,
        "embedding_source": config.embedding_source,
        "embedder": embedder.description(),
        "recipe": dg.MetadataValue.json(recipe),
    }
    if note:
        metadata["note"] = note
    if preview is not None:
        metadata["preview"] = dg.MetadataValue.md(
            preview_markdown(
                pa.Table.from_batches([preview]),
                ["chunk_id", "window_start", "window_end", "asic_slot_0", "asic_slot_11", "target_token_id"],
            )
        )
    return dg.MaterializeResult(value=StagedParquet(staging), metadata=metadata)
