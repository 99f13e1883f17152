"""Deadlines, not per-read timeouts, on every HTTP request hasher makes (issue 18, kind 10).

A server on 127.0.0.1 misbehaves in each way a slow or broken link can: it trickles the body (with
a length, chunked, or until it closes), trickles the status line and headers, accepts and never
answers, never completes a TLS handshake, or fails fast so that only the retries take time. The
embed call, the version probe and a request through a proxy must each end within their deadline
with an ``EmbedderError``; the old client took ~36 s for case 08's 4 s budget.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from hasher_core.errors import EmbedderError
from hasher_resources.embedder import OllamaEmbedder
from hasher_resources.http_deadline import DeadlineExceeded, exchange

pytestmark = pytest.mark.timeout(60)

EMBEDDING = json.dumps({"embeddings": [[0.01] * 768]}).encode()
#: Slack for thread scheduling on a busy 2-core machine, on top of a deadline.
SLACK_S = 1.5

Behaviour = Callable[[socket.socket], None]


def _read_request(conn: socket.socket) -> bytes:
    """The request head and body (by Content-Length), or what arrived before the client gave up."""
    data = b""
    conn.settimeout(10)
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
    return data


def _trickle(conn: socket.socket, data: bytes, piece: int, every_s: float) -> None:
    with contextlib.suppress(OSError):
        for i in range(0, len(data), piece):
            conn.sendall(data[i : i + piece])
            time.sleep(every_s)


def trickling_body(framing: str) -> Behaviour:
    """200 at once, then the JSON 64 bytes every 0.2 s, framed by a length, chunks or the close."""

    def behave(conn: socket.socket) -> None:
        _read_request(conn)
        if framing == "length":
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(EMBEDDING)}\r\n\r\n"
            body = EMBEDDING
        elif framing == "chunked":
            head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            body = b"".join(
                b"%x\r\n%s\r\n" % (64, EMBEDDING[i : i + 64]) for i in range(0, len(EMBEDDING), 64)
            )
        else:  # until the server closes: a truncated body would look complete
            head = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"
            body = EMBEDDING
        conn.sendall(head.encode())
        _trickle(conn, body, 64, 0.2)

    return behave


def trickling_headers(conn: socket.socket) -> None:
    _read_request(conn)
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: {'x' * 400}\r\n\r\n"
    _trickle(conn, head.encode(), 1, 0.05)


def silent(conn: socket.socket) -> None:
    _read_request(conn)
    time.sleep(30)


def deaf(conn: socket.socket) -> None:
    time.sleep(30)  # accepts the connection, reads nothing, says nothing (TLS: no ServerHello)


def fast_503(conn: socket.socket) -> None:
    _read_request(conn)
    body = b'{"error": "overloaded"}'
    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def old_ollama_with_a_trickling_version(conn: socket.socket) -> None:
    request = _read_request(conn)
    if request.startswith(b"POST"):
        body = b"404 page not found"
        conn.sendall(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n\r\n" + body
        )
        return
    version = b'{"version": "0.3.0"}'
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(version) * 50))
    _trickle(conn, version * 50, 2, 0.1)


@contextlib.contextmanager
def misbehaving(behave: Behaviour) -> Iterator[str]:
    """A TCP server on 127.0.0.1 handling each connection with ``behave`` in a thread; yields
    ``127.0.0.1:PORT``. Connections are closed when the block ends."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def handle(conn: socket.socket) -> None:
        with conn:
            behave(conn)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.close()


def _embed_elapsed(url: str, **settings: float) -> tuple[float, EmbedderError]:
    embedder = OllamaEmbedder(url=url, **{"backoff_s": 0.0, **settings})
    start = time.monotonic()
    with pytest.raises(EmbedderError) as caught:
        embedder.embed(["hello world"])
    return time.monotonic() - start, caught.value


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_a_trickling_body_is_an_error_within_the_deadline(framing):
    # Case 08: timeout_s=2, retries=1 took 36 s; the answer needs ~2.2 s a try at this pace.
    with misbehaving(trickling_body(framing)) as where:
        elapsed, error = _embed_elapsed(f"http://{where}", timeout_s=1.0, retries=1)
    assert elapsed < 2 * 1.0 + SLACK_S
    assert "failed after 2 attempts (deadline 1 s a request)" in str(error)
    assert "no complete answer within 1 s" in str(error)


@pytest.mark.parametrize(
    "behave", [trickling_headers, silent, deaf], ids=["slow-headers", "never-answers", "never-reads"]
)
def test_a_server_that_never_finishes_its_answer_is_an_error_within_the_deadline(behave):
    with misbehaving(behave) as where:
        elapsed, error = _embed_elapsed(f"http://{where}", timeout_s=0.5, retries=2)
    assert elapsed < 3 * 0.5 + SLACK_S
    assert "no complete answer within 0.5 s" in str(error)


def test_a_tls_handshake_that_never_completes_is_an_error_within_the_deadline():
    with misbehaving(deaf) as where:
        elapsed, error = _embed_elapsed(f"https://{where}", timeout_s=0.5, retries=1)
    assert elapsed < 2 * 0.5 + SLACK_S
    assert "no complete answer within 0.5 s" in str(error)


def test_retries_and_their_backoff_count_inside_the_batch_deadline():
    with misbehaving(fast_503) as where:
        elapsed, error = _embed_elapsed(
            f"http://{where}", timeout_s=5.0, retries=50, backoff_s=0.2, batch_deadline_s=1.0
        )
    assert elapsed < 1.0 + SLACK_S
    assert "1 s a batch" in str(error) and "HTTP 503: overloaded" in str(error)


def test_a_version_probe_that_trickles_does_not_outlast_its_deadline():
    # An Ollama older than 0.3.4 (no /api/embed) whose /api/version answer trickles in.
    with misbehaving(old_ollama_with_a_trickling_version) as where:
        embedder = OllamaEmbedder(url=f"http://{where}", timeout_s=1.0, retries=0)
        start = time.monotonic()
        with pytest.raises(EmbedderError, match=r"has no /api/embed .*upgrade the Ollama server"):
            embedder.embed(["a"])
    assert time.monotonic() - start < 2 * 1.0 + SLACK_S


def test_a_trickling_proxy_is_an_error_within_the_deadline(monkeypatch):
    monkeypatch.setattr(urllib.request, "_opener", None)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with misbehaving(trickling_body("length")) as where:
        monkeypatch.setenv("http_proxy", f"http://{where}")
        elapsed, error = _embed_elapsed("http://ollama.example.invalid:11434", timeout_s=0.8, retries=1)
    assert elapsed < 2 * 0.8 + SLACK_S
    assert f"through proxy http://{where}" in str(error) and "no complete answer" in str(error)


def test_an_answer_that_arrives_in_time_is_read_whole():
    body = EMBEDDING

    def prompt(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    with misbehaving(prompt) as where:
        answer = exchange(urllib.request.Request(f"http://{where}/api/version"), 5.0, {})
    assert answer.status == 200 and answer.body == body


def test_exchange_raises_deadline_exceeded_not_a_truncated_body():
    with (
        misbehaving(trickling_body("close")) as where,
        pytest.raises(DeadlineExceeded, match=r"no complete answer within 0\.3 s"),
    ):
        exchange(urllib.request.Request(f"http://{where}/api/embed", data=b"{}"), 0.3, {})
