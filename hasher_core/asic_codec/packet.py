"""S3 packets (DESIGN §7): packet types and sizes, CRC-16/MODBUS, bitswap, the framed :class:`Packet`
and the base of the typed records."""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Self

from hasher_core.errors import AsicCrcError, AsicProtocolError, UnsupportedVariantError

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


def check_u8(name: str, value: int) -> None:
    """Raise ValueError naming ``name`` unless ``value`` fits in one byte."""
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must fit in a byte, got {value}")


def require_type(packet: Packet, packet_type: int) -> None:
    """Raise :class:`AsicProtocolError` unless ``packet`` is of ``packet_type``."""
    if packet.packet_type != packet_type:
        raise AsicProtocolError(packet.pack(), f"expected {PACKET_NAMES[packet_type]}, got {packet.name}")


def require_cgminer_layout(packet: Packet) -> None:
    """Raise :class:`UnsupportedVariantError` for a packet in the Antminer-docs layout (DESIGN §7)."""
    if packet.variant != VARIANT_CGMINER:
        raise UnsupportedVariantError(
            packet.pack(),
            f"{packet.name} of {packet.total} bytes is the {packet.variant} variant; only the "
            f"{CGMINER_SIZES[packet.packet_type]}-byte {VARIANT_CGMINER} layout is decoded "
            "(Packet.pack() re-packs it unchanged)",
        )


class PacketRecord(ABC):
    """Base of the typed records: pack()/unpack() in terms of each record's to_packet()/from_packet()."""

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
