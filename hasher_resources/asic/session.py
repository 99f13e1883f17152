"""An open connection to one S3 (or the emulator): serial I/O, deadlines, retries, nonce checks.

This module owns the host side of the conversation and works without Dagster:
``with AsicSession(url) as dev: dev.mine(header)``. The URL is anything pyserial opens: a device
path, a pty or ``socket://host:port``. The Dagster resources in ``resource.py`` only configure it.

Every read has a deadline, every exchange a bounded number of retries; the packet reader resyncs
after garbage. Every nonce the device returns is re-hashed on the host (double SHA-256 of the header
with that nonce must have ``verify_bits`` leading zero bits); one that does not is a hardware error.

Completion: a board streams nonces and never says "done", so after sending TxTasks the host asks
for status and takes the status reply as a barrier — nonces found before it (the emulator finds
them all before it answers) are collected, and so is every packet that arrived with it: a read may
hold a status reply and nonce packets in either order, or end inside a packet, and like cgminer's
``bitmain_parse_results`` (which ``memmove``s the rest of its buffer forward for the next pass)
the session keeps every packet after the one it was waiting for. A board needs time to sweep;
``collect_s`` waits that long before the barrier (0 for the emulator). Lost RxNonce packets show up
as a jump in the running ``total_nonce_num``; the batch is then resubmitted (bounded by ``retries``).
"""

from __future__ import annotations

import contextlib
import termios
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict

import serial

from hasher_core.asic_codec import (
    HEAD_BYTES,
    MAX_WORKS_PER_TASK,
    RX_NONCE,
    Packet,
    RxNonce,
    RxStatusReply,
    RxStatusRequest,
    TxConfig,
    TxTask,
    Work,
    decode,
    wire_midstate,
)
from hasher_core.design import HEADER_BYTES
from hasher_core.errors import (
    AsicCrcError,
    AsicDisconnectedError,
    AsicError,
    AsicNotFoundError,
    AsicProtocolError,
    AsicTimeoutError,
    WrongDeviceError,
)
from hasher_core.header import header_hash_zero_bits

from .framing import PacketReader
from .status import EMULATOR_HW_VERSION, AsicCounters, DeviceStatus, NonceReport, health_problems

POLL_S = 0.02
#: A chip reports shares of difficulty ≥ 1 (32 zero bits); the TxTask diff byte adds log2 of more.
DIFFICULTY_1_BITS = 32
MAX_TASK_DIFF = 12  # cgminer caps diff at 4096 "so solo mining has reasonable stats"
#: What a vanished port raises: pyserial's wrapper, a raw OSError, or termios on a closed pty.
PORT_ERRORS = (serial.SerialException, OSError, termios.error)


