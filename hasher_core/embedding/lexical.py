"""The offline embedding (DESIGN §2, §3.3): signed feature hashing of every piece of a text, 768 floats.

Lexical, not semantic, and built so that two windows whose texts differ get different vectors:
the text's UTF-8 bytes are cut into pieces — a *word* (a run of ASCII letters, digits, ``_`` or
non-ASCII bytes), a *space* (a run of ASCII whitespace), or a *symbol* (any other single byte) — and
each piece adds a signed unit to one of ``dims`` slots: every word as written and lower-cased, every
space run and symbol as it is, and every pair of adjacent pieces. The last ``RECENT_PIECES`` pieces
(and the pairs ending in them) weigh ``RECENT_WEIGHT``, so the words just before the next token count
most. The vector is L2-normalised (all zeros for a text without pieces).

Hashes are FNV-1a 64 over the piece's bytes, seeded per kind, finished with SplitMix64's finaliser;
a hash ``h`` adds ``±weight`` (``+`` when ``h`` is odd) to slot ``(h >> 1) % dims``. Windows of token
ids are embedded straight from the tokens' bytes (no decode), which is what makes window frames cheap;
a text is embedded from its UTF-8 bytes, so a window and its decoded text agree whenever the window
does not cut a multi-byte character. Training and inference both go through
:func:`embed_token_windows`, so a context's slots at inference equal its training frame's bit for bit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import tiktoken
from numba import prange

from hasher_core.design import EMBEDDING_DIMS
from hasher_core.jit import njit
from hasher_core.mixing import FNV64_OFFSET, FNV64_PRIME, SPLITMIX_GAMMA, mix64_scalar
from hasher_core.threads import run_serial

RECENT_PIECES = 4
RECENT_WEIGHT = 2.0
#: Windows one worker thread embeds at a time (each its own scratch buffers).
EMBED_BLOCK = 64
#: At most this many windows are embedded on the calling thread (``hasher_core.threads``): an
#: inference step's window and its suffixes.
SERIAL_WINDOWS = 512

_WORD, _WORD_LOWER, _SPACE, _SYMBOL = 1, 2, 3, 4
#: Each kind of piece seeds its hash with a multiple of this (SplitMix64's increment), so the same
#: bytes as a word and as a symbol hash apart.
_KIND_SEED = SPLITMIX_GAMMA


@dataclass(frozen=True)
class TokenBytes:
    """Every token id's bytes, end to end (``data`` uint8[B]), and where each starts
    (``offsets`` int64[vocabulary + 1]): token ``t`` is ``data[offsets[t]:offsets[t + 1]]``."""

    data: np.ndarray
    offsets: np.ndarray


@functools.cache
def _token_bytes(name: str, n_vocab: int, encoding: tiktoken.Encoding) -> TokenBytes:
    pieces = []
    for token in range(n_vocab):
        try:
            pieces.append(encoding.decode_single_token_bytes(token))
        except KeyError:  # ids cl100k leaves unassigned
            pieces.append(b"")
    lengths = np.fromiter((len(p) for p in pieces), np.int64, n_vocab)
    offsets = np.zeros(n_vocab + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return TokenBytes(np.frombuffer(b"".join(pieces), np.uint8).copy(), offsets)


def token_byte_table(encoding: tiktoken.Encoding) -> TokenBytes:
    """The bytes of every token of ``encoding``, built once per process (about 0.1 s for cl100k)."""
    return _token_bytes(encoding.name, encoding.n_vocab, encoding)


@njit(cache=True, inline="always")
def _class(b):
    """0 word, 1 space, 2 symbol, for one byte."""
    if b >= 0x80 or b == 0x5F or 0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A:
        return 0
    if b == 0x20 or 0x09 <= b <= 0x0D:
        return 1
    return 2


@njit(cache=True, inline="always")
def _hash(data, lo, hi, kind, lower):
    h = FNV64_OFFSET ^ (np.uint64(kind) * _KIND_SEED)
    for i in range(lo, hi):
        b = data[i]
        if lower and 0x41 <= b <= 0x5A:
            b += 0x20
        h = (h ^ np.uint64(b)) * FNV64_PRIME
    return mix64_scalar(h)


@njit(cache=True, inline="always")
def _add(vector, h, weight, dims):
    slot = np.int64((h >> np.uint64(1)) % np.uint64(dims))
    if h & np.uint64(1):
        vector[slot] += weight
    else:
        vector[slot] -= weight


@njit(cache=True)
def _embed_block(data, starts, ends, lo, hi, dims, recent, recent_weight, out):  # pragma: no cover
    """``out[k]`` = the embedding of ``data[starts[k]:ends[k]]`` for ``lo <= k < hi``."""
    longest = 0
    for k in range(lo, hi):
        longest = max(longest, ends[k] - starts[k])
    ids = np.empty(longest, np.uint64)
    lowers = np.empty(longest, np.uint64)
    vector = np.empty(dims, np.float64)
    for k in range(lo, hi):
        # Cut the span into pieces: their identity hashes (as written) and, for words, lower-cased.
        pieces = 0
        i = starts[k]
        while i < ends[k]:
            c = _class(data[i])
            j = i + 1
            if c != 2:
                while j < ends[k] and _class(data[j]) == c:
                    j += 1
            if c == 0:
                ids[pieces] = _hash(data, i, j, _WORD, False)
                lowers[pieces] = _hash(data, i, j, _WORD_LOWER, True)
            else:
                ids[pieces] = _hash(data, i, j, _SPACE if c == 1 else _SYMBOL, False)
                lowers[pieces] = 0
            pieces += 1
            i = j
        vector[:] = 0.0
        for p in range(pieces):
            weight = recent_weight if p >= pieces - recent else 1.0
            _add(vector, ids[p], weight, dims)
            if lowers[p]:
                _add(vector, lowers[p], weight, dims)
            if p:
                _add(vector, mix64_scalar(ids[p - 1] * _KIND_SEED + ids[p]), weight, dims)
        norm = 0.0
        for d in range(dims):
            norm += vector[d] * vector[d]
        scale = 1.0 / np.sqrt(norm) if norm > 0 else 0.0
        for d in range(dims):
            out[k, d] = np.float32(vector[d] * scale)


def _embed_spans_py(data, starts, ends, dims, recent, recent_weight, out):  # pragma: no cover - compiled
    """``out[k]`` = the embedding of ``data[starts[k]:ends[k]]`` (float32[n, dims]): blocks of
    ``EMBED_BLOCK`` windows on every Numba thread; each window's arithmetic is the same sequence
    whichever thread runs it, so the result does not depend on the thread count."""
    n = starts.shape[0]
    for block in prange((n + EMBED_BLOCK - 1) // EMBED_BLOCK):
        lo = block * EMBED_BLOCK
        _embed_block(data, starts, ends, lo, min(lo + EMBED_BLOCK, n), dims, recent, recent_weight, out)


_embed_spans = njit(cache=True, parallel=True)(_embed_spans_py)
_embed_spans_serial = njit(cache=True)(_embed_spans_py)  # hasher_core.threads: one step's few windows


@njit(cache=True)
def _gather(table_data, table_offsets, tokens, out_offsets, out):  # pragma: no cover - compiled
    for t in range(tokens.shape[0]):
        src = table_offsets[tokens[t]]
        n = table_offsets[tokens[t] + 1] - src
        dst = out_offsets[t]
        for i in range(n):
            out[dst + i] = table_data[src + i]


def _embed(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, dims: int) -> np.ndarray:
    out = np.empty((starts.shape[0], dims), np.float32)
    if starts.shape[0]:
        kernel = _embed_spans_serial if run_serial(starts.shape[0], SERIAL_WINDOWS) else _embed_spans
        kernel(data, starts, ends, int(dims), RECENT_PIECES, RECENT_WEIGHT, out)
    return out


@dataclass(frozen=True)
class LexicalEmbedder:
    """The offline hashing embedder as a plain object (``embed`` and ``embed_token_windows``): what
    the ``HashingEmbedder`` resource runs, and what a model answers with without Dagster."""

    dims: int = EMBEDDING_DIMS

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32[len(texts), dims]; row i embeds texts[i] (:func:`embed_texts`)."""
        return embed_texts(list(texts), self.dims)

    def embed_token_windows(
        self, tokens: np.ndarray, begin: np.ndarray, end: np.ndarray, encoding: tiktoken.Encoding
    ) -> np.ndarray:
        """float32[len(begin), dims]: the embedding of each window ``tokens[begin[k]:end[k]]``."""
        return embed_token_windows(tokens, begin, end, token_byte_table(encoding), self.dims)


