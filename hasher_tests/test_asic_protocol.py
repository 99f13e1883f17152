"""The Bitmain S3 packet codec: DESIGN §7 sample packets, round trips, corruption, the deframer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hasher_core.errors import AsicCrcError, AsicProtocolError
from hasher_resources.asic import protocol as P

STATUS_REQUEST_DOCS = "53000c0000000000000000000000e842"
CONFIG_DOCS = "510018001e0000000820602dfa00050a000000000000000000008695"
NONCE_REPLY_EMPTY = "a2000e00ff00000000000000000000001f32"


def test_crc16_modbus_check_value():
    assert P.crc16_modbus(b"123456789") == 0x4B37


def test_bitswap_reverses_bits_and_is_an_involution():
    assert P.bitswap(0x01) == 0x80
    assert P.bitswap(0x1E) == 0x78
    assert all(P.bitswap(P.bitswap(b)) == b for b in range(256))


@pytest.mark.parametrize("sample", [STATUS_REQUEST_DOCS, CONFIG_DOCS, NONCE_REPLY_EMPTY])
def test_design_sample_packets_parse_and_repack_byte_for_byte(sample):
    data = bytes.fromhex(sample)
    frame = P.Frame.unpack(data)
    assert frame.pack() == data
    assert frame.total == len(data)


def test_docs_variants_are_named_not_misdecoded():
    for sample in (STATUS_REQUEST_DOCS, CONFIG_DOCS):
        frame = P.Frame.unpack(bytes.fromhex(sample))
        assert frame.variant == P.VARIANT_DOCS
        with pytest.raises(P.UnsupportedVariantError, match="antminer-docs variant"):
            P.decode(frame)


def test_sample_nonce_reply_decodes_as_cgminer_layout_with_no_nonces():
    frame = P.Frame.unpack(bytes.fromhex(NONCE_REPLY_EMPTY))
    assert frame.variant == P.VARIANT_CGMINER
    record = P.decode(frame)
    assert record == P.RxNonce(nonces=(), fifo_space=0xFF, diff=0, total_nonce_num=0)
    assert record.pack().hex() == NONCE_REPLY_EMPTY


def test_cgminer_sizes_and_length_field_is_total_minus_four():
    config = P.TxConfig(chain_num=8, asic_num=32, frequency_mhz=250).pack()
    request = P.RxStatusRequest().pack()
    assert (len(config), len(request)) == (24, 12)
    for packet in (config, request):
        assert int.from_bytes(packet[2:4], "little") == len(packet) - 4


def test_flag_bytes_are_bit_reversed_on_the_wire():
    task = P.TxTask((P.Work(1, bytes(32), bytes(12)),), diff=3, new_block=True).pack()
    assert task[4] == 0x80 and task[5] == 3
    config = P.TxConfig(8, 32, 250, flags=P.ConfigFlags.RESET, control=P.ControlFlags.BEEPER).pack()
    assert config[4:6] == b"\x80\x80"


def test_txtask_layout_is_ten_plus_48_per_work():
    works = tuple(P.Work(i, bytes([i]) * 32, bytes([0xA0 + i]) * 12) for i in range(8))
    packet = P.TxTask(works).pack()
    assert len(packet) == 10 + 48 * 8
    assert packet[8:12] == (0).to_bytes(4, "little") and packet[12:44] == bytes(32)
    assert packet[8 + 48 : 12 + 48] == (1).to_bytes(4, "little")


u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

configs = st.builds(
    P.TxConfig,
    chain_num=u8,
    asic_num=u8,
    frequency_mhz=u16,
    voltage=st.binary(min_size=2, max_size=2),
    flags=st.integers(0, 255).map(P.ConfigFlags),
    control=st.integers(0, 7).map(P.ControlFlags),
    chain_check_time=u8,
    fan_pwm=u8,
    timeout=u8,
    reg_data=st.binary(min_size=4, max_size=4),
    chip_address=u8,
    reg_address=u8,
    version=u8,
)
works = st.builds(
    P.Work,
    work_id=u32,
    midstate=st.binary(min_size=32, max_size=32),
    data2=st.binary(min_size=12, max_size=12),
)
tasks = st.builds(
    P.TxTask, works=st.lists(works, min_size=1, max_size=8).map(tuple), diff=u8, new_block=st.booleans()
)
requests = st.builds(
    P.RxStatusRequest,
    chip_status_eft=st.booleans(),
    detect_get=st.booleans(),
    chip_address=u8,
    reg_address=u8,
)


@st.composite
def chains(draw):
    n = draw(st.integers(0, 70))
    words = (n + 31) // 32
    return P.ChainStatus(
        n,
        tuple(draw(st.lists(u32, min_size=words, max_size=words))),
        tuple(draw(st.lists(u32, min_size=words, max_size=words))),
    )


replies = st.builds(
    P.RxStatusReply,
    chains=st.lists(chains(), max_size=8).map(tuple),
    fifo_space=u16,
    hw_version=st.binary(min_size=4, max_size=4),
    temps=st.lists(u8, max_size=32).map(tuple),
    fans=st.lists(u8, max_size=32).map(tuple),
    fan_exist=u16,
    temp_exist=u32,
    nonce_error=u32,
    reg_value=u32,
    chip_value_eft=st.booleans(),
)
nonces = st.builds(
    P.RxNonce,
    nonces=st.lists(st.builds(P.NonceEntry, u32, u32), max_size=128).map(tuple),
    fifo_space=u16,
    diff=u16,
    total_nonce_num=st.integers(0, 2**64 - 1),
)
records = st.one_of(configs, tasks, requests, replies, nonces)


@settings(max_examples=80, deadline=None)
@given(records)
def test_every_record_round_trips(record):
    packet = record.pack()
    assert P.total_size_allowed(packet[0], len(packet))
    assert type(record).unpack(packet) == record
    assert P.decode(P.Frame.unpack(packet)) == record


@settings(max_examples=80, deadline=None)
@given(records, st.data())
def test_any_single_bit_flip_is_detected(record, data):
    packet = bytearray(record.pack())
    bit = data.draw(st.integers(0, len(packet) * 8 - 1))
    packet[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AsicProtocolError):
        P.Frame.unpack(bytes(packet))


def test_crc_failure_names_both_crcs():
    packet = bytearray(bytes.fromhex(NONCE_REPLY_EMPTY))
    packet[-1] ^= 0xFF
    with pytest.raises(AsicCrcError, match=r"CRC 0x.... stored, 0x.... computed"):
        P.Frame.unpack(bytes(packet))


def test_truncated_packet_is_reported_as_such():
    with pytest.raises(AsicProtocolError, match="truncated"):
        P.Frame.unpack(bytes.fromhex(NONCE_REPLY_EMPTY)[:10])
    with pytest.raises(AsicProtocolError, match="truncated"):
        P.Frame.unpack(b"\xa2\x00")


def _with_valid_crc(body: bytes) -> bytes:
    return body + P.crc16_modbus(body).to_bytes(2, "little")


def test_valid_crc_with_impossible_length_is_rejected():
    body = bytes([P.RX_NONCE, 0]) + (15).to_bytes(2, "little") + bytes(13)  # 19 bytes: not 18 + 8k
    with pytest.raises(AsicProtocolError, match="impossible length 19 bytes for RxNonce"):
        P.Frame.unpack(_with_valid_crc(body))


def test_bad_record_values_are_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="1 to 8 works"):
        P.TxTask(())
    with pytest.raises(ValueError, match="chain_num"):
        P.TxConfig(chain_num=300, asic_num=32, frequency_mhz=250)
    with pytest.raises(ValueError, match="midstate must be 32 bytes"):
        P.Work(1, bytes(31), bytes(12))


def test_reserved_bits_in_a_task_are_a_protocol_error():
    packet = bytearray(P.TxTask((P.Work(1, bytes(32), bytes(12)),)).pack())
    packet[6] = 1
    fixed = _with_valid_crc(bytes(packet[:-2]))
    with pytest.raises(AsicProtocolError, match="reserved"):
        P.TxTask.unpack(fixed)


def test_status_reply_with_inconsistent_counts_is_rejected():
    reply = P.RxStatusReply(chains=(P.ChainStatus(32, (1,), (1,)),), fifo_space=1, temps=(40,))
    body = bytearray(reply.pack()[:-2])
    body[13] = 5  # claims five temperatures
    with pytest.raises(AsicProtocolError, match="does not match"):
        P.RxStatusReply.unpack(_with_valid_crc(bytes(body)))


def test_decode_rejects_the_wrong_record_type():
    with pytest.raises(AsicProtocolError, match="expected TxTask, got RxNonce"):
        P.TxTask.unpack(bytes.fromhex(NONCE_REPLY_EMPTY))


def _stream():
    return [
        P.RxNonce((P.NonceEntry(7, 0xDEADBEEF),), 10, 0, 1).pack(),
        P.RxStatusReply((P.ChainStatus(32, (0xFFFFFFFF,), (0xFFFFFFFF,)),), 1024, temps=(45,)).pack(),
        bytes.fromhex(NONCE_REPLY_EMPTY),
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.binary(max_size=20))
def test_deframer_reassembles_any_chunking_after_garbage(cuts, junk):
    packets = _stream()
    junk = bytes(b for b in junk if b not in P.PACKET_TYPES)
    stream = junk + b"".join(packets)
    deframer = P.Deframer()
    frames, at = [], 0
    for size in cuts * 20:
        frames += deframer.feed(stream[at : at + size])
        at += size
        if at >= len(stream):
            break
    frames += deframer.feed(stream[at:])
    assert [f.pack() for f in frames] == packets
    assert deframer.garbage_bytes == len(junk)
    assert deframer.pending() == b""


def test_deframer_resyncs_after_crc_failure_truncation_and_impossible_length():
    good = _stream()
    corrupt = bytearray(good[0])
    corrupt[-1] ^= 0x55
    truncated = good[1][:20]
    impossible = _with_valid_crc(bytes([P.RX_NONCE, 0]) + (15).to_bytes(2, "little") + bytes(13))
    stream = bytes(corrupt) + truncated + impossible + good[1] + b"\x00\xff\x51\xff\xff" + good[2]
    deframer = P.Deframer()
    frames = deframer.feed(stream)
    assert [f.pack() for f in frames] == [good[1], good[2]]
    assert deframer.crc_errors >= 1
    assert deframer.length_errors == 1
    kinds = {i.kind for i in deframer.issues}
    assert {"crc", "length", "garbage"} <= kinds


def test_deframer_holds_a_partial_packet_until_reset():
    deframer = P.Deframer()
    packet = _stream()[1]
    assert deframer.feed(packet[:10]) == []
    assert deframer.pending() == packet[:10]
    assert deframer.reset() == packet[:10]
    assert deframer.feed(packet) != []
