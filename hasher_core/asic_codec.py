"""The Bitmain Antminer S3 packet codec (DESIGN §7): packets, records with pack()/unpack(), the CRC.

This module owns the bytes of the S3 protocol and nothing else: no I/O, no stream reassembly (that
is ``hasher_resources.asic.framing``), no device policy (``hasher_resources.asic.session``).

Every packet is ``[type u8][version u8][length u16 LE] … [CRC-16/MODBUS, LE]`` with
``length = total bytes − 4``; the CRC covers everything before it. Field layouts follow cgminer's
S3 driver (``driver-bitmain.h`` with ``USE_ANT_S3``): the host sends TxConfig (0x51), TxTask (0x52)
and RxStatus requests (0x53); the device answers RxStatus data (0xA1) and RxNonce (0xA2). Host
flag bytes are bit-reversed before the CRC (cgminer's ``bitswap``); the device's reply flags are
read as they come (cgminer does not swap them back).

Where the Antminer documentation disagrees: its sample status request and config packets are
4 bytes longer (16 vs 12, 28 vs 24) and, read with the cgminer layout, the config would claim 32
chains of 96 chips at 1280 MHz. :class:`Packet` accepts both sizes and re-packs them byte for byte;
the record codec decodes the cgminer layout only and, for the longer one, raises
:class:`UnsupportedVariantError` naming the variant (``Packet.variant``) instead of mis-decoding it.
The docs also call the CRC "CRC-16-CCITT"; it is CRC-16/MODBUS (every sample verifies with it).

Words inside work items (work_id, midstate words) are little-endian, as cgminer sends them: the
midstate is the 8 SHA-256 state words after header bytes 0–63 (``hasher_core.header.midstate``),
each LE32 on the wire (:func:`wire_midstate`). ``data2`` is header bytes 64–75 as they appear in the
header; whether the BM1382 wants those words byte-swapped (cgminer keeps ``work->data`` word-swapped
internally) has to be confirmed on a real board.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import IntFlag
from typing import ClassVar, Self

from hasher_core.errors import AsicCrcError, AsicProtocolError, UnsupportedVariantError
from hasher_core.header import midstate

TX_CONFIG = 0x51
TX_TASK = 0x52
RX_STATUS_REQUEST = 0x53
RX_STATUS_REPLY = 0xA1
RX_NONCE = 0xA2
PACKET_TYPES = (TX_CONFIG, TX_TASK, RX_STATUS_REQUEST, RX_STATUS_REPLY, RX_NONCE)
PACKET_NAMES = {
    TX_CONFIG: "TxConfig",
    TX_TASK: "TxTask",
    RX_STATUS_REQUEST: "RxStatus request",
    RX_STATUS_REPLY: "RxStatus reply",
    RX_NONCE: "RxNonce",
}

HEAD_BYTES = 4
CRC_BYTES = 2
WORK_BYTES = 48  # work_id u32 + midstate[32] + data2[12]
MAX_WORKS_PER_TASK = 8  # BITMAIN_MAX_WORK_NUM on the S3
MAX_NONCES_PER_REPLY = 128  # BITMAIN_MAX_NONCE_NUM on the S3
MAX_CHAINS = 8
MAX_TEMPS = 32
MAX_FANS = 32
MAX_ASICS_PER_CHAIN = 255  # chain_asic_num is a u8

#: Total sizes of the fixed-size packets: cgminer's S3 layout, and the Antminer docs' samples.
CGMINER_SIZES = {TX_CONFIG: 24, RX_STATUS_REQUEST: 12}
DOCS_SIZES = {TX_CONFIG: 28, RX_STATUS_REQUEST: 16}
VARIANT_CGMINER = "cgminer-s3"
VARIANT_DOCS = "antminer-docs"

_TASK_PREFIX = 10  # head(4) + new_block + diff + 2 reserved + CRC(2)
_NONCE_PREFIX = 18  # head(4) + fifo_space u16 + diff u16 + total_nonce_num u64 + CRC(2)
_STATUS_PREFIX = 28
_STATUS_MIN = _STATUS_PREFIX + CRC_BYTES
_STATUS_MAX = _STATUS_PREFIX + MAX_CHAINS * (2 * 8 * 4 + 1) + MAX_TEMPS + MAX_FANS + CRC_BYTES


def crc16_modbus(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS: reflected poly 0xA001, init 0xFFFF, no final XOR (``crc(b"123456789") == 0x4B37``)."""
    crc = 0xFFFF
    for byte in bytes(data):
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def bitswap(byte: int) -> int:
    """Reverse the bit order of one byte (cgminer's ``bitswap`` of the S3 flag bytes)."""
    return int(f"{byte & 0xFF:08b}"[::-1], 2)


