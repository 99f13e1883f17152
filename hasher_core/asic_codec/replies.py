"""Device → host records of the S3 protocol (DESIGN §7): the RxStatus reply (0xA1) with its chains,
temperatures and fans, and RxNonce (0xA2) with the shares the chips found."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from hasher_core.errors import AsicProtocolError

from .packet import (
    MAX_ASICS_PER_CHAIN,
    MAX_CHAINS,
    MAX_FANS,
    MAX_NONCES_PER_REPLY,
    MAX_TEMPS,
    RX_NONCE,
    RX_STATUS_REPLY,
    Packet,
    PacketRecord,
    check_u8,
    require_type,
)


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
class RxStatusReply(PacketRecord):
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
            check_u8("temperature/fan", v)

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
        require_type(packet, RX_STATUS_REPLY)
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
class RxNonce(PacketRecord):
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
        require_type(packet, RX_NONCE)
        fifo, diff, total = struct.unpack_from("<HHQ", packet.payload)
        pairs = struct.iter_unpack("<II", packet.payload[12:])
        return cls(tuple(NonceEntry(w, n) for w, n in pairs), fifo, diff, total, packet.version)
