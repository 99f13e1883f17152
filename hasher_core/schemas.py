"""The frame Parquet schema (DESIGN §3.5): one definition for every stage that reads or writes frames.

Kept free of heavy imports (no numba, no tiktoken) so the search, the bundle and the CLI can use
it without paying for stage 2's machinery.
"""

from __future__ import annotations

import pyarrow as pa

from hasher_core.design import SLOT_COUNT

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
