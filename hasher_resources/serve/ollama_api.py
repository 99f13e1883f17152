"""The Ollama-compatible endpoints of ``hasher serve`` (``/api/generate``, ``/api/tags``,
``/api/version``): Ollama's request and answer shapes, NDJSON streaming by default, and hasher's
``hasher`` field on every answer and line (see ``app``)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .generation import Outcome, RunningGeneration, guarded
from .requests import (
    MODEL_NAME,
    OLLAMA_MODEL_NAME,
    BadRequest,
    OllamaGenerateBody,
    check_max_tokens,
    stop_sequences,
    unsupported,
)

if TYPE_CHECKING:
    from .service import ServeApp


def hasher_version() -> str:
    """The installed hasher package's version (what ``/api/version`` reports)."""
    try:
        return importlib.metadata.version("hasher")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


async def generate(serve: ServeApp, request: Request) -> Response:
    """``POST /api/generate``: the continuation of ``prompt`` (after ``context``), NDJSON unless
    ``stream`` is false; an empty prompt only loads the model, as in Ollama."""
    body = await serve.read_body(request, OllamaGenerateBody)
    unsupported(images=(bool(body.images), "not supported: the model reads text"))
    served = serve.serving(body.model, "ollama")
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
            f"(up to this server's cap of {serve.limits.max_tokens_cap})",
            param="options.num_predict",
        )
    limit = serve.limits.max_tokens_cap if predict in (-1, -2) else predict
    greq = serve.generation_request(
        body.prompt,
        check_max_tokens(limit, serve.limits, "options.num_predict"),
        options.max_distance if options else None,
        stop_sequences(options.stop if options else None, "options.stop"),
        tuple(body.context or ()),
    )
    run = await serve.begin(served, greq)

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
            "hasher": outcome.honesty() if body.stream is False else outcome.summary(),
        }

    if not body.stream:
        text, outcome = await serve.collect(run, "/api/generate")
        return JSONResponse(final(outcome, text))

    async def frames(run: RunningGeneration) -> AsyncIterator[str]:
        async for piece in guarded(run):
            if isinstance(piece, str):
                yield json.dumps({"error": piece}) + "\n"
                return
            line = {
                "model": body.model,
                "created_at": _now(),
                "response": piece.text,
                "done": False,
                "hasher": piece.honesty(served.version),
            }
            yield json.dumps(line, ensure_ascii=False) + "\n"
        yield json.dumps(final(run.outcome, ""), ensure_ascii=False) + "\n"

    return serve.stream(run, "/api/generate", "application/x-ndjson", frames)


async def tags(serve: ServeApp, request: Request) -> Response:
    """``GET /api/tags``: the served model as Ollama lists models."""
    served = serve.holder.served
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


async def version(serve: ServeApp, request: Request) -> Response:
    """``GET /api/version``: hasher's version."""
    return JSONResponse({"version": hasher_version()})


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
