"""Stage 2's transforms (DESIGN §3.2–3.5): token windows, the Go-compatible 768 → 12-slot mapper, and
one knowledge-base batch → its frames in the schema of ``hasher_core.schemas.FRAME_SCHEMA``.

Plain functions on arrays: the streaming, atomic frames writer that drives them is
``hasher_resources.frames_writer``; the ``training_frames`` asset reads its config and calls that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tiktoken

from hasher_core.design import (
    EMBEDDING_DIMS,
    EMBEDDING_SOURCES,
    FEATURE_COUNT,
    SLOT_COUNT,
    STRIDE,
    WINDOW_SIZE,
)
from hasher_core.embedding import TextEmbedder, check_embeddings
from hasher_core.errors import FramesConfigError, FramesInputError, TokenizeError
from hasher_core.jit import njit
from hasher_core.mixing import FNV64_OFFSET, FNV64_PRIME, mix64
from hasher_core.schemas import FRAME_SCHEMA
from hasher_core.threads import run_serial

from .tokens import encode_ordinary

COMPRESSIONS = ("zstd", "snappy")
#: Windows embedded per call on the token path (bounds the embeddings held at once: 12 MB at 768 dims).
TOKEN_WINDOW_BATCH = 4096

_INPUT_COLUMNS = ("source_file", "chunk_id", "content", "embedding")


def validate_frame_options(
    *,
    window: int = WINDOW_SIZE,
    stride: int = STRIDE,
    compression: str = "zstd",
    embedding_source: str | None = None,
    embedder: TextEmbedder | None = None,
    embed_batch_size: int = 32,
) -> None:
    """Raise :class:`FramesConfigError` naming the option when any stage-2 setting is unusable
    (``embedding_source`` and its embedder are checked when a source is given)."""
    for name, value in (("window", window), ("stride", stride), ("embed_batch_size", embed_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise FramesConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if compression not in COMPRESSIONS:
        raise FramesConfigError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    if embedding_source is not None and embedding_source not in EMBEDDING_SOURCES:
        raise FramesConfigError(
            f"embedding_source must be one of {EMBEDDING_SOURCES}, got {embedding_source!r}"
        )
    if embedding_source == "window" and embedder is None:
        raise FramesConfigError('embedding_source="window" needs an embedder with embed(list[str])')


def expected_window_count(n_tokens: int, stride: int = STRIDE) -> int:
    """Frames a chunk of ``n_tokens`` tokens yields: ``ceil((n-1)/stride)``, 0 below 2 tokens."""
    if n_tokens < 2:
        return 0
    return math.ceil((n_tokens - 1) / stride)


def _window_counts(lengths: np.ndarray, stride: int) -> np.ndarray:
    lengths = lengths.astype(np.int64)
    return np.where(lengths >= 2, (lengths - 1 + stride - 1) // stride, 0)


def _batch_windows(lengths: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """For chunks of the given token counts: (chunk index, target index i) of every frame, in order."""
    counts = _window_counts(lengths, stride)
    chunk_of_frame = np.repeat(np.arange(len(lengths), dtype=np.int64), counts)
    first_frame = np.cumsum(counts) - counts
    k = np.arange(chunk_of_frame.size, dtype=np.int64) - first_frame[chunk_of_frame]
    return chunk_of_frame, 1 + k * stride


def window_indices(
    n_tokens: int, window: int = WINDOW_SIZE, stride: int = STRIDE
) -> tuple[np.ndarray, np.ndarray]:
    """``(window_start, window_end)`` int32 arrays for a chunk of ``n_tokens`` tokens (DESIGN §3.2).

    ``window_end = i`` for ``i = 1, 1+stride, … < n``, ``window_start = max(0, i - window)``; the
    target of each frame is ``tokens[window_end]`` and its context ``tokens[start:end]``.
    """
    validate_frame_options(window=window, stride=stride)
    _, ends = _batch_windows(np.array([n_tokens]), window, stride)
    starts = np.maximum(ends - window, 0)
    return starts.astype(np.int32), ends.astype(np.int32)


#: Rows one worker thread projects at a time.
_FEATURES_BLOCK = 256


def _features_kernel_py(embeddings: np.ndarray, projection_t: np.ndarray, out: np.ndarray) -> None:
    # One float32 accumulator per feature, j ascending: Go's `sum += emb[j]*P[i][j]` rounding order.
    # Vectorising across the 24 features (not across j) keeps every accumulator's sequence intact;
    # numba does not contract the multiply-add into an FMA without fastmath, which would change bits.
    # Rows are independent: blocks of them run on every Numba thread with the same per-row sequence.
    n, dims = embeddings.shape
    features = projection_t.shape[1]
    for block in numba.prange((n + _FEATURES_BLOCK - 1) // _FEATURES_BLOCK):
        acc = np.zeros(features, dtype=np.float32)
        for r in range(block * _FEATURES_BLOCK, min((block + 1) * _FEATURES_BLOCK, n)):
            acc[:] = 0
            for j in range(dims):
                e = embeddings[r, j]
                # A zero term cannot change a float32 sum that starts at +0.0 (x + ±0 = x, +0 + ±0 =
                # +0), so skipping it keeps every bit; the offline embeddings are two-thirds zeros.
                if e != 0:
                    for i in range(features):
                        acc[i] += e * projection_t[j, i]
            out[r, :] = acc


_features_kernel = njit(cache=True, nogil=True, parallel=True)(_features_kernel_py)
#: The same on the calling thread, for up to SERIAL_PROJECTION_ROWS rows (``hasher_core.threads``).
_features_kernel_serial = njit(cache=True, nogil=True)(_features_kernel_py)
SERIAL_PROJECTION_ROWS = 1024


def _features(embeddings: np.ndarray, projection: np.ndarray) -> np.ndarray:
    dims = min(embeddings.shape[1], projection.shape[1])
    # Missing dimensions count as zero, so a shorter embedding simply stops the sum early
    # (adding +0.0 products would not change a float32 sum except -0.0 → +0.0, which the sigmoid ignores).
    emb = np.ascontiguousarray(embeddings[:, :dims], dtype=np.float32)
    proj_t = np.ascontiguousarray(projection[:, :dims].T, dtype=np.float32)
    out = np.empty((emb.shape[0], projection.shape[0]), dtype=np.float32)
    serial = run_serial(emb.shape[0], SERIAL_PROJECTION_ROWS)
    (_features_kernel_serial if serial else _features_kernel)(emb, proj_t, out)
    return out


def quantize_features(features: np.ndarray) -> np.ndarray:
    """``int16(trunc(sigmoid(f)*65535 - 32768))`` with the sigmoid in float64 (DESIGN §3.4)."""
    with np.errstate(over="ignore"):  # exp overflow → inf → sigmoid 0, exactly as in Go
        s = 1.0 / (1.0 + np.exp(-features.astype(np.float64)))
    return np.trunc(s * 65535.0 - 32768.0).astype(np.int16)


def pack_slots(q: np.ndarray) -> np.ndarray:
    """int16[N, 24] features → uint32[N, 12] slots, even features in the high half."""
    u = q.astype(np.int16).view(np.uint16).astype(np.uint32)
    return (u[:, 0::2] << np.uint32(16)) | u[:, 1::2]


def unpack_slots(slots: np.ndarray) -> np.ndarray:
    """uint32[N, 12] slots → the int16[N, 24] features they pack (inverse of :func:`pack_slots`)."""
    slots = slots.astype(np.uint32)
    out = np.empty((slots.shape[0], 2 * slots.shape[1]), dtype=np.uint16)
    out[:, 0::2] = slots >> np.uint32(16)
    out[:, 1::2] = slots & np.uint32(0xFFFF)
    return out.view(np.int16)


def project_to_slots(embeddings: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """The Go random-projection mapper: float32[N, ≤768] embeddings → uint32[N, 12] slots.

    ``projection`` is ``projection_matrix(seed)`` (24 × 768). Dimensions past the projection's
    width are ignored; an all-zero embedding gives all-zero slots.
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise FramesInputError(f"embeddings must be a 2-D array [N, dims], got shape {embeddings.shape}")
    if projection.shape[0] != FEATURE_COUNT:
        raise FramesInputError(f"projection must have {FEATURE_COUNT} rows, got shape {projection.shape}")
    return pack_slots(quantize_features(_features(embeddings, projection)))


