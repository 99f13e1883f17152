"""Finding the Data Miner's output and reading each of its formats as a stream (DESIGN §2).

Discovery order, content-based format detection, and one streaming reader per format. Readers yield
raw material in bounded pieces: Arrow record batches (Parquet, Arrow IPC file and stream) or lists
of decoded JSON values (JSON array, JSON lines, concatenated JSON objects). Turning those into
canonical records is ``hasher_core.knowledge.validate``'s job; here only structural damage (a
truncated tail, a line that is not JSON) is counted, in the ReadReport.

JSON arrays and concatenated objects are parsed incrementally with ``json.JSONDecoder.raw_decode``
over a sliding text buffer: one record is decoded at a time, and the buffer grows geometrically only
while a single record is larger than it, so memory is bounded by the largest record plus one read
chunk.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hasher_core.errors import KnowledgeBaseFormatError

from .keys import safe_partition_key
from .report import MALFORMED_JSON, TRUNCATED, ReadReport
from .text import (
    INVALID_TEXT_ERRORS,
    describe_encoding,
    incremental_decoder,
    sniff_json_encoding,
)

Format = Literal["parquet", "arrow_file", "arrow_stream", "json_array", "jsonl", "json_stream"]

# Everything the stdlib JSON parser raises on one bad value: syntax (JSONDecodeError), an integer longer
# than Python's 4,300-digit conversion limit (ValueError), nesting deeper than the interpreter's stack
# (RecursionError). Each is one bad record, never a reason to abandon the file.
JSON_VALUE_ERRORS = (ValueError, RecursionError)

# DESIGN §2 priority; the last two are what the Go miner actually writes.
DISCOVERY_ORDER = (
    "ai_knowledge_base.parquet",
    "backup/json/ai_knowledge_base.json",
    "json/ai_knowledge_base.json",
    "json/ai_knowledge_base.arrow",
)

# Accepted spellings per canonical field: snake_case (Alpaca writer, Parquet) and Go field names.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "file_name": ("file_name", "FileName", "fileName"),
    "chunk_id": ("chunk_id", "ChunkID", "chunkId", "ChunkId"),
    "content": ("content", "Content"),
    "embedding": ("embedding", "Embedding"),
    "instruction": ("instruction", "Instruction"),
    "input": ("input", "Input"),
    "output": ("output", "Output"),
}
REQUIRED_FIELDS = ("file_name", "chunk_id", "content", "embedding")

READ_CHUNK_BYTES = 1 << 20
# Bytes of raw JSON gathered before a piece is handed on, so a batch of huge records stays bounded.
PIECE_BYTES = 128 << 20
# A JSON value that does not decode within this many characters is treated as malformed.
MAX_RECORD_CHARS = 512 << 20

_HEAD_BYTES = 4096
_JSON_SPACE = " \t\n\r"
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NEXT_OBJECT = re.compile(r",[ \t\n\r]*(?=\{)")
# Between concatenated objects (what ``jq '.[]'`` writes) a new object starts a line.
_NEXT_STREAM_OBJECT = re.compile(r"\n(?=\{)")
_RESYNC_TRIES = 1000


def discovery_candidates(miner_dir: Path, explicit: Path | None = None) -> list[Path]:
    """Paths to try, in priority order: the explicit path alone when given, else DESIGN §2's list."""
    if explicit is not None:
        return [Path(explicit).expanduser()]
    root = Path(miner_dir).expanduser()
    return [root / name for name in DISCOVERY_ORDER]


