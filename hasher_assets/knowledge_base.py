"""Stage 1 — ``knowledge_base``: one source file's chunks in the canonical schema (DESIGN §2).

Reads the Data Miner's output (or a raw-text inbox file), keeps the records of this partition's
source file, skips bad records with counted reasons, and stores the chunks as Parquet. The miner
file is split by source file once per content fingerprint (``hasher_resources.knowledge_source``), so
a thousand partitions of one big JSON array cost one parse, not a thousand. A run over a range of
partitions (``hasher_assets.partitions``) writes one file per partition.
"""

import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pydantic import Field

from hasher_core.design import EMBEDDING_DIMS
from hasher_core.errors import KnowledgeBaseError
from hasher_core.rate_log import RateReporter
from hasher_resources.embedder import Embedder
from hasher_resources.knowledge_source import (
    PartitionRecords,
    WrittenKnowledgeBase,
    partition_records,
    write_knowledge_base,
)
from hasher_resources.parquet_io import StagedParquet
from hasher_resources.storage import HasherStorage

from .executors import step_op_tags
from .metadata import partition_results, preview_markdown
from .partitions import backfill_policy, source_files


class RequestedSource(dg.Config):
    """What a run was requested for (the sensor sets it): the partition and its content fingerprint."""

    partition: str = Field(description="The source_files partition the request was made for")
    fingerprint: str = Field(description="The source's content fingerprint when it was requested")


class KnowledgeBaseConfig(dg.Config):
    """How to find and read the knowledge base."""

    input_path: str | None = Field(
        default=None, description="Read this file instead of discovering one under the miner directory"
    )
    batch_rows: int = Field(default=8192, gt=0, description="Records per streamed batch")
    embedding_dims: int = Field(default=EMBEDDING_DIMS, gt=0, description="Required embedding length")
    requested: RequestedSource | None = Field(
        default=None,
        description="Set by the sensor: the run trains what it reads, and says so if the source "
        "changed since it was requested",
    )
    requested_sources: list[RequestedSource] = Field(
        default_factory=list,
        description="Set by the sensor for a run over a range of partitions: what each was requested for",
    )


@dg.asset(
    partitions_def=source_files,
    backfill_policy=backfill_policy(),
    group_name="ingest",
    kinds={"parquet", "pyarrow"},
    io_manager_key="parquet_io_manager",
    op_tags=step_op_tags("knowledge_base"),
    description="One source file's chunks in the canonical schema (source_file, chunk_id, content, "
    "embedding[embedding_dims]): read from the Data Miner output under the miner directory (or the "
    "file named by input_path), or chunked and embedded from a raw-text inbox file. Bad records are "
    "skipped and counted in skipped_by_reason; a file in which every record is bad fails the run, "
    "naming the file and its first problems: fix or re-export the input, or point input_path at "
    "another file. Nothing in the miner directory or the inbox is ever written.",
)
def knowledge_base(
    context: dg.AssetExecutionContext,
    config: KnowledgeBaseConfig,
    storage: HasherStorage,
    embedder: Embedder,
) -> dg.MaterializeResult:
    keys = list(context.partition_keys)
    requested = _requested(config, keys)
    inbox = storage.inbox_files()  # one listing per run: a listing per partition is partitions²
    progress = RateReporter("knowledge_base", None, context.log.info, unit="chunks")
    results, said, rows = {}, set(), 0
    for key in keys:
        before = rows
        results[key] = _one_partition(
            context,
            config,
            storage,
            embedder,
            key,
            said,
            inbox,
            requested.get(key),
            lambda n, before=before: progress.update(before + n),
        )
        rows += results[key][1]["dagster/row_count"]
        progress.update(rows, f"{len(results)}/{len(keys)} partitions")
    progress.finish(rows, f"{len(keys)} partition(s)")
    return partition_results(context, results)


def _requested(config: KnowledgeBaseConfig, keys: list[str]) -> dict[str, str]:
    """Partition → the fingerprint the sensor requested it for. Raises :class:`KnowledgeBaseError`
    when the config names a partition this run does not materialise."""
    sources = [config.requested] if config.requested is not None else list(config.requested_sources)
    stray = [s.partition for s in sources if s.partition not in keys]
    if stray:
        run = repr(keys[0]) if len(keys) == 1 else f"{keys[0]!r}…{keys[-1]!r} ({len(keys)} partitions)"
        names = ", ".join(map(repr, stray[:5]))
        raise KnowledgeBaseError(f"run config requested partition {names}, but this run is for {run}")
    return {s.partition: s.fingerprint for s in sources}


