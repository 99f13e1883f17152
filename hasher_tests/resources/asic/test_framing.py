"""The stream reader: packets reassembled from any chunking, resync after garbage and damage."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hasher_core.asic_codec import (
    PACKET_TYPES,
    RX_NONCE,
    ChainStatus,
    NonceEntry,
    RxNonce,
    RxStatusReply,
    crc16_modbus,
)
from hasher_resources.asic.framing import PacketReader

NONCE_REPLY_EMPTY = "a2000e00ff00000000000000000000001f32"


def _with_valid_crc(body: bytes) -> bytes:
    return body + crc16_modbus(body).to_bytes(2, "little")


def _stream():
    return [
        RxNonce((NonceEntry(7, 0xDEADBEEF),), 10, 0, 1).pack(),
        RxStatusReply((ChainStatus(32, (0xFFFFFFFF,), (0xFFFFFFFF,)),), 1024, temps=(45,)).pack(),
        bytes.fromhex(NONCE_REPLY_EMPTY),
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.binary(max_size=20))
def test_reader_reassembles_any_chunking_after_garbage(cuts, junk):
    sent = _stream()
    junk = bytes(b for b in junk if b not in PACKET_TYPES)
    stream = junk + b"".join(sent)
    reader = PacketReader()
    received, at = [], 0
    for size in cuts * 20:
        received += reader.feed(stream[at : at + size])
        at += size
        if at >= len(stream):
            break
    received += reader.feed(stream[at:])
    assert [p.pack() for p in received] == sent
    assert reader.packets == len(sent)
    assert reader.garbage_bytes == len(junk)
    assert reader.pending() == b""


def test_reader_resyncs_after_crc_failure_truncation_and_impossible_length():
    good = _stream()
    corrupt = bytearray(good[0])
    corrupt[-1] ^= 0x55
    truncated = good[1][:20]
    impossible = _with_valid_crc(bytes([RX_NONCE, 0]) + (15).to_bytes(2, "little") + bytes(13))
    stream = bytes(corrupt) + truncated + impossible + good[1] + b"\x00\xff\x51\xff\xff" + good[2]
    reader = PacketReader()
    received = reader.feed(stream)
    assert [p.pack() for p in received] == [good[1], good[2]]
    assert reader.crc_errors >= 1
    assert reader.length_errors == 1
    kinds = {i.kind for i in reader.issues}
    assert {"crc", "length", "garbage"} <= kinds


def test_reader_holds_a_partial_packet_until_reset():
    reader = PacketReader()
    packet = _stream()[1]
    assert reader.feed(packet[:10]) == []
    assert reader.pending() == packet[:10]
    assert reader.reset() == packet[:10]
    assert reader.feed(packet) != []