def _embedding_matrix(column: pa.Array, batch: pa.RecordBatch) -> np.ndarray:
    """The batch's embeddings as float32[N, dims], zero-padded where a list is shorter."""
    n = len(column)
    if column.null_count:
        first = column.is_null().to_numpy(zero_copy_only=False).argmax()
        raise FramesInputError(f"chunk {chunk_name(batch, int(first))}: embedding is null")
    if pa.types.is_fixed_size_list(column.type):
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        return values.reshape(n, column.type.list_size)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        width = min(int(lengths.max(initial=0)), EMBEDDING_DIMS)
        dense = np.zeros((n, width), dtype=np.float32)
        starts = np.cumsum(lengths) - lengths
        for r in np.flatnonzero(lengths):
            take = min(int(lengths[r]), width)
            dense[r, :take] = values[starts[r] : starts[r] + take]
        return dense
    raise FramesInputError(f"column 'embedding' must be a list of float32, got {column.type}")


def chunk_name(batch: pa.RecordBatch, row: int) -> str:
    """How a message names one chunk of a knowledge-base batch: ``'source_file'#chunk_id``."""
    return f"{batch.column('source_file')[row].as_py()!r}#{batch.column('chunk_id')[row].as_py()}"


def check_input(batch: pa.RecordBatch) -> None:
    """Raise FramesInputError unless the batch has the knowledge-base columns the frames need."""
    missing = [name for name in _INPUT_COLUMNS if name not in batch.schema.names]
    if missing:
        raise FramesInputError(f"knowledge-base batch lacks column(s) {missing}; it has {batch.schema.names}")


