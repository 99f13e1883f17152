"""The embedder resource: text → float32[N, dims] for inbox chunks and window embeddings (DESIGN §2, §3.3).

Two implementations behind one ``Embedder`` base: ``HashingEmbedder``, the offline deterministic
default (feature hashing of words and word pairs; lexical, not semantic), and ``OllamaEmbedder``,
a client for a local Ollama server's ``POST /api/embed`` that batches, times out, retries transient
failures with exponential backoff and checks every answer's count, dimension and finiteness.
Both are Dagster ``ConfigurableResource``s and also work as plain objects.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import re
import time
import urllib.error
import urllib.request
from abc import abstractmethod

import dagster as dg
import numpy as np
from pydantic import Field

from hasher_core.errors import EmbedderError

_WORD = re.compile(r"\w+")


class Embedder(dg.ConfigurableResource):
    """Base of the embedder resources: ``embed(texts)`` returns float32[len(texts), dims].

    Abstract (Dagster's resource metaclass is an ``ABCMeta``): only the concrete embedders exist.
    """

    dims: int = Field(default=768, gt=0, description="Length of each embedding vector.")

    @abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """float32[len(texts), dims]; row i embeds texts[i]."""

    @abstractmethod
    def description(self) -> str:
        """What kind of embedding this is, in a user's words (shown in run metadata)."""


@functools.lru_cache(maxsize=1 << 20)
def _word_hash(word: str) -> int:
    """64-bit hash of one word: blake2b, not Python's hash(), which is salted per process."""
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest())


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _pair_hash(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """64-bit hash of each adjacent word pair from the two words' hashes (splitmix64 finaliser).

    Mixing the cached word hashes keeps pairs out of blake2b: pairs are mostly unique, so hashing
    them directly would cost one blake2b call per word of text.
    """
    x = first * _GOLDEN + second  # uint64 arithmetic wraps, as intended
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class HashingEmbedder(Embedder):
    """Offline, deterministic feature hashing of lower-cased words and adjacent word pairs.

    Each feature's 64-bit hash ``h`` adds ``+1`` (``h`` odd) or ``-1`` to slot ``(h >> 1) % dims``:
    words hash with blake2b-64, pairs with :func:`_pair_hash` of their words' hashes. The vector is
    then L2-normalised. Texts sharing words get similar vectors, but synonyms do not: lexical, not
    semantic. Text without word characters gives the all-zero vector.
    """

    def embed(self, texts: list[str]) -> np.ndarray:
        word_hashes: list[int] = []
        lengths = np.zeros(len(texts), dtype=np.int64)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            word_hashes += map(_word_hash, words)
            lengths[row] = len(words)
        words = np.array(word_hashes, dtype=np.uint64)
        word_rows = np.repeat(np.arange(len(texts)), lengths)
        # Pairs are formed across the concatenation of all texts; those spanning two texts are dropped.
        same_text = word_rows[:-1] == word_rows[1:]
        pairs = _pair_hash(words[:-1], words[1:])[same_text]
        feature = np.concatenate([words, pairs])
        rows = np.concatenate([word_rows, word_rows[:-1][same_text]])
        slot = rows * self.dims + (feature >> np.uint64(1)) % np.uint64(self.dims)
        sign = np.where(feature & np.uint64(1), 1.0, -1.0)
        counts = np.bincount(slot.astype(np.int64), weights=sign, minlength=len(texts) * self.dims)
        # bincount returns integers when there is no feature at all.
        vectors = counts.reshape(len(texts), self.dims).astype(np.float64, copy=False)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # Rows with no words (or features that all cancel) stay zero instead of dividing by zero.
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        return vectors.astype(np.float32)

    def description(self) -> str:
        return f"lexical feature hashing (blake2b, words and word pairs, {self.dims} dims), not semantic"


class OllamaEmbedder(Embedder):
    """Semantic embeddings from an Ollama server (``POST {url}/api/embed``, default nomic-embed-text)."""

    url: str = Field(default="http://127.0.0.1:11434", description="Base URL of the Ollama server.")
    model: str = Field(default="nomic-embed-text", description="Embedding model; `ollama pull` it first.")
    batch_size: int = Field(default=32, gt=0, description="Texts per /api/embed request.")
    timeout_s: float = Field(default=30.0, gt=0, description="Per-request timeout in seconds.")
    retries: int = Field(default=3, ge=0, description="Retries after a connection error, timeout or 5xx.")
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles each retry.")

    def description(self) -> str:
        return f"ollama {self.model} at {self.url}"

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            out[start : start + len(batch)] = self._embed_batch(batch, start)
        return out

    def _embed_batch(self, texts: list[str], first: int) -> np.ndarray:
        answer = self._post({"model": self.model, "input": texts})
        embeddings = answer.get("embeddings") if isinstance(answer, dict) else None
        where = f"{self.description()}, texts {first}..{first + len(texts) - 1}"
        if not isinstance(embeddings, list):
            raise EmbedderError(f"{where}: the answer has no 'embeddings' list: {str(answer)[:200]}")
        if len(embeddings) != len(texts):
            raise EmbedderError(f"{where}: {len(embeddings)} embeddings returned for {len(texts)} texts")
        lengths = {len(e) if isinstance(e, list) else -1 for e in embeddings}
        if lengths != {self.dims}:
            raise EmbedderError(
                f"{where}: embeddings of length {sorted(lengths)}, expected {self.dims}; "
                f"is {self.model!r} a {self.dims}-dimension model?"
            )
        try:
            array = np.array(embeddings, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise EmbedderError(f"{where}: non-numeric embedding values") from exc
        if not np.isfinite(array).all():
            raise EmbedderError(f"{where}: NaN or infinite embedding values")
        return array

    def _post(self, body: dict[str, object]) -> object:
        """POST to /api/embed, retrying connection failures, timeouts and 5xx with exponential backoff."""
        endpoint = self.url.rstrip("/") + "/api/embed"
        data = json.dumps(body).encode("utf-8")
        last: str = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(
                endpoint, data=data, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    payload = response.read()
            except urllib.error.HTTPError as exc:
                detail = _error_text(exc)
                if exc.code >= 500:
                    last = f"HTTP {exc.code}: {detail}"
                    continue
                if exc.code == 404 and "not found" in detail.lower():
                    hint = f"run `ollama pull {self.model}`"
                    raise EmbedderError(
                        f"model {self.model!r} not found at {self.url} ({detail}); {hint}"
                    ) from exc
                raise EmbedderError(f"{endpoint} refused the request: HTTP {exc.code}: {detail}") from exc
            except (TimeoutError, urllib.error.URLError, http.client.HTTPException, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                last = f"{type(reason).__name__}: {reason}"
                continue
            try:
                return json.loads(payload)
            except json.JSONDecodeError as exc:
                raise EmbedderError(f"{endpoint} answered with invalid JSON: {payload[:200]!r}") from exc
        attempts = self.retries + 1
        raise EmbedderError(
            f"{endpoint} failed after {attempts} attempts (timeout {self.timeout_s} s): {last}"
        )


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read().decode("utf-8", "replace")
    except OSError:
        return exc.reason or ""
    try:
        message = json.loads(body).get("error")
    except (json.JSONDecodeError, AttributeError):
        message = None
    return str(message or body or exc.reason)[:300]
