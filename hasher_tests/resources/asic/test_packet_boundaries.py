"""Every arrangement of packet boundaries across reads delivers every packet (issue 18, kind 9).

A USB serial port returns whatever is buffered, so one read may hold a status reply and nonce
packets in either order, end inside a packet's header, length or CRC, or hold three packets and junk
between them. cgminer's ``bitmain_parse_results`` keeps the rest of its buffer for the next pass; so
must the session. The emulator's ``delivery`` and ``split_at`` produce each arrangement over a real
pty (and TCP); the oracle is the board's own search of the same work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hasher_resources.asic.emulator import Emulator, FaultRule, serve_in_thread
from hasher_resources.asic.resource import start_emulator, stop_emulator
from hasher_resources.asic.session import AsicSession
from hasher_tests.resources.asic.emulated import HEADERS, SHARE_BITS, expected_nonces, small_board

pytestmark = pytest.mark.timeout(60)

#: Inside the type/flags header, inside the length field, and before the CRC's last byte.
HEADER_LENGTH_CRC = (1, 3, -1)


_expected = expected_nonces


def _session(url: str) -> AsicSession:
    return AsicSession(url, share_bits=SHARE_BITS, timeout_s=0.5, retries=2, chain_count=1, chip_count=4)


def _found(reports) -> list[tuple[int, int]]:
    return [(r.header_index, r.nonce) for r in reports if r.valid]


@contextlib.contextmanager
def _served(delivery: str, split_at: tuple[int, ...] = (), faults: tuple[str, ...] = ()) -> Iterator[str]:
    emulator = Emulator(
        small_board(), [FaultRule.parse(f) for f in faults], delivery=delivery, split_at=split_at
    )
    with serve_in_thread(emulator) as url:
        yield url


@pytest.mark.parametrize("split_at", [(), HEADER_LENGTH_CRC], ids=["whole", "split-header-length-crc"])
@pytest.mark.parametrize("delivery", ["packets", "coalesced", "status-first"])
def test_every_nonce_arrives_whatever_the_packet_boundaries(delivery, split_at):
    with _served(delivery, split_at) as url, _session(url) as dev:
        for _ in range(2):  # a second batch: nothing of the first is left over to pass for it
            assert _found(dev.submit(HEADERS)) == _expected()
        c = dev.counters
        assert c.stale_nonces == 0 and c.lost_nonces == 0 and c.resubmissions == 0
        assert c.nonces_returned == c.nonces_verified == 2 * len(_expected())


def test_a_status_reply_and_a_nonce_packet_in_one_read_both_count():
    # Case 07: the status reply first, the nonce packet after it, in one write; mine twice.
    with _served("status-first") as url, _session(url) as dev:
        for header in HEADERS[:2]:
            want = [n for i, n in _expected([header]) if i == 0]
            assert want and dev.mine(header) == want
        assert dev.counters.stale_nonces == 0 and dev.counters.hardware_errors == 0


def test_three_packets_and_garbage_between_them_in_one_read():
    # Coalesced, with junk (including type bytes with impossible lengths) before every reply.
    with _served("coalesced", faults=("garbage:status:*", "garbage:nonce:*")) as url, _session(url) as dev:
        assert _found(dev.submit(HEADERS)) == _expected()
        assert dev.counters.garbage_bytes > 0 and dev.counters.resubmissions == 0


@pytest.fixture(scope="module")
def status_first_emulator() -> Iterator[tuple[Emulator, str]]:
    emulator = Emulator(small_board(), [], delivery="status-first")
    with serve_in_thread(emulator) as url:
        yield emulator, url


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    delivery=st.sampled_from(["coalesced", "status-first"]),
    cuts=st.lists(st.integers(-40, 300).filter(bool), max_size=6),
)
def test_every_split_point_of_the_concatenated_replies_delivers_every_packet(
    status_first_emulator, delivery, cuts
):
    emulator, url = status_first_emulator
    emulator.delivery, emulator.split_at = delivery, tuple(cuts)
    with _session(url) as dev:
        assert _found(dev.submit(HEADERS[:2])) == _expected(HEADERS[:2])
        assert dev.counters.stale_nonces == 0 and dev.counters.lost_nonces == 0


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_the_emulator_process_sends_status_first_and_split_over_pty_and_tcp(transport):
    proc, url = start_emulator(
        transport=transport, share_bits=SHARE_BITS, chains=1, chips=4, nonces_per_work=512,
        backend="cpu", delivery="status-first", split_at=HEADER_LENGTH_CRC,
    )  # fmt: skip
    try:
        with _session(url) as dev:
            for _ in range(2):
                assert _found(dev.submit(HEADERS)) == _expected()
            assert dev.counters.stale_nonces == 0
    finally:
        stop_emulator(proc)


def test_the_emulator_refuses_an_unknown_delivery():
    with pytest.raises(ValueError, match="delivery 'bursty' is not one of packets, coalesced, status-first"):
        Emulator(small_board(), delivery="bursty")
