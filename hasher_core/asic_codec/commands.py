"""Host → device records of the S3 protocol (DESIGN §7): TxConfig (0x51), TxTask (0x52) with its
work items, and the RxStatus request (0x53), laid out as cgminer's ``driver-bitmain.h`` (S3)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntFlag
from typing import ClassVar

from hasher_core.errors import AsicProtocolError

from .packet import (
    MAX_WORKS_PER_TASK,
    RX_STATUS_REQUEST,
    TX_CONFIG,
    TX_TASK,
    WORK_BYTES,
    Packet,
    PacketRecord,
    bitswap,
    check_u8,
    require_cgminer_layout,
    require_type,
)


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
class TxConfig(PacketRecord):
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
            check_u8(name, getattr(self, name))
        check_u8("reg_address", self.reg_address)
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
        require_type(packet, TX_CONFIG)
        require_cgminer_layout(packet)
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
class TxTask(PacketRecord):
    """Host → device 0x52: up to 8 works sharing one share difficulty (``diff`` = log2 of it)."""

    PACKET_TYPE: ClassVar[int] = TX_TASK

    works: tuple[Work, ...]
    diff: int = 0
    new_block: bool = False
    version: int = 0

    def __post_init__(self) -> None:
        if not 1 <= len(self.works) <= MAX_WORKS_PER_TASK:
            raise ValueError(f"a TxTask carries 1 to {MAX_WORKS_PER_TASK} works, got {len(self.works)}")
        check_u8("diff", self.diff)

    def to_packet(self) -> Packet:
        """This TxTask as a packet (flag bytes bit-reversed where the S3 wants them)."""
        parts = [bytes([bitswap(int(self.new_block)), self.diff, 0, 0])]
        for w in self.works:
            parts.append(struct.pack("<I", w.work_id) + bytes(w.midstate) + bytes(w.data2))
        return Packet(TX_TASK, b"".join(parts), self.version)

    @classmethod
    def from_packet(cls, packet: Packet) -> TxTask:
        """The TxTask a packet carries; raises :class:`AsicProtocolError` if it is not one."""
        require_type(packet, TX_TASK)
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
class RxStatusRequest(PacketRecord):
    """Host → device 0x53: ask for an RxStatus reply (12 bytes)."""

    PACKET_TYPE: ClassVar[int] = RX_STATUS_REQUEST

    chip_status_eft: bool = False
    detect_get: bool = False
    chip_address: int = 0
    reg_address: int = 0
    version: int = 0

    def __post_init__(self) -> None:
        check_u8("chip_address", self.chip_address)
        check_u8("reg_address", self.reg_address)

    def to_packet(self) -> Packet:
        """This RxStatusRequest as a packet (flag bytes bit-reversed where the S3 wants them)."""
        flags = int(self.chip_status_eft) | int(self.detect_get) << 1
        payload = bytes([bitswap(flags), 0, 0, 0, self.chip_address, self.reg_address])
        return Packet(RX_STATUS_REQUEST, payload, self.version)

    @classmethod
    def from_packet(cls, packet: Packet) -> RxStatusRequest:
        """The RxStatusRequest a packet carries; raises :class:`AsicProtocolError` if it is not one."""
        require_type(packet, RX_STATUS_REQUEST)
        require_cgminer_layout(packet)
        p = packet.payload
        flags = bitswap(p[0])
        if flags & ~0x03 or any(p[1:4]):
            raise AsicProtocolError(packet.pack(), "RxStatus request reserved bits are set")
        return cls(bool(flags & 1), bool(flags & 2), p[4], p[5], packet.version)
