"""The ASGI app of ``hasher serve`` (Starlette): the OpenAI- and Ollama-compatible endpoints, the
health and metrics endpoints and the page at ``/``.

=====================================  ==========================================================
``POST /v1/completions``               OpenAI completions; ``stream: true`` = server-sent events
``POST /v1/chat/completions``          OpenAI chat; the prompt is the last user message
``GET /v1/models``, ``/v1/models/ID``  the one model, ``hasher``, with its bundle
``POST /api/generate``                 Ollama; NDJSON stream by default, ``stream: false`` one object
``GET /api/tags``, ``/api/version``    Ollama's model list and server version
``GET /health``                        200 + bundle while a verified bundle is served, else 503 + reason
``GET /metrics``                       Prometheus text (``metrics`` module)
``GET /``                              a page to try the model (``page.html``)
=====================================  ==========================================================

Every answer carries a ``hasher`` field, hasher's honesty: per token whether it came from an exact
deployed context or the nearest frame and at what distance, why generation stopped, and the
bundle version (an abstention is a normal answer that says so). With a token configured
(``HASHER_SERVE_TOKEN``), every endpoint but ``/`` and ``/health`` wants ``Authorization: Bearer``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import importlib.metadata
import importlib.resources
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hasher_core.errors import InferenceError

from .generation import GenerationRequest, Outcome, Piece, RunningGeneration
from .holder import ModelHolder, ServedModel
from .metrics import ServeMetrics
from .requests import (
    MODEL_NAME,
    BadRequest,
    ChatBody,
    CompletionBody,
    Family,
    OllamaGenerateBody,
    ServeLimits,
    chat_prompt,
    check_max_tokens,
    check_prompt,
    completion_prompt,
    max_distance,
    model_matches,
    parse_body,
    stop_sequences,
    unsupported,
)

log = logging.getLogger("hasher.serve")

OLLAMA_MODEL_NAME = f"{MODEL_NAME}:latest"


def hasher_version() -> str:
    """The installed hasher package's version (what ``/api/version`` reports)."""
    try:
        return importlib.metadata.version("hasher")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


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
        """A streamed answer whose slot, metrics and latency are settled once, however it ends."""
        released = False

        def close() -> None:
            nonlocal released
            if not released:
                released = True
                self.release(run, endpoint)
                self.metrics.request_seconds.labels(endpoint).observe(time.monotonic() - run.started)

        return _ClosingStream(frames(run), media_type, close)

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

    # -- OpenAI ---------------------------------------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        body = await self.read_body(request, CompletionBody)
        unsupported(
            n=(body.n != 1, "one completion per request (greedy recall gives the same answer every time)"),
            best_of=(body.best_of not in (None, 1), "not supported: generation is greedy"),
            logprobs=(bool(body.logprobs), "not supported: each token's honesty is in the 'hasher' field"),
            suffix=(bool(body.suffix), "not supported (no insertion)"),
        )
        served = self.serving(body.model, "openai")
        prompt = completion_prompt(body)
        greq = self.generation_request(
            prompt,
            check_max_tokens(body.max_tokens, self.limits),
            body.max_distance,
            stop_sequences(body.stop),
        )
        run = await self.begin(served, greq)
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        echo = prompt if body.echo else ""

        def chunk(text: str, finish: str | None, extra: dict[str, Any]) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": MODEL_NAME,
                "system_fingerprint": served.version,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
                "hasher": extra,
            }

        if not body.stream:
            text, outcome = await self.collect(run, "/v1/completions")
            answer = chunk(echo + text, outcome.finish_reason, _honesty(outcome))
            return JSONResponse(answer | {"usage": _usage(outcome)})

        usage = body.stream_options is not None and body.stream_options.include_usage

        async def frames(run: RunningGeneration) -> AsyncIterator[str]:
            if echo:
                yield _sse(chunk(echo, None, {"bundle": served.version, "tokens": []}))
            async for piece in _guarded(run):
                if isinstance(piece, str):
                    yield _sse(_openai_error(piece))
                    return
                yield _sse(chunk(piece.text, None, _piece_honesty(piece, served.version)))
            outcome = run.outcome
            yield _sse(chunk("", outcome.finish_reason, outcome.summary()))
            if usage:
                yield _sse({**chunk("", None, {}), "choices": [], "usage": _usage(outcome)})
            yield "data: [DONE]\n\n"

        return self.stream(run, "/v1/completions", "text/event-stream", frames)

    async def chat_completions(self, request: Request) -> Response:
        body = await self.read_body(request, ChatBody)
        unsupported(
            n=(body.n != 1, "one completion per request (greedy recall gives the same answer every time)"),
            logprobs=(bool(body.logprobs), "not supported: each token's honesty is in the 'hasher' field"),
            tools=(bool(body.tools), "not supported: the model recites what it was trained on"),
        )
        served = self.serving(body.model, "openai")
        limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        greq = self.generation_request(
            chat_prompt(body),
            check_max_tokens(limit, self.limits, param),
            body.max_distance,
            stop_sequences(body.stop),
        )
        run = await self.begin(served, greq)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def base(kind: str) -> dict[str, Any]:
            return {
                "id": ident,
                "object": kind,
                "created": created,
                "model": MODEL_NAME,
                "system_fingerprint": served.version,
            }

        if not body.stream:
            text, outcome = await self.collect(run, "/v1/chat/completions")
            return JSONResponse(
                base("chat.completion")
                | {
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": None,
                            "finish_reason": outcome.finish_reason,
                        }
                    ],
                    "usage": _usage(outcome),
                    "hasher": _honesty(outcome),
                }
            )

        usage = body.stream_options is not None and body.stream_options.include_usage

        def chunk(delta: dict[str, Any], finish: str | None, extra: dict[str, Any]) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return base("chat.completion.chunk") | {"choices": [choice], "hasher": extra}

        async def frames(run: RunningGeneration) -> AsyncIterator[str]:
            yield _sse(
                chunk({"role": "assistant", "content": ""}, None, {"bundle": served.version, "tokens": []})
            )
            async for piece in _guarded(run):
                if isinstance(piece, str):
                    yield _sse(_openai_error(piece))
                    return
                yield _sse(chunk({"content": piece.text}, None, _piece_honesty(piece, served.version)))
            outcome = run.outcome
            yield _sse(chunk({}, outcome.finish_reason, outcome.summary()))
            if usage:
                yield _sse(base("chat.completion.chunk") | {"choices": [], "usage": _usage(outcome)})
            yield "data: [DONE]\n\n"

        return self.stream(run, "/v1/chat/completions", "text/event-stream", frames)

    async def models(self, request: Request) -> Response:
        served = self.holder.served
        return JSONResponse({"object": "list", "data": [_model_card(served)] if served else []})

    async def model(self, request: Request) -> Response:
        served = self.serving(request.path_params["model"], "openai")
        return JSONResponse(_model_card(served))

    # -- Ollama ---------------------------------------------------------------------------------------

    async def ollama_generate(self, request: Request) -> Response:
        body = await self.read_body(request, OllamaGenerateBody)
        unsupported(images=(bool(body.images), "not supported: the model reads text"))
        served = self.serving(body.model, "ollama")
        options = body.options
        if not body.prompt and not body.context:  # Ollama's way to load a model: answer at once
            done = {
                "model": body.model,
                "created_at": _now(),
                "response": "",
                "done": True,
                "done_reason": "load",
                "hasher": {"bundle": served.version},
            }
            if body.stream:
                return Response(json.dumps(done) + "\n", media_type="application/x-ndjson")
            return JSONResponse(done)
        predict = options.num_predict if options else None
        if predict is not None and predict < 1 and predict not in (-1, -2):
            raise BadRequest(
                f"options.num_predict: {predict}; use a count >= 1, or -1 for as many as the model gives "
                f"(up to this server's cap of {self.limits.max_tokens_cap})",
                param="options.num_predict",
            )
        limit = self.limits.max_tokens_cap if predict in (-1, -2) else predict
        greq = self.generation_request(
            body.prompt,
            check_max_tokens(limit, self.limits, "options.num_predict"),
            options.max_distance if options else None,
            stop_sequences(options.stop if options else None, "options.stop"),
            tuple(body.context or ()),
        )
        run = await self.begin(served, greq)

        def final(outcome: Outcome, text: str) -> dict[str, Any]:
            """The closing object: ``text`` is the whole answer (``stream: false``) or ""."""
            elapsed = int((time.monotonic() - outcome.started) * 1e9)
            first = int(((outcome.step_times or [outcome.started])[0] - outcome.started) * 1e9)
            return {
                "model": body.model,
                "created_at": _now(),
                "response": text,
                "done": True,
                "done_reason": outcome.finish_reason,
                "context": outcome.prompt_token_ids + outcome.token_ids,
                "total_duration": elapsed,
                "load_duration": 0,
                "prompt_eval_count": outcome.prompt_tokens,
                "prompt_eval_duration": first,
                "eval_count": outcome.completion_tokens,
                "eval_duration": max(0, elapsed - first),
                "hasher": _honesty(outcome) if body.stream is False else outcome.summary(),
            }

        if not body.stream:
            text, outcome = await self.collect(run, "/api/generate")
            return JSONResponse(final(outcome, text))

        async def frames(run: RunningGeneration) -> AsyncIterator[str]:
            async for piece in _guarded(run):
                if isinstance(piece, str):
                    yield json.dumps({"error": piece}) + "\n"
                    return
                line = {
                    "model": body.model,
                    "created_at": _now(),
                    "response": piece.text,
                    "done": False,
                    "hasher": _piece_honesty(piece, served.version),
                }
                yield json.dumps(line, ensure_ascii=False) + "\n"
            yield json.dumps(final(run.outcome, ""), ensure_ascii=False) + "\n"

        return self.stream(run, "/api/generate", "application/x-ndjson", frames)

    async def ollama_tags(self, request: Request) -> Response:
        served = self.holder.served
        if served is None:
            return JSONResponse({"models": []})
        manifest = served.manifest
        size = sum(int(f.get("bytes", 0)) for f in (manifest.get("files") or {}).values())
        bits = (manifest.get("recipe") or {}).get("difficulty_bits") or []
        card = {
            "name": OLLAMA_MODEL_NAME,
            "model": OLLAMA_MODEL_NAME,
            "modified_at": manifest.get("created_at"),
            "size": size,
            "digest": manifest.get("content_digest"),
            "details": {
                "parent_model": "",
                "format": manifest.get("format"),
                "family": MODEL_NAME,
                "families": [MODEL_NAME],
                "parameter_size": f"{manifest.get('total_rows')} frames",
                "quantization_level": "/".join(f"{b} bits" for b in bits),
            },
            "hasher": served.describe(),
        }
        return JSONResponse({"models": [card]})

    async def ollama_version(self, request: Request) -> Response:
        return JSONResponse({"version": hasher_version()})

    # -- operations -----------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        serving, body = self.holder.health()
        body["in_flight"] = self.in_flight
        return JSONResponse(body, status_code=200 if serving else 503)

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def page(self, request: Request) -> Response:
        return HTMLResponse(_page_html())

    def routes(self) -> list[Route]:
        e = self.endpoint
        return [
            Route("/", e("/", None, self.page, protected=False)),
            Route("/health", e("/health", None, self.health, protected=False)),
            Route("/metrics", e("/metrics", None, self.metrics_text)),
            Route("/v1/completions", e("/v1/completions", "openai", self.completions), methods=["POST"]),
            Route(
                "/v1/chat/completions",
                e("/v1/chat/completions", "openai", self.chat_completions),
                methods=["POST"],
            ),
            Route("/v1/models", e("/v1/models", "openai", self.models)),
            Route("/v1/models/{model:path}", e("/v1/models/{model}", "openai", self.model)),
            Route("/api/generate", e("/api/generate", "ollama", self.ollama_generate), methods=["POST"]),
            Route("/api/tags", e("/api/tags", "ollama", self.ollama_tags)),
            Route("/api/version", e("/api/version", "ollama", self.ollama_version)),
        ]


