"""Stage 1 — ``knowledge_base``: one source file's chunks in the canonical schema (DESIGN §2).

Reads the Data Miner's output (or a raw-text inbox file), keeps the records of this partition's
source file, skips bad records with counted reasons, and stores the chunks as Parquet.
"""

import time

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from hasher_core.knowledge import (
    KNOWLEDGE_BASE_SCHEMA,
    KnowledgeBaseError,
    ReadReport,
    inbox_files,
    read_inbox_file,
    read_knowledge_base,
)
from hasher_core.progress import RateReporter
from hasher_resources.embedder import Embedder
from hasher_resources.io import StagedParquet
from hasher_resources.storage import HasherStorage

from .partitions import source_files


class KnowledgeBaseConfig(dg.Config):
    """How to find and read the knowledge base."""

    input_path: str | None = Field(
        default=None, description="Read this file instead of discovering one under the miner directory"
    )
    batch_rows: int = Field(default=8192, gt=0, description="Records per streamed batch")
    embedding_dims: int = Field(default=768, gt=0, description="Required embedding length")


def preview_markdown(table: pa.Table, columns: list[str], rows: int = 5, width: int = 80) -> str:
    """A small Markdown table of the first rows, long strings cut to ``width``."""
    head = table.select(columns).slice(0, rows).to_pylist()
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in head:
        cells = []
        for c in columns:
            text = str(row[c]).replace("\n", " ").replace("|", "\\|")
            cells.append(text if len(text) <= width else text[: width - 1] + "…")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dg.asset(
    partitions_def=source_files,
    group_name="ingest",
    kinds={"parquet", "pyarrow"},
    io_manager_key="parquet_io_manager",
    description="Canonical chunks of one source file: source_file, chunk_id, content, embedding[768].",
)
def knowledge_base(
    context: dg.AssetExecutionContext,
    config: KnowledgeBaseConfig,
    storage: HasherStorage,
    embedder: Embedder,
) -> dg.MaterializeResult:
    key = context.partition_key
    report = ReadReport()
    inbox = inbox_files(storage.inbox_path) if storage.inbox_path.is_dir() else {}
    if key in inbox and config.input_path is None:
        origin = f"inbox file {inbox[key]}"
        batches = read_inbox_file(inbox[key], embedder, dims=config.embedding_dims, report=report)
    else:
        origin = f"miner directory {storage.miner_path}"
        batches = read_knowledge_base(
            storage.miner_path,
            partition_key=key,
            explicit_path=None if config.input_path is None else storage.miner_path / config.input_path,
            dims=config.embedding_dims,
            batch_rows=config.batch_rows,
            report=report,
        )
    staging = storage.stage_dir(".staging") / f"knowledge_base.{key}.{context.run.run_id}.parquet"
    progress = RateReporter("knowledge_base", None, context.log.info, unit="chunks")
    started = time.monotonic()
    rows = 0
    content_bytes = 0
    first: pa.Table | None = None
    try:
        with pq.ParquetWriter(staging, KNOWLEDGE_BASE_SCHEMA, compression="zstd") as writer:
            for batch in batches:
                table = pa.Table.from_batches([batch]).cast(KNOWLEDGE_BASE_SCHEMA)
                writer.write_table(table)
                rows += table.num_rows
                content_bytes += pc.sum(pc.binary_length(table.column("content"))).as_py() or 0
                if first is None:
                    first = table
                progress.update(rows)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    for path, reason in report.fallbacks:
        context.log.warning(f"fell back from {path}: {reason}")
    for reason, count in sorted(report.skipped.items()):
        context.log.warning(f"skipped {count} record(s): {reason}")
    if rows == 0:
        staging.unlink(missing_ok=True)
        raise KnowledgeBaseError(
            f"partition {key!r}: no usable records for this source file in {origin} "
            f"(file used: {report.path_used}; skipped: {dict(report.skipped) or 'none'})"
        )
    seconds = time.monotonic() - started
    progress.finish(rows)
    metadata: dict[str, object] = {
        "dagster/row_count": rows,
        "source": origin,
        "input_file": str(report.path_used),
        "input_format": str(report.format),
        "records_seen": report.records_seen,
        "skipped_total": sum(report.skipped.values()),
        "skipped_by_reason": dg.MetadataValue.json(dict(report.skipped)),
        "fallbacks": dg.MetadataValue.json([[str(p), r] for p, r in report.fallbacks]),
        "embedder": embedder.description(),
        "content_mb": round(content_bytes / 1e6, 3),
        "chunks_per_s": round(rows / max(seconds, 1e-9), 1),
        "seconds": round(seconds, 3),
    }
    if first is not None:
        metadata["preview"] = dg.MetadataValue.md(
            preview_markdown(first, ["source_file", "chunk_id", "content"])
        )
    if report.problems:
        metadata["first_problems"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in report.problems[:20]))
    return dg.MaterializeResult(value=StagedParquet(staging), metadata=metadata)
