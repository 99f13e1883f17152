"""Record and batch validation of stage 1 (DESIGN §2): one rule set for JSON records and Arrow batches.

Turns raw records (decoded JSON with snake_case or Go field names) or Arrow batches into canonical
batches (``hasher_core.schemas.knowledge_base_schema``), skipping a bad record with a counted reason
in the :class:`ReadReport` and keeping the first ``(source_file, chunk_id)`` of duplicates.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hasher_core.errors import KnowledgeBaseFormatError
from hasher_core.schemas import EXTRA_COLUMNS, canonical_batch

from .formats import FIELD_ALIASES, partition_mask, plain_layout
from .keys import safe_partition_key
from .report import (
    CHUNK_ID_NOT_INTEGER,
    CHUNK_ID_OUT_OF_RANGE,
    DUPLICATE_CHUNK_ID,
    EMBEDDING_LENGTH,
    EMBEDDING_NOT_FINITE,
    EMBEDDING_NOT_NUMERIC,
    EMPTY_CONTENT,
    INVALID_UTF8,
    MAX_PROBLEMS,
    MISSING_CHUNK_ID,
    MISSING_CONTENT,
    MISSING_EMBEDDING,
    MISSING_FILE_NAME,
    NOT_AN_OBJECT,
    ReadReport,
)

_INT32_MAX = 2**31 - 1
# Per-source chunk-id bitmaps stay dense up to this id; beyond it a set is cheaper.
_BITMAP_LIMIT = 1 << 24


class _FirstChunkIds:
    """Remembers which (source_file, chunk_id) pairs were already kept, in bounded memory per source."""

    def __init__(self) -> None:
        self._seen: dict[str, np.ndarray | set[int]] = {}

    def keep_mask(self, names: pa.Array, ids: np.ndarray) -> np.ndarray:
        """True for each row whose pair was not seen before (in earlier batches or earlier in this one)."""
        keep = np.ones(len(ids), dtype=bool)
        for name, rows in groups(names):
            group_ids = ids[rows]
            duplicate = np.ones(len(rows), dtype=bool)
            duplicate[np.unique(group_ids, return_index=True)[1]] = False
            seen = self._seen.get(name)
            if isinstance(seen, set) or int(group_ids.max()) >= _BITMAP_LIMIT:
                if not isinstance(seen, set):
                    seen = set() if seen is None else {int(i) for i in np.flatnonzero(seen)}
                    self._seen[name] = seen
                duplicate |= np.fromiter((int(i) in seen for i in group_ids), bool, len(group_ids))
                seen.update(int(i) for i in group_ids[~duplicate])
            else:
                needed = int(group_ids.max()) + 1
                if seen is None or len(seen) < needed:
                    grown = np.zeros(max(needed, 2 * (0 if seen is None else len(seen))), dtype=bool)
                    if seen is not None:
                        grown[: len(seen)] = seen
                    seen = self._seen[name] = grown
                duplicate |= seen[group_ids]
                seen[group_ids[~duplicate]] = True
            keep[rows[duplicate]] = False
        return keep


def _has_surrogates(text: str) -> bool:
    # Invalid UTF-8 bytes were decoded as lone surrogates (surrogateescape); they cannot be encoded back.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _invalid_text(field: str, text: str, encoding: str | None) -> str:
    """Where a decoded record's text is invalid: the first lone surrogate and the byte it stands for."""
    at = next(i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff")
    mark = ord(text[at])
    what = f"byte 0x{mark - 0xDC00:02x}" if 0xDC80 <= mark <= 0xDCFF else f"U+{mark:04X}"
    return (
        f"{field} is not valid {encoding or 'UTF-8'} text ({what} at character {at}, after "
        f"{text[max(0, at - 20) : at]!r}); legacy code pages such as Windows-1252 are not read: save the "
        "file as UTF-8"
    )


def nfc(name: str) -> str:
    """A source file name in Unicode NFC (UAX #15): a macOS NFD name and a typed one are the same name."""
    return name if unicodedata.is_normalized("NFC", name) else unicodedata.normalize("NFC", name)


def nfc_column(names: pa.Array) -> pa.Array:
    """:func:`nfc` over a string column, one normalisation per distinct name."""
    encoded = pc.dictionary_encode(names)
    dictionary = encoded.dictionary.to_pylist()
    if all(n is None or unicodedata.is_normalized("NFC", n) for n in dictionary):
        return names
    normal = pa.array([None if n is None else nfc(n) for n in dictionary], encoded.dictionary.type)
    return pa.DictionaryArray.from_arrays(encoded.indices, normal).dictionary_decode()


def integral_chunk_id(value: Any) -> int | None:
    """A chunk id as an int, or None when it is not integral.

    One rule for every format (the Arrow path applies it column-wise in :func:`_chunk_ids`): an integer,
    or a float with no fractional part (pandas writes ``1.0`` for an integer column that had a null);
    ``1.5``, NaN, infinities, booleans and strings are not chunk ids.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _lookup(record: dict[str, Any], field: str) -> Any:
    for alias in FIELD_ALIASES[field]:
        if alias in record:
            return record[alias]
    return None


class Validator:
    """Turns raw records or batches into canonical batches, counting skips in the report."""

    def __init__(self, path: Path, dims: int, partition_key: str | None, report: ReadReport) -> None:
        self.path = path
        self.dims = dims
        self.partition_key = partition_key
        self.report = report
        self.first_ids = _FirstChunkIds()
        self.records_in_file = 0

    def _where(self, label: str, position: int) -> str:
        return f"{self.path}: {label} {position}"

    def _record_problem(self, record: Any) -> tuple[str, str] | None:
        name = _lookup(record, "file_name")
        if not isinstance(name, str) or not name:
            return MISSING_FILE_NAME, f"file_name is {type(name).__name__}"
        raw_id = _lookup(record, "chunk_id")
        if raw_id is None:
            return MISSING_CHUNK_ID, ""
        chunk_id = integral_chunk_id(raw_id)
        if chunk_id is None:
            return CHUNK_ID_NOT_INTEGER, f"chunk_id is {raw_id!r:.40}"
        if not 0 <= chunk_id <= _INT32_MAX:
            return CHUNK_ID_OUT_OF_RANGE, f"chunk_id {chunk_id}"
        content = _lookup(record, "content")
        if not isinstance(content, str):
            return MISSING_CONTENT, "" if content is None else f"content is {type(content).__name__}"
        for field, text in (("file_name", name), ("content", content)):
            if _has_surrogates(text):
                return INVALID_UTF8, _invalid_text(field, text, self.report.encoding)
        if not content.strip():
            return EMPTY_CONTENT, ""
        embedding = _lookup(record, "embedding")
        if embedding is None:
            return MISSING_EMBEDDING, ""
        if not isinstance(embedding, list):
            return EMBEDDING_NOT_NUMERIC, f"embedding is {type(embedding).__name__}"
        if len(embedding) != self.dims:
            return EMBEDDING_LENGTH, f"{len(embedding)} values, expected {self.dims}"
        return None

    def from_records(self, records: list[Any], positions: list[int], label: str) -> pa.RecordBatch | None:
        """Validate decoded JSON values (dicts with snake_case or Go field names)."""
        report = self.report
        kept: list[tuple[dict[str, Any], int]] = []
        self.records_in_file += len(records)
        for record, position in zip(records, positions, strict=True):
            if not isinstance(record, dict):
                if self.partition_key is None:
                    report.records_seen += 1
                    report.skip(NOT_AN_OBJECT, self._where(label, position), type(record).__name__)
                continue
            if self.partition_key is not None:
                name = _lookup(record, "file_name")
                if not isinstance(name, str) or safe_partition_key(name) != self.partition_key:
                    continue
            report.records_seen += 1
            problem = self._record_problem(record)
            if problem is not None:
                report.skip(problem[0], self._where(label, position), problem[1])
                continue
            kept.append((record, position))
        if not kept:
            return None
        rows = [_lookup(r, "embedding") for r, _ in kept]
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                embeddings = np.array(rows, dtype=np.float64).astype(np.float32)
            numeric = np.ones(len(rows), dtype=bool)
        except (TypeError, ValueError, OverflowError):
            # Some row holds a non-number, or an integer beyond float64 (a 388-digit value raises
            # OverflowError); find which, row by row (the rare path).
            embeddings = np.zeros((len(rows), self.dims), dtype=np.float32)
            numeric = np.zeros(len(rows), dtype=bool)
            for i, row in enumerate(rows):
                try:
                    with np.errstate(over="ignore", invalid="ignore"):
                        embeddings[i] = np.array(row, dtype=np.float64)
                    numeric[i] = True
                except OverflowError:
                    embeddings[i] = np.inf  # a number, but not a finite float: embedding_not_finite
                    numeric[i] = True
                except (TypeError, ValueError):
                    pass
        finite = np.isfinite(embeddings).all(axis=1)
        for i in np.flatnonzero(~(numeric & finite)):
            reason = EMBEDDING_NOT_NUMERIC if not numeric[i] else EMBEDDING_NOT_FINITE
            report.skip(reason, self._where(label, kept[i][1]), "")
        good = np.flatnonzero(numeric & finite)
        names = pa.array([nfc(_lookup(kept[i][0], "file_name")) for i in good], pa.string())
        ids = np.array([integral_chunk_id(_lookup(kept[i][0], "chunk_id")) for i in good], dtype=np.int32)
        keep = self._drop_duplicates(names, ids, [f"{label} {kept[i][1]}" for i in good])
        good = good[keep]
        if len(good) == 0:
            return None
        extras = {}
        for column in EXTRA_COLUMNS:
            values = [_lookup(kept[i][0], column) for i in good]
            extras[column] = [v if isinstance(v, str) and not _has_surrogates(v) else None for v in values]
        return canonical_batch(
            names.filter(pa.array(keep)),
            ids[keep],
            [_lookup(kept[i][0], "content") for i in good],
            embeddings[good],
            self.dims,
            extras,
        )

    def _drop_duplicates(self, names: pa.Array, ids: np.ndarray, where: list[str]) -> np.ndarray:
        if len(ids) == 0:
            return np.ones(0, dtype=bool)
        keep = self.first_ids.keep_mask(names, ids)
        for i in np.flatnonzero(~keep):
            self.report.skip(
                DUPLICATE_CHUNK_ID,
                f"{self.path}: {where[i]}",
                f"chunk_id {ids[i]} of {names[i].as_py()!r} already seen; the first is kept",
            )
        return keep

    def from_arrow(
        self, batch: pa.RecordBatch, columns: dict[str, str], first_position: int
    ) -> pa.RecordBatch | None:
        """Validate a record batch column-wise (one pass of Arrow compute / numpy per check)."""
        report = self.report
        self.records_in_file += batch.num_rows
        batch = pa.RecordBatch.from_arrays(
            [plain_layout(batch.column(name)) for name in batch.schema.names], names=batch.schema.names
        )
        positions = np.arange(first_position, first_position + batch.num_rows)
        names = _string_column(batch.column(columns["file_name"]), self.path, "file_name")
        if self.partition_key is not None:
            mask = partition_mask(names, self.partition_key)
            batch, names = batch.filter(mask), names.filter(mask)
            positions = positions[mask.to_numpy(zero_copy_only=False)]
        n = batch.num_rows
        report.records_seen += n
        if n == 0:
            return None
        # One reason per row, the first problem found; "" = fine so far.
        reasons = np.full(n, "", dtype=object)

        def flag(condition: np.ndarray, reason: str) -> None:
            reasons[(reasons == "") & condition] = reason

        flag(_null_or_empty(names), MISSING_FILE_NAME)
        flag(_invalid_utf8_rows(names), INVALID_UTF8)
        ids, id_problems = _chunk_ids(batch.column(columns["chunk_id"]))
        for reason, condition in id_problems:
            flag(condition, reason)
        content = _string_column(batch.column(columns["content"]), self.path, "content")
        flag(content.is_null().to_numpy(zero_copy_only=False), MISSING_CONTENT)
        bad_content = _invalid_utf8_rows(content)
        flag(bad_content, INVALID_UTF8)
        # utf8_trim_whitespace would fail on invalid text; those rows are already flagged.
        readable = pc.if_else(pa.array(bad_content), None, content) if bad_content.any() else content
        # utf8_is_space stops at the first non-space character instead of copying every trimmed string.
        blank = pc.or_(pc.equal(pc.binary_length(readable), 0), pc.utf8_is_space(readable))
        flag(pc.fill_null(blank, False).to_numpy(zero_copy_only=False), EMPTY_CONTENT)
        embedding_column = batch.column(columns["embedding"])
        flag(embedding_column.is_null().to_numpy(zero_copy_only=False), MISSING_EMBEDDING)
        value_type = getattr(embedding_column.type, "value_type", None)
        if value_type is None or not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
            flag(np.ones(n, dtype=bool), EMBEDDING_NOT_NUMERIC)
        else:
            lengths = pc.fill_null(pc.list_value_length(embedding_column), -1).to_numpy(zero_copy_only=False)
            flag(lengths != self.dims, EMBEDDING_LENGTH)
        embeddings = np.zeros((0, self.dims), dtype=np.float32)
        candidates = np.flatnonzero(reasons == "")
        if len(candidates):
            chosen = embedding_column.filter(pa.array(reasons == ""))
            flat = pc.list_flatten(chosen).to_numpy(zero_copy_only=False)
            with np.errstate(over="ignore", invalid="ignore"):
                embeddings = flat.astype(np.float32, copy=False).reshape(len(candidates), self.dims)
            bad = np.zeros(n, dtype=bool)
            bad[candidates] = ~np.isfinite(embeddings).all(axis=1)
            flag(bad, EMBEDDING_NOT_FINITE)
            embeddings = embeddings[~bad[candidates]]
        for reason in np.unique(reasons[reasons != ""]):
            rows = np.flatnonzero(reasons == reason)
            report.skipped[reason] += len(rows)
            for row in rows[: max(0, MAX_PROBLEMS - len(report.problems))]:
                report.problems.append(f"{self.path}: record {positions[row]}: {reason}")
        good = np.flatnonzero(reasons == "")
        if len(good) == 0:
            return None
        good_mask = pa.array(reasons == "")
        names, content = nfc_column(names.filter(good_mask)), content.filter(good_mask)
        ids = ids[good]
        keep = self._drop_duplicates(names, ids, [f"record {positions[i]}" for i in good])
        keep_mask = pa.array(keep)
        extras = {}
        for column in EXTRA_COLUMNS:
            if column in columns:
                values = batch.column(columns[column]).filter(good_mask).filter(keep_mask)
                if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                    continue
                extras[column] = values
        if not keep.any():
            return None
        return canonical_batch(
            names.filter(keep_mask),
            ids[keep],
            content.filter(keep_mask),
            embeddings[keep],
            self.dims,
            extras,
        )


def _string_column(column: pa.Array, path: Path, field: str) -> pa.Array:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        # Binary columns may hold text; invalid UTF-8 is then caught row by row.
        return column.view(pa.string() if pa.types.is_binary(column.type) else pa.large_string())
    raise KnowledgeBaseFormatError(path, None, f"column {field} has type {column.type}, expected text")


def _has_bad_utf8(column: pa.Array) -> bool:
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        return True
    return False


def _invalid_utf8_rows(column: pa.Array) -> np.ndarray:
    if not _has_bad_utf8(column):
        return np.zeros(len(column), dtype=bool)
    raw = column.view(pa.binary() if pa.types.is_string(column.type) else pa.large_binary()).to_pylist()
    bad = np.zeros(len(raw), dtype=bool)
    for i, value in enumerate(raw):
        if value is not None:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                bad[i] = True
    return bad


def _null_or_empty(column: pa.Array) -> np.ndarray:
    lengths = pc.binary_length(column)
    return pc.fill_null(pc.equal(lengths, 0), True).to_numpy(zero_copy_only=False)


def _chunk_ids(column: pa.Array) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """chunk_id as int32 (0 where invalid) and the rows that are missing, non-integer or out of range."""
    n = len(column)
    missing = column.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_integer(column.type):
        # Compared in the column's own type: a uint64 beyond int64 would make a cast to int64 fail.
        raw = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
        out_of_range = ~missing & ((raw < 0) | (raw > _INT32_MAX))
        values = np.where(out_of_range, 0, raw).astype(np.int64)
        problems = [(MISSING_CHUNK_ID, missing), (CHUNK_ID_OUT_OF_RANGE, out_of_range)]
    elif pa.types.is_floating(column.type) or pa.types.is_decimal(column.type):
        floats = pc.fill_null(column.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        not_integer = ~missing & ~(np.isfinite(floats) & (floats == np.trunc(floats)))
        with np.errstate(invalid="ignore"):
            out_of_range = ~missing & ~not_integer & ((floats < 0) | (floats > _INT32_MAX))
        values = np.where(not_integer | out_of_range, 0, floats).astype(np.int64)
        problems = [
            (MISSING_CHUNK_ID, missing),
            (CHUNK_ID_NOT_INTEGER, not_integer),
            (CHUNK_ID_OUT_OF_RANGE, out_of_range),
        ]
    else:
        values = np.zeros(n, dtype=np.int64)
        problems = [(MISSING_CHUNK_ID, missing), (CHUNK_ID_NOT_INTEGER, ~missing)]
    valid = ~np.logical_or.reduce([p for _, p in problems])
    return np.where(valid, values, 0).astype(np.int32), problems


def groups(names: pa.Array) -> Iterator[tuple[str, np.ndarray]]:
    """(name, row indices in order) for each distinct name of a batch column."""
    encoded = pc.dictionary_encode(names)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(encoded.dictionary) + 1))
    for code, name in enumerate(encoded.dictionary.to_pylist()):
        yield name, order[bounds[code] : bounds[code + 1]]
