"""The raw-text inbox: text in, canonical knowledge-base records out (DESIGN §2).

Users without a Data Miner drop ``.txt``/``.md`` files into the inbox; each file is one partition,
chunked into 150-word windows with a 25-word overlap (chunks under 10 words dropped) and embedded by
whatever embedder resource is configured. Finding the inbox files is the storage resource's job.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from hasher_core.design import EMBEDDING_DIMS
from hasher_core.embedding import TextEmbedder, check_embeddings
from hasher_core.errors import KnowledgeBaseError, KnowledgeBaseFormatError
from hasher_core.schemas import canonical_batch

from .report import ReadReport

#: Chunking of raw text (DESIGN §2): 150-word chunks with a 25-word overlap, shorter than 10 dropped.
CHUNK_WORDS = 150
CHUNK_OVERLAP = 25
MIN_CHUNK_WORDS = 10


def chunk_words(
    text: str, size: int = CHUNK_WORDS, overlap: int = CHUNK_OVERLAP, min_words: int = MIN_CHUNK_WORDS
) -> list[str]:
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
        reason = (
            "empty file"
            if not raw.strip()
            else f"no chunk of at least {MIN_CHUNK_WORDS} words (the file has {words})"
        )
        raise KnowledgeBaseFormatError(path, None, reason)
    report.records_seen += len(chunks)
    for start in range(0, len(chunks), batch_rows):
        texts = chunks[start : start + batch_rows]
        try:
            vectors = embedder.embed(texts)
        except Exception as exc:  # the embedder is outside code (a server, a library): say what it had
            which = f"{path}: embedding chunks {start}..{start + len(texts) - 1}"
            raise KnowledgeBaseError(f"{which} failed: {type(exc).__name__}: {exc}") from exc
        embeddings = check_embeddings(vectors, len(texts), dims, where=str(path), error=KnowledgeBaseError)
        ids = np.arange(start, start + len(texts), dtype=np.int32)
        batch = canonical_batch([path.name] * len(texts), ids, texts, embeddings, dims)
        report.records_kept += batch.num_rows
        report.batches += 1
        yield batch