class AsicSession:
    """An open connection to one device: status, configure, submit work, verify nonces.

    Opening raises :class:`AsicNotFoundError` when pyserial cannot open ``url``; the exchanges
    raise the other ``AsicError`` types (timeout, disconnect, CRC, protocol, wrong device).
    """

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 115200,
        timeout_s: float = 1.0,
        retries: int = 2,
        share_bits: int = 8,
        collect_s: float = 0.0,
        frequency_mhz: int = 250,
        voltage: bytes = b"\x00\x00",
        chain_count: int = 8,
        chip_count: int = 32,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.share_bits = share_bits
        self.collect_s = collect_s
        self.frequency_mhz = frequency_mhz
        self.voltage = voltage
        self.chain_count = chain_count
        self.chip_count = chip_count
        self.counters = AsicCounters()
        self._reader = PacketReader()
        #: Packets read but not yet handled: what came after a status reply in the same read.
        self._pending: deque[Packet] = deque()
        self._first_bytes = bytearray()
        self._next_work_id = 1
        self._issued_work_ids: set[int] = set()
        self._work: dict[int, tuple[int, bytes]] = {}
        self._reports: list[NonceReport] = []
        self._last_total: int | None = None
        self._last_protocol_error: AsicProtocolError | None = None
        self._emulated: bool | None = None  # known after the first status reply
        try:
            self._port = serial.serial_for_url(
                url, baudrate=baudrate, timeout=POLL_S, write_timeout=timeout_s
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise AsicNotFoundError(url, str(exc)) from exc

    def close(self) -> None:
        """Close the port; never raises (a vanished device is already closed)."""
        with contextlib.suppress(Exception):
            self._port.close()

    def __enter__(self) -> AsicSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def emulated(self) -> bool | None:
        """Whether the device is the bundled emulator (None until the first status reply)."""
        return self._emulated

    @property
    def verify_bits(self) -> int:
        """Leading zero bits a returned nonce must have: ``share_bits`` for the emulator; for a
        board at least what its chips promise (difficulty 1 = 32 bits, plus the task diff)."""
        if self._emulated is False:
            return max(self.share_bits, DIFFICULTY_1_BITS + self.task_diff)
        return self.share_bits

    @property
    def task_diff(self) -> int:
        """The TxTask diff byte for this session's share_bits (0 below difficulty 1, at most 12)."""
        return max(0, min(MAX_TASK_DIFF, self.share_bits - DIFFICULTY_1_BITS))

    def _write(self, packet: bytes, during: str) -> None:
        try:
            self._port.write(packet)
            self._port.flush()
        except PORT_ERRORS as exc:
            raise AsicDisconnectedError(self.url, during, str(exc)) from exc
        self.counters.packets_sent += 1

    def _poll(self, deadline: float, during: str) -> list[Packet]:
        try:
            # Setting the timeout reconfigures the port (tcsetattr): a pty that vanished fails here.
            self._port.timeout = max(0.0, min(POLL_S, deadline - time.monotonic()))
            data = self._port.read(max(1, self._port.in_waiting))
        except PORT_ERRORS as exc:
            raise AsicDisconnectedError(self.url, during, str(exc)) from exc
        if not data:
            return []
        self.counters.bytes_received += len(data)
        if len(self._first_bytes) < 64:
            self._first_bytes += data[: 64 - len(self._first_bytes)]
        before = (self._reader.crc_errors, self._reader.length_errors, self._reader.garbage_bytes)
        packets = self._reader.feed(data)
        self.counters.crc_errors += self._reader.crc_errors - before[0]
        self.counters.length_errors += self._reader.length_errors - before[1]
        self.counters.garbage_bytes += self._reader.garbage_bytes - before[2]
        self.counters.packets_received += len(packets)
        return packets

    def _on_nonce(self, packet: RxNonce) -> None:
        first = packet.total_nonce_num - len(packet.nonces)
        if self._last_total is not None and first > self._last_total:
            self.counters.lost_nonces += first - self._last_total
        self._last_total = max(packet.total_nonce_num, self._last_total or 0)
        for entry in packet.nonces:
            self.counters.nonces_returned += 1
            if entry.work_id not in self._work:
                if entry.work_id in self._issued_work_ids:
                    self.counters.stale_nonces += 1
                    continue
                # A nonce for work never sent: the board is confused, count it as a hardware error.
                self.counters.hardware_errors += 1
                self._reports.append(NonceReport(-1, entry.work_id, entry.nonce, 0, False))
                continue
            index, header = self._work[entry.work_id]
            bits = header_hash_zero_bits(header[:76] + entry.nonce.to_bytes(4, "little"))
            valid = bits >= self.verify_bits
            self.counters.nonces_verified += valid
            self.counters.hardware_errors += not valid
            self._reports.append(NonceReport(index, entry.work_id, entry.nonce, bits, valid))

    def _handle(self, packet: Packet) -> RxStatusReply | None:
        """Act on one packet: a nonce packet is verified and recorded; a status reply is returned."""
        try:
            record = decode(packet)
        except AsicProtocolError as exc:
            self.counters.protocol_errors += 1
            self._last_protocol_error = exc
            return None
        if isinstance(record, RxNonce):
            self._on_nonce(record)
        elif isinstance(record, RxStatusReply):
            return record
        else:
            self.counters.protocol_errors += 1  # host-to-device packets echoed back
        return None

    def _read_status(self, deadline: float, during: str, patience: float = 0.0) -> RxStatusReply | None:
        """Read until a status reply or the deadline; packets after the reply stay pending for the
        next read. While work is pending (``patience`` > 0) each valid packet means the device is
        busy, not silent: it pushes the deadline out by timeout_s, never past ``patience`` seconds
        from now."""
        cap = time.monotonic() + patience
        while True:
            while self._pending:
                reply = self._handle(self._pending.popleft())
                if reply is not None:
                    return reply
            if time.monotonic() >= deadline:
                return None
            packets = self._poll(deadline, during)
            if packets and patience:
                deadline = min(cap, max(deadline, time.monotonic() + self.timeout_s))
            self._pending.extend(packets)

    def _drain(self, replies: int, during: str) -> None:
        """After retries, swallow the late replies to the earlier requests (bounded by timeout_s)."""
        deadline = time.monotonic() + self.timeout_s
        while replies > 0 and self._read_status(deadline, during) is not None:
            replies -= 1

    def _consume_available(self, during: str, settle_s: float = 0.0) -> None:
        """Handle every packet already here: the pending ones and the bytes the port holds; with
        ``settle_s`` > 0 also wait that long, at most, for a packet that has started to arrive.
        Nonces count; status replies do not (before a request they are late answers to earlier
        retried requests, after a reply they answer nothing anyone waits for)."""
        start = time.monotonic()
        settle_until = start + settle_s
        stop_at = start + max(settle_s, self.timeout_s)  # bounded, even for a device that never stops
        while True:
            while self._pending:
                self._handle(self._pending.popleft())
            try:
                waiting = self._port.in_waiting
            except PORT_ERRORS as exc:
                raise AsicDisconnectedError(self.url, during, str(exc)) from exc
            now = time.monotonic()
            if now >= stop_at or not (waiting or (self._reader.pending() and now < settle_until)):
                return
            self._pending.extend(self._poll(min(settle_until, now + POLL_S), during))

    def _exchange_status(self, during: str, patience: float = 0.0) -> RxStatusReply:
        start = time.monotonic()
        self._consume_available(during)
        marks = (self.counters.crc_errors, self.counters.length_errors, self.counters.protocol_errors)
        truncated = b""
        for attempt in range(self.retries + 1):
            if attempt:
                self.counters.retries += 1
                truncated = self._reader.reset() or truncated
            self._write(RxStatusRequest().pack(), during)
            reply = self._read_status(time.monotonic() + self.timeout_s, during, patience)
            if reply is not None:
                self._emulated = reply.hw_version == EMULATOR_HW_VERSION
                if attempt:
                    self._drain(attempt, during)
                # Nonce packets may have come in the same read as the reply, after it, the last
                # one perhaps only in part: what has started to arrive is awaited (timeout_s).
                self._consume_available(during, settle_s=self.timeout_s)
                return reply
            self.counters.timeouts += 1
        truncated = self._reader.pending() or truncated
        raise self._failure(during, self.retries + 1, time.monotonic() - start, marks, truncated)

    def _failure(
        self, during: str, attempts: int, waited: float, marks: tuple[int, int, int], truncated: bytes
    ) -> AsicError:
        issues = list(self._reader.issues)
        if self.counters.packets_received == 0 and self.counters.bytes_received:
            return WrongDeviceError(
                self.url, bytes(self._first_bytes), f"{self.counters.bytes_received} bytes, no Bitmain packet"
            )
        if self.counters.crc_errors > marks[0]:
            bad = next((i.data for i in reversed(issues) if i.kind == "crc"), b"")
            return AsicCrcError(
                bad, f"CRC failed on every reply during {during} ({attempts} attempts)", self.url
            )
        if self.counters.length_errors > marks[1]:
            bad = next((i.data for i in reversed(issues) if i.kind == "length"), b"")
            return AsicProtocolError(bad, f"valid CRC but impossible length during {during}", self.url)
        if self.counters.protocol_errors > marks[2] and self._last_protocol_error is not None:
            exc = self._last_protocol_error
            return AsicProtocolError(exc.packet, f"{exc.reason} (during {during})", self.url)
        detail = ""
        if truncated:
            want = int.from_bytes(truncated[2:4], "little") + HEAD_BYTES if len(truncated) >= 4 else "?"
            detail = f"truncated packet: {len(truncated)} of {want} bytes ({truncated[:16].hex()}…)"
        return AsicTimeoutError(self.url, during, waited, attempts, detail)

    def status(self) -> DeviceStatus:
        """Ask the device for its status (retried on silence, CRC failure or garbage)."""
        return DeviceStatus.from_reply(self._exchange_status("status"))

    def configure(self) -> DeviceStatus:
        """Send TxConfig (chains, chips, frequency, voltage) and confirm with a status request."""
        config = TxConfig(
            chain_num=self.chain_count,
            asic_num=self.chip_count,
            frequency_mhz=self.frequency_mhz,
            voltage=self.voltage,
        )
        self._write(config.pack(), "configure")
        return DeviceStatus.from_reply(self._exchange_status("configure"))

    def submit(self, headers: Sequence[bytes]) -> list[NonceReport]:
        """Send each 80-byte header as a work item (8 per TxTask); return every nonce, verified,
        sorted by (header index, nonce). Raises ValueError for a header that is not 80 bytes (before
        anything is sent), and an ``AsicError`` when nonce packets are lost on every attempt."""
        for i, h in enumerate(headers):
            if len(h) != HEADER_BYTES:
                raise ValueError(f"header {i} is {len(h)} bytes, a work item needs {HEADER_BYTES}")
        if not headers:
            return []
        if self._last_total is None:
            # Learn the board's running nonce count first (the fifo report before a status reply),
            # so that even the first nonce packet of this session can be missed and noticed.
            self._exchange_status("work submission")
        for attempt in range(self.retries + 1):
            if attempt:
                self.counters.resubmissions += 1
            lost_before = self.counters.lost_nonces
            damaged_before = self._reader.damaged_by_type.get(RX_NONCE, 0)
            self._work, self._reports = {}, []
            for start in range(0, len(headers), MAX_WORKS_PER_TASK):
                works = []
                for index in range(start, min(start + MAX_WORKS_PER_TASK, len(headers))):
                    work_id = self._next_work_id
                    self._next_work_id = (self._next_work_id + 1) & 0xFFFFFFFF
                    header = bytes(headers[index])
                    self._work[work_id] = (index, header)
                    self._issued_work_ids.add(work_id)
                    works.append(Work(work_id, wire_midstate(header), header[64:76]))
                self._write(TxTask(tuple(works), diff=self.task_diff).pack(), "work submission")
                self.counters.works_submitted += len(works)
            if self.collect_s > 0:
                deadline = time.monotonic() + self.collect_s
                while self._read_status(deadline, "work submission") is not None:
                    continue  # an unsolicited status reply while sweeping changes nothing
            # The emulator hashes on the CPU: allow a second of activity per work item, at most.
            self._exchange_status("work submission", patience=self.timeout_s + len(headers))
            lost = self.counters.lost_nonces - lost_before
            damaged = self._reader.damaged_by_type.get(RX_NONCE, 0) - damaged_before
            if not lost and not damaged:
                return sorted(self._reports, key=lambda r: (r.header_index, r.nonce))
        # Nonce packets were lost or damaged on every attempt: the results cannot be trusted.
        issues = [i for i in self._reader.issues if i.kind in ("crc", "length") and i.data[:1] == b"\xa2"]
        reason = (
            f"RxNonce packets lost or damaged on every one of {self.retries + 1} submissions "
            f"({self.counters.lost_nonces} nonces missing, {damaged} damaged packets in the last)"
        )
        if issues and issues[-1].kind == "crc":
            raise AsicCrcError(issues[-1].data, reason, self.url)
        if issues:
            raise AsicProtocolError(issues[-1].data, reason, self.url)
        raise AsicError(f"ASIC device {self.url!r}: {reason}")

    def mine(self, header: bytes, timeout_s: float | None = None) -> list[int]:
        """The verified nonces the device finds for one header, ascending (``timeout_s`` per read)."""
        saved = self.timeout_s
        self.timeout_s = saved if timeout_s is None else timeout_s
        try:
            return [r.nonce for r in self.submit([header]) if r.valid]
        finally:
            self.timeout_s = saved

    def health_check(self, tolerance: float = 0.01) -> dict:
        """Status plus session counters, as plain values for metadata and logs, with ``ok`` (False
        when :func:`~hasher_resources.asic.status.health_problems` finds any: no chip alive, or
        hardware errors above ``tolerance``) and the ``problems`` in words. A deployment stops on
        ``ok`` False."""
        status = self.status()
        problems = health_problems(status, self.counters, self._last_total, tolerance)
        return {
            "ok": not problems,
            "problems": problems,
            "url": self.url,
            "share_bits": self.share_bits,
            "verify_bits": self.verify_bits,
            **asdict(status),
            **asdict(self.counters),
        }


__all__ = ["AsicSession"]
