"""Deployments and ``hasher serve`` processes for the serving tests.

:func:`train_deployment` runs the real pipeline (``hasher_cli.scratch``: the five stages and the
deployment through ``dg.materialize``) on one short text; at 17 bits (DESIGN §4.3) the deployment
recites it, at a few bits it is cheap (seconds) and answers with wrong tokens, which is all the
server's mechanics need. :func:`serving` starts ``hasher serve`` as its own process group on
127.0.0.1 and stops it by PID (``hasher_tests.servers``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hasher_cli import scratch
from hasher_core.bundle import Bundle
from hasher_resources.asic.resource import EmulatedAsicDevice
from hasher_resources.deploy.store import DeploymentStore
from hasher_tests.servers import BIN, free_port, log_tail, running, wait_for

DICKENS = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
    "of foolishness, it was the epoch of belief."
)
#: A text that repeats itself: once a context is all "tick tock", every next token is known, so a
#: 17-bit deployment of it continues "tick tock" exactly for as long as it is asked (the long-running
#: generations the limits and deadline tests hold open).
LOOP = " ".join(["tick tock"] * 100)
LOOP_PROMPT = "tick tock tick tock"
ZEN = (
    "Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex. "
    "Complex is better than complicated."
)


def train_deployment(root: Path, text: str, difficulty_bits: int, name: str = "dickens.txt") -> Path:
    """Train ``text`` (saved as ``name``) at ``difficulty_bits`` and deploy it; returns the data
    directory, which holds the deployment store."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(text)
    asic = EmulatedAsicDevice(share_bits=4, nonces_per_work=512, backend="cpu")
    run = scratch.train_and_deploy(path, root / "run", difficulty_bits=difficulty_bits, asic=asic)
    return Path(run.storage.data_dir)


def copy_store(data_dir: Path, target: Path) -> DeploymentStore:
    """A copy of a data directory's deployment store (its versions and pointer) under ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(data_dir / "deployments", target / "deployments", symlinks=True)
    os.symlink(os.readlink(data_dir / "current"), target / "current")
    return DeploymentStore(target)


def add_version(store: DeploymentStore, bundle: Bundle) -> None:
    """Deploy ``bundle`` into ``store`` (the real deploy: write, swap, read back, verify)."""
    store.deploy(bundle, kernel_backend="cpu", retry_delay_s=0.0)


def point_current_at(store: DeploymentStore, version: str) -> None:
    """Move ``current`` the way an operator's ``ln -sfn`` + ``mv -T`` would: one atomic rename."""
    tmp = store.root / ".current.test-tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(Path("deployments") / version, tmp)
    os.replace(tmp, store.pointer)


@dataclass(frozen=True)
class Server:
    """A running ``hasher serve``: where it listens, its log and process."""

    port: int
    log: Path
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, path: str, body: bytes | dict | None = None, token: str | None = None
    ) -> tuple[int, bytes]:
        """``GET path`` (or ``POST`` with a JSON body; bytes are sent as they are): status and body,
        errors included."""
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="GET" if data is None else "POST")
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get(self, path: str, token: str | None = None) -> tuple[int, dict]:
        """``GET path``: the status and the JSON body."""
        status, raw = self.request(path, token=token)
        return status, json.loads(raw)

    def post(self, path: str, body: bytes | dict, token: str | None = None) -> tuple[int, dict]:
        """``POST path``: the status and the JSON answer."""
        status, raw = self.request(path, body, token)
        return status, json.loads(raw)

    def text(self, path: str, token: str | None = None) -> str:
        """``GET path`` as text (raises on an error status)."""
        status, raw = self.request(path, token=token)
        assert status == 200, (path, status, raw[:500])
        return raw.decode()

    def health(self) -> dict:
        return self.get("/health")[1]


def serve_argv(root: Path, port: int, *extra: str) -> list[str]:
    """``hasher serve`` on 127.0.0.1:``port`` for the store under ``root`` (the CPU kernel)."""
    return [str(BIN / "hasher"), "serve", "--deployment-root", str(root), "--port", str(port),
            "--backend", "cpu", *extra]  # fmt: skip


@contextlib.contextmanager
def serving(
    root: Path, log: Path, *extra: str, env: dict[str, str] | None = None, expect_model: bool = True
) -> Iterator[Server]:
    """``hasher serve`` for the store under ``root`` for the duration of a ``with`` block: waits
    until it answers ``/health`` (with a model loaded unless ``expect_model`` is False)."""
    port = free_port()
    environment = {**os.environ, **(env or {})}
    with running(serve_argv(root, port, *extra), env=environment, log=log) as process:
        server = Server(port, log, process)

        def ready() -> str | None:
            if process.poll() is not None:
                return "exited"
            status, _ = server.get("/health")  # connection refused while starting: not yet
            return "ready" if status == 200 or not expect_model else None

        try:
            state = wait_for(ready, 120, f"hasher serve on port {port} answering /health", interval_s=0.3)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_tail(log)}") from None
        if state == "exited":
            raise AssertionError(f"hasher serve exited with status {process.returncode}:\n{log_tail(log)}")
        yield server