def total_size_allowed(packet_type: int, total: int) -> bool:
    """Whether a packet of this type may be ``total`` bytes long (header and CRC included)."""
    if packet_type in CGMINER_SIZES:
        return total in (CGMINER_SIZES[packet_type], DOCS_SIZES[packet_type])
    if packet_type == TX_TASK:
        works, rest = divmod(total - _TASK_PREFIX, WORK_BYTES)
        return rest == 0 and 1 <= works <= MAX_WORKS_PER_TASK
    if packet_type == RX_NONCE:
        nonces, rest = divmod(total - _NONCE_PREFIX, 8)
        return rest == 0 and 0 <= nonces <= MAX_NONCES_PER_REPLY
    if packet_type == RX_STATUS_REPLY:
        return _STATUS_MIN <= total <= _STATUS_MAX
    return False


@dataclass(frozen=True)
class Packet:
    """One framed packet: type, version and the payload between the 4-byte head and the CRC."""

    packet_type: int
    payload: bytes
    version: int = 0

    @property
    def total(self) -> int:
        """Bytes on the wire: 4-byte head, payload and 2-byte CRC."""
        return HEAD_BYTES + len(self.payload) + CRC_BYTES

    @property
    def name(self) -> str:
        """The packet type's name (``"RxNonce"``…), or its hex value for an unknown type."""
        return PACKET_NAMES.get(self.packet_type, f"type 0x{self.packet_type:02x}")

    @property
    def variant(self) -> str:
        """Which firmware layout the size matches: ``"cgminer-s3"`` or ``"antminer-docs"``."""
        if DOCS_SIZES.get(self.packet_type) == self.total:
            return VARIANT_DOCS
        return VARIANT_CGMINER

    def pack(self) -> bytes:
        """The packet's bytes: head (type, version, length = total − 4), payload, CRC-16/MODBUS LE."""
        body = struct.pack("<BBH", self.packet_type, self.version, self.total - HEAD_BYTES) + self.payload
        return body + struct.pack("<H", crc16_modbus(body))

    @classmethod
    def unpack(cls, data: bytes) -> Packet:
        """Check head, length and CRC of exactly one packet; raise a typed error naming the problem.

        Raises :class:`AsicProtocolError` (truncated, unknown type, wrong or impossible length) or
        :class:`AsicCrcError` (stored and computed CRC differ).
        """
        data = bytes(data)
        if len(data) < HEAD_BYTES + CRC_BYTES:
            raise AsicProtocolError(data, f"truncated: {len(data)} bytes is shorter than head + CRC")
        packet_type, version, length = struct.unpack_from("<BBH", data)
        if packet_type not in PACKET_TYPES:
            raise AsicProtocolError(data, f"unknown packet type 0x{packet_type:02x}")
        if length + HEAD_BYTES != len(data):
            raise AsicProtocolError(
                data, f"length field {length} says {length + HEAD_BYTES} bytes, got {len(data)} (truncated?)"
            )
        stored = struct.unpack_from("<H", data, len(data) - CRC_BYTES)[0]
        computed = crc16_modbus(data[:-CRC_BYTES])
        if stored != computed:
            raise AsicCrcError(data, f"CRC 0x{stored:04x} stored, 0x{computed:04x} computed")
        if not total_size_allowed(packet_type, len(data)):
            raise AsicProtocolError(
                data, f"impossible length {len(data)} bytes for {PACKET_NAMES[packet_type]} (CRC is valid)"
            )
        return cls(packet_type, data[HEAD_BYTES:-CRC_BYTES], version)


