"""The frames writer of stage 2: knowledge-base batches streamed into one frames Parquet file, atomically.

Tokenising (tiktoken's Rust encoder releases the GIL) runs in a thread pool one batch ahead of
building and compressing the previous batch's frames; at most two batches are in memory. Window
frames are embedded and projected on every Numba thread, and 20 bytes of each (slot fingerprint,
target, context hash) are kept to count ambiguous contexts over the whole file at the end. The
transforms themselves are ``hasher_core.frames.windows``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tiktoken

from hasher_core.design import STRIDE, WINDOW_SIZE
from hasher_core.embedding import TextEmbedder
from hasher_core.errors import EmbedderError, TokenizeError
from hasher_core.frames.gorand import projection_matrix
from hasher_core.frames.tokens import encode_ordinary, load_cl100k
from hasher_core.frames.windows import (
    FrameOptions,
    ambiguity,
    batch_texts,
    build_frames,
    check_input,
    chunk_name,
    slot_fingerprints,
    validate_frame_options,
)
from hasher_core.schemas import FRAME_SCHEMA, SLOT_COLUMNS, TARGET_COLUMN

from .files import atomic_write

#: Descriptions of skipped chunks kept in the report (the counts cover all of them).
MAX_PROBLEMS = 20


@dataclass
class FramesReport:
    """Running totals of one :func:`write_frames` call; passed to ``progress`` after every batch."""

    path: str
    chunks: int = 0
    frames: int = 0
    tokens: int = 0
    content_bytes: int = 0
    #: Chunks that gave no frames: under 2 tokens, or (counted again below) no tokenizer could take them.
    skipped_chunks: int = 0
    #: Chunks skipped because no tokenizer path could take their text; named in ``problems``.
    tokenizer_failed: int = 0
    problems: list[str] = field(default_factory=list)
    batches: int = 0
    seconds: float = 0.0
    file_bytes: int = 0
    #: Window frames only (DESIGN §3.3): frames whose context also led to another next token, the
    #: number of such contexts, and frames whose slots another *text* shares (should be 0).
    ambiguous_frames: int = 0
    ambiguous_contexts: int = 0
    colliding_frames: int = 0
    done: bool = False

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def content_mb_per_second(self) -> float:
        return self.content_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def notes(self) -> tuple[list[str], list[str]]:
        """What a run's log should say about the frames: ``(information, warnings)`` lines — contexts
        seen with several next tokens, skipped chunks, frames whose slots another text shares."""
        info = []
        if self.ambiguous_frames:
            info.append(
                f"{self.ambiguous_frames} frames in {self.ambiguous_contexts} contexts seen with more than "
                "one next token (repeated text): inference answers the most frequent one"
            )
        warnings = list(self.problems)
        if self.colliding_frames:
            warnings.append(f"{self.colliding_frames} frames share their slots with a different text")
        return info, warnings

    def empty_note(self) -> str | None:
        """Why the partition has no frames (DESIGN §3.2: a chunk under 2 tokens has none), or None
        when it has some: a note for the stage where it happens, never a failed check later."""
        if self.frames:
            return None
        if not self.chunks:
            return "no frames: the knowledge base of this partition has no chunks"
        short = self.skipped_chunks - self.tokenizer_failed
        why = f"{short} chunk(s) under 2 tokens" if short else ""
        if self.tokenizer_failed:
            failed = f"{self.tokenizer_failed} the tokenizer could not take (see problems)"
            why = f"{why}, {failed}" if why else failed
        return (
            f"no frames: every chunk is too short ({why}); a frame needs a context token and the next "
            "token, so seeds and checkpoints of this partition are empty"
        )

    def as_metadata(self) -> dict[str, Any]:
        """Plain values for materialization metadata (the asset wraps them; no Dagster import here)."""
        out = asdict(self)
        out.update(
            seconds=round(self.seconds, 3),
            chunks_per_second=round(self.chunks_per_second, 1),
            frames_per_second=round(self.frames_per_second, 1),
            content_mb_per_second=round(self.content_mb_per_second, 2),
        )
        return out


def _prefetched(
    batches: Iterable[pa.RecordBatch], encoding: tiktoken.Encoding, pool: ThreadPoolExecutor
) -> Iterator[tuple[pa.RecordBatch, list[np.ndarray], list[tuple[int, TokenizeError]]]]:
    """Yield each batch with its tokens, and the rows no tokenizer path could take (those get no
    tokens), while the next batch is already being tokenized.

    Tokenizing (Rust, GIL released) overlaps with building and compressing the previous batch's
    frames; at most two batches are in memory at once.
    """

    def collect(
        pending: tuple[pa.RecordBatch, list[Future[np.ndarray]]],
    ) -> tuple[pa.RecordBatch, list[np.ndarray], list[tuple[int, TokenizeError]]]:
        batch, futures = pending
        arrays: list[np.ndarray] = []
        failures: list[tuple[int, TokenizeError]] = []
        for row, future in enumerate(futures):
            error = future.exception()
            if isinstance(error, TokenizeError):
                failures.append((row, error))
                arrays.append(np.zeros(0, dtype=np.uint32))
            else:
                arrays.append(future.result())
        return batch, arrays, failures

    pending: tuple[pa.RecordBatch, list[Future[np.ndarray]]] | None = None
    for batch in batches:
        check_input(batch)
        submitted = [pool.submit(encode_ordinary, encoding, text) for text in batch_texts(batch)]
        if pending is not None:
            yield collect(pending)
        pending = (batch, submitted)
    if pending is not None:
        yield collect(pending)


def _slot_fingerprints_of(frames: pa.RecordBatch) -> np.ndarray:
    return slot_fingerprints(
        np.stack([frames.column(c).to_numpy().view(np.uint32) for c in SLOT_COLUMNS], axis=1)
    )


def write_frames(
    batches: Iterable[pa.RecordBatch],
    out_path: Path,
    *,
    encoding: tiktoken.Encoding | None = None,
    projection: np.ndarray | None = None,
    compression: str = "zstd",
    window: int = WINDOW_SIZE,
    stride: int = STRIDE,
    embedding_source: str = "window",
    embedder: TextEmbedder | None = None,
    embed_batch_size: int = 32,
    progress: Callable[[FramesReport], None] | None = None,
    num_threads: int | None = None,
    metadata: Mapping[bytes, bytes] | None = None,
) -> FramesReport:
    """Stream knowledge-base batches into one frames Parquet file (``FRAME_SCHEMA``), atomically.

    Frames are written batch by batch (one row group each) through
    :func:`hasher_resources.files.atomic_write`: readers see the old file or the complete new one,
    never a partial file, and on any exception an existing ``out_path`` is left untouched.
    ``encoding`` and ``projection`` default to the offline cl100k_base and the default projection;
    ``metadata`` (e.g. the frame recipe) goes into the file's key-value metadata.
    Raises :class:`~hasher_core.errors.FramesConfigError` for a bad option and
    :class:`~hasher_core.errors.FramesInputError` for a bad batch, naming it.
    """
    validate_frame_options(window=window, stride=stride, compression=compression)
    options = FrameOptions(window, stride, embedding_source, embedder, embed_batch_size)
    encoding = encoding if encoding is not None else load_cl100k()
    projection = projection if projection is not None else projection_matrix()
    out_path = Path(out_path)
    report = FramesReport(path=str(out_path))
    started = time.perf_counter()

    def write(tmp: Path) -> None:
        # Dictionary-encode only the file name: trying it on the int columns costs ~2x the write time
        # for no gain on hash-like slot values (docs/performance.md §6).
        with (
            pq.ParquetWriter(
                tmp,
                FRAME_SCHEMA.with_metadata(metadata),
                compression=compression,
                use_dictionary=["source_file"],
            ) as writer,
            ThreadPoolExecutor(num_threads or os.cpu_count() or 1) as pool,
        ):
            for batch, token_arrays, failures in _prefetched(batches, encoding, pool):
                for row, error in failures:
                    report.tokenizer_failed += 1
                    if len(report.problems) < MAX_PROBLEMS:
                        where = f"chunk {chunk_name(batch, row)}"
                        report.problems.append(f"{where}: skipped, tokenizer_failed: {error}")
                try:
                    built = build_frames(
                        batch, token_arrays, encoding=encoding, projection=projection, options=options
                    )
                except EmbedderError as exc:  # a server or library failing mid-stream: say on which chunks
                    chunks = f"chunks {chunk_name(batch, 0)} to {chunk_name(batch, batch.num_rows - 1)}"
                    raise EmbedderError(f"embedding the windows of {chunks}: {exc}") from exc
                if built.frames.num_rows:
                    writer.write_batch(built.frames)
                if built.context_hashes is not None:  # window frames: 20 bytes a frame for ambiguity
                    ambiguity_input.append(
                        (
                            _slot_fingerprints_of(built.frames),
                            built.frames.column(TARGET_COLUMN).to_numpy(),
                            built.context_hashes,
                        )
                    )
                report.chunks += built.chunks
                report.frames += built.frames.num_rows
                report.tokens += built.tokens
                report.content_bytes += built.content_bytes
                report.skipped_chunks += built.skipped_chunks
                report.batches += 1
                report.seconds = time.perf_counter() - started
                if progress is not None:
                    progress(report)

    ambiguity_input: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    atomic_write(out_path, write)
    if ambiguity_input:
        found = ambiguity(*(np.concatenate(part) for part in zip(*ambiguity_input, strict=True)))
        report.ambiguous_frames = found.ambiguous_frames
        report.ambiguous_contexts = found.ambiguous_contexts
        report.colliding_frames = found.colliding_frames
    report.seconds = time.perf_counter() - started
    report.file_bytes = out_path.stat().st_size
    report.done = True
    return report
