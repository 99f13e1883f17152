"""The Bitmain S3 packet codec: DESIGN §7 sample packets, round trips, corruption, the wire midstate."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hasher_core.asic_codec import (
    RX_NONCE,
    VARIANT_CGMINER,
    VARIANT_DOCS,
    ChainStatus,
    ConfigFlags,
    ControlFlags,
    NonceEntry,
    Packet,
    RxNonce,
    RxStatusReply,
    RxStatusRequest,
    TxConfig,
    TxTask,
    Work,
    bitswap,
    crc16_modbus,
    decode,
    midstate_from_wire,
    total_size_allowed,
    wire_midstate,
)
from hasher_core.design import SHA256_IV
from hasher_core.errors import AsicCrcError, AsicProtocolError, UnsupportedVariantError
from hasher_core.header import build_header, compress, double_sha256, double_sha256_from_midstate, midstate

STATUS_REQUEST_DOCS = "53000c0000000000000000000000e842"
CONFIG_DOCS = "510018001e0000000820602dfa00050a000000000000000000008695"
NONCE_REPLY_EMPTY = "a2000e00ff00000000000000000000001f32"


def test_crc16_modbus_check_value():
    assert crc16_modbus(b"123456789") == 0x4B37


def test_bitswap_reverses_bits_and_is_an_involution():
    assert bitswap(0x01) == 0x80
    assert bitswap(0x1E) == 0x78
    assert all(bitswap(bitswap(b)) == b for b in range(256))


@pytest.mark.parametrize("sample", [STATUS_REQUEST_DOCS, CONFIG_DOCS, NONCE_REPLY_EMPTY])
def test_design_sample_packets_parse_and_repack_byte_for_byte(sample):
    data = bytes.fromhex(sample)
    packet = Packet.unpack(data)
    assert packet.pack() == data
    assert packet.total == len(data)


def test_docs_variants_are_named_not_misdecoded():
    for sample in (STATUS_REQUEST_DOCS, CONFIG_DOCS):
        packet = Packet.unpack(bytes.fromhex(sample))
        assert packet.variant == VARIANT_DOCS
        with pytest.raises(UnsupportedVariantError, match="antminer-docs variant"):
            decode(packet)


def test_sample_nonce_reply_decodes_as_cgminer_layout_with_no_nonces():
    packet = Packet.unpack(bytes.fromhex(NONCE_REPLY_EMPTY))
    assert packet.variant == VARIANT_CGMINER
    record = decode(packet)
    assert record == RxNonce(nonces=(), fifo_space=0xFF, diff=0, total_nonce_num=0)
    assert record.pack().hex() == NONCE_REPLY_EMPTY


def test_cgminer_sizes_and_length_field_is_total_minus_four():
    config = TxConfig(chain_num=8, asic_num=32, frequency_mhz=250).pack()
    request = RxStatusRequest().pack()
    assert (len(config), len(request)) == (24, 12)
    for packet in (config, request):
        assert int.from_bytes(packet[2:4], "little") == len(packet) - 4


def test_flag_bytes_are_bit_reversed_on_the_wire():
    task = TxTask((Work(1, bytes(32), bytes(12)),), diff=3, new_block=True).pack()
    assert task[4] == 0x80 and task[5] == 3
    config = TxConfig(8, 32, 250, flags=ConfigFlags.RESET, control=ControlFlags.BEEPER).pack()
    assert config[4:6] == b"\x80\x80"


def test_txtask_layout_is_ten_plus_48_per_work():
    works = tuple(Work(i, bytes([i]) * 32, bytes([0xA0 + i]) * 12) for i in range(8))
    packet = TxTask(works).pack()
    assert len(packet) == 10 + 48 * 8
    assert packet[8:12] == (0).to_bytes(4, "little") and packet[12:44] == bytes(32)
    assert packet[8 + 48 : 12 + 48] == (1).to_bytes(4, "little")


u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

configs = st.builds(
    TxConfig,
    chain_num=u8,
    asic_num=u8,
    frequency_mhz=u16,
    voltage=st.binary(min_size=2, max_size=2),
    flags=st.integers(0, 255).map(ConfigFlags),
    control=st.integers(0, 7).map(ControlFlags),
    chain_check_time=u8,
    fan_pwm=u8,
    timeout=u8,
    reg_data=st.binary(min_size=4, max_size=4),
    chip_address=u8,
    reg_address=u8,
    version=u8,
)
works = st.builds(
    Work,
    work_id=u32,
    midstate=st.binary(min_size=32, max_size=32),
    data2=st.binary(min_size=12, max_size=12),
)
tasks = st.builds(
    TxTask, works=st.lists(works, min_size=1, max_size=8).map(tuple), diff=u8, new_block=st.booleans()
)
requests = st.builds(
    RxStatusRequest,
    chip_status_eft=st.booleans(),
    detect_get=st.booleans(),
    chip_address=u8,
    reg_address=u8,
)


@st.composite
def chains(draw):
    n = draw(st.integers(0, 70))
    words = (n + 31) // 32
    return ChainStatus(
        n,
        tuple(draw(st.lists(u32, min_size=words, max_size=words))),
        tuple(draw(st.lists(u32, min_size=words, max_size=words))),
    )


replies = st.builds(
    RxStatusReply,
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
    RxNonce,
    nonces=st.lists(st.builds(NonceEntry, u32, u32), max_size=128).map(tuple),
    fifo_space=u16,
    diff=u16,
    total_nonce_num=st.integers(0, 2**64 - 1),
)
records = st.one_of(configs, tasks, requests, replies, nonces)


@settings(max_examples=80, deadline=None)
@given(records)
def test_every_record_round_trips(record):
    packet = record.pack()
    assert total_size_allowed(packet[0], len(packet))
    assert type(record).unpack(packet) == record
    assert decode(Packet.unpack(packet)) == record


@settings(max_examples=80, deadline=None)
@given(records, st.data())
def test_any_single_bit_flip_is_detected(record, data):
    packet = bytearray(record.pack())
    bit = data.draw(st.integers(0, len(packet) * 8 - 1))
    packet[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AsicProtocolError):
        Packet.unpack(bytes(packet))


def test_crc_failure_names_both_crcs():
    packet = bytearray(bytes.fromhex(NONCE_REPLY_EMPTY))
    packet[-1] ^= 0xFF
    with pytest.raises(AsicCrcError, match=r"CRC 0x.... stored, 0x.... computed"):
        Packet.unpack(bytes(packet))


def test_truncated_packet_is_reported_as_such():
    with pytest.raises(AsicProtocolError, match="truncated"):
        Packet.unpack(bytes.fromhex(NONCE_REPLY_EMPTY)[:10])
    with pytest.raises(AsicProtocolError, match="truncated"):
        Packet.unpack(b"\xa2\x00")


def _with_valid_crc(body: bytes) -> bytes:
    return body + crc16_modbus(body).to_bytes(2, "little")


def test_valid_crc_with_impossible_length_is_rejected():
    body = bytes([RX_NONCE, 0]) + (15).to_bytes(2, "little") + bytes(13)  # 19 bytes: not 18 + 8k
    with pytest.raises(AsicProtocolError, match="impossible length 19 bytes for RxNonce"):
        Packet.unpack(_with_valid_crc(body))


def test_bad_record_values_are_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="1 to 8 works"):
        TxTask(())
    with pytest.raises(ValueError, match="chain_num"):
        TxConfig(chain_num=300, asic_num=32, frequency_mhz=250)
    with pytest.raises(ValueError, match="midstate must be 32 bytes"):
        Work(1, bytes(31), bytes(12))


def test_reserved_bits_in_a_task_are_a_protocol_error():
    packet = bytearray(TxTask((Work(1, bytes(32), bytes(12)),)).pack())
    packet[6] = 1
    fixed = _with_valid_crc(bytes(packet[:-2]))
    with pytest.raises(AsicProtocolError, match="reserved"):
        TxTask.unpack(fixed)


def test_status_reply_with_inconsistent_counts_is_rejected():
    reply = RxStatusReply(chains=(ChainStatus(32, (1,), (1,)),), fifo_space=1, temps=(40,))
    body = bytearray(reply.pack()[:-2])
    body[13] = 5  # claims five temperatures
    with pytest.raises(AsicProtocolError, match="does not match"):
        RxStatusReply.unpack(_with_valid_crc(bytes(body)))


def test_decode_rejects_the_wrong_record_type():
    with pytest.raises(AsicProtocolError, match="expected TxTask, got RxNonce"):
        TxTask.unpack(bytes.fromhex(NONCE_REPLY_EMPTY))


# DESIGN §4.2 test vector header.
SLOTS = [((i + 1) * 0x11111111) & 0xFFFFFFFF for i in range(12)]
SEED = bytes(range(16)) + bytes(12) + bytes([0x1C, 0x1D, 0x1E, 0x1F])
DESIGN_HEADER = build_header(SLOTS, SEED)

GENESIS_HEADER = bytes.fromhex(
    "01000000" + "00" * 32 + "3ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a"
    "29ab5f49"
    "ffff001d"
    "1dac2b7c"
)


def test_midstate_is_a_state_not_a_digest():
    assert wire_midstate(DESIGN_HEADER) != hashlib.sha256(DESIGN_HEADER[:64]).digest()
    assert midstate_from_wire(wire_midstate(DESIGN_HEADER)) == midstate(DESIGN_HEADER)
    assert midstate(DESIGN_HEADER) == compress(SHA256_IV, DESIGN_HEADER[:64])


def test_wire_midstate_is_little_endian_per_word():
    words = midstate(GENESIS_HEADER)
    assert wire_midstate(GENESIS_HEADER) == b"".join(w.to_bytes(4, "little") for w in words)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=80, max_size=80))
def test_finishing_from_the_wire_midstate_equals_hashlib(header):
    state = midstate_from_wire(wire_midstate(header))
    nonce = struct.unpack("<I", header[76:])[0]
    assert double_sha256_from_midstate(state, header[64:76], nonce) == double_sha256(header)


def test_bad_midstate_lengths_are_rejected():
    with pytest.raises(ValueError, match="header must be 80 bytes, got 63"):
        wire_midstate(bytes(63))
    with pytest.raises(ValueError, match="a midstate is 32 bytes, got 31"):
        midstate_from_wire(bytes(31))
