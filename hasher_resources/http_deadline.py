"""HTTP requests with a total deadline: connecting, the headers and the whole body, not each read.

urllib's ``timeout`` (like urllib3's, urllib3#1271) bounds each socket operation, so a server that
sends a few bytes before every timeout — a loaded Ollama behind a proxy, a flaky link — keeps a
request alive indefinitely. :func:`exchange` sets each socket's timeout to what is left of the
deadline and, when the deadline passes, shuts the socket down from a timer thread: a read blocked
on a trickle ends at once. Proxies from the environment, TLS and redirects behave as in urllib.
Every HTTP request hasher makes goes through here (today the Ollama embedder's).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

_READ_BYTES = 1 << 16


class DeadlineExceeded(TimeoutError):
    """The exchange did not finish within its deadline (whatever it was doing at the time)."""


class _Deadline:
    """A point in time and the sockets to shut down when it passes (once, from a timer thread)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(0.001, self.at - time.monotonic())

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def finish(self) -> bool:
        """Stop the timer; True when the exchange finished before the deadline."""
        with self._lock:
            self._done = True
        self._timer.cancel()
        return not self.expired

    def __exit__(self, *exc: object) -> None:
        self.finish()


def _shut(sock: socket.socket) -> None:
    # shutdown() wakes a recv() blocked in another thread (close() alone would not).
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _connection_class(base: type[http.client.HTTPConnection], deadline: _Deadline) -> type:
    class Connection(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.timeout = min(self.timeout, deadline.remaining()) if self.timeout else deadline.remaining()
            create = self._create_connection  # socket.create_connection
            # Watched from the moment it exists: the TLS handshake and a proxy's CONNECT count too.
            # (Name resolution happens before there is a socket and is not bounded here.)
            self._create_connection = lambda *a, **k: deadline.watch(create(*a, **k))

    return Connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connection_class(http.client.HTTPConnection, self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            _connection_class(http.client.HTTPSConnection, self._deadline), req, context=self._context
        )


@dataclass(frozen=True)
class Answer:
    """A complete HTTP answer: status code, reason phrase, Content-Type and the whole body."""

    status: int
    reason: str
    content_type: str
    body: bytes


def exchange(
    request: urllib.request.Request, deadline_s: float, proxies: dict[str, str] | None = None
) -> Answer:
    """Send ``request`` and read the whole answer within ``deadline_s`` seconds in all.

    ``proxies`` is urllib's ``{scheme: proxy URL}`` (``{}`` = none; None = the environment's). Any
    status comes back as an :class:`Answer` (4xx/5xx included). Raises :class:`DeadlineExceeded`
    when the deadline passes first — during the connection, the TLS handshake, the headers or the
    body — and urllib's errors (``URLError``, ``http.client.HTTPException``, ``OSError``) for a
    connection that fails before it.
    """
    with _Deadline(deadline_s) as deadline:
        handlers = [_HTTPHandler(deadline), _HTTPSHandler(deadline)]
        if proxies is not None:
            handlers.insert(0, urllib.request.ProxyHandler(proxies))
        opener = urllib.request.build_opener(*handlers)
        try:
            try:
                response = opener.open(request, timeout=deadline.remaining())
            except urllib.error.HTTPError as error:
                response = error  # an error status still has a body to read, within the deadline
            with response:
                body = bytearray()
                while chunk := response.read(_READ_BYTES):
                    body += chunk
            content_type = response.headers.get("Content-Type", "")
            answer = Answer(response.status, str(response.reason or ""), content_type, bytes(body))
        except (OSError, http.client.HTTPException) as exc:
            # Every socket timeout here is what was left of the deadline: one firing means it passed
            # (urllib wraps one raised while connecting, e.g. in the TLS handshake, in a URLError).
            reason = getattr(exc, "reason", None)
            timed_out = isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError)
            if deadline.finish() and not timed_out:
                raise
            raise DeadlineExceeded(f"no complete answer within {deadline_s:g} s") from exc
        if not deadline.finish():
            # The shutdown may end a body without a length as if the server had closed it.
            raise DeadlineExceeded(f"no complete answer within {deadline_s:g} s")
        return answer
