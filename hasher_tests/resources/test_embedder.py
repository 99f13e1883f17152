"""The embedder resources: the offline hashing embedder and the Ollama /api/embed client (DESIGN §2)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import numpy as np
import pydantic
import pytest

from hasher_core.design import HASHING_VERSION
from hasher_core.errors import EmbedderError
from hasher_resources.embedder import HashingEmbedder, OllamaEmbedder

DIMS = 768


MASK = 2**64 - 1


def fmix(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def fnv(data: bytes, kind: int) -> int:
    h = 0xCBF29CE484222325 ^ ((kind * 0x9E3779B97F4A7C15) & MASK)
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK
    return fmix(h)


def oracle(text: str, dims: int = DIMS) -> np.ndarray:
    """DESIGN §3.3's offline embedding written out plainly: every piece of the text, its pairs, the
    last four pieces weighted double (the definition in hasher_core.embedding.lexical)."""
    data = text.encode()
    pieces = re.findall(rb"[A-Za-z0-9_\x80-\xff]+|[ \t\n\r\x0b\x0c]+|.", data, re.DOTALL)
    vector = np.zeros(dims)

    def add(h: int, weight: float) -> None:
        vector[(h >> 1) % dims] += weight if h & 1 else -weight

    ids = []
    for p, piece in enumerate(pieces):
        weight = 2.0 if p >= len(pieces) - 4 else 1.0
        word = re.fullmatch(rb"[A-Za-z0-9_\x80-\xff]+", piece) is not None
        kind = 1 if word else (3 if piece[:1].isspace() else 4)
        ids.append(fnv(piece, kind))
        add(ids[-1], weight)
        if word:
            add(fnv(piece.lower(), 2), weight)
        if p:
            add(fmix((ids[-2] * 0x9E3779B97F4A7C15 + ids[-1]) & MASK), weight)
    norm = np.linalg.norm(vector)
    return (vector / norm if norm else vector).astype(np.float32)


@pytest.mark.parametrize(
    "text", ["Hello!", "SHA seed", "Four score and seven years ago,", "  ...  ", "naïve café\n\tx_1", "a"]
)
def test_hashing_embedder_matches_the_plain_python_definition(text: str) -> None:
    assert np.allclose(HashingEmbedder().embed([text])[0], oracle(text), atol=1e-7)


def test_texts_embed_independently_of_their_neighbours() -> None:
    together = HashingEmbedder().embed(["sha", "seed", "SHA seed"])
    assert np.array_equal(together[2], HashingEmbedder().embed(["SHA seed"])[0])
    assert np.array_equal(together[0], HashingEmbedder().embed(["sha"])[0])


@pytest.mark.parametrize(
    "other",
    ["Four score and seven years ago", "four score and seven years ago,", "Four score and  seven years ago,",
     "Four score and seven years ago.", "Four score and seven years ago,\n"],
)  # fmt: skip
def test_texts_that_differ_by_punctuation_a_space_or_case_embed_differently(other: str) -> None:
    """DESIGN §3.3: windows must be told apart, or one seed must answer two contexts."""
    base, changed = HashingEmbedder().embed(["Four score and seven years ago,", other])
    assert not np.array_equal(base, changed)
    assert base @ changed > 0.7  # still lexically close


def test_hashing_embedder_is_unit_length_float32_and_zero_only_for_empty_text() -> None:
    out = HashingEmbedder().embed(["the quick brown fox jumps", "", "  ...  ", "fox"])
    assert out.shape == (4, DIMS) and out.dtype == np.float32
    assert HashingEmbedder().embed([]).shape == (0, DIMS)
    assert np.allclose(np.linalg.norm(out[[0, 2, 3]], axis=1), 1.0, atol=1e-6)
    assert not out[1].any()


def test_hashing_embedder_is_lexical_shared_words_score_higher() -> None:
    a, b, c = HashingEmbedder().embed(
        ["seeds for the sha256 recursion", "the sha256 recursion seeds", "a recipe for lemon cake"]
    )
    assert a @ b > a @ c
    assert "not semantic" in HashingEmbedder().description()
    assert HashingEmbedder(dims=16).recipe() == {"name": "hashing", "version": HASHING_VERSION, "dims": 16}


def test_embedders_are_dagster_resources_with_validated_config() -> None:
    with dg.build_resources({"embedder": HashingEmbedder(dims=16)}) as resources:
        assert resources.embedder.embed(["a b c"]).shape == (1, 16)
    with pytest.raises(pydantic.ValidationError, match="greater than 0"):
        HashingEmbedder(dims=0)
    with pytest.raises(pydantic.ValidationError, match="batch_size"):
        OllamaEmbedder(batch_size=0)


@dataclass
class FakeOllama:
    """What the test server does; each field injects one kind of failure."""

    url: str = ""
    dims: int = DIMS
    fail_first: int = 0
    fail_status: int = 500
    slow_first: int = 0
    delay_s: float = 0.0
    extra_embeddings: int = 0
    nan: bool = False
    known_models: tuple[str, ...] = ("nomic-embed-text",)
    #: The path that embeds; an older Ollama has none of /api/embed (its mux answers plain text).
    embed_path: str = "/api/embed"
    version: str = "0.12.0"
    #: Answer every request with this status (a broken proxy: 502).
    always_status: int = 0
    requests: list[dict[str, object]] = field(default_factory=list)


def make_handler(state: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def reply(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            # The client may have timed out and hung up already, as the timeout tests intend.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def plain(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/api/version":
                return self.reply(200, {"version": state.version})
            return self.plain(404, "404 page not found")

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append({**body, "path": self.path})
            n = len(state.requests)
            if state.always_status:
                return self.plain(state.always_status, "Bad Gateway")
            if self.path != state.embed_path:
                return self.plain(404, "404 page not found")
            if n <= state.slow_first:
                time.sleep(state.delay_s)
            if n <= state.fail_first:
                return self.reply(state.fail_status, {"error": "overloaded"})
            if body["model"] not in state.known_models:
                return self.reply(404, {"error": f'model "{body["model"]}" not found, try pulling it first'})
            texts = body["input"]
            vectors = [[float(len(t))] + [0.25] * (state.dims - 1) for t in texts]
            vectors += vectors[: state.extra_embeddings]
            if state.nan and vectors:
                vectors[0][1] = float("nan")
            return self.reply(200, {"model": body["model"], "embeddings": vectors})

    return Handler


@contextlib.contextmanager
def serving(state: FakeOllama) -> Iterator[FakeOllama]:
    """Serve ``state`` on 127.0.0.1 (a free port, in ``state.url``) until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with serving(FakeOllama()) as state:
        yield state


