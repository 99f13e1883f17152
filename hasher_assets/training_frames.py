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
from hasher_core.frames.recipe import frame_recipe, recipe_to_metadata
from hasher_core.frames.tokens import load_cl100k
from hasher_core.rate_log import RateReporter
from hasher_resources.embedder import Embedder
from hasher_resources.frames_writer import FramesReport, write_frames
from hasher_resources.parquet_io import ParquetPartition, StagedParquet
from hasher_resources.storage import HasherStorage

from .executors import step_op_tags
from .metadata import partition_results, preview_markdown
from .partitions import PartitionInput, backfill_policy, by_partition, source_files


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
    compression: Literal["zstd", "snappy"] = Field(
        default="zstd", description="Parquet compression of the frames file (zstd is smaller)"
    )


@dg.asset(
    partitions_def=source_files,
    backfill_policy=backfill_policy(),
    group_name="ingest",
    kinds={"parquet", "tiktoken"},
    io_manager_key="parquet_io_manager",
    op_tags=step_op_tags("training_frames"),
    description="Neural frames of one source file: every token position's context (up to window_size "
    "tokens) embedded and projected to 12 uint32 slots (asic_slot_0…11, stored as int32), with the next "
    "token as target_token_id. The frame recipe (tokenizer, window_size, stride, embedding_source, "
    "embedder, seed) is stored in the file and inference rebuilds slots from text with it, so changing "
    "any of these means retraining and redeploying. Keep embedding_source=window to use the model on "
    "text; ambiguous_contexts counts repeated text seen with different next tokens.",
)
def training_frames(
    context: dg.AssetExecutionContext,
    config: TrainingFramesConfig,
    knowledge_base: PartitionInput,
    storage: HasherStorage,
    embedder: Embedder,
) -> dg.MaterializeResult:
    inputs = by_partition(context, knowledge_base)
    chunks = sum(handle.num_rows() for handle in inputs.values())
    progress = RateReporter("training_frames", chunks, context.log.info, unit="chunks")
    recipe = frame_recipe(
        embedder=embedder.recipe(),
        window_size=config.window_size,
        stride=config.stride,
        embedding_source=config.embedding_source,
        projection_seed=config.seed,
    )
    done = {"chunks": 0, "frames": 0}
    results = {}
    for key, handle in inputs.items():
        staging = storage.stage_dir(".staging") / f"training_frames.{key}.{context.run.run_id}.parquet"
        report = write_frames(
            handle.iter_batches(batch_rows=2048),
            staging,
            compression=config.compression,
            encoding=load_cl100k(),
            window=config.window_size,
            stride=config.stride,
            projection=projection_matrix(config.seed),
            embedding_source=config.embedding_source,
            embedder=embedder if config.embedding_source == "window" else None,
            embed_batch_size=config.batch_size,
            progress=lambda r: progress.update(
                done["chunks"] + r.chunks, f"{done['frames'] + r.frames:,} frames"
            ),
            metadata=recipe_to_metadata(recipe),
        )
        done["chunks"] += report.chunks
        done["frames"] += report.frames
        info, warnings = report.notes()
        where = f"{key}: " if len(inputs) > 1 else ""
        for line in info:
            context.log.info(where + line)
        for line in warnings:
            context.log.warning(where + line)
        if note := report.empty_note():
            context.log.warning(f"partition {key!r}: {note}")
        metadata = _metadata(report, ParquetPartition(staging, key), recipe, embedder, config)
        results[key] = (StagedParquet(staging), metadata)
    progress.finish(done["chunks"], f"{done['frames']:,} frames in {len(results)} partition(s)")
    return partition_results(context, results)


def _metadata(
    report: FramesReport,
    frames: ParquetPartition,
    recipe: dict,
    embedder: Embedder,
    config: TrainingFramesConfig,
) -> dict[str, object]:
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
    if note := report.empty_note():
        metadata["note"] = note
    preview = next(frames.iter_batches(batch_rows=5), None)
    if preview is not None:
        metadata["preview"] = dg.MetadataValue.md(
            preview_markdown(
                pa.Table.from_batches([preview]),
                ["chunk_id", "window_start", "window_end", "asic_slot_0", "asic_slot_11", "target_token_id"],
            )
        )
    return metadata