def tokenize(
    texts: Sequence[str],
    encoding: tiktoken.Encoding,
    failures: list[tuple[int, TokenizeError]] | None = None,
) -> list[np.ndarray]:
    """Token ids of each text with ``encode_ordinary`` semantics (special-token text is ordinary
    text, DESIGN §3.1), as uint32 arrays (:func:`hasher_core.frames.tokens.encode_ordinary`, safe on
    the long whitespace runs tiktoken's regex gives up on).

    A text no tokenizer path can take raises :class:`TokenizeError`; with a ``failures`` list it is
    appended there as ``(index, error)`` instead and gets no tokens (so no frames), like the writer.
    """
    arrays: list[np.ndarray] = []
    for i, text in enumerate(texts):
        try:
            arrays.append(encode_ordinary(encoding, text))
        except TokenizeError as exc:
            if failures is None:
                raise
            failures.append((i, exc))
            arrays.append(np.zeros(0, dtype=np.uint32))
    return arrays


@dataclass
class BatchFrames:
    """One batch's frames and what went into them (the writer sums these into its report)."""

    frames: pa.RecordBatch
    chunks: int
    tokens: int
    content_bytes: int
    skipped_chunks: int
    #: uint64[frames]: :func:`window_hashes` of each frame's context (window source only).
    context_hashes: np.ndarray | None = None


@dataclass(frozen=True)
class FrameOptions:
    """Stage 2's settings (DESIGN §3.2–§3.3), checked when made: :class:`FramesConfigError` names
    the first unusable one (``embedding_source="window"`` needs an ``embedder``)."""

    window: int = WINDOW_SIZE
    stride: int = STRIDE
    embedding_source: str = "window"
    embedder: TextEmbedder | None = None
    embed_batch_size: int = 32

    def __post_init__(self) -> None:
        validate_frame_options(
            window=self.window,
            stride=self.stride,
            embedding_source=self.embedding_source,
            embedder=self.embedder,
            embed_batch_size=self.embed_batch_size,
        )


