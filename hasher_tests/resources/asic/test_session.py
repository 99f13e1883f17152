"""The AsicSession against every fault the emulator injects, and the ways a port can be wrong.

The fault matrix runs the emulator from a thread over a real pty (same bytes, no start-up cost);
the tests marked slow use the separate ``hasher-asic-emulator`` process.
"""

from __future__ import annotations

import os
import socket
import threading

import pytest
import serial

from hasher_core.errors import (
    AsicCrcError,
    AsicDisconnectedError,
    AsicNotFoundError,
    AsicProtocolError,
    AsicTimeoutError,
    WrongDeviceError,
)
from hasher_resources.asic.emulator import Emulator, FaultRule, serve_in_thread
from hasher_resources.asic.session import AsicSession
from hasher_tests.resources.asic.emulated import (
    HEADERS,
    SHARE_BITS,
    emulator_process,
    expected_nonces,
    small_board,
)

pytestmark = pytest.mark.timeout(30)  # no test here may hang


_expected = expected_nonces


def _session(url: str, retries: int = 2, timeout_s: float = 0.3) -> AsicSession:
    return AsicSession(
        url, share_bits=SHARE_BITS, timeout_s=timeout_s, retries=retries, chain_count=1, chip_count=4
    )


def _emulator(*faults: str, stall_s: float = 0.4) -> Emulator:
    return Emulator(small_board(), [FaultRule.parse(f) for f in faults], stall_s=stall_s)


@pytest.mark.parametrize("kind", ["crc", "drop", "stall", "garbage", "truncate", "bad-length"])
def test_one_faulty_status_reply_is_retried_and_recovered(kind):
    with serve_in_thread(_emulator(f"{kind}:status:1")) as url, _session(url) as dev:
        status = dev.status()
        assert status.emulated and status.chips_alive == 4
        c = dev.counters
        if kind == "garbage":
            assert c.garbage_bytes > 0
        else:
            assert c.retries >= 1
        if kind == "crc":
            assert c.crc_errors >= 1
        if kind == "bad-length":
            assert c.length_errors == 1


@pytest.mark.parametrize(
    ("kind", "error", "text"),
    [
        ("crc", AsicCrcError, "CRC failed on every reply during status"),
        ("drop", AsicTimeoutError, "went silent during status: no reply after 3 attempt"),
        ("bad-length", AsicProtocolError, "impossible length"),
    ],
)
def test_a_persistent_status_fault_gives_a_typed_error_naming_the_port(kind, error, text):
    with serve_in_thread(_emulator(f"{kind}:status:*", stall_s=0.5)) as url, _session(url) as dev:
        with pytest.raises(error, match=text) as info:
            dev.status()
        assert url in str(info.value)
        assert dev.counters.retries == 2


def test_garbage_before_every_reply_is_skipped():
    with serve_in_thread(_emulator("garbage:status:*", "garbage:nonce:*")) as url, _session(url) as dev:
        dev.status()
        reports = dev.submit(HEADERS)
        assert [(r.header_index, r.nonce) for r in reports] == _expected()
        assert dev.counters.garbage_bytes > 0 and dev.counters.resubmissions == 0


def test_a_truncated_packet_then_silence_is_reported_as_truncated():
    with (
        serve_in_thread(_emulator("truncate:status:1")) as url,
        _session(url, retries=0) as dev,
        pytest.raises(AsicTimeoutError, match=r"truncated packet: \d+ of \d+ bytes"),
    ):
        dev.status()


def test_the_pty_disappearing_mid_read_is_a_disconnect():
    with (
        serve_in_thread(_emulator("disconnect:status:1")) as url,
        _session(url) as dev,
        pytest.raises(AsicDisconnectedError, match="disconnected during status"),
    ):
        dev.status()


class _VanishedPort:
    """A port whose pty has gone: writes still land in the kernel buffer, but reconfiguring it
    (pyserial's timeout setter calls tcsetattr) fails with EIO, as seen on CI."""

    in_waiting = 0

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def timeout(self) -> float:
        return 0.0

    @timeout.setter
    def timeout(self, value: float) -> None:
        raise serial.SerialException("Could not configure port: (5, 'Input/output error')")


def test_a_port_that_cannot_be_reconfigured_mid_read_is_a_disconnect():
    with _session("loop://") as dev:
        dev._port = _VanishedPort()
        with pytest.raises(AsicDisconnectedError, match=r"disconnected during status.*Input/output error"):
            dev.status()


@pytest.mark.parametrize("kind", ["crc", "drop", "truncate", "bad-length"])
def test_a_lost_nonce_packet_is_detected_and_the_work_resubmitted(kind):
    with serve_in_thread(_emulator(f"{kind}:nonce:2")) as url, _session(url) as dev:
        reports = dev.submit(HEADERS)
        assert [(r.header_index, r.nonce) for r in reports] == _expected()
        assert all(r.valid for r in reports)
        assert dev.counters.resubmissions == 1
        assert dev.counters.lost_nonces > 0 or dev.counters.crc_errors + dev.counters.length_errors > 0


def test_a_stalled_nonce_reply_still_arrives():
    with serve_in_thread(_emulator("stall:nonce:2")) as url, _session(url, retries=3) as dev:
        reports = dev.submit(HEADERS)
        assert [(r.header_index, r.nonce) for r in reports] == _expected()
        dev.status()  # late replies to the retried requests do not confuse the next exchange