def _one_partition(
    context: dg.AssetExecutionContext,
    config: KnowledgeBaseConfig,
    storage: HasherStorage,
    embedder: Embedder,
    key: str,
    said: set[str],
    inbox: dict[str, Path],
    requested: str | None,
    progress: Callable[[int], None],
) -> tuple[StagedParquet, dict[str, object]]:
    """One partition's chunks staged as Parquet, and its metadata. What the input's reading found
    (the split, fallbacks, skipped records) is logged once per run (``said``), not once per
    partition; ``inbox`` is the run's listing of the inbox, ``requested`` the fingerprint the sensor
    requested this partition for (None when it did not); ``progress(rows so far)`` after each batch."""
    records = partition_records(
        storage,
        key,
        embedder,
        input_path=config.input_path,
        dims=config.embedding_dims,
        batch_rows=config.batch_rows,
        inbox=inbox,
    )
    if (split := records.split) is not None and split.fingerprint not in said:
        said.add(split.fingerprint)
        context.log.info(
            f"{'split' if split.built else 'reusing the split of'} {split.source_path} "
            f"({split.format}, {len(split.partitions())} source files, fingerprint {split.fingerprint[:12]})"
        )
    staging = storage.stage_dir(".staging") / f"knowledge_base.{key}.{context.run.run_id}.parquet"
    started = time.monotonic()
    written = write_knowledge_base(records.batches, staging, config.embedding_dims, progress, key)
    warnings = [w for w in records.warnings() if w not in said]
    said.update(warnings)
    for warning in warnings:
        context.log.warning(warning)
    note = None
    if written.rows == 0:
        if records.split is not None:
            staging.unlink(missing_ok=True)
            raise records.nothing_usable(key)
        note = records.empty_note()
        context.log.warning(note)
    seconds = time.monotonic() - started
    # What was trained, in the sensor's terms (its fingerprint of this source), so that a source
    # whose content was materialised is not requested again, whoever materialised it.
    fingerprint = records.fingerprint or written.fingerprint
    if requested is not None and requested != fingerprint:
        context.log.warning(
            f"{key} changed since the run was requested (fingerprint {requested[:12]} "
            f"then, {fingerprint[:12]} now): this run trains the content it read"
        )
    return StagedParquet(staging), _metadata(records, written, seconds, embedder, config, note)


def _metadata(
    records: PartitionRecords,
    written: WrittenKnowledgeBase,
    seconds: float,
    embedder: Embedder,
    config: KnowledgeBaseConfig,
    note: str | None,
) -> dict[str, object]:
    read = records.read_report()
    metadata: dict[str, object] = {
        "dagster/row_count": written.rows,
        "source": records.origin,
        "input_file": str(read["path_used"]),
        "input_format": str(read["format"]),
        "input_encoding": str(read.get("encoding")),
        "source_fingerprint": records.fingerprint or written.fingerprint,
        "records_seen_in_file": read["records_seen"],
        "skipped_in_file": read["records_skipped"],
        "skipped_by_reason": dg.MetadataValue.json(read["skipped"]),
        "fallbacks": dg.MetadataValue.json(read["fallbacks"]),
        "embedder": embedder.description(),
        "embedding_dims": config.embedding_dims,
        "content_mb": round(written.content_bytes / 1e6, 3),
        "chunks_per_s": round(written.rows / max(seconds, 1e-9), 1),
        "seconds": round(seconds, 3),
    }
    if note is not None:
        metadata["note"] = note
    if (split := records.split) is not None:
        metadata["knowledge_split"] = dg.MetadataValue.path(str(split.path))
        metadata["split_built_this_run"] = split.built
        metadata["source_files_in_input"] = len(split.partitions())
    if written.first is not None:
        metadata["preview"] = dg.MetadataValue.md(
            preview_markdown(written.first, ["source_file", "chunk_id", "content"])
        )
    if read["problems"]:
        metadata["first_problems"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in read["problems"][:20]))
    return metadata
