"""What every endpoint of ``hasher serve`` shares (:class:`ServeApp`): the bearer token, the error
shapes of both API families, request bodies, the concurrency limit, streams that settle their slot
however they end, metrics, and the health and metrics endpoints. ``app`` routes requests to it and
to the API shapes (``openai_api``, ``ollama_api``), which use it.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from hasher_core.errors import InferenceError

from .generation import GenerationRequest, Outcome, RunningGeneration
from .holder import ModelHolder, ServedModel
from .metrics import ServeMetrics
from .requests import (
    MODEL_NAME,
    OLLAMA_MODEL_NAME,
    BadRequest,
    Family,
    ServeLimits,
    check_prompt,
    max_distance,
    model_matches,
    parse_body,
)

log = logging.getLogger("hasher.serve")


class _ClosingStream(StreamingResponse):
    """A streamed answer that calls ``on_close`` however it ends: finished, failed, or cancelled
    because the client went away, also before its first byte (a generator that never started
    would never run its ``finally``)."""

    def __init__(self, content: AsyncIterator[str], media_type: str, on_close: Callable[[], None]) -> None:
        super().__init__(
            content, media_type=media_type, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class ServeApp:
    """The endpoints over one :class:`ModelHolder` with its limits, token and metrics."""

    def __init__(
        self,
        holder: ModelHolder,
        limits: ServeLimits,
        *,
        token: str | None = None,
        metrics: ServeMetrics | None = None,
    ) -> None:
        self.holder, self.worker, self.limits = holder, holder.worker, limits
        self.token = token.encode() if token else None
        self.metrics = metrics or ServeMetrics(queue_depth=lambda: holder.worker.queued)
        self.in_flight = 0

    # -- plumbing -----------------------------------------------------------------------------------

    def authorize(self, request: Request) -> None:
        """Nothing without a configured token; else a 401 unless the bearer token matches."""
        if self.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise BadRequest(
                "this server requires a bearer token (HASHER_SERVE_TOKEN): "
                "send 'Authorization: Bearer <token>'",
                status=401,
                code="missing_token",
            )
        if not secrets.compare_digest(given.strip().encode(), self.token):
            raise BadRequest(
                "the bearer token is not this server's HASHER_SERVE_TOKEN", status=401, code="invalid_token"
            )

    def error(self, family: Family | None, exc: BadRequest, endpoint: str) -> JSONResponse:
        """The refusal in the caller's API's error shape, counted in the metrics."""
        self.metrics.errors.labels(endpoint, str(exc.status)).inc()
        if family == "openai":
            kind = {401: "authentication_error", 404: "invalid_request_error", 429: "rate_limit_error"}.get(
                exc.status, "server_error" if exc.status >= 500 else "invalid_request_error"
            )
            body: dict[str, Any] = {
                "error": {"message": exc.message, "type": kind, "param": exc.param, "code": exc.code}
            }
        else:
            body = {"error": exc.message}
        headers = {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if exc.status == 429:
            headers["Retry-After"] = "1"
        return JSONResponse(body, status_code=exc.status, headers=headers)

    def endpoint(
        self,
        name: str,
        family: Family | None,
        handler: Callable[[Request], Awaitable[Response]],
        *,
        protected: bool = True,
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` with authorisation, error shapes and request metrics (streams are timed by
        their own close hook, see :meth:`_stream`)."""

        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            self.metrics.requests.labels(name).inc()
            try:
                if protected:
                    self.authorize(request)
                response = await handler(request)
            except BadRequest as exc:
                response = self.error(family, exc, name)
            except Exception as exc:  # one line in the log, a 500 in the API's shape to the client
                log.exception("%s failed", name)
                response = self.error(
                    family,
                    BadRequest(
                        f"internal error: {type(exc).__name__}: {exc}", status=500, code="internal_error"
                    ),
                    name,
                )
            if not isinstance(response, _ClosingStream):
                self.metrics.request_seconds.labels(name).observe(time.perf_counter() - started)
            return response

        return wrapped

    async def read_body[B](self, request: Request, kind: type[B]) -> B:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            raise BadRequest(
                f"request body is {int(declared):,} bytes; this server accepts at most "
                f"{self.limits.max_body_bytes:,}",
                status=413,
                code="body_too_large",
            )
        return parse_body(await request.body(), kind, self.limits)

    def serving(self, model: str, family: Family) -> ServedModel:
        """The served model for a request naming ``model``: 503 when none is loaded, 404 for a
        name that is not this server's model."""
        served = self.holder.served
        if served is None:
            _, health = self.holder.health()
            raise BadRequest(
                f"no model is loaded: {health.get('reason') or 'see /health'}",
                status=503,
                code="model_not_loaded",
            )
        if not model_matches(model, served.version):
            known = OLLAMA_MODEL_NAME if family == "ollama" else MODEL_NAME
            raise BadRequest(
                f"model {model!r} not found: this server serves {known!r} (bundle {served.version})",
                status=404,
                param="model",
                code="model_not_found",
            )
        return served

    def admit(self) -> None:
        """Count one more generation in flight, or a 429 at the limit."""
        if self.in_flight >= self.limits.max_concurrent:
            raise BadRequest(
                f"too many requests: {self.in_flight} generations are running, this server's limit is "
                f"{self.limits.max_concurrent}; retry shortly",
                status=429,
                code="rate_limit_exceeded",
            )
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)

    def release(self, run: RunningGeneration, endpoint: str) -> None:
        """One generation left: free its slot and count its tokens and token latencies (once)."""
        self.in_flight -= 1
        self.metrics.in_flight.set(self.in_flight)
        outcome = run.outcome
        for step in outcome.steps:
            if step.token_id is not None:
                self.metrics.tokens.labels("exact" if step.exact else "guessed", outcome.bundle).inc()
        if outcome.abstained:
            self.metrics.abstentions.labels(outcome.bundle).inc()
        for gap in outcome.token_gaps():
            self.metrics.token_seconds.observe(gap)
        if outcome.stop_reason == "error":  # failed after the headers went out (see _guarded)
            self.metrics.errors.labels(endpoint, "stream").inc()

    async def begin(self, served: ServedModel, request: GenerationRequest) -> RunningGeneration:
        """Admit and start a generation (a 400 for a prompt the model cannot take)."""
        self.admit()
        run = RunningGeneration(served, self.worker, request)
        try:
            await run.start()
        except InferenceError as exc:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)
            raise BadRequest(str(exc), param="prompt", code="invalid_prompt") from None
        except BaseException:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)
            raise
        return run

    async def collect(self, run: RunningGeneration, endpoint: str) -> tuple[str, Outcome]:
        """A whole generation's text (for ``stream: false``)."""
        try:
            text = "".join([piece.text async for piece in run.pieces()])
        finally:
            self.release(run, endpoint)
        return text, run.outcome

    def stream(
        self,
        run: RunningGeneration,
        endpoint: str,
        media_type: str,
        frames: Callable[[RunningGeneration], AsyncIterator[str]],
    ) -> _ClosingStream:
        """A streamed answer whose slot, metrics and latency are settled once: when the generation is
        over, before its closing frames go out (a client that reads the end and sends its next
        request at once must find the slot free), or else when the response ends however it ends."""
        released = False

        def close() -> None:
            nonlocal released
            if not released:
                released = True
                self.release(run, endpoint)
                self.metrics.request_seconds.labels(endpoint).observe(time.monotonic() - run.started)

        async def body() -> AsyncIterator[str]:
            async for frame in frames(run):
                if run.done:
                    close()
                yield frame

        return _ClosingStream(body(), media_type, close)

    def generation_request(
        self, prompt: str, max_tokens: int, distance: float | None, stop, context: tuple[int, ...] = ()
    ) -> GenerationRequest:
        return GenerationRequest(
            prompt=check_prompt(prompt, self.limits),
            max_tokens=max_tokens,
            max_distance=max_distance(distance),
            stop=stop,
            deadline_s=self.limits.deadline_s,
            context=context,
        )

    async def health(self, request: Request) -> Response:
        serving, body = self.holder.health()
        body["in_flight"] = self.in_flight
        return JSONResponse(body, status_code=200 if serving else 503)

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)