def detect_format(path: Path) -> Format:
    """The file's format from its first bytes (magic numbers, or the first non-space JSON character in
    whichever Unicode encoding form :func:`~hasher_core.knowledge.text.sniff_json_encoding` finds)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
        if not head:
            raise KnowledgeBaseFormatError(path, None, "empty file")
        if head.startswith(b"PAR1"):
            return "parquet"
        if head.startswith(b"ARROW1"):
            return "arrow_file"
        if head.startswith(b"\xff\xff\xff\xff"):
            return "arrow_stream"
        codec, bom = sniff_json_encoding(head)
        decoder = incremental_decoder(codec)
        text = decoder.decode(head[bom:]).lstrip(_JSON_SPACE)
        while not text:
            more = f.read(_HEAD_BYTES)
            if not more:
                raise KnowledgeBaseFormatError(path, None, "file holds only whitespace")
            text = decoder.decode(more).lstrip(_JSON_SPACE)
    if text.startswith("["):
        return "json_array"
    if text.startswith("{"):
        return "jsonl" if _first_line_is_one_object(path) else "json_stream"
    hint = " (JSON null: the Go writer's output for an empty run)" if text.startswith("null") else ""
    return _unrecognised(path, head, codec, bom, hint)


def _unrecognised(path: Path, head: bytes, codec: str, bom: int, hint: str) -> Format:
    if codec == "utf-8":
        try:
            head[bom:].decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.reason != "unexpected end of data" or len(head) < _HEAD_BYTES:  # not cut by the read
                raise KnowledgeBaseFormatError(
                    path,
                    None,
                    f"not valid UTF-8: byte 0x{head[bom + exc.start]:02x} at offset {bom + exc.start} "
                    f"({exc.reason}); JSON is read in UTF-8, UTF-16 or UTF-32, never in a legacy code page "
                    "such as Windows-1252: save it as UTF-8",
                ) from None
    raise KnowledgeBaseFormatError(
        path,
        None,
        f"unrecognised content{hint}, first bytes {head[:8].hex(' ')} (read as "
        f"{describe_encoding(codec, bom)}); expected Parquet (PAR1), Arrow IPC file (ARROW1) or stream "
        "(0xFFFFFFFF), a JSON array ([) or JSON lines ({)",
    )


def _text_lines(path: Path) -> Iterator[tuple[int, str, bool, int]]:
    """``(1-based line number, text, ends with a newline, bytes)`` of each line of a JSON text, the
    byte-order mark dropped. UTF-8 is split on bytes (invalid bytes kept as lone surrogates, which
    validation rejects per record); UTF-16/32 are decoded first and split on U+000A."""
    with open(path, "rb") as f:
        codec, bom = sniff_json_encoding(f.read(4))
        f.seek(bom)
        if codec == "utf-8":
            for number, raw in enumerate(f, start=1):
                yield number, raw.decode("utf-8", "surrogateescape"), raw.endswith(b"\n"), len(raw)
            return
        unit = 2 if codec.startswith("utf-16") else 4
        with io.TextIOWrapper(f, encoding=codec, errors=INVALID_TEXT_ERRORS, newline="\n") as text:
            for number, line in enumerate(text, start=1):
                yield number, line, line.endswith("\n"), unit * len(line)


def _first_line_is_one_object(path: Path) -> bool:
    """True when the first non-blank line holds a whole object (JSON lines), False when an object spans
    lines (pretty-printed objects one after another, as ``jq '.[]'`` writes)."""
    for _number, line, _newline, _size in _text_lines(path):
        line = line.strip(_JSON_SPACE + "\ufeff")
        if line:
            return line.endswith("}")
    return False


def resolve_columns(names: list[str], path: Path) -> dict[str, str]:
    """Canonical field → column name in the file; a missing required field makes the file unreadable."""
    present = set(names)
    resolved: dict[str, str] = {}
    for field, aliases in FIELD_ALIASES.items():
        found = next((a for a in aliases if a in present), None)
        if found is None:
            lowered = {n.lower().replace("_", ""): n for n in names}
            found = lowered.get(field.replace("_", ""))
        if found is not None:
            resolved[field] = found
    missing = [f for f in REQUIRED_FIELDS if f not in resolved]
    if missing:
        raise KnowledgeBaseFormatError(
            path, None, f"missing column(s) {', '.join(missing)}; columns present: {', '.join(names)}"
        )
    return resolved


def plain_layout(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The same values in the layout the validator reads: one chunk, no dictionary, no views.

    Common writers differ only in layout: polars (``write_ipc``, ``write_parquet``) writes
    ``string_view`` / ``large_string`` text and ``large_list<double>`` embeddings, pandas and Spark
    dictionary-encode strings, NumPy-minded writers use ``fixed_size_list``, and any of them may split a
    column into chunks. Views become large strings/binaries, dictionaries are decoded, every list kind
    becomes ``list<value>``; value types (float64, float16, integers) are left for validation to check.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if pa.types.is_dictionary(kind):
        # polars categoricals are dictionaries of string_view, which Arrow cannot decode directly.
        column = pa.DictionaryArray.from_arrays(column.indices, plain_layout(column.dictionary))
        column = column.dictionary_decode()
        kind = column.type
    if pa.types.is_string_view(kind):
        return column.cast(pa.large_string())
    if pa.types.is_binary_view(kind):
        return column.cast(pa.large_binary())
    if (
        pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
        or pa.types.is_list_view(kind)
        or pa.types.is_large_list_view(kind)
    ):
        return column.cast(pa.list_(kind.value_type))
    return column


def partition_mask(file_names: pa.Array | pa.ChunkedArray, partition_key: str) -> pa.Array:
    """True where ``safe_partition_key(file_name) == partition_key``; one key per distinct name."""
    file_names = plain_layout(file_names)
    encoded = file_names if pa.types.is_dictionary(file_names.type) else pc.dictionary_encode(file_names)
    matches = [
        isinstance(n, str) and safe_partition_key(n) == partition_key for n in encoded.dictionary.to_pylist()
    ]
    mask = pc.take(pa.array(matches, pa.bool_()), encoded.indices)
    return pc.fill_null(mask, False)


def iter_parquet(
    path: Path, batch_rows: int, partition_key: str | None
) -> Iterator[tuple[pa.RecordBatch, dict[str, str], int]]:
    """Record batches of the needed columns; with a partition key, row groups without it are skipped."""
    pf = pq.ParquetFile(path, page_checksum_verification=True)
    columns = resolve_columns(pf.schema_arrow.names, path)
    wanted = list(dict.fromkeys(columns.values()))
    position = 0
    for group in range(pf.num_row_groups):
        rows = pf.metadata.row_group(group).num_rows
        if partition_key is not None:
            names = pf.read_row_group(group, columns=[columns["file_name"]]).column(0)
            if not pc.any(partition_mask(names, partition_key)).as_py():
                position += rows
                continue
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[group], columns=wanted):
            yield batch, columns, position
            position += batch.num_rows


def _slices(batch: pa.RecordBatch, batch_rows: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    for start in range(0, batch.num_rows, batch_rows):
        yield start, batch.slice(start, batch_rows)


def iter_arrow_file(path: Path, batch_rows: int) -> Iterator[tuple[pa.RecordBatch, dict[str, str], int]]:
    """Record batches of an Arrow IPC file (memory-mapped: pages are read as batches are used)."""
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        columns = resolve_columns(reader.schema.names, path)
        wanted = list(dict.fromkeys(columns.values()))
        position = 0
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i).select(wanted)
            for start, piece in _slices(batch, batch_rows):
                yield piece, columns, position + start
            position += batch.num_rows


def iter_arrow_stream(
    path: Path, batch_rows: int, report: ReadReport
) -> Iterator[tuple[pa.RecordBatch, dict[str, str], int]]:
    """Record batches of an Arrow IPC stream (what Go's ipc.NewWriter writes).

    A stream cut off after some complete batches (the miner killed mid-write) keeps those batches and
    counts the broken tail as one ``truncated`` record; a stream broken before its first batch is
    unreadable, so discovery falls back.
    """
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_stream(source)
        columns = resolve_columns(reader.schema.names, path)
        wanted = list(dict.fromkeys(columns.values()))
        position = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError) as exc:
                if position == 0:
                    raise
                report.records_seen += 1
                report.skip(TRUNCATED, f"{path}: after record {position - 1}", f"stream cut off: {exc}")
                return
            batch = batch.select(wanted)
            for start, piece in _slices(batch, batch_rows):
                yield piece, columns, position + start
            position += batch.num_rows


def iter_jsonl(path: Path, batch_rows: int, report: ReadReport) -> Iterator[tuple[list[Any], list[int]]]:
    """Decoded JSON lines with their 1-based line numbers; bad lines are counted, not fatal.

    UTF-8, UTF-16 and UTF-32 are read (:func:`~hasher_core.knowledge.text.sniff_json_encoding`).
    Invalid text inside a string survives as lone surrogates and is rejected per record
    (``invalid_utf8``) rather than failing the whole file.
    """
    values: list[Any] = []
    lines: list[int] = []
    pending_bytes = 0
    report.encoding = _json_encoding_name(path)
    for line_number, text, has_newline, size in _text_lines(path):
        if not text.strip(_JSON_SPACE):
            continue
        if line_number == 1:
            text = text.removeprefix("\ufeff")
        try:
            value = json.loads(text)
        except JSON_VALUE_ERRORS as exc:
            report.records_seen += 1
            # Only the last line can be a cut-off write; a bad line with a newline after it is malformed.
            reason = TRUNCATED if not has_newline else MALFORMED_JSON
            report.skip(reason, f"{path}: line {line_number}", _json_error(exc))
            continue
        values.append(value)
        lines.append(line_number)
        pending_bytes += size
        if len(values) >= batch_rows or pending_bytes >= PIECE_BYTES:
            yield values, lines
            values, lines, pending_bytes = [], [], 0
    if values:
        yield values, lines


def _json_encoding_name(path: Path) -> str:
    with open(path, "rb") as f:
        return describe_encoding(*sniff_json_encoding(f.read(4)))


class _TextWindow:
    """A sliding window of decoded text over a binary file, for incremental JSON parsing."""

    def __init__(self, f: Any, codec: str = "utf-8") -> None:
        self._file = f
        self._decoder = incremental_decoder(codec)
        self.text = ""
        self.pos = 0
        self.offset = 0  # characters dropped from the front so far
        self.eof = False

    def fill(self, at_least: int = 0) -> None:
        """Drop consumed text and append at least ``at_least`` more bytes' worth (unless at EOF)."""
        if self.pos:
            self.offset += self.pos
            self.text = self.text[self.pos :]
            self.pos = 0
        data = self._file.read(max(at_least, READ_CHUNK_BYTES))
        if not data:
            self.eof = True
            self.text += self._decoder.decode(b"", final=True)
            return
        self.text += self._decoder.decode(data)

    def skip_whitespace(self) -> bool:
        """Advance past whitespace, reading as needed; False at end of file."""
        while True:
            self.pos = _WHITESPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text):
                return True
            if self.eof:
                return False
            self.fill()


