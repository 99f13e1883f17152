"""Every asset check: the ones a user wants green before trusting a partition (stages 1 and 2),
``checkpoints_gate``, the blocking validation gate of DESIGN §5, and ``deployment_recall``, the
deployed model answering its own training text (DESIGN §6.1).

Each check of stages 1–2 streams the stored partition, so it costs one pass over the file, and
reports what it counted as metadata; the gate reads the record the ``checkpoints`` asset stored in
its file.
"""

import math
import time
import warnings
from collections.abc import Iterator

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hasher_core.design import EMBEDDING_DIMS, VOCABULARY_SIZE
from hasher_core.frames.recipe import recipe_from_metadata
from hasher_core.frames.tokens import load_cl100k
from hasher_core.frames.windows import batch_texts, expected_window_count, tokenize
from hasher_core.schemas import FRAME_SCHEMA
from hasher_resources.deploy.store import DeploymentStore
from hasher_resources.model import load_model
from hasher_resources.parquet_io import ParquetPartition
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage

from .checkpoints import checkpoints as checkpoints_asset
from .deployment import deployment as deployment_asset
from .executors import step_op_tags
from .knowledge_base import knowledge_base as knowledge_base_asset
from .metadata import latest_metadata, partition_checks
from .partitions import PartitionInput, by_partition, source_files
from .training_frames import training_frames as training_frames_asset

# Dagster 1.13 marks a partitions_def on an asset check as a preview feature and warns at every import of
# the code location: once per process, so each `dagster` command printed it up to eight times. hasher
# needs it (every check runs per source file, like its asset); only this one warning is silenced.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)


@dg.asset_check(
    asset=knowledge_base_asset,
    partitions_def=source_files,
    blocking=True,
    description="Blocks training_frames until the stored chunks are usable: every embedding has "
    "embedding_dims finite values, no content is blank, and chunk ids are unique per source file. The "
    "metadata counts each problem; fix or re-export the source file (or set embedding_dims to the "
    "embedder's length) and rematerialise knowledge_base.",
)
def knowledge_base_is_well_formed(
    context: dg.AssetCheckExecutionContext, knowledge_base: PartitionInput
) -> Iterator:
    """Embeddings are finite floats of the configured length (``embedding_dims``, default 768), no
    content is empty, chunk ids are unique per file."""
    handles = by_partition(context, knowledge_base)
    metadata = latest_metadata(context, knowledge_base_asset, list(handles))
    results = {
        key: knowledge_base_check(handle, int(metadata[key].get("embedding_dims", EMBEDDING_DIMS)))
        for key, handle in handles.items()
    }
    yield from partition_checks(context, results)


def knowledge_base_check(knowledge_base: ParquetPartition, dims: int) -> dg.AssetCheckResult:
    """:func:`knowledge_base_is_well_formed` for a stored partition whose embeddings must have ``dims``
    values: one pass over the file, the counts of each problem as metadata."""
    rows = empty = bad_dims = non_finite = 0
    seen: set[tuple[str, int]] = set()
    duplicates = 0
    for batch in knowledge_base.iter_batches():
        rows += batch.num_rows
        content = batch.column("content")
        empty += pc.sum(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(content)), 0)).as_py() or 0
        emb = batch.column("embedding")
        if not pa.types.is_fixed_size_list(emb.type) or emb.type.list_size != dims:
            bad_dims += batch.num_rows
        else:
            values = emb.flatten().to_numpy(zero_copy_only=False).reshape(-1, dims)
            non_finite += int((~np.isfinite(values)).any(axis=1).sum())
        for pair in zip(
            batch.column("source_file").to_pylist(), batch.column("chunk_id").to_pylist(), strict=True
        ):
            if pair in seen:
                duplicates += 1
            seen.add(pair)
    embedding = knowledge_base.schema().field("embedding").type
    dims_ok = pa.types.is_fixed_size_list(embedding) and embedding.list_size == dims
    # No rows is an empty source, which knowledge_base's note names: nothing here to be malformed.
    passed = dims_ok and empty == bad_dims == non_finite == duplicates == 0
    note = {"note": "no chunks: nothing to check (see knowledge_base's note)"} if not rows else {}
    return dg.AssetCheckResult(
        passed=passed,
        description=note.get("note"),
        metadata={
            **note,
            "rows": rows,
            "empty_content": empty,
            "wrong_dimension": bad_dims,
            "non_finite_embedding": non_finite,
            "duplicate_chunk_ids": duplicates,
            "embedding_dims": dims,
        },
    )


@dg.asset_check(
    asset=training_frames_asset,
    partitions_def=source_files,
    blocking=True,
    additional_ins={"knowledge_base": dg.AssetIn("knowledge_base")},
    description="Blocks seeds until the frames are consistent: the frames schema, every target_token_id "
    "a cl100k id, context_length = window_end − window_start ≤ window_size, and one frame per token "
    "position of a fresh tokenisation of the knowledge base with the file's own window_size and "
    "stride. A failure means the frames are stale or damaged: rematerialise training_frames (after "
    "knowledge_base if that changed).",
)
def training_frames_are_consistent(
    context: dg.AssetCheckExecutionContext,
    training_frames: PartitionInput,
    knowledge_base: PartitionInput,
) -> Iterator:
    """Schema is DESIGN §3.5, token ids < vocabulary, context_length = end − start ≤ W, and the row
    count equals the windows of a fresh tokenisation of the knowledge base, with the W and S the
    frames were built with (the file's own recipe, else the materialisation's metadata)."""
    chunks = by_partition(context, knowledge_base)
    results = {}
    for key, frames in by_partition(context, training_frames).items():
        recipe = recipe_from_metadata(frames.schema().metadata) or latest_metadata(
            context, training_frames_asset, [key]
        ).get(key, {})
        if "window_size" not in recipe or "stride" not in recipe:
            results[key] = dg.AssetCheckResult(
                passed=False,
                metadata={"problem": "the frames carry no recipe: window_size and stride are unknown"},
            )
            continue
        results[key] = training_frames_check(
            frames, chunks[key], int(recipe["window_size"]), int(recipe["stride"])
        )
    yield from partition_checks(context, results)