def embed_texts(texts: list[str], dims: int = EMBEDDING_DIMS) -> np.ndarray:
    """The embedding of each text's UTF-8 bytes: float32[len(texts), dims], rows L2-normalised."""
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    lengths = np.fromiter((len(e) for e in encoded), np.int64, len(encoded))
    ends = np.cumsum(lengths)
    data = np.frombuffer(b"".join(encoded), np.uint8) if encoded else np.zeros(0, np.uint8)
    return _embed(data, ends - lengths, ends, dims)


def embed_token_windows(
    tokens: np.ndarray, begin: np.ndarray, end: np.ndarray, table: TokenBytes, dims: int = EMBEDDING_DIMS
) -> np.ndarray:
    """The embedding of each window ``tokens[begin[k]:end[k]]``'s bytes: float32[len(begin), dims].

    ``tokens`` int[T] are token ids of ``table``'s encoding; the windows' bytes are the tokens'
    bytes end to end (what decoding them would give, before UTF-8 decoding).
    """
    begin = np.asarray(begin, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    # Only the tokens these windows cover: callers pass a whole batch's tokens with a slice of windows.
    first = int(begin.min()) if begin.size else 0
    last = max(int(end.max()) if end.size else 0, first)
    tokens = np.ascontiguousarray(np.asarray(tokens)[first:last], dtype=np.int64)
    lengths = table.offsets[tokens + 1] - table.offsets[tokens]
    offsets = np.zeros(tokens.shape[0] + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.empty(int(offsets[-1]), np.uint8)
    _gather(table.data, table.offsets, tokens, offsets, data)
    return _embed(data, offsets[begin - first], offsets[end - first], dims)
