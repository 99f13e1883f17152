"""Asset checks a user wants green before trusting a partition (stages 1 and 2).

Each check streams the stored partition, so it costs one pass over the file, and reports what it
counted as metadata. ``checkpoints_gate`` (stage 3's blocking gate) lives with the checkpoints.
"""

import math

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hasher_core.design import VOCABULARY_SIZE
from hasher_core.frames import FRAME_SCHEMA, expected_window_count
from hasher_core.tokens import load_cl100k
from hasher_resources.io import ParquetPartition

from .knowledge_base import knowledge_base as knowledge_base_asset
from .partitions import source_files
from .training_frames import training_frames as training_frames_asset


def _latest_metadata(context: dg.AssetCheckExecutionContext, asset: dg.AssetsDefinition) -> dict:
    """Metadata of the asset's newest materialisation of this partition."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=[context.partition_key]), limit=1
    ).records
    if not records:
        return {}
    materialization = records[0].asset_materialization
    return {k: v.value for k, v in (materialization.metadata if materialization else {}).items()}


@dg.asset_check(asset=knowledge_base_asset, partitions_def=source_files, blocking=True)
def knowledge_base_is_well_formed(knowledge_base: ParquetPartition) -> dg.AssetCheckResult:
    """Embeddings are 768 finite floats, no content is empty, chunk ids are unique per file."""
    rows = empty = bad_dims = non_finite = 0
    seen: set[tuple[str, int]] = set()
    duplicates = 0
    for batch in knowledge_base.iter_batches():
        rows += batch.num_rows
        content = batch.column("content")
        empty += pc.sum(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(content)), 0)).as_py() or 0
        emb = batch.column("embedding")
        if not pa.types.is_fixed_size_list(emb.type) or emb.type.list_size != 768:
            bad_dims += batch.num_rows
        else:
            values = emb.flatten().to_numpy(zero_copy_only=False).reshape(-1, 768)
            non_finite += int((~np.isfinite(values)).any(axis=1).sum())
        for pair in zip(
            batch.column("source_file").to_pylist(), batch.column("chunk_id").to_pylist(), strict=True
        ):
            if pair in seen:
                duplicates += 1
            seen.add(pair)
    passed = rows > 0 and empty == bad_dims == non_finite == duplicates == 0
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "rows": rows,
            "empty_content": empty,
            "wrong_dimension": bad_dims,
            "non_finite_embedding": non_finite,
            "duplicate_chunk_ids": duplicates,
        },
    )


@dg.asset_check(
    asset=training_frames_asset,
    partitions_def=source_files,
    blocking=True,
    additional_ins={"knowledge_base": dg.AssetIn("knowledge_base")},
)
def training_frames_are_consistent(
    context: dg.AssetCheckExecutionContext,
    training_frames: ParquetPartition,
    knowledge_base: ParquetPartition,
) -> dg.AssetCheckResult:
    """Schema is DESIGN §3.5, token ids < vocabulary, context_length = end − start ≤ W, and the row
    count equals the windows of a fresh tokenisation of the knowledge base."""
    meta = _latest_metadata(context, training_frames_asset)
    window = int(meta.get("window_size", 128))
    stride = int(meta.get("stride", 1))
    schema = training_frames.schema()
    schema_ok = schema.remove_metadata().equals(FRAME_SCHEMA.remove_metadata())
    rows = bad_tokens = bad_context = 0
    columns = ["window_start", "window_end", "context_length", "target_token_id"]
    for batch in training_frames.iter_batches(columns=columns):
        rows += batch.num_rows
        start, end, length, target = (batch.column(c).to_numpy() for c in columns)
        bad_tokens += int(((target < 0) | (target >= VOCABULARY_SIZE)).sum())
        bad_context += int(((length != end - start) | (length > window) | (length < 1)).sum())
    encoding = load_cl100k()
    expected = 0
    for batch in knowledge_base.iter_batches(columns=["content"]):
        for tokens in encoding.encode_ordinary_batch(batch.column("content").to_pylist()):
            expected += expected_window_count(len(tokens), stride)
    passed = schema_ok and bad_tokens == 0 and bad_context == 0 and rows == expected
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "schema_matches": schema_ok,
            "rows": rows,
            "expected_rows": expected,
            "token_ids_out_of_vocabulary": bad_tokens,
            "bad_context_length": bad_context,
            "window_size": window,
            "stride": stride,
            "frames_per_chunk": round(rows / max(knowledge_base.num_rows(), 1), 1) if rows else 0.0,
            "expected_ratio": 1.0 if expected == 0 else math.floor(1000 * rows / expected) / 1000,
        },
    )