def create_app(
    holder: ModelHolder,
    limits: ServeLimits | None = None,
    *,
    token: str | None = None,
    metrics: ServeMetrics | None = None,
) -> Starlette:
    """The Starlette app serving ``holder``'s model. Its lifespan starts the holder (loads what
    ``current`` names and watches it) and, at shutdown, stops the watcher and the inference worker."""
    serve = ServeApp(holder, limits or ServeLimits(), token=token, metrics=metrics)
    holder.add_listener(serve.metrics.bundle_changed)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        import asyncio

        await asyncio.to_thread(holder.start)
        try:
            yield
        finally:
            await asyncio.to_thread(holder.stop)
            await asyncio.to_thread(holder.worker.close)

    app = Starlette(routes=serve.routes(), lifespan=lifespan)
    app.state.serve = serve
    return app


async def _guarded(run: RunningGeneration) -> AsyncIterator[Piece | str]:
    """The pieces of a stream; an error after the headers went out ends it with a last message
    (a str) and marks the outcome ``error`` (counted by the metrics)."""
    try:
        async for piece in run.pieces():
            yield piece
    except Exception as exc:
        log.exception("generation failed mid-stream")
        message = f"generation failed: {type(exc).__name__}: {exc}"
        run.outcome.stopped, run.outcome.stop_reason = message, "error"
        yield message


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _openai_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": "generation_failed"}}


def _honesty(outcome: Outcome) -> dict[str, Any]:
    """The ``hasher`` field of a whole answer: the summary and every step."""
    return outcome.summary() | {"tokens": [step.as_json() for step in outcome.steps]}


def _piece_honesty(piece: Piece, version: str) -> dict[str, Any]:
    return {"bundle": version, "tokens": [step.as_json() for step in piece.steps]}


def _usage(outcome: Outcome) -> dict[str, int]:
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
    }


def _model_card(served: ServedModel) -> dict[str, Any]:
    created = served.manifest.get("created_at")
    try:
        stamp = int(_dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC).timestamp())
    except (TypeError, ValueError):
        stamp = int(served.loaded_at)
    return {
        "id": MODEL_NAME,
        "object": "model",
        "created": stamp,
        "owned_by": "hasher",
        "hasher": served.describe(),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@functools.cache
def _page_html() -> str:
    return importlib.resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