def build_frames(
    batch: pa.RecordBatch,
    token_arrays: list[np.ndarray],
    *,
    encoding: tiktoken.Encoding,
    projection: np.ndarray,
    options: FrameOptions,
) -> BatchFrames:
    """The frames of one knowledge-base batch whose chunks were already tokenised (``token_arrays``,
    one int array per row): windows (DESIGN §3.2), slots from the chunk's or each window's embedding
    (DESIGN §3.3, §3.4), targets; ``FRAME_SCHEMA`` with ``best_seed`` null. Raises
    :class:`FramesInputError` for a null or non-finite embedding, naming the chunk."""
    window, stride, embedder = options.window, options.stride, options.embedder
    lengths = np.fromiter((a.size for a in token_arrays), dtype=np.int64, count=len(token_arrays))
    flat = (
        np.concatenate(token_arrays).astype(np.int32)
        if token_arrays and lengths.sum()
        else np.zeros(0, dtype=np.int32)
    )
    token_offsets = np.cumsum(lengths) - lengths
    chunk_of_frame, ends = _batch_windows(lengths, window, stride)
    starts = np.maximum(ends - window, 0)
    frame_count = chunk_of_frame.size
    targets = flat[token_offsets[chunk_of_frame] + ends]

    context_hashes = None
    if options.embedding_source == "chunk":
        embeddings = _embedding_matrix(batch.column("embedding"), batch)
        bad = ~np.isfinite(embeddings).all(axis=1)
        if bad.any():
            raise FramesInputError(f"chunk {chunk_name(batch, int(np.argmax(bad)))}: embedding has NaN/inf")
        slots_t = project_to_slots(embeddings, projection).T.copy()[:, chunk_of_frame]
    else:
        assert embedder is not None  # FrameOptions guarantees it
        begin, end = token_offsets[chunk_of_frame] + starts, token_offsets[chunk_of_frame] + ends
        slots_t = window_slots(
            flat,
            begin,
            end,
            encoding=encoding,
            projection=projection,
            embedder=embedder,
            embed_batch_size=options.embed_batch_size,
        ).T.copy()
        context_hashes = window_hashes(flat, begin, end)

    source = batch.column("source_file")
    if not pa.types.is_dictionary(source.type):
        source = pc.dictionary_encode(source)
    source = source.cast(pa.dictionary(pa.int32(), pa.utf8()))
    indices = source.indices.to_numpy(zero_copy_only=False).astype(np.int32)[chunk_of_frame]
    source_frames = pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), source.dictionary)
    chunk_ids = batch.column("chunk_id").to_numpy(zero_copy_only=False).astype(np.int32)[chunk_of_frame]

    slot_words = slots_t.view(np.int32)
    columns = [
        source_frames,
        pa.array(chunk_ids, pa.int32()),
        pa.array(starts.astype(np.int32), pa.int32()),
        pa.array(ends.astype(np.int32), pa.int32()),
        pa.array((ends - starts).astype(np.int32), pa.int32()),
        *(pa.array(slot_words[k], pa.int32()) for k in range(SLOT_COUNT)),
        pa.array(targets, pa.int32()),
        pa.nulls(frame_count, pa.binary()),
    ]
    content_bytes = int(pc.sum(pc.binary_length(batch.column("content"))).as_py() or 0)
    return BatchFrames(
        frames=pa.RecordBatch.from_arrays(columns, schema=FRAME_SCHEMA),
        chunks=batch.num_rows,
        tokens=int(lengths.sum()),
        content_bytes=content_bytes,
        skipped_chunks=int((lengths < 2).sum()),
        context_hashes=context_hashes,
    )


def window_slots(
    tokens: np.ndarray,
    begin: np.ndarray,
    end: np.ndarray,
    *,
    encoding: tiktoken.Encoding,
    projection: np.ndarray,
    embedder: TextEmbedder,
    embed_batch_size: int = 32,
) -> np.ndarray:
    """The slots (uint32[len(begin), 12]) of each window ``tokens[begin[k]:end[k]]``: its context
    embedded by ``embedder`` (DESIGN §3.3) and projected by the mapper (§3.4).

    Training and inference both call this, so a context's slots at inference equal its training
    frame's bit for bit. An embedder with ``embed_token_windows`` (the offline hashing embedder)
    embeds the windows from their tokens' bytes, ``TOKEN_WINDOW_BATCH`` at a time; any other gets
    the decoded texts, ``embed_batch_size`` at a time. Raises :class:`FramesInputError` when the
    embedder answers with the wrong shape or NaN/inf.
    """
    begin, end = np.asarray(begin, np.int64), np.asarray(end, np.int64)
    slots = np.empty((begin.size, SLOT_COUNT), dtype=np.uint32)
    by_tokens = getattr(embedder, "embed_token_windows", None)
    step = TOKEN_WINDOW_BATCH if by_tokens is not None else embed_batch_size
    # Project each embedder batch at once so at most one batch of embeddings is ever held.
    for lo in range(0, begin.size, step):
        hi = min(lo + step, begin.size)
        if by_tokens is not None:
            vectors = by_tokens(tokens, begin[lo:hi], end[lo:hi], encoding)
        else:
            vectors = embedder.embed(
                encoding.decode_batch(
                    [tokens[b:e].tolist() for b, e in zip(begin[lo:hi], end[lo:hi], strict=True)]
                )
            )
        where = f"window texts {lo}..{hi - 1} of this batch"
        vectors = check_embeddings(vectors, hi - lo, None, where=where, error=FramesInputError)
        slots[lo:hi] = project_to_slots(vectors, projection)
    return slots


