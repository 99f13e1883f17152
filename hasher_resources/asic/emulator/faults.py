"""The faults the emulator can inject into its replies, and the byte damage each one does.

A fault is ``KIND:TARGET[:WHICH]`` (the ``--fault`` flag, repeatable): KIND is ``crc`` (flip the
CRC), ``drop`` (send nothing), ``stall`` (go silent for a while, then send), ``disconnect`` (close
the port and exit), ``wrong-nonce`` (report a nonce that misses the share target), ``garbage``
(junk bytes before the packet), ``truncate`` (send only the first half) or ``bad-length`` (a packet
with a valid CRC but an impossible length); TARGET is ``status`` or ``nonce`` (which replies);
WHICH is the 1-based occurrence (default 1) or ``*`` for every one.

This module owns the rules and the byte transforms; when to stall, drop or disconnect is decided
where the bytes are served (``serve.py``).
"""

from __future__ import annotations

import argparse
import struct
from dataclasses import dataclass

from hasher_core.asic_codec import HEAD_BYTES, crc16_modbus, total_size_allowed

FAULT_KINDS = ("crc", "drop", "stall", "disconnect", "wrong-nonce", "garbage", "truncate", "bad-length")
FAULT_TARGETS = ("status", "nonce")
#: Junk for the ``garbage`` fault: includes type bytes with impossible lengths to exercise resync.
GARBAGE = b"\x00\x13junk\x51\xff\xff\xa2\x01\x00"


@dataclass(frozen=True)
class FaultRule:
    """One requested fault: what to do, to which replies, and on which occurrence (None = every)."""

    kind: str
    target: str
    occurrence: int | None = 1

    @classmethod
    def parse(cls, text: str) -> FaultRule:
        """The rule ``KIND:TARGET[:WHICH]`` describes; raises ``argparse.ArgumentTypeError`` (so it
        serves as an argparse ``type``) naming the syntax when ``text`` is not one."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or parts[0] not in FAULT_KINDS or parts[1] not in FAULT_TARGETS:
            raise argparse.ArgumentTypeError(
                f"fault {text!r} must be KIND:TARGET[:WHICH] with KIND in {FAULT_KINDS}, "
                f"TARGET in {FAULT_TARGETS}, WHICH a positive integer or '*'"
            )
        which = parts[2] if len(parts) == 3 else "1"
        if which == "*":
            return cls(parts[0], parts[1], None)
        if not which.isdigit() or int(which) < 1:
            raise argparse.ArgumentTypeError(f"fault {text!r}: KIND:TARGET:WHICH needs WHICH ≥ 1 or '*'")
        return cls(parts[0], parts[1], int(which))

    def fires(self, target: str, count: int) -> bool:
        """Whether this rule applies to the ``count``-th (1-based) reply of kind ``target``."""
        return self.target == target and (self.occurrence is None or self.occurrence == count)


def with_bad_length(packet: bytes) -> bytes:
    """The packet padded to a length its type cannot have, with a recomputed (valid) CRC."""
    extra = next(n for n in range(1, 2048) if not total_size_allowed(packet[0], len(packet) + n))
    body = bytearray(packet[:-2] + bytes(extra))
    body[2:4] = struct.pack("<H", len(body) + 2 - HEAD_BYTES)
    return bytes(body) + struct.pack("<H", crc16_modbus(body))


def damage(packet: bytes, kinds: list[str]) -> bytes:
    """Apply the byte-level faults among ``kinds`` to one reply, in a fixed order: ``crc``,
    ``bad-length``, ``truncate``, ``garbage`` (the other kinds do not change bytes)."""
    if "crc" in kinds:
        packet = packet[:-1] + bytes([packet[-1] ^ 0xFF])
    if "bad-length" in kinds:
        packet = with_bad_length(packet)
    if "truncate" in kinds:
        packet = packet[: len(packet) // 2]
    if "garbage" in kinds:
        packet = GARBAGE + packet
    return packet
