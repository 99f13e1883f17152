"""The embedder resource: text → float32[N, dims] for inbox chunks and window embeddings (DESIGN §2, §3.3).

Two implementations behind one ``Embedder`` base: ``HashingEmbedder``, the offline deterministic
default (feature hashing of every piece of the text; lexical, not semantic), and ``OllamaEmbedder``,
a client for a local Ollama server's ``POST /api/embed`` that batches, times out, retries transient
failures with exponential backoff and checks every answer's count, dimension and finiteness.
Both are Dagster ``ConfigurableResource``s and also work as plain objects.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from abc import abstractmethod

import dagster as dg
import numpy as np
import tiktoken
from pydantic import Field

from hasher_core.design import EMBEDDING_DIMS, HASHING_VERSION
from hasher_core.errors import EmbedderError, InferenceError
from hasher_core.frames.hashing import embed_texts, embed_token_windows, token_byte_table


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

    @abstractmethod
    def recipe(self) -> dict[str, object]:
        """What inference needs to embed a context exactly as training did (the bundle's recipe)."""


class HashingEmbedder(Embedder):
    """Offline, deterministic feature hashing of every piece of a text (``hasher_core.frames.hashing``).

    Words as written and lower-cased, punctuation and symbols, whitespace runs and adjacent pairs of
    these, the last few pieces weighted double; L2-normalised. Texts sharing words get similar
    vectors and texts that differ by a comma, a space or a capital differ, but synonyms do not:
    lexical, not semantic. Windows of token ids are embedded straight from the tokens' bytes.
    """

    def embed(self, texts: list[str]) -> np.ndarray:
        return embed_texts(list(texts), self.dims)

    def embed_token_windows(
        self, tokens: np.ndarray, begin: np.ndarray, end: np.ndarray, encoding: tiktoken.Encoding
    ) -> np.ndarray:
        """float32[len(begin), dims]: the embedding of each window ``tokens[begin[k]:end[k]]``."""
        return embed_token_windows(tokens, begin, end, token_byte_table(encoding), self.dims)

    def description(self) -> str:
        return (
            f"lexical feature hashing ({HASHING_VERSION}: every word, symbol and space run and their "
            f"pairs, {self.dims} dims), not semantic"
        )

    def recipe(self) -> dict[str, object]:
        return {"name": "hashing", "version": HASHING_VERSION, "dims": self.dims}


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

    def recipe(self) -> dict[str, object]:
        # The server's address is not part of the recipe: any server with the model reproduces it.
        return {"name": "ollama", "model": self.model, "dims": self.dims}

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


def embedder_for_recipe(recipe: dict[str, object], ollama_url: str | None = None) -> Embedder:
    """The embedder a bundle's recipe names (``embedder`` field), configured as training had it; an
    Ollama embedder talks to ``ollama_url`` (default ``$HASHER_OLLAMA_URL``, then 127.0.0.1:11434).
    Raises :class:`InferenceError` for an embedder this release does not have."""
    name, dims = recipe.get("name"), int(recipe.get("dims", EMBEDDING_DIMS))
    if name == "hashing":
        return HashingEmbedder(dims=dims)
    if name == "ollama":
        url = ollama_url or os.environ.get("HASHER_OLLAMA_URL") or "http://127.0.0.1:11434"
        return OllamaEmbedder(model=str(recipe.get("model")), dims=dims, url=url)
    raise InferenceError(f"the recipe's embedder {name!r} is not one this release has (hashing, ollama)")