@njit(cache=True)
def _window_hashes(tokens, begin, end):  # pragma: no cover - compiled
    out = np.empty(begin.shape[0], np.uint64)
    for k in range(begin.shape[0]):
        h = FNV64_OFFSET
        for i in range(begin[k], end[k]):
            h = (h ^ np.uint64(tokens[i])) * FNV64_PRIME
        out[k] = h ^ np.uint64(end[k] - begin[k])
    return out


def window_hashes(tokens: np.ndarray, begin: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A 64-bit fingerprint (uint64) of each window's token sequence: equal windows, equal hashes.

    It tells apart two frames that share their slots because their texts are identical (a repeated
    phrase: a truly ambiguous context) from two whose different texts collided (DESIGN §3.3).
    """
    return _window_hashes(
        np.ascontiguousarray(tokens, np.int64), np.asarray(begin, np.int64), np.asarray(end, np.int64)
    )


@dataclass(frozen=True)
class Ambiguity:
    """Frames whose slots another frame shares (DESIGN §3.3): ``ambiguous_frames`` share them with a
    frame of another next token (one seed cannot answer both); ``colliding_frames`` share them with
    a frame of another context text (the embedding failed to tell two windows apart)."""

    frames: int
    ambiguous_frames: int
    ambiguous_contexts: int
    colliding_frames: int


def slot_fingerprints(slots: np.ndarray) -> np.ndarray:
    """A 64-bit fingerprint (uint64[N]) of each row of ``slots`` uint32[N, 12]: FNV-1a over the 12
    words, finished with SplitMix64's finaliser. Equal slots, equal fingerprints; two different rows
    share one with probability 2^-64 (for 10^8 frames, about 3 · 10^-4 that any pair does)."""
    slots = np.asarray(slots, dtype=np.uint32)
    h = np.full(slots.shape[0], FNV64_OFFSET, np.uint64)
    for column in range(slots.shape[1]):
        h ^= slots[:, column].astype(np.uint64)
        h *= FNV64_PRIME
    return mix64(h)


def ambiguity(slots: np.ndarray, targets: np.ndarray, context_hashes: np.ndarray) -> Ambiguity:
    """Count ambiguous and colliding frames of ``slots`` (uint32[N, 12], or their
    :func:`slot_fingerprints` uint64[N]), ``targets`` int[N] and ``context_hashes`` uint64[N]
    (:func:`window_hashes`). Frames are grouped by slot fingerprint: one sort of N keys."""
    slots = np.asarray(slots)
    keys = slot_fingerprints(slots) if slots.ndim == 2 else slots.astype(np.uint64, copy=False)
    n = keys.shape[0]
    if n == 0:
        return Ambiguity(0, 0, 0, 0)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    sizes = np.diff(np.append(first, n))

    def groups_with_several(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values)[order]
        return np.minimum.reduceat(values, first) != np.maximum.reduceat(values, first)

    several_targets = groups_with_several(np.asarray(targets, np.int64))
    several_texts = groups_with_several(np.asarray(context_hashes, np.uint64))
    return Ambiguity(
        frames=n,
        ambiguous_frames=int(sizes[several_targets].sum()),
        ambiguous_contexts=int(several_targets.sum()),
        colliding_frames=int(sizes[several_texts].sum()),
    )


def frames_from_batch(
    batch: pa.RecordBatch,
    *,
    encoding: tiktoken.Encoding,
    window: int = WINDOW_SIZE,
    stride: int = STRIDE,
    projection: np.ndarray,
    embedding_source: str = "window",
    embedder: TextEmbedder | None = None,
    embed_batch_size: int = 32,
) -> pa.RecordBatch:
    """One knowledge-base record batch → its frames (``FRAME_SCHEMA``, ``best_seed`` null).

    Chunks are tokenized with ``encode_ordinary`` semantics; chunks under 2 tokens yield nothing.
    """
    options = FrameOptions(window, stride, embedding_source, embedder, embed_batch_size)
    check_input(batch)
    token_arrays = tokenize(batch_texts(batch), encoding)
    return build_frames(batch, token_arrays, encoding=encoding, projection=projection, options=options).frames


def batch_texts(batch: pa.RecordBatch) -> list[str]:
    """The batch's ``content`` column as strings (a null content is the empty text)."""
    return [text or "" for text in batch.column("content").to_pylist()]