def training_frames_check(
    training_frames: ParquetPartition, knowledge_base: ParquetPartition, window: int, stride: int
) -> dg.AssetCheckResult:
    """:func:`training_frames_are_consistent` for stored frames built with window ``window`` and
    stride ``stride`` from ``knowledge_base``: one pass over each file, each problem counted."""
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
        # The writer's tokenizer, failures included: a chunk it could not tokenise has no frames.
        for tokens in tokenize(batch_texts(batch), encoding, failures=[]):
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


@dg.asset_check(
    asset=checkpoints_asset,
    partitions_def=source_files,
    blocking=True,
    description="Blocks deployment of this partition unless its seeds reproduce: at most tolerance of "
    "them may disagree with an implementation other than the one that searched them, and every row "
    "must have been checked by one. With a device, its own hashing is checked too (its nonces verify "
    "on the kernel): the device, not the seeds. On failure see mismatch_rate and "
    "checkpoint_mismatches/<partition>.parquet and rematerialise seeds (another kernel backend shows "
    "whether one is at fault); a failed device check points at the device or its connection.",
)
def checkpoints_gate(context: dg.AssetCheckExecutionContext, checkpoints: PartitionInput) -> Iterator:
    """Fails when more seeds disagree with the independent implementation than the tolerance, when
    any seeds were not re-checked on an implementation other than the one that searched them, or
    when the device cross-check (a check of the device, not of the seeds) failed."""
    results = {key: gate_check(handle) for key, handle in by_partition(context, checkpoints).items()}
    yield from partition_checks(context, results)


def gate_check(checkpoints: ParquetPartition) -> dg.AssetCheckResult:
    """:func:`checkpoints_gate` for one stored partition: the gate record its file carries."""
    gate = checkpoints.hasher_metadata()
    if not gate:
        return dg.AssetCheckResult(
            passed=False, metadata={"problem": "checkpoint file carries no gate record"}
        )
    # The second opinion must come from another implementation than the one that searched.
    verified_on = gate.get("verified_on", {})
    # No rows: no seed was searched, so none needs a second opinion (an empty partition is not a
    # failed verification).
    independent = not gate["rows"] or (
        bool(verified_on) and all(search != verify for search, verify in verified_on.items())
    )
    extra = {"note": gate["note"]} if "note" in gate else {}
    return dg.AssetCheckResult(
        passed=bool(gate["passed"]) and independent,
        severity=dg.AssetCheckSeverity.ERROR,
        description=gate.get("note"),
        metadata={
            **extra,
            "mismatch_rate": gate["mismatch_rate"],
            "tolerance": gate["tolerance"],
            "mismatches": gate["mismatches"],
            "rows": gate["rows"],
            "verify_backend": gate["verify_backend"],
            "verified_on": dg.MetadataValue.json(verified_on),
            "independent": independent,
            "device_hashing_check": dg.MetadataValue.json(gate["device"]),
        },
    )


@dg.asset_check(
    asset=deployment_asset,
    additional_ins={"knowledge_base": dg.AssetIn("knowledge_base")},
    op_tags=step_op_tags("deployment_recall"),
    description="The current deployment answering its own training text: one-step inference (exact "
    "context, then suffixes, then the nearest frame) on every training context of the deployed "
    "partitions. Passes when at least 99 % of unambiguous contexts get their next token; only warns "
    "when seeds were searched below 17 bits, which do not reproduce tokens (retrain with "
    "seeds.difficulty_bits ≥ 17). A failure at 17 bits means the bundle does not answer what it was "
    "trained on: check the frame recipe and the embedder, then retrain and redeploy.",
)
def deployment_recall(
    context: dg.AssetCheckExecutionContext,
    knowledge_base: dict[str, ParquetPartition],
    storage: HasherStorage,
    kernel: Sha256Kernel,
) -> dg.AssetCheckResult:
    """Recall of the current deployment on its own training text, every context of every deployed
    chunk, and the tokens it recites verbatim."""
    started = time.monotonic()
    bundle = DeploymentStore(storage.data_path).map_bundle()
    model = load_model(bundle, kernel)
    deployed = [key for key, counts in bundle.manifest["partitions"].items() if counts["rows"]]
    encoding = load_cl100k()
    chunks = []
    for key in deployed:
        if key not in knowledge_base:
            continue
        for batch in knowledge_base[key].iter_batches(columns=["content"]):
            chunks.extend(tokenize(batch_texts(batch), encoding, failures=[]))
    recall = model.recall(chunks, stride=int(bundle.manifest["recipe"]["stride"]))
    seconds = time.monotonic() - started
    exact = model.exact_difficulty
    summary = f"deployment_recall of {bundle.version}: {recall.summary()}"
    if not exact:
        summary += "; seeds searched below 17 bits do not reproduce tokens: retrain at difficulty_bits >= 17"
    context.log.info(summary)
    return dg.AssetCheckResult(
        passed=exact and recall.recall >= 0.99,
        severity=dg.AssetCheckSeverity.ERROR if exact else dg.AssetCheckSeverity.WARN,
        description=summary,
        metadata={
            **recall.as_metadata(),
            "seconds": round(seconds, 3),
            "contexts_per_s": round(recall.contexts / max(seconds, 1e-9), 1),
            "bundle": bundle.version,
            "partitions": dg.MetadataValue.json(deployed),
        },
    )