def client(state: FakeOllama, **kwargs: object) -> OllamaEmbedder:
    settings: dict[str, object] = {"url": state.url, "backoff_s": 0.01, "timeout_s": 2.0, **kwargs}
    return OllamaEmbedder(**settings)  # type: ignore[arg-type]


def test_texts_are_sent_in_batches_and_come_back_in_order(ollama: FakeOllama) -> None:
    texts = ["x" * i for i in range(70)]
    out = client(ollama, batch_size=32).embed(texts)
    assert [len(r["input"]) for r in ollama.requests] == [32, 32, 6]
    assert all(r["model"] == "nomic-embed-text" for r in ollama.requests)
    assert out.shape == (70, DIMS) and out.dtype == np.float32
    assert out[:, 0].tolist() == [float(i) for i in range(70)]


def test_server_errors_are_retried_with_backoff(ollama: FakeOllama) -> None:
    ollama.fail_first = 2
    start = time.monotonic()
    out = client(ollama, retries=3, backoff_s=0.05).embed(["a", "bb"])
    assert len(ollama.requests) == 3 and out[:, 0].tolist() == [1.0, 2.0]
    assert time.monotonic() - start >= 0.05 + 0.1  # two sleeps: backoff, then twice the backoff


def test_persistent_server_errors_give_up_after_the_retries(ollama: FakeOllama) -> None:
    ollama.fail_first = 100
    with pytest.raises(EmbedderError, match=r"failed after 3 attempts.*HTTP 500: overloaded"):
        client(ollama, retries=2).embed(["a"])
    assert len(ollama.requests) == 3


def test_a_slow_response_times_out_and_is_retried(ollama: FakeOllama) -> None:
    ollama.slow_first, ollama.delay_s = 1, 1.0
    start = time.monotonic()
    out = client(ollama, timeout_s=0.2, retries=1).embed(["abc"])
    assert out[0, 0] == 3.0 and len(ollama.requests) == 2
    assert time.monotonic() - start < 1.0


def test_a_server_that_is_always_too_slow_is_an_error_naming_the_timeout(ollama: FakeOllama) -> None:
    ollama.slow_first, ollama.delay_s = 100, 0.5
    with pytest.raises(EmbedderError, match=r"failed after 2 attempts \(deadline 0.1 s a request"):
        client(ollama, timeout_s=0.1, retries=1).embed(["abc"])


