"""Stage 1 — ``knowledge_base``: one source file's chunks in the canonical schema (DESIGN §2).

Reads the Data Miner's output (or a raw-text inbox file), keeps the records of this partition's
source file, skips bad records with counted reasons, and stores the chunks as Parquet. The miner
file is split by source file once per content fingerprint (``hasher_resources.knowledge_split``), so a
thousand partitions of one big JSON array cost one parse, not a thousand. A run over a range of
partitions (``hasher_assets.partitions``) writes one file per partition.
"""

import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from hasher_core.design import EMBEDDING_DIMS
from hasher_core.errors import KnowledgeBaseError
from hasher_core.knowledge import ReadReport, read_inbox_file
from hasher_core.rate_log import RateReporter
from hasher_core.schemas import knowledge_base_schema
from hasher_resources.embedder import Embedder
from hasher_resources.knowledge_split import ensure_split
from hasher_resources.parquet_io import StagedParquet
from hasher_resources.storage import HasherStorage

from .executors import step_op_tags
from .metadata import partition_results, preview_markdown
from .partitions import backfill_policy, source_files


class KnowledgeBaseConfig(dg.Config):
    """How to find and read the knowledge base."""

    input_path: str | None = Field(
        default=None, description="Read this file instead of discovering one under the miner directory"
    )
    batch_rows: int = Field(default=8192, gt=0, description="Records per streamed batch")
    embedding_dims: int = Field(default=EMBEDDING_DIMS, gt=0, description="Required embedding length")


@dg.asset(
    partitions_def=source_files,
    backfill_policy=backfill_policy(),
    group_name="ingest",
    kinds={"parquet", "pyarrow"},
    io_manager_key="parquet_io_manager",
    op_tags=step_op_tags("knowledge_base"),
    description="Canonical chunks of one source file: source_file, chunk_id, content, embedding[dims].",
)
def knowledge_base(
    context: dg.AssetExecutionContext,
    config: KnowledgeBaseConfig,
    storage: HasherStorage,
    embedder: Embedder,
) -> dg.MaterializeResult:
    keys = list(context.partition_keys)
    progress = RateReporter("knowledge_base", None, context.log.info, unit="chunks")
    results, said, rows = {}, set(), 0
    inbox = storage.inbox_files()  # one listing per run: a listing per partition is partitions²
    for key in keys:
        results[key] = _one_partition(context, config, storage, embedder, key, said, inbox)
        rows += results[key][1]["dagster/row_count"]
        progress.update(rows, f"{len(results)}/{len(keys)} partitions")
    progress.finish(rows, f"{len(keys)} partition(s)")
    return partition_results(context, results)


def _one_partition(
    context: dg.AssetExecutionContext,
    config: KnowledgeBaseConfig,
    storage: HasherStorage,
    embedder: Embedder,
    key: str,
    said: set[str],
    inbox: dict[str, Path],
) -> tuple[StagedParquet, dict[str, object]]:
    """One partition's chunks staged as Parquet, and its metadata. What the input file's reading
    found (fallbacks, skipped records) is logged once per run (``said``), not once per partition;
    ``inbox`` is the run's listing of the inbox (``HasherStorage.inbox_files``)."""
    split = None
    if key in inbox and config.input_path is None:
        origin = f"inbox file {inbox[key]}"
        inbox_report = ReadReport()
        batches = read_inbox_file(inbox[key], embedder, dims=config.embedding_dims, report=inbox_report)
    else:
        # One pass over the miner file splits it by source file (cached by content): materialising
        # P partitions then costs one read of a big JSON array, not P.
        origin = f"miner directory {storage.miner_path}"
        split = ensure_split(
            storage.miner_path,
            storage.stage_dir("knowledge_split"),
            explicit_path=None if config.input_path is None else storage.miner_path / config.input_path,
            dims=config.embedding_dims,
            batch_rows=2048,
        )
        if split.fingerprint not in said:
            said.add(split.fingerprint)
            context.log.info(
                f"{'split' if split.built else 'reusing the split of'} {split.source_path} ({split.format}, "
                f"{len(split.partitions())} source files, fingerprint {split.fingerprint[:12]})"
            )
        batches = split.read_partition(key, config.batch_rows)
    staging = storage.stage_dir(".staging") / f"knowledge_base.{key}.{context.run.run_id}.parquet"
    schema = knowledge_base_schema(config.embedding_dims)
    started = time.monotonic()
    rows = 0
    content_bytes = 0
    first: pa.Table | None = None
    try:
        with pq.ParquetWriter(staging, schema, compression="zstd") as writer:
            for batch in batches:
                table = pa.Table.from_batches([batch]).cast(schema)
                writer.write_table(table)
                rows += table.num_rows
                content_bytes += pc.sum(pc.binary_length(table.column("content"))).as_py() or 0
                if first is None:
                    first = table
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    # What reading the input found; for the miner file it covers every source file in it.
    read = split.report if split is not None else inbox_report.as_metadata()
    if str(read["path_used"]) not in said:
        said.add(str(read["path_used"]))
        for fallback in read["fallbacks"]:
            context.log.warning(f"fell back from {fallback}")
        for reason, count in read["skipped"].items():
            context.log.warning(f"{read['path_used']}: skipped {count} record(s): {reason}")
    if rows == 0:
        staging.unlink(missing_ok=True)
        raise KnowledgeBaseError(
            f"partition {key!r}: no usable records for this source file in {origin} "
            f"(file used: {read['path_used']}; skipped: {read['skipped'] or 'none'})"
        )
    seconds = time.monotonic() - started
    metadata: dict[str, object] = {
        "dagster/row_count": rows,
        "source": origin,
        "input_file": str(read["path_used"]),
        "input_format": str(read["format"]),
        "records_seen_in_file": read["records_seen"],
        "skipped_in_file": read["records_skipped"],
        "skipped_by_reason": dg.MetadataValue.json(read["skipped"]),
        "fallbacks": dg.MetadataValue.json(read["fallbacks"]),
        "embedder": embedder.description(),
        "embedding_dims": config.embedding_dims,
        "content_mb": round(content_bytes / 1e6, 3),
        "chunks_per_s": round(rows / max(seconds, 1e-9), 1),
        "seconds": round(seconds, 3),
    }
    if split is not None:
        metadata["split_cache"] = dg.MetadataValue.path(str(split.path))
        metadata["split_built_this_run"] = split.built
        metadata["source_files_in_input"] = len(split.partitions())
    if first is not None:
        metadata["preview"] = dg.MetadataValue.md(
            preview_markdown(first, ["source_file", "chunk_id", "content"])
        )
    if read["problems"]:
        metadata["first_problems"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in read["problems"][:20]))
    return StagedParquet(staging), metadata
