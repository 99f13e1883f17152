"""``hasher serve``: the current deployment over HTTP (OpenAI- and Ollama-compatible endpoints, a
page to try it, health and Prometheus metrics), on uvicorn; the app is ``hasher_resources.serve``.

It binds 127.0.0.1:8420 by default. Binding anything but a loopback address needs a bearer token
in ``HASHER_SERVE_TOKEN`` (the server refuses to start without one); with a token set, clients
send ``Authorization: Bearer <token>`` everywhere but ``/`` and ``/health``. The deployment is
watched: when its ``current`` pointer moves, the new bundle is verified and swapped in while
requests in flight finish on the old one. SIGTERM or Ctrl-C stop it gracefully.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8420
#: Shorter tokens are refused: a bearer token is a password sent with every request.
MIN_TOKEN_CHARS = 16


class ServeConfigError(ValueError):
    """``hasher serve`` was asked to run in a way it refuses (the message says what to change)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that resolves elsewhere, or to several addresses: not loopback


def check_access(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token, and a token too short to be a secret.

    Raises :class:`ServeConfigError` naming ``HASHER_SERVE_TOKEN`` (never its value)."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ServeConfigError(
            f"HASHER_SERVE_TOKEN is {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    if token is None and not is_loopback(host):
        raise ServeConfigError(
            f"--host {host} is not a loopback address: set HASHER_SERVE_TOKEN to a secret (clients then send "
            "'Authorization: Bearer <token>'), or bind 127.0.0.1 behind a reverse proxy"
        )


def _at_least[T: (int, float)](kind: type[T], minimum: T, what: str) -> Callable[[str], T]:
    """An argparse type: a ``kind`` number >= ``minimum`` (finite), described as ``what``."""

    def parse(text: str) -> T:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not minimum <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text} is not {what} >= {minimum}")
        return value

    return parse


_positive_int = _at_least(int, 1, "an integer")
_seconds = _at_least(float, 0.001, "a number of seconds")


def add_parser(sub, add_store_arguments: Callable[[argparse.ArgumentParser], None], backends) -> None:
    """Register ``hasher serve`` on the ``hasher`` subcommand parsers ``sub``."""
    s = sub.add_parser(
        "serve",
        help="serve the deployed model over HTTP (OpenAI and Ollama APIs, a page at /)",
        description="Serve the current deployment: POST /v1/completions, /v1/chat/completions (OpenAI), "
        "POST /api/generate (Ollama), GET /v1/models, /api/tags, /api/version, /health, /metrics and a page "
        "at /. A new deployment (or a rollback) is verified and swapped in while requests in flight "
        "finish on the old one. Binding a non-loopback address needs HASHER_SERVE_TOKEN.",
    )
    add_store_arguments(s)
    s.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    s.add_argument("--backend", default="auto", choices=backends, help="kernel backend (default auto)")
    s.add_argument("--max-prompt-chars", type=_positive_int, default=16_384, help="longest prompt (16384)")
    s.add_argument(
        "--max-tokens-cap", type=_positive_int, default=4096, help="most tokens per request (4096)"
    )
    s.add_argument(
        "--default-max-tokens", type=_positive_int, default=512, help="tokens when a request names none (512)"
    )
    s.add_argument(
        "--max-concurrent", type=_positive_int, default=32, help="generations at once; more get 429 (32)"
    )
    s.add_argument("--deadline-s", type=_seconds, default=120.0, help="seconds per request (120)")
    s.add_argument("--poll-s", type=_seconds, default=2.0, help="how often to look for a new deployment (2)")
    s.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="Numba threads of the inference thread (1: a step is one context; more only add wake-ups)",
    )
    s.add_argument(
        "--verify-sample", type=_positive_int, default=64, help="rows re-verified on the kernel per load (64)"
    )
    s.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="(info)",
    )
    s.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a clean stop."""
    import functools
    import logging

    import numba
    import uvicorn

    from hasher_resources.deploy.store import DeploymentStore
    from hasher_resources.files import default_data_dir
    from hasher_resources.serve import InferenceWorker, ModelHolder, ServeLimits, create_app, kernel_loader
    from hasher_resources.settings import setting
    from hasher_resources.sha256.resource import Sha256Kernel

    token = setting("HASHER_SERVE_TOKEN")
    check_access(args.host, token)
    limits = ServeLimits(
        max_prompt_chars=args.max_prompt_chars,
        max_tokens_cap=args.max_tokens_cap,
        default_max_tokens=min(args.default_max_tokens, args.max_tokens_cap),
        max_concurrent=args.max_concurrent,
        deadline_s=args.deadline_s,
    )
    kernel = Sha256Kernel(backend=args.backend, threads=args.threads)
    kernel.backend_name()  # an unavailable backend stops here, before anything binds
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    root = (args.deployment_root or default_data_dir()).expanduser()
    worker = InferenceWorker(initializer=functools.partial(numba.set_num_threads, args.threads))
    holder = ModelHolder(
        DeploymentStore(root),
        worker,
        kernel_loader(kernel, sample_size=args.verify_sample),
        poll_s=args.poll_s,
    )
    app = create_app(holder, limits, token=token)
    logging.getLogger("hasher.serve").info(
        "serving %s on http://%s:%s (kernel %s, token %s)",
        root, args.host, args.port, kernel.backend_name(), "required" if token else "off",
    )  # fmt: skip
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        lifespan="on",
        timeout_graceful_shutdown=int(args.deadline_s) + 5,
    )
    uvicorn.Server(config).run()
    return 0