def test_the_wrong_number_of_embeddings_is_an_error(ollama: FakeOllama) -> None:
    ollama.extra_embeddings = 1
    with pytest.raises(EmbedderError, match="4 embeddings returned for 3 texts"):
        client(ollama).embed(["a", "b", "c"])
    assert len(ollama.requests) == 1


def test_the_wrong_dimension_is_an_error(ollama: FakeOllama) -> None:
    ollama.dims = 1024
    with pytest.raises(EmbedderError, match=r"length \[1024\], expected 768"):
        client(ollama).embed(["a"])


def test_nan_in_an_answer_is_an_error(ollama: FakeOllama) -> None:
    ollama.nan = True
    with pytest.raises(EmbedderError, match="NaN or infinite"):
        client(ollama).embed(["a"])


def test_a_missing_model_says_to_pull_it_and_is_not_retried(ollama: FakeOllama) -> None:
    with pytest.raises(EmbedderError, match=r"model 'mxbai' not found at .*run `ollama pull mxbai`"):
        client(ollama, model="mxbai").embed(["a"])
    assert len(ollama.requests) == 1


def test_other_client_errors_are_not_retried(ollama: FakeOllama) -> None:
    ollama.fail_first, ollama.fail_status = 100, 400
    with pytest.raises(EmbedderError, match="HTTP 400: overloaded"):
        client(ollama).embed(["a"])
    assert len(ollama.requests) == 1


def test_an_unreachable_server_is_an_error_after_the_retries() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    embedder = OllamaEmbedder(url=f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01, timeout_s=1)
    with pytest.raises(EmbedderError, match=r"failed after 3 attempts.*ConnectionRefusedError"):
        embedder.embed(["a"])
    assert embedder.description() == f"ollama nomic-embed-text at http://127.0.0.1:{port}"


def test_an_empty_list_needs_no_request(ollama: FakeOllama) -> None:
    assert client(ollama).embed([]).shape == (0, DIMS)
    assert ollama.requests == []


def test_an_ollama_older_than_0_3_4_says_to_upgrade_the_server_not_to_pull(ollama: FakeOllama) -> None:
    # Before 0.3.4 there is no /api/embed: Go's mux answers plain text, not Ollama's JSON error.
    ollama.version = "0.3.0"
    ollama.embed_path = "/api/embeddings-only"
    with pytest.raises(EmbedderError) as caught:
        client(ollama).embed(["a"])
    message = str(caught.value)
    assert "has no /api/embed ('404 page not found') (Ollama 0.3.0)" in message
    assert "upgrade the Ollama server" in message and "ollama pull" not in message
    assert [r["path"] for r in ollama.requests] == ["/api/embed"]  # not retried


def test_a_missing_model_on_a_current_server_still_says_to_pull_it(ollama: FakeOllama) -> None:
    with pytest.raises(EmbedderError, match="run `ollama pull other`") as caught:
        client(ollama, model="other").embed(["a"])
    assert "upgrade" not in str(caught.value)


@pytest.fixture
def bad_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOllama]:
    """An HTTP proxy on 127.0.0.1 that answers every request 502, recording what it was asked.

    urlopen's global opener reads the proxy variables once, when first built: forget it, so the
    environment set by a test is the one a fresh process would see.
    """
    monkeypatch.setattr(urllib.request, "_opener", None)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with serving(FakeOllama(always_status=502)) as state:
        yield state


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_loopback_server_bypasses_http_proxy_without_no_proxy(
    ollama: FakeOllama, bad_proxy: FakeOllama, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.setenv("http_proxy", bad_proxy.url)
    url = ollama.url.replace("127.0.0.1", host)
    out = OllamaEmbedder(url=url, retries=0, timeout_s=2).embed(["abc"])
    assert out[0, 0] == 3.0
    assert bad_proxy.requests == [] and len(ollama.requests) == 1


def test_an_error_through_a_proxy_names_the_proxy(
    bad_proxy: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", bad_proxy.url)
    embedder = OllamaEmbedder(
        url="http://ollama.example.invalid:11434", retries=1, backoff_s=0.01, timeout_s=2
    )
    with pytest.raises(EmbedderError) as caught:
        embedder.embed(["a"])
    message = str(caught.value)
    assert f"through proxy {bad_proxy.url} (from the environment)" in message
    assert "HTTP 502" in message and "no_proxy" in message
    assert len(bad_proxy.requests) == 2  # the proxy was asked, and retried once
