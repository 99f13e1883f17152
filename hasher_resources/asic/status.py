"""What an ASIC session reports (DESIGN §7): each nonce the device returned and whether it verified,
the device's status in a user's terms, and the session's running counters.
"""

from __future__ import annotations

from dataclasses import dataclass

from hasher_core.asic_codec import RxStatusReply

#: The hw_version the bundled emulator reports ("EMU" + revision): a session holds a board, not the
#: emulator, to what its chips promise. The emulator imports it from here to send it.
EMULATOR_HW_VERSION = b"EMU\x01"


@dataclass(frozen=True)
class NonceReport:
    """One nonce returned by the device, checked on the host."""

    header_index: int
    work_id: int
    nonce: int
    zero_bits: int  # leading zero bits of the header's byte-reversed double SHA-256 with this nonce
    valid: bool  # zero_bits ≥ the session's verify_bits


@dataclass(frozen=True)
class DeviceStatus:
    """What an RxStatus reply says, in user terms."""

    chains: int
    chips_per_chain: tuple[int, ...]
    chips_alive: int
    fifo_space: int
    hw_version: str
    temperatures_c: tuple[int, ...]
    fans: tuple[int, ...]
    nonce_errors: int
    emulated: bool

    @classmethod
    def from_reply(cls, reply: RxStatusReply) -> DeviceStatus:
        """Summarise a decoded reply: chips alive = set status bits, ``emulated`` from hw_version."""
        alive = sum(bin(w).count("1") for c in reply.chains for w in c.asic_status)
        return cls(
            chains=len(reply.chains),
            chips_per_chain=tuple(c.asic_num for c in reply.chains),
            chips_alive=alive,
            fifo_space=reply.fifo_space,
            hw_version=reply.hw_version.hex(),
            temperatures_c=reply.temps,
            fans=reply.fans,
            nonce_errors=reply.nonce_error,
            emulated=reply.hw_version == EMULATOR_HW_VERSION,
        )


def health_problems(
    status: DeviceStatus, counters: AsicCounters, device_nonces: int | None, tolerance: float
) -> list[str]:
    """What makes a device unfit to deploy to, in words (empty when healthy).

    No chip alive; a device-reported hardware-error count (``nonce_errors``) above ``tolerance`` of
    the nonces it says it found (``device_nonces``, from its running ``total_nonce_num``; unknown
    counts every error against it); or nonces this session returned that failed verification above
    ``tolerance`` -- the same rate the checkpoints gate and deployment verification allow.
    """
    problems = []
    chips = sum(status.chips_per_chain)
    if status.chips_alive == 0:
        problems.append(f"no chip alive (0 of {chips})")
    if status.nonce_errors:
        found = max(device_nonces or 0, status.nonce_errors)
        if status.nonce_errors / found > tolerance:
            problems.append(
                f"the device reports {status.nonce_errors} hardware error(s) in {device_nonces or 0} "
                f"nonce(s) (tolerance {tolerance})"
            )
    if counters.hardware_errors and counters.hardware_errors / max(counters.nonces_returned, 1) > tolerance:
        problems.append(
            f"{counters.hardware_errors} of {counters.nonces_returned} nonce(s) this session failed "
            f"verification (tolerance {tolerance})"
        )
    return problems


@dataclass
class AsicCounters:
    """Running counts for one session; they feed health checks and validation metadata."""

    packets_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    works_submitted: int = 0
    nonces_returned: int = 0
    nonces_verified: int = 0
    hardware_errors: int = 0
    stale_nonces: int = 0
    lost_nonces: int = 0
    missing_fifo_reports: int = 0  # status replies whose fifo report (the nonce count) never came
    crc_errors: int = 0
    length_errors: int = 0
    garbage_bytes: int = 0
    protocol_errors: int = 0
    retries: int = 0
    timeouts: int = 0
    resubmissions: int = 0
