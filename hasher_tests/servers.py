"""Servers the tests start: Dagster (dev, webserver, daemon) and a throw-away PostgreSQL cluster.

One place for starting and stopping them, so every test does it the same way: each server runs in
its own process group (``start_new_session``), binds 127.0.0.1, writes its output to a log file
the failure message names, and is stopped by PID — SIGTERM to the group, SIGKILL after a bounded
wait. Every wait here has a deadline and fails naming what did not happen.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for[T](probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 1.0) -> T:
    """Call ``probe`` until it returns something other than None (or False); fail after ``timeout_s``.

    Exceptions from ``probe`` count as "not yet". Raises AssertionError naming ``what`` and the last
    exception seen, so a failing step says what was missing.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except Exception as exc:  # a server still starting answers with connection errors
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"{what}: not seen within {timeout_s:.0f} s{detail}")
        time.sleep(interval_s)


def start_server(argv: list[str], *, env: dict[str, str], log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    """Start ``argv`` in a new session (its own process group) with stdout and stderr in ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def group_alive(pgid: int) -> bool:
    """Whether any process is left in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal is still a member
        return True
    return True


@dataclass(frozen=True)
class Stopped:
    """How :func:`stop_server` ended a server: the signal its leader needed, and whether processes
    it left behind in its group had to be killed."""

    signal: signal.Signals
    stragglers_killed: bool


def stop_server(proc: subprocess.Popen, grace_s: float = 30.0) -> Stopped:
    """SIGTERM the process group of ``proc`` (it leads it), SIGKILL it after ``grace_s`` seconds.

    Dagster's children (webserver, daemon, code server, run workers) are in that group too, so they
    get the signal as well; any still there 10 s after the leader exited are SIGKILLed. Reaps the
    leader. Safe on a server that has already exited. Raises AssertionError if the leader survives
    SIGKILL for 10 s.
    """
    used = signal.SIGTERM
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        used = signal.SIGKILL
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process {proc.pid} ({proc.args!r}) survived SIGKILL") from None
    deadline = time.monotonic() + 10
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    stragglers = group_alive(proc.pid)
    if stragglers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return Stopped(used, stragglers)


@contextlib.contextmanager
def running(
    argv: list[str], *, env: dict[str, str], log: Path, cwd: Path = ROOT
) -> Iterator[subprocess.Popen]:
    """``start_server`` for the duration of a ``with`` block, stopped by ``stop_server`` after it."""
    proc = start_server(argv, env=env, log=log, cwd=cwd)
    try:
        yield proc
    finally:
        stop_server(proc)


def log_tail(log: Path, chars: int = 4000) -> str:
    """The end of a server's log, for failure messages."""
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"<no log at {log}: {exc}>"


def dagster_home(path: Path, yaml_text: str | None = None) -> Path:
    """Make ``path`` a DAGSTER_HOME with the repository's ``dagster.yaml`` (or ``yaml_text``)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text(
        yaml_text if yaml_text is not None else (ROOT / "dagster.yaml").read_text()
    )
    return path


def dagster_env(home: Path, data_dir: Path, miner_dir: Path, inbox_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a Dagster process on ``home`` reading ``miner_dir``/``inbox_dir``."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "HASHER_DATA_DIR": str(data_dir),
        "HASHER_MINER_DIR": str(miner_dir),
        "HASHER_INBOX_DIR": str(inbox_dir),
        "HASHER_KERNEL_BACKEND": "cpu",
        **extra,
    }


def dagster_dev_argv(port: int) -> list[str]:
    """``dagster dev`` on 127.0.0.1:``port`` with the repository's workspace (webserver + daemon)."""
    return [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]


def dagster_daemon_argv() -> list[str]:
    """``dagster-daemon run`` with the repository's workspace (sensors, the run queue)."""
    return [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    """POST a GraphQL query to the webserver on ``port``; returns ``data`` (raises on ``errors``)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    if answer.get("errors"):
        raise RuntimeError(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


def wait_for_location(port: int, timeout_s: float = 180.0) -> list[dict]:
    """Wait until the webserver on ``port`` serves the code location; returns its asset nodes."""
    query = "{ assetNodes { assetKey { path } groupName partitionDefinition { name } } }"
    return wait_for(
        lambda: graphql(port, query)["assetNodes"] or None, timeout_s, "the code location in the webserver"
    )


@dataclass(frozen=True)
class PostgresCluster:
    """A running throw-away PostgreSQL cluster: where to connect and as whom."""

    host: str
    port: int
    user: str
    password: str
    database: str

    def env(self) -> dict[str, str]:
        """The variables ``deploy/dagster-postgres.yaml`` reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.database,
        }


def postgres_bindir() -> Path:
    """The newest Debian PostgreSQL server binaries (``/usr/lib/postgresql/<major>/bin``)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise AssertionError("no /usr/lib/postgresql/*/bin/initdb: run scripts/system_deps.sh")
    return found[-1].parent


def _as_cluster_owner(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run ``argv`` as the ``postgres`` system user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def postgres_cluster(timeout_s: float = 60.0) -> Iterator[PostgresCluster]:
    """initdb a new cluster in a temporary directory, serve it on 127.0.0.1 on a free port, stop it.

    Password authentication (scram) for TCP; the password is random and handed to the cluster
    through a file that only the cluster owner can read and that is deleted right after initdb.
    Yields once ``pg_isready`` answers; afterwards :func:`stop_server` stops the server (SIGTERM,
    then SIGKILL) and the directory is removed. As root, the cluster runs as the ``postgres`` user
    that Debian's package creates (PostgreSQL refuses to run as root).
    """
    bindir = postgres_bindir()
    root = Path(tempfile.mkdtemp(prefix="hasher-pg-"))  # not under pytest's 0700 tmp: the owner must reach it
    data, log = root / "data", root / "postgres.log"
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    password = secrets.token_urlsafe(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if owner:
        os.chown(root, owner.pw_uid, owner.pw_gid)
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    cluster = PostgresCluster("127.0.0.1", free_port(), "hasher", password, "hasher")
    server: subprocess.Popen | None = None
    try:
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", cluster.user, f"--pwfile={pwfile}"]
        options = "--auth-host=scram-sha-256 --auth-local=peer --encoding=UTF8 --no-sync"
        init = subprocess.run(
            _as_cluster_owner(initdb + options.split()), capture_output=True, text=True, timeout=120
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise AssertionError(f"initdb failed: {init.stderr[-2000:]}")
        postgres = [str(bindir / "postgres"), "-D", str(data), "-k", str(root), "-p", str(cluster.port)]
        options = "-h 127.0.0.1 -c fsync=off"  # a throw-away cluster: durability buys nothing
        server = start_server(
            _as_cluster_owner(postgres + options.split()), env=dict(os.environ), log=log, cwd=root
        )
        address = ["-h", cluster.host, "-p", str(cluster.port)]
        ready = [str(bindir / "pg_isready"), *address]
        try:
            what = f"PostgreSQL accepting connections on {cluster.host}:{cluster.port}"
            wait_for(lambda: subprocess.run(ready, capture_output=True).returncode == 0, timeout_s, what, 0.3)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log {log} ends: {log_tail(log, 1000)}") from None
        create = subprocess.run(
            [str(bindir / "createdb"), *address, "-U", cluster.user, cluster.database],
            env={**os.environ, "PGPASSWORD": password}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if create.returncode != 0:
            raise AssertionError(f"createdb failed: {create.stderr}")
        yield cluster
    finally:
        if server is not None:
            stop_server(server, grace_s=20)  # postgres: SIGTERM = smart shutdown; runuser passes it on
        shutil.rmtree(root, ignore_errors=True)
