"""The raw-text inbox and the sample-data writer: text in, canonical knowledge-base records out (DESIGN §2).

Users without a Data Miner drop ``.txt``/``.md`` files into the inbox; each file is one partition,
chunked into 150-word windows with a 25-word overlap (chunks under 10 words dropped) and embedded by
whatever embedder resource is configured. ``write_sample_knowledge_base`` goes the other way and
writes documents in the miner's own layout, so the bundled sample data exercises the same readers
as real miner output.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hasher_core.errors import KnowledgeBaseError, KnowledgeBaseFormatError
from hasher_core.knowledge_schema import (
    EMBEDDING_DIMS,
    ReadReport,
    canonical_batch,
    safe_partition_key,
)

INBOX_SUFFIXES = (".txt", ".md")
# Readers hold about one row group in memory, so sample files keep them modest.
SAMPLE_ROW_GROUP_ROWS = 8192


class TextEmbedder(Protocol):
    """Anything with ``embed(texts) -> float32[N, dims]``, e.g. the embedder resources."""

    def embed(self, texts: list[str]) -> np.ndarray: ...


def chunk_words(text: str, size: int = 150, overlap: int = 25, min_words: int = 10) -> list[str]:
    """Whitespace-word windows of ``size`` words advancing by ``size - overlap``; short ones dropped.

    The last window is the one that reaches the end of the text, so no chunk is made only of the
    previous chunk's overlap.
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need size > 0 and 0 <= overlap < size, got size={size}, overlap={overlap}")
    words = text.split()
    chunks = []
    for start in range(0, len(words), size - overlap):
        window = words[start : start + size]
        if len(window) >= min_words:
            chunks.append(" ".join(window))
        if start + size >= len(words):
            break
    return chunks


def inbox_files(inbox_dir: Path) -> dict[str, Path]:
    """Partition key → path of each ``.txt``/``.md`` file directly in the inbox (hidden files ignored)."""
    inbox_dir = Path(inbox_dir).expanduser()
    if not inbox_dir.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(inbox_dir.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in INBOX_SUFFIXES or not path.is_file():
            continue
        found[safe_partition_key(path.name)] = path
    return found


def read_inbox_file(
    path: Path,
    embedder: TextEmbedder,
    *,
    dims: int = EMBEDDING_DIMS,
    report: ReadReport | None = None,
    batch_rows: int = 256,
) -> Iterator[pa.RecordBatch]:
    """Canonical batches for one inbox file: its chunks, ``chunk_id`` = chunk index, embedded in batches.

    The file must be UTF-8 (a BOM is allowed); anything else is an error naming the byte offset, because
    guessing an encoding would silently change the text every later stage trains on.
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    report.path_used, report.format = path, "text"
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise KnowledgeBaseFormatError(
            path, None, f"not valid UTF-8 at byte offset {exc.start} ({exc.reason}); save it as UTF-8"
        ) from exc
    chunks = chunk_words(text)
    if not chunks:
        words = len(text.split())
        reason = "empty file" if not raw.strip() else f"no chunk of at least 10 words (the file has {words})"
        raise KnowledgeBaseFormatError(path, None, reason)
    report.records_seen += len(chunks)
    for start in range(0, len(chunks), batch_rows):
        texts = chunks[start : start + batch_rows]
        embeddings = _checked_embeddings(embedder.embed(texts), len(texts), dims, path)
        ids = np.arange(start, start + len(texts), dtype=np.int32)
        batch = canonical_batch([path.name] * len(texts), ids, texts, embeddings, dims)
        report.records_kept += batch.num_rows
        report.batches += 1
        yield batch


def _checked_embeddings(embeddings: np.ndarray, count: int, dims: int, path: Path) -> np.ndarray:
    array = np.asarray(embeddings, dtype=np.float32)
    if array.shape != (count, dims):
        raise KnowledgeBaseError(
            f"{path}: the embedder returned shape {array.shape}, expected ({count}, {dims})"
        )
    if not np.isfinite(array).all():
        raise KnowledgeBaseError(f"{path}: the embedder returned NaN or infinite values")
    return array


def write_sample_knowledge_base(
    out_dir: Path, documents: dict[str, str], embedder: TextEmbedder
) -> dict[str, Path]:
    """Chunk and embed ``documents`` (name → text) and write them in the Data Miner's layout.

    Writes ``ai_knowledge_base.parquet`` (snake_case columns, ``embedding`` as list<float32> like the
    miner) and ``json/ai_knowledge_base.json`` (a JSON array with Go field names ``FileName``,
    ``ChunkID``, ``Content``, ``Embedding``). Floats are written as the exact decimal of each float32,
    so both files read back to identical records. Each file is written to a temporary name and
    renamed, so a reader never sees half a file.
    """
    out_dir = Path(out_dir)
    dims = int(getattr(embedder, "dims", EMBEDDING_DIMS))
    names: list[str] = []
    ids: list[int] = []
    contents: list[str] = []
    blocks: list[np.ndarray] = []
    for name, text in documents.items():
        chunks = chunk_words(text)
        if not chunks:
            raise KnowledgeBaseError(f"sample document {name!r} has no chunk of at least 10 words")
        blocks.append(_checked_embeddings(embedder.embed(chunks), len(chunks), dims, Path(name)))
        names += [name] * len(chunks)
        ids += range(len(chunks))
        contents += chunks
    embeddings = np.concatenate(blocks) if blocks else np.zeros((0, dims), np.float32)
    table = pa.table(
        {
            "file_name": pa.array(names, pa.string()),
            "chunk_id": pa.array(ids, pa.int32()),
            "content": pa.array(contents, pa.string()),
            "embedding": pa.ListArray.from_arrays(
                pa.array(np.arange(0, len(names) * dims + 1, dims, dtype=np.int32)),
                pa.array(embeddings.reshape(-1), pa.float32()),
            ),
        }
    )
    parquet_path = out_dir / "ai_knowledge_base.parquet"
    json_path = out_dir / "json" / "ai_knowledge_base.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(
        parquet_path,
        lambda tmp: pq.write_table(
            table, tmp, compression="zstd", write_page_checksum=True, row_group_size=SAMPLE_ROW_GROUP_ROWS
        ),
    )
    exact = embeddings.astype(np.float64).tolist()
    records = (
        json.dumps(
            {"FileName": n, "ChunkID": i, "Content": c, "Embedding": e},
            ensure_ascii=False,
        )
        for n, i, c, e in zip(names, ids, contents, exact, strict=True)
    )

    def write_json(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("[\n")
            for k, record in enumerate(records):
                f.write((",\n  " if k else "  ") + record)
            f.write("\n]\n")

    _atomic(json_path, write_json)
    return {"parquet": parquet_path, "json": json_path}


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