def test_a_wrong_nonce_is_a_hardware_error_not_a_result():
    with serve_in_thread(_emulator("wrong-nonce:nonce:1")) as url, _session(url) as dev:
        reports = dev.submit(HEADERS)
        bad = [r for r in reports if not r.valid]
        assert len(bad) == 1 and bad[0].zero_bits < SHARE_BITS
        assert dev.counters.hardware_errors == 1
        assert dev.mine(HEADERS[1]) == [n for i, n in _expected() if i == 1]


def test_corrupt_nonce_packets_on_every_attempt_raise_a_crc_error():
    with (
        serve_in_thread(_emulator("crc:nonce:*")) as url,
        _session(url) as dev,
        pytest.raises(AsicCrcError, match="damaged on every one of 3 submissions"),
    ):
        dev.submit(HEADERS)


def test_disconnect_during_work_submission():
    with (
        serve_in_thread(_emulator("disconnect:nonce:2")) as url,
        _session(url) as dev,
        pytest.raises(AsicDisconnectedError, match="during work submission"),
    ):
        dev.submit(HEADERS)


def test_a_board_is_held_to_difficulty_one_whatever_share_bits_says():
    # Posing as a real S3 (another hw_version), the 6-bit shares no longer meet what chips promise.
    emulator = _emulator()
    emulator.board.hw_version = b"\x00\x01\x00\x03"
    with serve_in_thread(emulator) as url, _session(url) as dev:
        reports = dev.submit(HEADERS)
        assert dev.emulated is False and dev.verify_bits == 32
        assert reports and not any(r.valid for r in reports)
        assert dev.counters.hardware_errors == len(reports)


def test_bad_headers_are_rejected_before_anything_is_sent():
    with serve_in_thread(_emulator()) as url, _session(url) as dev:
        sent = dev.counters.packets_sent
        with pytest.raises(ValueError, match="header 1 is 79 bytes"):
            dev.submit([bytes(80), bytes(79)])
        assert dev.counters.packets_sent == sent  # the good header 0 was not sent either


def test_a_missing_device_path_is_not_found(tmp_path):
    path = str(tmp_path / "ttyUSB9")
    with pytest.raises(AsicNotFoundError, match="ttyUSB9") as info:
        AsicSession(path)
    assert not os.path.exists(path)  # nothing was created in its place
    assert "not found" in str(info.value)


def test_a_closed_tcp_port_is_not_found():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AsicNotFoundError, match=f"socket://127.0.0.1:{port}"):
        AsicSession(f"socket://127.0.0.1:{port}")


def test_a_device_that_does_not_speak_bitmain_is_the_wrong_device():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def chatter():
        conn, _ = server.accept()
        with conn:
            conn.settimeout(3)
            for _ in range(10):  # answer each request like an NMEA GPS would, until the host hangs up
                try:
                    if not conn.recv(64):
                        break
                except OSError:
                    break
                conn.sendall(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n")

    thread = threading.Thread(target=chatter, daemon=True)
    thread.start()
    try:
        with (
            _session(f"socket://127.0.0.1:{port}") as dev,
            pytest.raises(WrongDeviceError, match="not an Antminer"),
        ):
            dev.status()
    finally:
        thread.join(5)
        server.close()


@pytest.mark.slow
def test_emulator_process_fault_flags_reach_the_host():
    with (
        emulator_process("crc:status:*") as (_, url),
        _session(url, retries=1, timeout_s=1.0) as dev,
        pytest.raises(AsicCrcError, match=url),
    ):
        dev.status()


@pytest.mark.slow
def test_emulator_process_disconnect_makes_the_pty_vanish():
    with emulator_process("disconnect:nonce:1") as (proc, url):
        with _session(url, timeout_s=1.0) as dev, pytest.raises(AsicDisconnectedError, match=url):
            dev.submit(HEADERS)
        assert proc.wait(5) == 0


def _board(**state: int) -> Emulator:
    board = small_board()
    for name, value in state.items():
        setattr(board, name, value)
    return Emulator(board, [])


def test_a_healthy_board_passes_the_health_check():
    with serve_in_thread(_board()) as url, _session(url) as dev:
        dev.submit(HEADERS)
        health = dev.health_check()
    assert health["ok"] is True and health["problems"] == []
    assert health["chips_alive"] == 4 and health["nonces_verified"] == health["nonces_returned"] > 0


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({"chips_alive": 0}, "no chip alive (0 of 4)"),
        ({"hardware_errors": 5}, "the device reports 5 hardware error(s) in 0 nonce(s) (tolerance 0.01)"),
        (
            {"hardware_errors": 20, "total_nonces": 1000},
            "the device reports 20 hardware error(s) in 1000 nonce(s) (tolerance 0.01)",
        ),
    ],
    ids=["0 chips alive", "hardware errors, no nonces", "2% hardware errors"],
)
def test_device_state_fails_the_health_check(state, problem):
    with serve_in_thread(_board(**state)) as url, _session(url) as dev:
        health = dev.health_check()
    assert health["ok"] is False and health["problems"] == [problem]


def test_hardware_errors_within_the_tolerance_pass():
    with serve_in_thread(_board(hardware_errors=5, total_nonces=1000)) as url, _session(url) as dev:
        assert dev.health_check(tolerance=0.01)["ok"] is True
        assert dev.health_check(tolerance=0.001)["ok"] is False


def test_nonces_that_fail_verification_this_session_fail_the_health_check():
    with serve_in_thread(_emulator("wrong-nonce:nonce:*")) as url, _session(url) as dev:
        dev.submit(HEADERS)
        health = dev.health_check()
    assert health["ok"] is False
    assert health["problems"][0].endswith("nonce(s) this session failed verification (tolerance 0.01)")
    assert health["hardware_errors"] >= 1
