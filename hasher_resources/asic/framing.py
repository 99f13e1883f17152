"""The byte stream from a device (or to the emulator) cut into S3 packets: resync and damage counters.

This module owns reassembly only: where packets start and end in a stream that may carry junk,
truncated or corrupt packets. What a packet means is ``hasher_core.asic_codec``'s business; what to
do about a damaged one (retry, resubmit, give up) is the session's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hasher_core.asic_codec import (
    CRC_BYTES,
    HEAD_BYTES,
    PACKET_NAMES,
    PACKET_TYPES,
    Packet,
    crc16_modbus,
    total_size_allowed,
)


@dataclass(frozen=True)
class StreamIssue:
    """Bytes the reader threw away, and why: ``kind`` is ``garbage``, ``crc`` or ``length``."""

    kind: str
    data: bytes
    reason: str


@dataclass
class PacketReader:
    """Cut a byte stream into packets; skip garbage, CRC failures and impossible lengths, and resync.

    A candidate packet starts at a known type byte. Its length must be possible for the type and its
    CRC must match; otherwise one byte is dropped and the scan goes on, so a packet hidden behind
    junk or behind a truncated packet is still found. A packet with a valid CRC but an impossible
    length is dropped whole and reported as such. ``issues`` keeps the most recent problems.
    """

    max_issues: int = 32
    buffer: bytearray = field(default_factory=bytearray)
    issues: deque[StreamIssue] = field(init=False)
    garbage_bytes: int = 0
    crc_errors: int = 0
    length_errors: int = 0
    packets: int = 0
    #: CRC and length failures by the packet type byte they claimed (e.g. lost RxNonce packets).
    damaged_by_type: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.issues = deque(maxlen=self.max_issues)

    def _drop(self, count: int, kind: str, reason: str) -> None:
        self.issues.append(StreamIssue(kind, bytes(self.buffer[:count]), reason))
        del self.buffer[:count]

    def feed(self, data: bytes) -> list[Packet]:
        """Add bytes; return every complete, valid packet now available, in stream order."""
        self.buffer += data
        out: list[Packet] = []
        buf = self.buffer
        while buf:
            if buf[0] not in PACKET_TYPES:
                skip = next((i for i, b in enumerate(buf) if b in PACKET_TYPES), len(buf))
                self.garbage_bytes += skip
                self._drop(skip, "garbage", f"{skip} byte(s) before any packet type")
                continue
            if len(buf) < HEAD_BYTES:
                break
            total = int.from_bytes(buf[2:4], "little") + HEAD_BYTES
            if not total_size_allowed(buf[0], total):
                if total >= HEAD_BYTES + CRC_BYTES and len(buf) >= total and self._crc_ok(total):
                    self.length_errors += 1
                    self.damaged_by_type[buf[0]] = self.damaged_by_type.get(buf[0], 0) + 1
                    reason = f"valid CRC but impossible length {total} for {PACKET_NAMES[buf[0]]}"
                    self._drop(total, "length", reason)
                else:
                    self.garbage_bytes += 1
                    self._drop(1, "garbage", f"type byte 0x{buf[0]:02x} with impossible length {total}")
                continue
            if len(buf) < total:
                break
            if not self._crc_ok(total):
                self.crc_errors += 1
                self.damaged_by_type[buf[0]] = self.damaged_by_type.get(buf[0], 0) + 1
                reason = f"CRC mismatch in a {total}-byte {PACKET_NAMES[buf[0]]}"
                self.issues.append(StreamIssue("crc", bytes(buf[:total]), reason))
                del buf[:1]
                continue
            out.append(Packet(buf[0], bytes(buf[HEAD_BYTES : total - CRC_BYTES]), buf[1]))
            self.packets += 1
            del buf[:total]
        return out

    def _crc_ok(self, total: int) -> bool:
        stored = int.from_bytes(self.buffer[total - CRC_BYTES : total], "little")
        return crc16_modbus(self.buffer[: total - CRC_BYTES]) == stored

    def pending(self) -> bytes:
        """Bytes of a packet that has started but not finished (a truncated packet if none follow)."""
        return bytes(self.buffer)

    def reset(self) -> bytes:
        """Throw away any partial packet (after a timeout) and return it."""
        stale = bytes(self.buffer)
        self.buffer.clear()
        return stale
