"""The Dagster resources: a board at a URL that never touches the emulator, and the emulator as a
child process that is started for a session and stopped after it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import dagster as dg
import pytest
from pydantic import ValidationError

from hasher_core.asic_codec import Work, wire_midstate
from hasher_core.errors import AsicError
from hasher_resources.asic.emulator import Emulator, serve_in_thread
from hasher_resources.asic.resource import (
    AsicDevice,
    AsicResource,
    EmulatedAsicDevice,
    asic_resource_from_env,
)
from hasher_tests.resources.asic.emulated import HEADERS, SHARE_BITS, small_board

pytestmark = pytest.mark.timeout(30)  # no test here may hang


def _expected(header: bytes) -> list[int]:
    return sorted(small_board().search(Work(0, wire_midstate(header), header[64:76]), SHARE_BITS))


def test_resource_methods_need_an_open_session():
    with pytest.raises(AsicError, match="not open"):
        AsicDevice(url="socket://127.0.0.1:1").status()
    with pytest.raises(AsicError, match="not open"):
        EmulatedAsicDevice().status()


def test_a_board_needs_a_url():
    with pytest.raises(ValidationError, match="url"):
        AsicDevice()


def test_the_shared_base_cannot_be_instantiated():
    with pytest.raises(TypeError, match="abstract"):
        AsicResource()


def test_from_env_uses_hasher_asic_url(monkeypatch):
    monkeypatch.setenv("HASHER_ASIC_URL", "socket://127.0.0.1:9")
    device = asic_resource_from_env()
    assert isinstance(device, AsicDevice) and device.url == "socket://127.0.0.1:9"
    monkeypatch.setenv("HASHER_ASIC_URL", "")
    assert isinstance(asic_resource_from_env(), EmulatedAsicDevice)
    monkeypatch.delenv("HASHER_ASIC_URL")
    assert isinstance(asic_resource_from_env(share_bits=4), EmulatedAsicDevice)
    assert asic_resource_from_env(share_bits=4).share_bits == 4


def test_the_board_path_does_not_import_the_emulator():
    code = textwrap.dedent(
        """
        import sys
        import hasher_resources.asic.resource as resource
        resource.AsicDevice(url="socket://127.0.0.1:1")
        banned = ("hasher_resources.asic.emulator", "hasher_cli")
        print(sorted(m for m in sys.modules if m.startswith(banned)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_a_board_resource_talks_to_the_url_it_is_given():
    with serve_in_thread(Emulator(small_board())) as url:
        device = AsicDevice(url=url, share_bits=SHARE_BITS, timeout_s=0.5, chain_count=1, chip_count=4)
        with dg.build_resources({"asic": device}) as resources:
            asic = resources.asic
            assert asic.status().emulated and asic.active.url == url
            assert asic.mine(HEADERS[0]) == _expected(HEADERS[0])
            session = asic.active
        assert not session._port.is_open  # closed at teardown
        with device.session() as dev:
            assert dev.status().chips_alive == 4


@pytest.mark.slow
def test_dagster_resource_starts_and_stops_the_emulator_process():
    device = EmulatedAsicDevice(
        share_bits=SHARE_BITS,
        chain_count=1,
        chip_count=4,
        nonces_per_work=512,
        backend="cpu",
    )
    with dg.build_resources({"asic": device}) as resources:
        asic = resources.asic
        assert asic.configure().emulated
        assert [r.nonce for r in asic.submit(HEADERS[:1])] == _expected(HEADERS[0])
        health = asic.health_check()
        assert health["hardware_errors"] == 0 and health["emulated"]
        proc = asic._emulator.process
    assert proc.poll() is not None  # stopped at teardown


@pytest.mark.slow
def test_an_emulated_session_runs_end_to_end_and_stops_its_process():
    device = EmulatedAsicDevice(share_bits=SHARE_BITS, chain_count=1, chip_count=4, nonces_per_work=512)
    with device.session() as dev:
        assert dev.configure().emulated
        assert [r.nonce for r in dev.submit(HEADERS) if r.header_index == 2] == _expected(HEADERS[2])
        assert dev.counters.hardware_errors == 0 and dev.counters.packets_received > 0
        proc = device._emulator.process
        assert proc.poll() is None
    assert proc.poll() is not None and device._emulator is None