def _u8(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must fit in a byte, got {value}")


def _require_type(packet: Packet, packet_type: int) -> None:
    if packet.packet_type != packet_type:
        raise AsicProtocolError(packet.pack(), f"expected {PACKET_NAMES[packet_type]}, got {packet.name}")


def _require_cgminer_layout(packet: Packet) -> None:
    if packet.variant != VARIANT_CGMINER:
        raise UnsupportedVariantError(
            packet.pack(),
            f"{packet.name} of {packet.total} bytes is the {packet.variant} variant; only the "
            f"{CGMINER_SIZES[packet.packet_type]}-byte {VARIANT_CGMINER} layout is decoded "
            "(Packet.pack() re-packs it unchanged)",
        )


class _Record(ABC):
    """Shared pack()/unpack() in terms of each record's to_packet()/from_packet()."""

    PACKET_TYPE: ClassVar[int]
    version: int

    @abstractmethod
    def to_packet(self) -> Packet:
        """This record as a packet (type, version, payload)."""

    @classmethod
    @abstractmethod
    def from_packet(cls, packet: Packet) -> Self:
        """The record a packet of this type carries."""

    def pack(self) -> bytes:
        """The record's packet bytes, CRC included."""
        return self.to_packet().pack()

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        """The record in one packet's bytes; raises :class:`AsicProtocolError` (or a subclass)."""
        return cls.from_packet(Packet.unpack(data))


class ConfigFlags(IntFlag):
    """TxConfig byte 4, bit 0 first (sent bit-reversed): which settings take effect."""

    RESET = 0x01
    FAN = 0x02
    TIMEOUT = 0x04
    FREQUENCY = 0x08
    VOLTAGE = 0x10
    CHAIN_CHECK_TIME = 0x20
    CHIP_CONFIG = 0x40
    HW_ERROR = 0x80


class ControlFlags(IntFlag):
    """TxConfig byte 5 (sent bit-reversed)."""

    NONE = 0x00
    BEEPER = 0x01
    TEMP_OVER = 0x02
    FAN_HOME_MODE = 0x04


@dataclass(frozen=True)
class TxConfig(_Record):
    """Host → device 0x51: chains, chips, fan, timeout, frequency and voltage (24 bytes)."""

    PACKET_TYPE: ClassVar[int] = TX_CONFIG
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BBBBBBBBH2s4sBB")

    chain_num: int
    asic_num: int
    frequency_mhz: int
    voltage: bytes = b"\x00\x00"  # BITMAIN_VOLTAGE_DEF "0000" on the S3
    flags: ConfigFlags = ConfigFlags.FAN | ConfigFlags.TIMEOUT | ConfigFlags.FREQUENCY | ConfigFlags.VOLTAGE
    control: ControlFlags = ControlFlags.NONE
    chain_check_time: int = 0
    fan_pwm: int = 0x60
    timeout: int = 0x2D  # BITMAIN_DEFAULT_TIMEOUT
    reg_data: bytes = b"\x00\x00\x00\x00"
    chip_address: int = 0
    reg_address: int = 0
    version: int = 0

    def __post_init__(self) -> None:
        for name in ("chain_num", "asic_num", "chain_check_time", "fan_pwm", "timeout", "chip_address"):
            _u8(name, getattr(self, name))
        _u8("reg_address", self.reg_address)
        if not 0 <= self.frequency_mhz <= 0xFFFF:
            raise ValueError(f"frequency_mhz must fit in 16 bits, got {self.frequency_mhz}")
        if len(self.voltage) != 2 or len(self.reg_data) != 4:
            raise ValueError("voltage must be 2 bytes and reg_data 4 bytes")
        if int(self.control) & ~0x07:
            raise ValueError(f"control has reserved bits set: 0x{int(self.control):02x}")

    def to_packet(self) -> Packet:
        """This TxConfig as a packet (flag bytes bit-reversed where the S3 wants them)."""
        payload = self._LAYOUT.pack(
            bitswap(int(self.flags)),
            bitswap(int(self.control)),
            self.chain_check_time,
            0,
            self.chain_num,
            self.asic_num,
            self.fan_pwm,
            self.timeout,
            self.frequency_mhz,
            bytes(self.voltage),
            bytes(self.reg_data),
            self.chip_address,
            self.reg_address,
        )
        return Packet(TX_CONFIG, payload, self.version)

    @classmethod
    def from_packet(cls, packet: Packet) -> TxConfig:
        """The TxConfig a packet carries; raises :class:`AsicProtocolError` if it is not one."""
        _require_type(packet, TX_CONFIG)
        _require_cgminer_layout(packet)
        (flags, control, check, reserved, chains, asics, pwm, timeout, freq, volt, reg, chip, addr) = (
            cls._LAYOUT.unpack(packet.payload)
        )
        if reserved or bitswap(control) & ~0x07:
            raise AsicProtocolError(packet.pack(), "TxConfig reserved bits are set")
        return cls(
            chain_num=chains,
            asic_num=asics,
            frequency_mhz=freq,
            voltage=volt,
            flags=ConfigFlags(bitswap(flags)),
            control=ControlFlags(bitswap(control)),
            chain_check_time=check,
            fan_pwm=pwm,
            timeout=timeout,
            reg_data=reg,
            chip_address=chip,
            reg_address=addr,
            version=packet.version,
        )


@dataclass(frozen=True)
class Work:
    """One work item of a TxTask: the chip sweeps the 2^32 nonces of (midstate, data2)."""

    work_id: int
    midstate: bytes  # 8 SHA-256 state words after header bytes 0–63, each LE32
    data2: bytes  # header bytes 64–75: merkle tail, time, bits

    def __post_init__(self) -> None:
        if not 0 <= self.work_id <= 0xFFFFFFFF:
            raise ValueError(f"work_id must fit in 32 bits, got {self.work_id}")
        if len(self.midstate) != 32 or len(self.data2) != 12:
            raise ValueError(
                f"midstate must be 32 bytes and data2 12, got {len(self.midstate)} and {len(self.data2)}"
            )


@dataclass(frozen=True)
class TxTask(_Record):
    """Host → device 0x52: up to 8 works sharing one share difficulty (``diff`` = log2 of it)."""

    PACKET_TYPE: ClassVar[int] = TX_TASK

    works: tuple[Work, ...]
    diff: int = 0
    new_block: bool = False
    version: int = 0

    def __post_init__(self) -> None:
        if not 1 <= len(self.works) <= MAX_WORKS_PER_TASK:
            raise ValueError(f"a TxTask carries 1 to {MAX_WORKS_PER_TASK} works, got {len(self.works)}")
        _u8("diff", self.diff)

    def to_packet(self) -> Packet:
        """This TxTask as a packet (flag bytes bit-reversed where the S3 wants them)."""
        parts = [bytes([bitswap(int(self.new_block)), self.diff, 0, 0])]
        for w in self.works:
            parts.append(struct.pack("<I", w.work_id) + bytes(w.midstate) + bytes(w.data2))
        return Packet(TX_TASK, b"".join(parts), self.version)

    @classmethod
    def from_packet(cls, packet: Packet) -> TxTask:
        """The TxTask a packet carries; raises :class:`AsicProtocolError` if it is not one."""
        _require_type(packet, TX_TASK)
        p = packet.payload
        new_block = bitswap(p[0])
        if new_block & ~0x01 or p[2] or p[3]:
            raise AsicProtocolError(packet.pack(), "TxTask reserved bits are set")
        works = []
        for off in range(4, len(p), WORK_BYTES):
            (work_id,) = struct.unpack_from("<I", p, off)
            works.append(Work(work_id, p[off + 4 : off + 36], p[off + 36 : off + 48]))
        return cls(tuple(works), diff=p[1], new_block=bool(new_block), version=packet.version)


@dataclass(frozen=True)
class RxStatusRequest(_Record):
    """Host → device 0x53: ask for an RxStatus reply (12 bytes)."""

    PACKET_TYPE: ClassVar[int] = RX_STATUS_REQUEST

    chip_status_eft: bool = False
    detect_get: bool = False
    chip_address: int = 0
    reg_address: int = 0
    version: int = 0

    def __post_init__(self) -> None:
        _u8("chip_address", self.chip_address)
        _u8("reg_address", self.reg_address)

    def to_packet(self) -> Packet:
        """This RxStatusRequest as a packet (flag bytes bit-reversed where the S3 wants them)."""
        flags = int(self.chip_status_eft) | int(self.detect_get) << 1
        payload = bytes([bitswap(flags), 0, 0, 0, self.chip_address, self.reg_address])
        return Packet(RX_STATUS_REQUEST, payload, self.version)

    @classmethod
    def from_packet(cls, packet: Packet) -> RxStatusRequest:
        """The RxStatusRequest a packet carries; raises :class:`AsicProtocolError` if it is not one."""
        _require_type(packet, RX_STATUS_REQUEST)
        _require_cgminer_layout(packet)
        p = packet.payload
        flags = bitswap(p[0])
        if flags & ~0x03 or any(p[1:4]):
            raise AsicProtocolError(packet.pack(), "RxStatus request reserved bits are set")
        return cls(bool(flags & 1), bool(flags & 2), p[4], p[5], packet.version)


def _words_for(asic_num: int) -> int:
    """32-bit words of exist/status bits per chain: one bit per chip (cgminer's rounding)."""
    return (asic_num + 31) // 32


@dataclass(frozen=True)
class ChainStatus:
    """One chain of an RxStatus reply: chip count and the per-chip exist/status bit words."""

    asic_num: int
    asic_exist: tuple[int, ...]
    asic_status: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.asic_num <= MAX_ASICS_PER_CHAIN:
            raise ValueError(f"asic_num must fit in a byte, got {self.asic_num}")
        n = _words_for(self.asic_num)
        if len(self.asic_exist) != n or len(self.asic_status) != n:
            raise ValueError(f"a chain of {self.asic_num} chips carries {n} exist and {n} status words")


@dataclass(frozen=True)
class RxStatusReply(_Record):
    """Device → host 0xA1: fifo space, hardware version, error counter, chains, temperatures, fans."""

    PACKET_TYPE: ClassVar[int] = RX_STATUS_REPLY
    _PREFIX: ClassVar[struct.Struct] = struct.Struct("<BBH4sBBHIII")

    chains: tuple[ChainStatus, ...]
    fifo_space: int
    hw_version: bytes = b"\x00\x00\x00\x00"
    temps: tuple[int, ...] = ()
    fans: tuple[int, ...] = ()
    fan_exist: int = 0
    temp_exist: int = 0
    nonce_error: int = 0
    reg_value: int = 0
    chip_value_eft: bool = False
    version: int = 0

    def __post_init__(self) -> None:
        if len(self.chains) > MAX_CHAINS or len(self.temps) > MAX_TEMPS or len(self.fans) > MAX_FANS:
            raise ValueError(f"at most {MAX_CHAINS} chains, {MAX_TEMPS} temperatures and {MAX_FANS} fans")
        if len(self.hw_version) != 4:
            raise ValueError("hw_version must be 4 bytes")
        for v in (*self.temps, *self.fans):
            _u8("temperature/fan", v)

    def to_packet(self) -> Packet:
        """This RxStatusReply as a packet."""
        payload = self._PREFIX.pack(
            int(self.chip_value_eft),
            len(self.chains),
            self.fifo_space,
            bytes(self.hw_version),
            len(self.fans),
            len(self.temps),
            self.fan_exist,
            self.temp_exist,
            self.nonce_error,
            self.reg_value,
        )
        exist = [w for c in self.chains for w in c.asic_exist]
        words = exist + [w for c in self.chains for w in c.asic_status]
        payload += struct.pack(f"<{len(words)}I", *words)
        payload += bytes(c.asic_num for c in self.chains) + bytes(self.temps) + bytes(self.fans)
        return Packet(RX_STATUS_REPLY, payload, self.version)

    @classmethod
    def from_packet(cls, packet: Packet) -> RxStatusReply:
        """The RxStatusReply a packet carries; raises :class:`AsicProtocolError` if it is not one."""
        _require_type(packet, RX_STATUS_REPLY)
        p = packet.payload
        if len(p) < cls._PREFIX.size:
            raise AsicProtocolError(packet.pack(), f"RxStatus reply payload of {len(p)} bytes is too short")
        (eft, chain_num, fifo, hw, fan_num, temp_num, fan_exist, temp_exist, nonce_error, reg_value) = (
            cls._PREFIX.unpack_from(p)
        )
        if chain_num > MAX_CHAINS or temp_num > MAX_TEMPS or fan_num > MAX_FANS:
            raise AsicProtocolError(
                packet.pack(), f"RxStatus reply claims {chain_num} chains, {temp_num} temps, {fan_num} fans"
            )
        # cgminer reads chain_asic_num from the tail, because the word counts before it depend on it.
        tail = chain_num + temp_num + fan_num
        if len(p) < cls._PREFIX.size + tail:
            raise AsicProtocolError(packet.pack(), "RxStatus reply is shorter than its chain/temp/fan counts")
        tail_at = len(p) - tail
        asic_nums = p[tail_at : tail_at + chain_num]
        counts = [_words_for(n) for n in asic_nums]
        if cls._PREFIX.size + 8 * sum(counts) != tail_at:
            raise AsicProtocolError(
                packet.pack(),
                f"RxStatus reply length does not match {chain_num} chains of {list(asic_nums)} chips, "
                f"{temp_num} temps and {fan_num} fans",
            )
        words = struct.unpack_from(f"<{2 * sum(counts)}I", p, cls._PREFIX.size)
        exist, status = words[: sum(counts)], words[sum(counts) :]
        chains, at = [], 0
        for n, c in zip(asic_nums, counts, strict=True):
            chains.append(ChainStatus(n, tuple(exist[at : at + c]), tuple(status[at : at + c])))
            at += c
        temps_at = tail_at + chain_num
        return cls(
            chains=tuple(chains),
            fifo_space=fifo,
            hw_version=hw,
            temps=tuple(p[temps_at : temps_at + temp_num]),
            fans=tuple(p[temps_at + temp_num :]),
            fan_exist=fan_exist,
            temp_exist=temp_exist,
            nonce_error=nonce_error,
            reg_value=reg_value,
            chip_value_eft=bool(eft & 1),
            version=packet.version,
        )


@dataclass(frozen=True)
class NonceEntry:
    """One share found by a chip: which work it belongs to and the nonce (header bytes 76–79, LE)."""

    work_id: int
    nonce: int


@dataclass(frozen=True)
class RxNonce(_Record):
    """Device → host 0xA2: up to 128 (work_id, nonce) pairs, fifo space and a running nonce count."""

    PACKET_TYPE: ClassVar[int] = RX_NONCE

    nonces: tuple[NonceEntry, ...] = ()
    fifo_space: int = 0
    diff: int = 0
    total_nonce_num: int = 0
    version: int = 0

    def __post_init__(self) -> None:
        if len(self.nonces) > MAX_NONCES_PER_REPLY:
            raise ValueError(f"an RxNonce carries ≤ {MAX_NONCES_PER_REPLY} nonces, not {len(self.nonces)}")

    def to_packet(self) -> Packet:
        """This RxNonce as a packet."""
        payload = struct.pack("<HHQ", self.fifo_space, self.diff, self.total_nonce_num)
        payload += b"".join(struct.pack("<II", e.work_id, e.nonce) for e in self.nonces)
        return Packet(RX_NONCE, payload, self.version)

    @classmethod
    def from_packet(cls, packet: Packet) -> RxNonce:
        """The RxNonce a packet carries; raises :class:`AsicProtocolError` if it is not one."""
        _require_type(packet, RX_NONCE)
        fifo, diff, total = struct.unpack_from("<HHQ", packet.payload)
        pairs = struct.iter_unpack("<II", packet.payload[12:])
        return cls(tuple(NonceEntry(w, n) for w, n in pairs), fifo, diff, total, packet.version)


Record = TxConfig | TxTask | RxStatusRequest | RxStatusReply | RxNonce
_RECORDS: dict[int, type[_Record]] = {
    TX_CONFIG: TxConfig,
    TX_TASK: TxTask,
    RX_STATUS_REQUEST: RxStatusRequest,
    RX_STATUS_REPLY: RxStatusReply,
    RX_NONCE: RxNonce,
}


def decode(packet: Packet) -> Record:
    """The typed record of a packet (raises :class:`UnsupportedVariantError` for the docs layouts)."""
    return _RECORDS[packet.packet_type].from_packet(packet)


def wire_midstate(header: bytes) -> bytes:
    """The 32 midstate bytes of a TxTask work item for an 80-byte header: the 8 SHA-256 state words
    after header bytes 0–63 (``hasher_core.header.midstate``), each little-endian as cgminer sends
    them. Raises ValueError when ``header`` is not 80 bytes."""
    return struct.pack("<8I", *midstate(header))


def midstate_from_wire(wire: bytes) -> tuple[int, ...]:
    """Inverse of :func:`wire_midstate`: the 8 state words from a work item's 32 midstate bytes.

    Raises ValueError when ``wire`` is not 32 bytes.
    """
    if len(wire) != 32:
        raise ValueError(f"a midstate is 32 bytes, got {len(wire)}")
    return struct.unpack("<8I", wire)
