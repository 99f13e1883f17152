"""The ASGI app of ``hasher serve`` (Starlette): what every endpoint shares (the token, error shapes,
bodies, the concurrency limit, streams that settle their slot however they end, metrics), the
health and metrics endpoints and the page at ``/``; the API shapes are ``openai_api`` and
``ollama_api``.

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
import functools
import importlib.resources
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from . import ollama_api, openai_api
from .holder import ModelHolder
from .metrics import ServeMetrics
from .requests import Family, ServeLimits
from .service import ServeApp


async def _page(request: Request) -> Response:
    return HTMLResponse(_page_html())


def _routes(serve: ServeApp) -> list[Route]:
    """Every endpoint, with its metrics label and API family (the shape of its errors)."""
    table: list[tuple[str, str, Family | None, Callable[..., Awaitable[Response]], list[str]]] = [
        ("/v1/completions", "/v1/completions", "openai", openai_api.completions, ["POST"]),
        ("/v1/chat/completions", "/v1/chat/completions", "openai", openai_api.chat_completions, ["POST"]),
        ("/v1/models", "/v1/models", "openai", openai_api.models, ["GET"]),
        ("/v1/models/{model:path}", "/v1/models/{model}", "openai", openai_api.one_model, ["GET"]),
        ("/api/generate", "/api/generate", "ollama", ollama_api.generate, ["POST"]),
        ("/api/tags", "/api/tags", "ollama", ollama_api.tags, ["GET"]),
        ("/api/version", "/api/version", "ollama", ollama_api.version, ["GET"]),
    ]
    return [
        Route("/", serve.endpoint("/", None, _page, protected=False)),
        Route("/health", serve.endpoint("/health", None, serve.health, protected=False)),
        Route("/metrics", serve.endpoint("/metrics", None, serve.metrics_text)),
        *(
            Route(path, serve.endpoint(label, family, functools.partial(handler, serve)), methods=methods)
            for path, label, family, handler, methods in table
        ),
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

    app = Starlette(routes=_routes(serve), lifespan=lifespan)
    app.state.serve = serve
    return app


@functools.cache
def _page_html() -> str:
    return importlib.resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
