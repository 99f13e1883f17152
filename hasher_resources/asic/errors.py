"""The typed errors of the ASIC device side: every message names the port and what happened.

They live apart from the packet codec so that ``protocol.py`` stays dataclasses, CRC and framing,
and so the resource, the emulator and the validation share one vocabulary.
"""

from __future__ import annotations


class AsicError(RuntimeError):
    """Base class: anything that went wrong talking to an ASIC (or to the emulator)."""


class AsicNotFoundError(AsicError):
    """The device path, pty or TCP port cannot be opened."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"ASIC device {url!r} not found: {reason}")


class AsicDisconnectedError(AsicError):
    """The device was open and went away (pty closed, socket reset, USB unplugged)."""

    def __init__(self, url: str, during: str, reason: str) -> None:
        self.url = url
        self.during = during
        super().__init__(f"ASIC device {url!r} disconnected during {during}: {reason}")


class AsicTimeoutError(AsicError):
    """No complete answer within the read deadline, after the bounded retries."""

    def __init__(self, url: str, during: str, waited_s: float, attempts: int, detail: str = "") -> None:
        self.url = url
        self.during = during
        self.waited_s = waited_s
        self.attempts = attempts
        extra = f"; {detail}" if detail else ""
        super().__init__(
            f"ASIC device {url!r} went silent during {during}: no reply after {attempts} attempt(s), "
            f"{waited_s:.2f} s{extra}"
        )


class AsicProtocolError(AsicError):
    """Bytes that frame but do not make sense: impossible length, bad field, unknown variant."""

    def __init__(self, packet: bytes, reason: str, url: str | None = None) -> None:
        self.packet = bytes(packet)
        self.reason = reason
        self.url = url
        where = f"ASIC device {url!r}: " if url else ""
        shown = self.packet[:64].hex() + ("…" if len(self.packet) > 64 else "")
        super().__init__(f"{where}bad packet {shown} ({len(self.packet)} bytes): {reason}")


class AsicCrcError(AsicProtocolError):
    """A packet whose CRC-16/MODBUS does not match its bytes."""


class WrongDeviceError(AsicError):
    """Something answered, but it does not speak the Bitmain protocol."""

    def __init__(self, url: str, received: bytes, reason: str) -> None:
        self.url = url
        self.received = bytes(received)
        shown = self.received[:48].hex()
        super().__init__(
            f"ASIC device {url!r} is not an Antminer S3 (Bitmain protocol): {reason}; "
            f"first bytes received: {shown or '(none)'}"
        )
