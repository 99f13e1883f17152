"""``hasher-asic-emulator`` (``hasher_cli.asic_emulator.main``): argument checks, backend errors
before READY, and the process printing its pty and exiting on SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hasher_cli.asic_emulator import main
from hasher_core.errors import BackendUnavailableError
from hasher_resources import sha256

pytestmark = pytest.mark.timeout(30)  # no test here may hang


@pytest.mark.parametrize(
    ("backend", "message"), [("numba", "invalid choice: 'numba'"), ("numpy", "invalid choice: 'numpy'")]
)
def test_retired_search_engine_names_are_rejected(backend, message, capsys):
    with pytest.raises(SystemExit):
        main(["--pty", "--backend", backend])
    assert message in capsys.readouterr().err


def test_unavailable_kernel_backend_exits_before_ready(monkeypatch, capsys):
    def no_gpu(backend):
        raise BackendUnavailableError("backend 'cuda': CuPy sees no CUDA device")

    monkeypatch.setattr(sha256, "resolve_backend", no_gpu)
    assert main(["--pty", "--backend", "cuda"]) == 2
    out = capsys.readouterr()
    assert "READY" not in out.out and "--backend cuda: backend 'cuda': CuPy sees no CUDA device" in out.err


@pytest.mark.parametrize("text", ["melt:status", "crc:fans", "crc:status:0", "crc:status:x", "crc"])
def test_bad_fault_specs_are_rejected_with_the_syntax(text, capsys):
    with pytest.raises(SystemExit):
        main(["--pty", "--fault", text])
    assert "KIND:TARGET" in capsys.readouterr().err


def test_bad_board_sizes_exit_with_an_error(capsys):
    assert main(["--pty", "--chains", "9"]) == 2
    assert "chains" in capsys.readouterr().err


@pytest.mark.slow
def test_emulator_process_exits_on_sigterm_and_prints_its_pty():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hasher_cli.asic_emulator",
            "--pty",
            "--share-bits",
            "4",
            "--backend",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY /dev/pts/")
        assert os.path.exists(line.split()[1])
    finally:
        proc.terminate()
        assert proc.wait(5) == 0
        proc.stdout.close()
