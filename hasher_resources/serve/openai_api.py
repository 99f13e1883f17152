"""The OpenAI-compatible endpoints of ``hasher serve`` (``/v1/completions``, ``/v1/chat/completions``,
``/v1/models``): OpenAI's request and answer shapes, server-sent events for ``stream: true``, and
hasher's ``hasher`` field on every answer and chunk (see ``app``)."""

from __future__ import annotations

import datetime as _dt
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .generation import Outcome, RunningGeneration, guarded
from .holder import ServedModel
from .requests import (
    MODEL_NAME,
    ChatBody,
    CompletionBody,
    chat_prompt,
    check_max_tokens,
    completion_prompt,
    stop_sequences,
    unsupported,
)

if TYPE_CHECKING:
    from .service import ServeApp


async def completions(serve: ServeApp, request: Request) -> Response:
    """``POST /v1/completions``: the continuation of ``prompt``, whole or as server-sent events."""
    body = await serve.read_body(request, CompletionBody)
    unsupported(
        n=(body.n != 1, "one completion per request (greedy recall gives the same answer every time)"),
        best_of=(body.best_of not in (None, 1), "not supported: generation is greedy"),
        logprobs=(bool(body.logprobs), "not supported: each token's honesty is in the 'hasher' field"),
        suffix=(bool(body.suffix), "not supported (no insertion)"),
    )
    served = serve.serving(body.model, "openai")
    prompt = completion_prompt(body)
    greq = serve.generation_request(
        prompt,
        check_max_tokens(body.max_tokens, serve.limits),
        body.max_distance,
        stop_sequences(body.stop),
    )
    run = await serve.begin(served, greq)
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
        text, outcome = await serve.collect(run, "/v1/completions")
        answer = chunk(echo + text, outcome.finish_reason, outcome.honesty())
        return JSONResponse(answer | {"usage": _usage(outcome)})

    usage = body.stream_options is not None and body.stream_options.include_usage

    async def frames(run: RunningGeneration) -> AsyncIterator[str]:
        if echo:
            yield _sse(chunk(echo, None, {"bundle": served.version, "tokens": []}))
        async for piece in guarded(run):
            if isinstance(piece, str):
                yield _sse(_openai_error(piece))
                return
            yield _sse(chunk(piece.text, None, piece.honesty(served.version)))
        outcome = run.outcome
        yield _sse(chunk("", outcome.finish_reason, outcome.summary()))
        if usage:
            yield _sse({**chunk("", None, {}), "choices": [], "usage": _usage(outcome)})
        yield "data: [DONE]\n\n"

    return serve.stream(run, "/v1/completions", "text/event-stream", frames)


async def chat_completions(serve: ServeApp, request: Request) -> Response:
    """``POST /v1/chat/completions``: the continuation of the last user message."""
    body = await serve.read_body(request, ChatBody)
    unsupported(
        n=(body.n != 1, "one completion per request (greedy recall gives the same answer every time)"),
        logprobs=(bool(body.logprobs), "not supported: each token's honesty is in the 'hasher' field"),
        tools=(bool(body.tools), "not supported: the model recites what it was trained on"),
    )
    served = serve.serving(body.model, "openai")
    limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    greq = serve.generation_request(
        chat_prompt(body),
        check_max_tokens(limit, serve.limits, param),
        body.max_distance,
        stop_sequences(body.stop),
    )
    run = await serve.begin(served, greq)
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
        text, outcome = await serve.collect(run, "/v1/chat/completions")
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
                "hasher": outcome.honesty(),
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
        async for piece in guarded(run):
            if isinstance(piece, str):
                yield _sse(_openai_error(piece))
                return
            yield _sse(chunk({"content": piece.text}, None, piece.honesty(served.version)))
        outcome = run.outcome
        yield _sse(chunk({}, outcome.finish_reason, outcome.summary()))
        if usage:
            yield _sse(base("chat.completion.chunk") | {"choices": [], "usage": _usage(outcome)})
        yield "data: [DONE]\n\n"

    return serve.stream(run, "/v1/chat/completions", "text/event-stream", frames)


async def models(serve: ServeApp, request: Request) -> Response:
    """``GET /v1/models``: the one model with its bundle (an empty list while none is served)."""
    served = serve.holder.served
    return JSONResponse({"object": "list", "data": [_model_card(served)] if served else []})


async def one_model(serve: ServeApp, request: Request) -> Response:
    """``GET /v1/models/{model}``: the model card, or a 404 for another name."""
    served = serve.serving(request.path_params["model"], "openai")
    return JSONResponse(_model_card(served))


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _openai_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": "generation_failed"}}


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
