"""The embedder resource: text → float32[N, dims] for inbox chunks and window embeddings (DESIGN §2, §3.3).

Two implementations behind one ``Embedder`` base: ``HashingEmbedder``, the offline deterministic
default (feature hashing of every piece of the text; lexical, not semantic), and ``OllamaEmbedder``,
a client for a local Ollama server's ``POST /api/embed`` that batches, retries transient failures
with exponential backoff and checks every answer's count, dimension and finiteness. Every request
has a total deadline (``timeout_s``: connecting, headers and the whole body, not each read) and every
batch one too (``batch_deadline_s``, retries and backoff included): a batch that cannot finish in it
is an :class:`EmbedderError`.
Requests to a loopback server never go through ``http_proxy`` (as Ollama's own Go client does), and
an error on a proxied request names the proxy.
Both are Dagster ``ConfigurableResource``s and also work as plain objects.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import time
import urllib.parse
import urllib.request
from abc import abstractmethod

import dagster as dg
import numpy as np
import tiktoken
from pydantic import Field

from hasher_core.design import EMBEDDING_DIMS, HASHING_VERSION
from hasher_core.embedding.lexical import LexicalEmbedder
from hasher_core.errors import EmbedderError, InferenceError

from .http_deadline import Answer, DeadlineExceeded, exchange
from .settings import load_settings

#: The version probe only adds a hint to an error message: it may not take longer than this.
VERSION_PROBE_DEADLINE_S = 5.0


class Embedder(dg.ConfigurableResource):
    """Base of the embedder resources: ``embed(texts)`` returns float32[len(texts), dims].

    Abstract (Dagster's resource metaclass is an ``ABCMeta``): only the concrete embedders exist.
    """

    dims: int = Field(default=EMBEDDING_DIMS, gt=0, description="Length of each embedding vector.")

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
    """Offline, deterministic feature hashing of every piece of a text (``hasher_core.embedding.lexical``).

    Words as written and lower-cased, punctuation and symbols, whitespace runs and adjacent pairs of
    these, the last few pieces weighted double; L2-normalised. Texts sharing words get similar
    vectors and texts that differ by a comma, a space or a capital differ, but synonyms do not:
    lexical, not semantic. Windows of token ids are embedded straight from the tokens' bytes.
    """

    def embed(self, texts: list[str]) -> np.ndarray:
        return LexicalEmbedder(self.dims).embed(texts)

    def embed_token_windows(
        self, tokens: np.ndarray, begin: np.ndarray, end: np.ndarray, encoding: tiktoken.Encoding
    ) -> np.ndarray:
        """float32[len(begin), dims]: the embedding of each window ``tokens[begin[k]:end[k]]``."""
        return LexicalEmbedder(self.dims).embed_token_windows(tokens, begin, end, encoding)

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
    timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Deadline of one /api/embed request in seconds: connecting, the headers and the whole "
        "body (not a per-read timeout).",
    )
    retries: int = Field(default=3, ge=0, description="Retries after a connection error, timeout or 5xx.")
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles each retry.")
    batch_deadline_s: float | None = Field(
        default=None,
        gt=0,
        description="Deadline of one batch in seconds, retries and backoff included; unset: each "
        "attempt has its full timeout_s, so a batch takes at most (retries + 1) × timeout_s plus the "
        "backoff sleeps.",
    )

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
        """POST to /api/embed, retrying connection failures, deadlines and 5xx with exponential
        backoff, all within ``batch_deadline_s`` when set; raises :class:`EmbedderError` otherwise."""
        endpoint = self.url.rstrip("/") + "/api/embed"
        proxy = proxy_for(endpoint)
        via = "" if proxy is None else f" through proxy {next(iter(proxy.values()))} (from the environment)"
        data = json.dumps(body).encode("utf-8")
        total = self.batch_deadline_s
        give_up_at = float("inf") if total is None else time.monotonic() + total
        last, attempts = "", 0
        for attempt in range(self.retries + 1):
            if attempt:
                pause = self.backoff_s * 2 ** (attempt - 1)
                if time.monotonic() + pause >= give_up_at:
                    break  # no time left for another attempt: the batch's deadline counts the retries
                time.sleep(pause)
            budget = min(self.timeout_s, give_up_at - time.monotonic())
            if budget <= 0:
                break
            attempts += 1
            request = urllib.request.Request(
                endpoint, data=data, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                answer = exchange(request, budget, {} if proxy is None else proxy)
            except DeadlineExceeded:
                last = (
                    f"no complete answer within {self.timeout_s:g} s"
                    if budget >= self.timeout_s - 0.01
                    else f"no complete answer in the {budget:.2f} s left of the batch"
                )
                continue
            except (OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                last = f"{type(reason).__name__}: {reason}"
                continue
            if answer.status >= 400:
                detail, is_json = _error_text(answer)
                if answer.status >= 500:
                    last = f"HTTP {answer.status}: {detail}"
                    continue
                if answer.status == 404 and not is_json and proxy is None:
                    # Go's mux answers an unknown path with plain "404 page not found": this server
                    # predates /api/embed (Ollama 0.3.4); a missing model is a JSON error instead.
                    raise EmbedderError(
                        f"{endpoint}: the server has no /api/embed ({detail!r}){self._server_version()}; "
                        "Ollama added it in 0.3.4: upgrade the Ollama server"
                    )
                if answer.status == 404 and "not found" in detail.lower():
                    hint = f"run `ollama pull {self.model}`"
                    raise EmbedderError(f"model {self.model!r} not found at {self.url} ({detail}); {hint}")
                raise EmbedderError(f"{endpoint} refused the request{via}: HTTP {answer.status}: {detail}")
            try:
                return json.loads(answer.body)
            except json.JSONDecodeError as exc:
                raise EmbedderError(
                    f"{endpoint} answered with invalid JSON{via}: {answer.body[:200]!r}"
                ) from exc
        hint = "" if proxy is None else "; if the proxy cannot reach the server, add its host to no_proxy"
        raise EmbedderError(
            f"{endpoint} failed after {attempts} attempt{'s' * (attempts != 1)}{via} "
            f"(deadline {self.timeout_s:g} s a request{'' if total is None else f', {total:g} s a batch'}): "
            f"{last}{hint}"
        )

    def _server_version(self) -> str:
        """`` (Ollama X.Y.Z)`` from ``GET /api/version``, or nothing when the server does not say
        within its own deadline (at most ``VERSION_PROBE_DEADLINE_S``)."""
        request = urllib.request.Request(self.url.rstrip("/") + "/api/version", method="GET")
        try:
            answer = exchange(request, min(self.timeout_s, VERSION_PROBE_DEADLINE_S), {})
            version = json.loads(answer.body).get("version") if answer.status == 200 else None
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return ""
        return f" (Ollama {version})" if isinstance(version, str) else ""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any loopback address (127.0.0.0/8, ::1)."""
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain") or host.lower().endswith(
        ".localhost"
    ):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def proxy_for(url: str) -> dict[str, str] | None:
    """``{scheme: proxy URL}`` when urllib would send ``url`` through an environment proxy, else None.

    A loopback host never goes through a proxy, ``no_proxy`` or not: that is what Ollama's own Go
    client does (Go's ``httpproxy`` always bypasses localhost), and a proxy cannot reach the user's
    loopback anyway.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if is_loopback(host) or urllib.request.proxy_bypass(parts.netloc):
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    return {parts.scheme: proxy} if proxy else None


def _error_text(answer: Answer) -> tuple[str, bool]:
    """The error's message and whether the body was JSON (Ollama's own errors are; Go's 404 is not)."""
    body = answer.body.decode("utf-8", "replace")
    try:
        message = json.loads(body).get("error")
    except (json.JSONDecodeError, AttributeError):
        return str(body.strip() or answer.reason)[:300], False
    return str(message or body or answer.reason)[:300], True


def embedder_for_recipe(recipe: dict[str, object], ollama_url: str | None = None) -> Embedder:
    """The embedder a bundle's recipe names (``embedder`` field), configured as training had it; an
    Ollama embedder talks to ``ollama_url`` (default ``$HASHER_OLLAMA_URL``, then 127.0.0.1:11434).
    Raises :class:`InferenceError` for an embedder this release does not have."""
    name, dims = recipe.get("name"), int(recipe.get("dims", EMBEDDING_DIMS))
    if name == "hashing":
        return HashingEmbedder(dims=dims)
    if name == "ollama":
        url = ollama_url or load_settings().ollama_url
        return OllamaEmbedder(model=str(recipe.get("model")), dims=dims, url=url)
    raise InferenceError(f"the recipe's embedder {name!r} is not one this release has (hashing, ollama)")
