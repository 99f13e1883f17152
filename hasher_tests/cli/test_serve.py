"""``hasher serve`` refuses to run unprotected off loopback, and a token too short to be a secret
(without ever printing it)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from hasher_cli.main import _parser, main
from hasher_cli.serve import ServeConfigError, check_access, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.org", False), ("", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_a_non_loopback_bind_needs_the_token_and_a_loopback_bind_does_not():
    with pytest.raises(
        ServeConfigError, match=re.escape("--host 0.0.0.0 is not a loopback address: set HASHER_SERVE_TOKEN")
    ):
        check_access("0.0.0.0", None)
    check_access("127.0.0.1", None)
    check_access("0.0.0.0", "x" * 16)


def test_hasher_serve_refuses_to_start_off_loopback_without_a_token(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HASHER_SERVE_TOKEN", raising=False)
    assert main(["serve", "--deployment-root", str(tmp_path), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hasher serve: error: ServeConfigError: --host 0.0.0.0 is not a loopback address")


def test_a_short_token_is_refused_and_never_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HASHER_SERVE_TOKEN", "hunter2")
    assert main(["serve", "--deployment-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "HASHER_SERVE_TOKEN is 7 characters; use at least 16" in err and "hunter2" not in err


def test_the_readmes_systemd_unit_runs_a_command_hasher_serve_accepts_with_a_token_and_time_to_stop():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme[readme.index("# /etc/hasher/serve.env") :]
    block = block[: block.index("```")]
    env_file, unit = block.split("# /etc/systemd/system/hasher-serve.service")
    settings = dict(line.split("=", 1) for line in env_file.splitlines() if line and not line.startswith("#"))
    assert set(settings) == {"HASHER_DATA_DIR", "HASHER_SERVE_TOKEN"}
    lines = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    argv = shlex.split(lines["ExecStart"])
    assert argv[0].endswith("/.venv/bin/hasher")
    args = _parser().parse_args(argv[1:])
    assert args.command == "serve" and not is_loopback(args.host)  # so the token above is required
    assert lines["EnvironmentFile"] == "/etc/hasher/serve.env"
    assert int(lines["TimeoutStopSec"]) >= args.deadline_s + 5  # uvicorn's graceful shutdown fits
