"""What a read of a knowledge base did (DESIGN §2): the file used, the fallbacks, and the records
skipped per reason. The skip reasons are the keys of :attr:`ReadReport.skipped` and of the
``skipped_by_reason`` metadata a user sees.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    #: The text encoding of a JSON or text input (``"UTF-16LE with BOM"``); None for Parquet/Arrow.
    encoding: str | None = None
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
        self.encoding = None
        self.records_seen = self.records_kept = self.batches = 0
        self.skipped = collections.Counter()
        self.problems = []

    def as_metadata(self) -> dict[str, Any]:
        """Plain JSON-able values for Dagster materialization metadata."""
        return {
            "path_used": str(self.path_used) if self.path_used else None,
            "format": self.format,
            "encoding": self.encoding,
            "partition_key": self.partition_key,
            "fallbacks": [f"{p}: {why}" for p, why in self.fallbacks],
            "records_seen": self.records_seen,
            "records_kept": self.records_kept,
            "records_skipped": self.records_skipped,
            "skipped": dict(sorted(self.skipped.items())),
            "duplicates": self.duplicates,
            "problems": list(self.problems),
        }
