"""Checkpoint tables → the deployed seed table's rows (DESIGN §6), each column validated: a missing
column, a null seed, a value out of range is a :class:`BundleInputError` naming partition and column.

Partitions whose tables share a schema are validated as one table (their tables concatenated
without copying), so ten thousand partitions cost what their rows cost, not ten thousand passes;
an error still names the partition and its row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


class _Rows:
    """Rows of several partitions as one table: which partition a row is in, and its row there."""

    def __init__(self, keys: Sequence[str], table: pa.Table, part: np.ndarray) -> None:
        self.keys, self.table, self.part = keys, table, part
        starts = np.searchsorted(part, np.arange(len(keys)))
        self.starts = starts

    def where(self, row: int) -> tuple[str, int]:
        """(partition, row within the partition's table) of row ``row``."""
        p = int(self.part[row])
        return self.keys[p], row - int(self.starts[p])

    def fail(self, column: str, row: int, problem: str) -> BundleInputError:
        key, local = self.where(row)
        return BundleInputError(key, column, problem.format(row=local))

    def ints(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Column ``name`` as int64, every value in ``[lo, hi]`` and none null."""
        col = self.table.column(name)
        if not pa.types.is_integer(col.type):
            raise BundleInputError(
                self.keys[int(self.part[0])], name, f"expected an integer column, got {col.type}"
            )
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise self.fail(name, row, "null value in row {row}")
        values = np.asarray(col.to_numpy(), dtype=np.int64) if len(col) else np.empty(0, np.int64)
        bad = np.flatnonzero((values < lo) | (values > hi))
        if bad.size:
            row = int(bad[0])
            raise self.fail(name, row, f"row {{row}}: value {values[row]} outside [{lo}, {hi}]")
        return values

    def strings(self, name: str) -> pa.ChunkedArray:
        col = self.table.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise BundleInputError(self.keys[int(self.part[0])], name, f"expected utf8, got {col.type}")
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise self.fail(name, row, "null value")
        return col.cast(pa.string())


def seed_rows(checkpoints: Mapping[str, pa.Table | None], only_solved: bool) -> pa.Table:
    """Every partition's checkpoint rows as seed-table rows (``SEED_TABLE_SCHEMA``), unsorted; with
    ``only_solved`` only solved rows. Empty when no partition has a row. Raises
    :class:`BundleInputError` naming partition, column and (in the partition's table, after the
    ``only_solved`` filter) the row for the first problem found."""
    # Partitions are grouped by schema (metadata aside: each file carries its own gate record) and
    # each group is concatenated whole before its columns are selected: per partition only a
    # schema comparison, so 10,000 partitions cost what their rows cost.
    groups: list[tuple[pa.Schema, list[str], list[pa.Table]]] = []
    for key in sorted(checkpoints):
        table = checkpoints[key]
        if table is None:
            continue
        schema = table.schema
        for group_schema, keys, tables in groups:
            if group_schema.equals(schema, check_metadata=False):
                keys.append(key)
                tables.append(table)
                break
        else:
            names = set(schema.names)
            missing = [c for c in REQUIRED_COLUMNS if c not in names]
            if missing:
                raise BundleInputError(
                    key, missing[0], f"missing (also missing: {missing[1:]})" if missing[1:] else "missing"
                )
            groups.append((schema, [key], [table]))
    parts = [_group_rows(keys, tables, only_solved) for _, keys, tables in groups]
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return SEED_TABLE_SCHEMA.empty_table()
    return pa.concat_tables(parts)


def _group_rows(keys: list[str], tables: list[pa.Table], only_solved: bool) -> pa.Table:
    """The seed-table rows of partitions ``keys`` whose ``tables`` share one schema."""
    lengths = np.array([t.num_rows for t in tables], np.int64)
    # One chunk per column, not one per partition; only the columns a seed row needs.
    table = pa.concat_tables(tables).select(REQUIRED_COLUMNS).replace_schema_metadata(None).combine_chunks()
    part = np.repeat(np.arange(len(keys), dtype=np.int64), lengths)
    solved_col = table.column("solved")
    if not pa.types.is_boolean(solved_col.type):
        raise BundleInputError(keys[0], "solved", f"expected non-null bool, got {solved_col.type}")
    if solved_col.null_count:
        row = int(np.flatnonzero(solved_col.is_null().to_numpy(zero_copy_only=False))[0])
        raise BundleInputError(
            keys[int(part[row])], "solved", f"expected non-null bool, got {solved_col.type}"
        )
    if only_solved:
        mask = solved_col.to_numpy(zero_copy_only=False)
        table, part = table.filter(solved_col), part[mask]
    rows = _Rows(keys, table, part)
    n = table.num_rows

    seed_col = table.column("best_seed")
    if seed_col.null_count:
        row = int(np.flatnonzero(seed_col.is_null().to_numpy(zero_copy_only=False))[0])
        raise rows.fail("best_seed", row, "row {row} has no seed (null)")
    if not (pa.types.is_binary(seed_col.type) or pa.types.is_large_binary(seed_col.type)) and not (
        pa.types.is_fixed_size_binary(seed_col.type)
    ):
        raise BundleInputError(keys[0], "best_seed", f"expected binary, got {seed_col.type}")
    if pa.types.is_fixed_size_binary(seed_col.type) and seed_col.type.byte_width != design.SEED_BYTES:
        raise BundleInputError(
            keys[0], "best_seed", f"seeds are {seed_col.type.byte_width} bytes, a seed is {design.SEED_BYTES}"
        )
    if not pa.types.is_fixed_size_binary(seed_col.type) and n:
        lengths_of_seeds = pc.binary_length(seed_col).to_numpy()
        bad = np.flatnonzero(lengths_of_seeds != design.SEED_BYTES)
        if bad.size:
            row = int(bad[0])
            raise rows.fail(
                "best_seed",
                row,
                f"row {{row}} is {lengths_of_seeds[row]} bytes, a seed is {design.SEED_BYTES}",
            )
    seed_type = pa.binary(design.SEED_BYTES)
    seeds = seed_col.cast(seed_type) if n else pa.chunked_array([], seed_type)

    # Slots arrive as int32 (the uint32 bit-cast of DESIGN §3.5); accept uint32/int64 holding the same words.
    slot_words = np.empty((n, design.SLOT_COUNT), np.uint32)
    for k, name in enumerate(SLOT_COLUMNS):
        slot_words[:, k] = rows.ints(name, -(2**31), 2**32 - 1) & 0xFFFFFFFF

    source_file = rows.strings("source_file")
    fingerprint = rows.strings("fingerprint")
    columns = {
        "partition": pa.DictionaryArray.from_arrays(
            pa.array(part, pa.int32()), pa.array(keys, pa.string())
        ).cast(pa.string()),
        "source_file": source_file,
        "chunk_id": pa.array(rows.ints("chunk_id", -(2**31), 2**31 - 1), pa.int32()),
        "window_end": pa.array(rows.ints("window_end", 0, 2**31 - 1), pa.int32()),
        "slots": pa.FixedSizeListArray.from_arrays(pa.array(slot_words.reshape(-1)), design.SLOT_COUNT),
        "target_token_id": pa.array(rows.ints("target_token_id", -(2**31), 2**31 - 1), pa.int32()),
        "best_seed": seeds,
        "header_time": pa.array(rows.ints("header_time", 0, 2**32 - 1), pa.int64()),
        # golden arrives as int64 or uint32; either way it is one 32-bit word.
        "golden": pa.array(rows.ints("golden", 0, 2**32 - 1), pa.uint32()),
        "fingerprint": fingerprint,
        "solved": table.column("solved"),
        "matched_bits": pa.array(rows.ints("matched_bits", 0, 32), pa.uint8()),
        "difficulty_bits": pa.array(rows.ints("difficulty_bits", 0, 32), pa.uint8()),
    }
    return pa.table(columns, schema=SEED_TABLE_SCHEMA)


def slots_array(seeds: pa.Table) -> np.ndarray:
    """uint32[N, 12] from a seed table's ``slots`` column."""
    col = seeds.column("slots").combine_chunks()
    return np.asarray(col.flatten().to_numpy(), dtype=np.uint32).reshape(-1, design.SLOT_COUNT)


def seeds_array(seeds: pa.Table) -> np.ndarray:
    """uint8[N, 32] from a seed table's ``best_seed`` column."""
    return _fixed_binary_bytes(seeds.column("best_seed").combine_chunks()).reshape(-1, design.SEED_BYTES)


def _fixed_binary_bytes(arr: pa.FixedSizeBinaryArray) -> np.ndarray:
    width = arr.type.byte_width
    data = arr.buffers()[1]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
    return raw[arr.offset * width : (arr.offset + len(arr)) * width].copy()
