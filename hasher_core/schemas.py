"""Every Parquet schema of the pipeline and its column names, in one place.

The knowledge base (DESIGN §2), the frames (§3.5), the search's result columns (§4.5) and the
bundle's seed table (DESIGN §6). Kept free of heavy imports (no numba, no tiktoken) so the search, the
bundle and the CLI can use it without paying for stage 2's machinery.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from hasher_core.design import EMBEDDING_DIMS, SEED_BYTES, SLOT_COUNT

# Alpaca files carry these; they are kept (null when absent) so every batch has one schema.
EXTRA_COLUMNS = ("instruction", "input", "output")


def knowledge_base_schema(dims: int = EMBEDDING_DIMS) -> pa.Schema:
    """The canonical schema for ``dims``-dimensional embeddings."""
    return pa.schema(
        [
            pa.field("source_file", pa.string(), nullable=False),
            pa.field("chunk_id", pa.int32(), nullable=False),
            pa.field("content", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dims), nullable=False),
            *(pa.field(name, pa.string(), nullable=True) for name in EXTRA_COLUMNS),
        ]
    )


KNOWLEDGE_BASE_SCHEMA = knowledge_base_schema(EMBEDDING_DIMS)


def canonical_batch(
    source_file: list[str] | pa.Array,
    chunk_id: Any,
    content: list[str] | pa.Array,
    embeddings: Any,
    dims: int,
    extras: dict[str, pa.Array | list[str | None]] | None = None,
) -> pa.RecordBatch:
    """Assemble a canonical batch from already-validated columns (embeddings: float32[N, dims])."""
    emb = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1)
    n = len(content)
    columns = [
        _as_string(source_file),
        pa.array(np.asarray(chunk_id, dtype=np.int32), pa.int32()),
        _as_string(content),
        pa.FixedSizeListArray.from_arrays(pa.array(emb, pa.float32()), dims),
    ]
    for name in EXTRA_COLUMNS:
        value = (extras or {}).get(name)
        columns.append(pa.nulls(n, pa.string()) if value is None else _as_string(value))
    return pa.RecordBatch.from_arrays(columns, schema=knowledge_base_schema(dims))


def _as_string(values: list[str] | pa.Array) -> pa.Array:
    if isinstance(values, pa.Array):
        return values if values.type == pa.string() else values.cast(pa.string())
    return pa.array(values, pa.string())


SLOT_COLUMNS: tuple[str, ...] = tuple(f"asic_slot_{k}" for k in range(SLOT_COUNT))
TARGET_COLUMN = "target_token_id"

#: DESIGN §3.5. Slots are the uint32 words bit-cast to int32 (negative values are expected);
#: ``best_seed`` stays null until stage 3 fills in 32 raw bytes.
FRAME_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.dictionary(pa.int32(), pa.utf8()), nullable=False),
        pa.field("chunk_id", pa.int32(), nullable=False),
        pa.field("window_start", pa.int32(), nullable=False),
        pa.field("window_end", pa.int32(), nullable=False),
        pa.field("context_length", pa.int32(), nullable=False),
        *(pa.field(name, pa.int32(), nullable=False) for name in SLOT_COLUMNS),
        pa.field(TARGET_COLUMN, pa.int32(), nullable=False),
        pa.field("best_seed", pa.binary(), nullable=True),
    ]
)

#: Columns the search adds to the frames (DESIGN §4.5), besides filling ``best_seed``; ``fingerprint``
#: (the frame's search fingerprint, DESIGN §4.6) is what the bundle and the progress store key on;
#: ``predicted_token_id`` is the token the best seed's golden stands for (``golden >> 15``, DESIGN §4.3).
RESULT_COLUMNS = (
    "golden",
    "matched_bits",
    "hamming",
    "reward",
    "generations",
    "evaluations",
    "difficulty_bits",
    "solved",
    "header_time",
    "kernel_backend",
    "fingerprint",
    "predicted_token_id",
)

#: The deployed seed table (DESIGN §6): one row per checkpointed frame, in a deterministic order.
SEED_TABLE_SCHEMA = pa.schema(
    [
        ("partition", pa.string()),
        ("source_file", pa.string()),
        ("chunk_id", pa.int32()),
        ("window_end", pa.int32()),
        ("slots", pa.list_(pa.uint32(), SLOT_COUNT)),
        ("target_token_id", pa.int32()),
        ("best_seed", pa.binary(SEED_BYTES)),
        ("header_time", pa.int64()),
        ("golden", pa.uint32()),
        ("fingerprint", pa.string()),
        ("solved", pa.bool_()),
        ("matched_bits", pa.uint8()),
        ("difficulty_bits", pa.uint8()),
    ]
)
