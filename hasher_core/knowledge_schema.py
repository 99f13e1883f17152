"""The canonical knowledge-base schema, its errors, the read report and safe partition keys (DESIGN §2).

Everything downstream of stage 1 sees only this schema, whatever the miner wrote (Parquet, Arrow,
JSON with Go or snake_case names) or whether the text came from the raw-text inbox. The schema, the
skip reasons and the partition-key rule live here and nowhere else.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

EMBEDDING_DIMS = 768

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

# Skip reasons, the keys of ReadReport.skipped.
MISSING_FILE_NAME = "missing_file_name"
MISSING_CHUNK_ID = "missing_chunk_id"
CHUNK_ID_NOT_INTEGER = "chunk_id_not_integer"
CHUNK_ID_OUT_OF_RANGE = "chunk_id_out_of_range"
MISSING_CONTENT = "missing_content"
EMPTY_CONTENT = "empty_content"
INVALID_UTF8 = "invalid_utf8"
MISSING_EMBEDDING = "missing_embedding"
EMBEDDING_NOT_NUMERIC = "embedding_not_numeric"
EMBEDDING_LENGTH = "embedding_length"
EMBEDDING_NOT_FINITE = "embedding_not_finite"
NOT_AN_OBJECT = "not_an_object"
MALFORMED_JSON = "malformed_json"
TRUNCATED = "truncated"
DUPLICATE_CHUNK_ID = "duplicate_chunk_id"

MAX_PROBLEMS = 20


@dataclass
class ReadReport:
    """What a read did: the file used, the candidates rejected and why, and the records skipped per reason.

    The generators fill it in as they go, so it is complete once the generator is exhausted.
    """

    path_used: Path | None = None
    format: str | None = None
    partition_key: str | None = None
    searched: list[Path] = field(default_factory=list)
    fallbacks: list[tuple[Path, str]] = field(default_factory=list)
    records_seen: int = 0
    records_kept: int = 0
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    problems: list[str] = field(default_factory=list)
    batches: int = 0

    @property
    def records_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def duplicates(self) -> int:
        return self.skipped[DUPLICATE_CHUNK_ID]

    def skip(self, reason: str, where: str, detail: str = "", count: int = 1) -> None:
        """Count ``count`` skipped records for ``reason``; keep the first MAX_PROBLEMS descriptions."""
        self.skipped[reason] += count
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{where}: {reason}" + (f" ({detail})" if detail else ""))

    def restart(self) -> None:
        """Forget the per-file counts after a fallback; the list of rejected candidates stays."""
        self.path_used = None
        self.format = None
        self.records_seen = self.records_kept = self.batches = 0
        self.skipped = collections.Counter()
        self.problems = []

    def as_metadata(self) -> dict[str, Any]:
        """Plain JSON-able values for Dagster materialization metadata."""
        return {
            "path_used": str(self.path_used) if self.path_used else None,
            "format": self.format,
            "partition_key": self.partition_key,
            "fallbacks": [f"{p}: {why}" for p, why in self.fallbacks],
            "records_seen": self.records_seen,
            "records_kept": self.records_kept,
            "records_skipped": self.records_skipped,
            "skipped": dict(sorted(self.skipped.items())),
            "duplicates": self.duplicates,
            "problems": list(self.problems),
        }


_INVALID_SUBSTRINGS = ("..", "/", "\\")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# A name that already looks like a sanitized key is hashed too, so no raw name can collide with one.
_SANITIZED_SHAPE = re.compile(r"~[0-9a-f]{10}$")
_MAX_KEY = 100
_READABLE_MAX = 80


def _is_safe_key(name: str) -> bool:
    return (
        0 < len(name) <= _MAX_KEY
        and not name.startswith(".")
        and name == name.strip()
        and not any(s in name for s in _INVALID_SUBSTRINGS)
        and not _CONTROL.search(name)
        and not _SANITIZED_SHAPE.search(name)
    )


@functools.lru_cache(maxsize=65536)
def safe_partition_key(name: str) -> str:
    """The Dagster partition key for a source file name: the name itself when safe, else a stable key.

    A safe name has no path separator, no ``..`` (Dagster also forbids ``...``), no control character,
    does not start with ``.``, has no surrounding spaces and is at most 100 characters. Anything else
    maps to ``<basename, cleaned>~<10 hex of blake2b(full name)>``: readable, stable across runs and
    machines, and distinct for distinct names (the hash covers the whole original name).
    """
    if _is_safe_key(name):
        return name
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=5).hexdigest()
    base = re.split(r"[/\\]", name.rstrip("/\\"))[-1]
    readable = _CONTROL.sub("_", base)
    readable = re.sub(r"\.{2,}", ".", readable).strip().lstrip(".")[:_READABLE_MAX].strip()
    return f"{readable or 'source'}~{digest}"


def default_miner_dir() -> Path:
    """``HASHER_MINER_DIR``, default ``~/.local/share/dataminer``."""
    return Path(os.environ.get("HASHER_MINER_DIR") or "~/.local/share/dataminer").expanduser()


def default_inbox_dir(miner_dir: Path | None = None) -> Path:
    """``HASHER_INBOX_DIR``, default ``<miner_dir>/inbox``."""
    env = os.environ.get("HASHER_INBOX_DIR")
    if env:
        return Path(env).expanduser()
    return (miner_dir if miner_dir is not None else default_miner_dir()) / "inbox"


def canonical_batch(
    source_file: list[str] | pa.Array,
    chunk_id: Any,
    content: list[str] | pa.Array,
    embeddings: Any,
    dims: int,
    extras: dict[str, pa.Array | list[str | None]] | None = None,
) -> pa.RecordBatch:
    """Assemble a canonical batch from already-validated columns (embeddings: float32[N, dims])."""
    import numpy as np

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
