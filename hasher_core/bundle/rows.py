"""Checkpoint tables → the deployed seed table's rows (DESIGN §6), each column validated: a missing
column, a null seed, a value out of range is a :class:`BundleInputError` naming partition and column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hasher_core import design
from hasher_core.errors import BundleInputError
from hasher_core.schemas import SEED_TABLE_SCHEMA, SLOT_COLUMNS

#: Checkpoint columns the bundle needs; anything else in a checkpoint is ignored.
REQUIRED_COLUMNS = (
    "source_file",
    "chunk_id",
    "window_end",
    *SLOT_COLUMNS,
    "target_token_id",
    "best_seed",
    "golden",
    "solved",
    "matched_bits",
    "difficulty_bits",
    "header_time",
    "fingerprint",
)


def int_column(partition: str, table: pa.Table, name: str, lo: int, hi: int) -> np.ndarray:
    """Column ``name`` as int64, every value in ``[lo, hi]`` and none null."""
    col = table.column(name)
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise BundleInputError(partition, name, f"null value in row {row}")
    if not pa.types.is_integer(col.type):
        raise BundleInputError(partition, name, f"expected an integer column, got {col.type}")
    values = np.asarray(col.to_numpy(), dtype=np.int64) if len(col) else np.empty(0, np.int64)
    bad = np.flatnonzero((values < lo) | (values > hi))
    if bad.size:
        row = int(bad[0])
        raise BundleInputError(partition, name, f"row {row}: value {values[row]} outside [{lo}, {hi}]")
    return values


def partition_rows(partition: str, table: pa.Table, only_solved: bool) -> pa.Table:
    """One partition's checkpoint table as seed-table rows (``SEED_TABLE_SCHEMA``), unsorted."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise BundleInputError(
            partition, missing[0], f"missing (also missing: {missing[1:]})" if missing[1:] else "missing"
        )
    solved_col = table.column("solved")
    if not pa.types.is_boolean(solved_col.type) or solved_col.null_count:
        raise BundleInputError(partition, "solved", f"expected non-null bool, got {solved_col.type}")
    if only_solved:
        table = table.filter(solved_col)
    n = table.num_rows

    seed_col = table.column("best_seed")
    if seed_col.null_count:
        row = int(np.flatnonzero(seed_col.is_null().to_numpy(zero_copy_only=False))[0])
        raise BundleInputError(partition, "best_seed", f"row {row} has no seed (null)")
    if not (pa.types.is_binary(seed_col.type) or pa.types.is_large_binary(seed_col.type)) and not (
        pa.types.is_fixed_size_binary(seed_col.type)
    ):
        raise BundleInputError(partition, "best_seed", f"expected binary, got {seed_col.type}")
    if not pa.types.is_fixed_size_binary(seed_col.type) and n:
        lengths = pc.binary_length(seed_col).to_numpy()
        bad = np.flatnonzero(lengths != design.SEED_BYTES)
        if bad.size:
            row = int(bad[0])
            raise BundleInputError(
                partition, "best_seed", f"row {row} is {lengths[row]} bytes, a seed is {design.SEED_BYTES}"
            )
    seed_type = pa.binary(design.SEED_BYTES)
    seeds = seed_col.cast(seed_type) if n else pa.chunked_array([], seed_type)

    # Slots arrive as int32 (the uint32 bit-cast of DESIGN §3.5); accept uint32/int64 holding the same words.
    slot_words = np.stack(
        [int_column(partition, table, c, -(2**31), 2**32 - 1) for c in SLOT_COLUMNS], axis=1
    ).astype(np.int64)
    slot_words = (slot_words & 0xFFFFFFFF).astype(np.uint32).reshape(n, design.SLOT_COUNT)

    for name in ("source_file", "fingerprint"):
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise BundleInputError(partition, name, f"expected utf8, got {col.type}")
        if col.null_count:
            raise BundleInputError(partition, name, "null value")

    def strings(name: str) -> pa.ChunkedArray:
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        return col.cast(pa.string())

    columns = {
        "partition": pa.array([partition] * n, pa.string()),
        "source_file": strings("source_file"),
        "chunk_id": pa.array(int_column(partition, table, "chunk_id", -(2**31), 2**31 - 1), pa.int32()),
        "window_end": pa.array(int_column(partition, table, "window_end", 0, 2**31 - 1), pa.int32()),
        "slots": pa.FixedSizeListArray.from_arrays(pa.array(slot_words.reshape(-1)), design.SLOT_COUNT),
        "target_token_id": pa.array(
            int_column(partition, table, "target_token_id", -(2**31), 2**31 - 1), pa.int32()
        ),
        "best_seed": seeds,
        "header_time": pa.array(int_column(partition, table, "header_time", 0, 2**32 - 1), pa.int64()),
        # golden arrives as int64 or uint32; either way it is one 32-bit word.
        "golden": pa.array(int_column(partition, table, "golden", 0, 2**32 - 1), pa.uint32()),
        "fingerprint": strings("fingerprint"),
        "solved": table.column("solved"),
        "matched_bits": pa.array(int_column(partition, table, "matched_bits", 0, 32), pa.uint8()),
        "difficulty_bits": pa.array(int_column(partition, table, "difficulty_bits", 0, 32), pa.uint8()),
    }
    return pa.table(columns, schema=SEED_TABLE_SCHEMA)