def iter_json_array(path: Path, batch_rows: int, report: ReadReport) -> Iterator[tuple[list[Any], list[int]]]:
    """Elements of a top-level JSON array with their 0-based index, decoded one at a time.

    A record that does not decode is skipped as ``malformed_json`` when a later record can be found
    to resume from; a file that ends inside a record (a cut-off write) counts the tail as one
    ``truncated`` record and keeps everything before it.
    """
    return _iter_json_values(path, batch_rows, report, in_array=True)


def iter_json_stream(
    path: Path, batch_rows: int, report: ReadReport
) -> Iterator[tuple[list[Any], list[int]]]:
    """Objects of a concatenated JSON stream (pretty-printed objects one after another, what
    ``jq '.[]'`` writes) with their 0-based index; bad and cut-off records as in :func:`iter_json_array`.
    """
    return _iter_json_values(path, batch_rows, report, in_array=False)


def _iter_json_values(
    path: Path, batch_rows: int, report: ReadReport, in_array: bool
) -> Iterator[tuple[list[Any], list[int]]]:
    decoder = json.JSONDecoder()
    resume_at = _NEXT_OBJECT if in_array else _NEXT_STREAM_OBJECT
    values: list[Any] = []
    indexes: list[int] = []
    pending_chars = 0
    report.encoding = _json_encoding_name(path)
    with open(path, "rb") as f:
        codec, bom = sniff_json_encoding(f.read(4))
        f.seek(bom)
        window = _TextWindow(f, codec)
        window.fill()
        window.text = window.text.removeprefix("\ufeff")
        if in_array:
            if not window.skip_whitespace() or window.text[window.pos] != "[":
                raise KnowledgeBaseFormatError(path, None, "not a JSON array")
            window.pos += 1
        index = 0
        expect_value = True
        while True:
            if not window.skip_whitespace():
                if in_array:
                    report.records_seen += 1
                    report.skip(TRUNCATED, f"{path}: record {index}", "file ends before the closing ]")
                break
            char = window.text[window.pos]
            if not expect_value:
                if char == ",":
                    window.pos += 1
                    expect_value = True
                    continue
                if char == "]":
                    break
                report.records_seen += 1
                report.skip(MALFORMED_JSON, f"{path}: record {index}", f"expected , or ] but found {char!r}")
                if not _resync(window, decoder, resume_at):
                    break
                index += 1
                expect_value = True
                continue
            if char == "]" and index == 0 and in_array:
                break
            try:
                value, end = decoder.raw_decode(window.text, window.pos)
            except JSON_VALUE_ERRORS as exc:
                pending = len(window.text) - window.pos
                if not window.eof and pending < MAX_RECORD_CHARS:
                    window.fill(at_least=pending)  # doubles the window: linear total work for big records
                    continue
                report.records_seen += 1
                where = f"{path}: record {index} (character {window.offset + window.pos})"
                if _resync(window, decoder, resume_at):
                    report.skip(MALFORMED_JSON, where, _json_error(exc))
                    index += 1
                    continue
                if not window.eof:
                    raise KnowledgeBaseFormatError(
                        path, index, f"no valid JSON within {MAX_RECORD_CHARS} characters: {_json_error(exc)}"
                    ) from exc
                if isinstance(exc, json.JSONDecodeError):
                    report.skip(TRUNCATED, where, f"file ends inside the record: {exc.msg}")
                else:
                    report.skip(MALFORMED_JSON, where, _json_error(exc))
                break
            values.append(value)
            indexes.append(index)
            pending_chars += end - window.pos
            window.pos = end
            index += 1
            expect_value = not in_array  # an array needs a comma first; a stream's next value may follow
            if len(values) >= batch_rows or pending_chars >= PIECE_BYTES:
                yield values, indexes
                values, indexes, pending_chars = [], [], 0
    if values:
        yield values, indexes


def _json_error(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    if isinstance(exc, RecursionError):
        return "nested too deeply to parse"
    return str(exc).splitlines()[0][:200]


def _resync(window: _TextWindow, decoder: json.JSONDecoder, resume_at: re.Pattern[str]) -> bool:
    """Move to the next ``{`` where ``resume_at`` says an object may start (after a comma in an array,
    at a line start in a stream) that starts a decodable object; False when there is none."""
    for tries, match in enumerate(resume_at.finditer(window.text, window.pos + 1)):
        if tries >= _RESYNC_TRIES:
            break
        start = match.end()
        try:
            decoder.raw_decode(window.text, start)
        except JSON_VALUE_ERRORS:
            if window.eof:
                continue
        window.pos = start
        return True
    return False
