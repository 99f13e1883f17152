"""The ASIC device resource: an Antminer S3 (or the bundled emulator) reached through pyserial.

``AsicDevice`` is the Dagster resource (configuration only); :class:`AsicSession` does the I/O and
works without Dagster: ``with AsicDevice(...).session() as dev: dev.mine(header)``. With no ``url``
the resource starts ``hasher-asic-emulator`` as a child process on a pty (or a loopback TCP port)
and stops it at teardown; a user with a real board sets ``HASHER_ASIC_URL`` (a device path, a pty
or ``socket://host:port``) and the Definitions pass ``AsicDevice(url=os.getenv("HASHER_ASIC_URL"))``.

Every read has a deadline, every exchange a bounded number of retries; the deframer resyncs after
garbage. Every nonce the device returns is re-hashed on the host (double SHA-256 of the header
with that nonce must have ``share_bits`` leading zero bits); one that does not is a hardware error.

Completion: a board streams nonces and never says "done", so after sending TxTasks the host asks
for status and takes the status reply as a barrier — nonces found before it (the emulator finds
them all before it answers) are collected. A board needs time to sweep; ``collect_s`` waits that
long before the barrier (0 for the emulator). Lost RxNonce packets show up as a jump in the
running ``total_nonce_num``; the batch is then resubmitted (bounded by ``retries``).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import dagster as dg
import serial
from pydantic import Field, PrivateAttr

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

from . import protocol as P
from .emulator import EMULATOR_HW_VERSION
from .midstate import midstate

ENV_URL = "HASHER_ASIC_URL"
POLL_S = 0.02
#: A chip reports shares of difficulty ≥ 1 (32 zero bits); the TxTask diff byte adds log2 of more.
DIFFICULTY_1_BITS = 32
MAX_TASK_DIFF = 12  # cgminer caps diff at 4096 "so solo mining has reasonable stats"
#: What a vanished port raises: pyserial's wrapper, a raw OSError, or termios on a closed pty.
PORT_ERRORS = (serial.SerialException, OSError, termios.error)


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
    def from_reply(cls, reply: P.RxStatusReply) -> DeviceStatus:
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


@dataclass
class AsicCounters:
    """Running counts for one session; they feed health checks and validation metadata."""

    packets_sent: int = 0
    frames_received: int = 0
    bytes_received: int = 0
    works_submitted: int = 0
    nonces_returned: int = 0
    nonces_verified: int = 0
    hardware_errors: int = 0
    stale_nonces: int = 0
    lost_nonces: int = 0
    crc_errors: int = 0
    length_errors: int = 0
    garbage_bytes: int = 0
    protocol_errors: int = 0
    retries: int = 0
    timeouts: int = 0
    resubmissions: int = 0


@dataclass
class _Emulator:
    process: subprocess.Popen
    url: str


def start_emulator(
    *,
    transport: str = "pty",
    share_bits: int = 8,
    nonces_per_work: int = 4096,
    chains: int = 8,
    chips: int = 32,
    backend: str = "auto",
    faults: Sequence[str] = (),
    stall_s: float = 2.0,
    ready_timeout_s: float = 60.0,
) -> tuple[subprocess.Popen, str]:
    """Start ``hasher-asic-emulator`` as a child process; return it and the URL it printed."""
    if transport not in ("pty", "tcp"):
        raise ValueError(f"emulator transport must be 'pty' or 'tcp', got {transport!r}")
    where = ["--pty"] if transport == "pty" else ["--listen", "127.0.0.1:0"]
    argv = [sys.executable, "-m", "hasher_resources.asic.emulator", *where, "--share-bits", str(share_bits)]
    argv += ["--nonces-per-work", str(nonces_per_work), "--chains", str(chains), "--chips", str(chips)]
    argv += ["--stall-s", str(stall_s), "--backend", backend]
    for fault in faults:
        argv += ["--fault", fault]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline().strip()
            if line.startswith("READY "):
                return proc, line.removeprefix("READY ")
            break
        if proc.poll() is not None:
            break
    stop_emulator(proc)
    err = proc.stderr.read() if proc.stderr else ""
    raise AsicNotFoundError(
        "emulator", f"hasher-asic-emulator did not start: {err.strip()[-400:] or 'no output'}"
    )


def stop_emulator(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """Stop an emulator this process started (SIGTERM, then SIGKILL), by its own PID only."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


class AsicSession:
    """An open connection to one device: status, configure, submit work, verify nonces."""

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
        self._deframer = P.Deframer()
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

    def _poll(self, deadline: float, during: str) -> list[P.Frame]:
        self._port.timeout = max(0.0, min(POLL_S, deadline - time.monotonic()))
        try:
            data = self._port.read(max(1, self._port.in_waiting))
        except PORT_ERRORS as exc:
            raise AsicDisconnectedError(self.url, during, str(exc)) from exc
        if not data:
            return []
        self.counters.bytes_received += len(data)
        if len(self._first_bytes) < 64:
            self._first_bytes += data[: 64 - len(self._first_bytes)]
        before = (self._deframer.crc_errors, self._deframer.length_errors, self._deframer.garbage_bytes)
        frames = self._deframer.feed(data)
        self.counters.crc_errors += self._deframer.crc_errors - before[0]
        self.counters.length_errors += self._deframer.length_errors - before[1]
        self.counters.garbage_bytes += self._deframer.garbage_bytes - before[2]
        self.counters.frames_received += len(frames)
        return frames

    def _on_nonce(self, packet: P.RxNonce) -> None:
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

    def _read_status(self, deadline: float, during: str, patience: float = 0.0) -> P.RxStatusReply | None:
        """Read until a status reply or the deadline. While work is pending (``patience`` > 0) each
        valid frame means the device is busy, not silent: it pushes the deadline out by timeout_s,
        never past ``patience`` seconds from now."""
        cap = time.monotonic() + patience
        while time.monotonic() < deadline:
            frames = self._poll(deadline, during)
            if frames and patience:
                deadline = min(cap, max(deadline, time.monotonic() + self.timeout_s))
            for frame in frames:
                try:
                    record = P.decode(frame)
                except AsicProtocolError as exc:
                    self.counters.protocol_errors += 1
                    self._last_protocol_error = exc
                    continue
                if isinstance(record, P.RxNonce):
                    self._on_nonce(record)
                elif isinstance(record, P.RxStatusReply):
                    return record
                else:
                    self.counters.protocol_errors += 1  # host-to-device packets echoed back
        return None

    def _drain(self, replies: int, during: str) -> None:
        """After retries, swallow the late replies to the earlier requests (bounded by timeout_s)."""
        deadline = time.monotonic() + self.timeout_s
        while replies > 0 and self._read_status(deadline, during) is not None:
            replies -= 1

    def _discard_stale(self, during: str) -> None:
        """Before asking, consume what already arrived: nonces count, old status replies do not
        (late answers to earlier retried requests must not pass for this request's answer)."""
        for _ in range(64):
            try:
                waiting = self._port.in_waiting
            except PORT_ERRORS as exc:
                raise AsicDisconnectedError(self.url, during, str(exc)) from exc
            if not waiting:
                return
            self._read_status(time.monotonic() + POLL_S, during)

    def _exchange_status(self, during: str, patience: float = 0.0) -> P.RxStatusReply:
        start = time.monotonic()
        self._discard_stale(during)
        marks = (self.counters.crc_errors, self.counters.length_errors, self.counters.protocol_errors)
        truncated = b""
        for attempt in range(self.retries + 1):
            if attempt:
                self.counters.retries += 1
                truncated = self._deframer.reset() or truncated
            self._write(P.RxStatusRequest().pack(), during)
            reply = self._read_status(time.monotonic() + self.timeout_s, during, patience)
            if reply is not None:
                self._emulated = reply.hw_version == EMULATOR_HW_VERSION
                if attempt:
                    self._drain(attempt, during)
                return reply
            self.counters.timeouts += 1
        truncated = self._deframer.pending() or truncated
        raise self._failure(during, self.retries + 1, time.monotonic() - start, marks, truncated)

    def _failure(
        self, during: str, attempts: int, waited: float, marks: tuple[int, int, int], truncated: bytes
    ) -> AsicError:
        issues = list(self._deframer.issues)
        if self.counters.frames_received == 0 and self.counters.bytes_received:
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
            want = int.from_bytes(truncated[2:4], "little") + P.HEAD_BYTES if len(truncated) >= 4 else "?"
            detail = f"truncated packet: {len(truncated)} of {want} bytes ({truncated[:16].hex()}…)"
        return AsicTimeoutError(self.url, during, waited, attempts, detail)

    def status(self) -> DeviceStatus:
        """Ask the device for its status (retried on silence, CRC failure or garbage)."""
        return DeviceStatus.from_reply(self._exchange_status("status"))

    def configure(self) -> DeviceStatus:
        """Send TxConfig (chains, chips, frequency, voltage) and confirm with a status request."""
        config = P.TxConfig(
            chain_num=self.chain_count,
            asic_num=self.chip_count,
            frequency_mhz=self.frequency_mhz,
            voltage=self.voltage,
        )
        self._write(config.pack(), "configure")
        return DeviceStatus.from_reply(self._exchange_status("configure"))

    def submit(self, headers: Sequence[bytes]) -> list[NonceReport]:
        """Send each 80-byte header as a work item (8 per TxTask); return every nonce, verified."""
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
            damaged_before = self._deframer.damaged_by_type.get(P.RX_NONCE, 0)
            self._work, self._reports = {}, []
            for start in range(0, len(headers), P.MAX_WORKS_PER_TASK):
                works = []
                for index in range(start, min(start + P.MAX_WORKS_PER_TASK, len(headers))):
                    work_id = self._next_work_id
                    self._next_work_id = (self._next_work_id + 1) & 0xFFFFFFFF
                    header = bytes(headers[index])
                    self._work[work_id] = (index, header)
                    self._issued_work_ids.add(work_id)
                    works.append(P.Work(work_id, midstate(header), header[64:76]))
                self._write(P.TxTask(tuple(works), diff=self.task_diff).pack(), "work submission")
                self.counters.works_submitted += len(works)
            if self.collect_s > 0:
                deadline = time.monotonic() + self.collect_s
                while self._read_status(deadline, "work submission") is not None:
                    continue  # an unsolicited status reply while sweeping changes nothing
            # The emulator hashes on the CPU: allow a second of activity per work item, at most.
            self._exchange_status("work submission", patience=self.timeout_s + len(headers))
            lost = self.counters.lost_nonces - lost_before
            damaged = self._deframer.damaged_by_type.get(P.RX_NONCE, 0) - damaged_before
            if not lost and not damaged:
                return sorted(self._reports, key=lambda r: (r.header_index, r.nonce))
        # Nonce packets were lost or damaged on every attempt: the results cannot be trusted.
        issues = [i for i in self._deframer.issues if i.kind in ("crc", "length") and i.data[:1] == b"\xa2"]
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

    def health_check(self) -> dict:
        """Status plus session counters, as plain values for metadata and logs."""
        status = self.status()
        return {
            "url": self.url,
            "share_bits": self.share_bits,
            "verify_bits": self.verify_bits,
            **asdict(status),
            **asdict(self.counters),
        }


class AsicDevice(dg.ConfigurableResource):
    """An Antminer S3 over pyserial, or the bundled emulator when no ``url`` is given."""

    url: str | None = Field(
        default=None,
        description="Device path, pty or socket://host:port; None starts the bundled emulator. "
        f"Definitions pass os.getenv('{ENV_URL}').",
    )
    baudrate: int = 115200
    timeout_s: float = Field(default=1.0, description="Deadline of each read exchange, seconds.")
    retries: int = Field(default=2, description="Extra attempts after a timeout, CRC failure or loss.")
    frequency_mhz: int = 250
    voltage: str = Field(default="0000", description="Two voltage bytes as hex (S3 default 0000).")
    chain_count: int = 8
    chip_count: int = 32
    share_bits: int = Field(
        default=8,
        description="Leading zero bits a returned nonce must have. A real S3 reports ≥ 32 + diff "
        "(difficulty 1 = 32 bits), so use ≥ 32 with a board; the emulator takes it as --share-bits.",
    )
    collect_s: float = Field(default=0.0, description="Sweep time to wait before the status barrier.")
    emulator_transport: str = "pty"
    emulator_nonces_per_work: int = 4096
    emulator_backend: str = Field(
        default="auto",
        description="Kernel backend the emulator hashes on: auto (cuda if a GPU is visible, else cpu), "
        "cpu, cuda or reference.",
    )

    _session: AsicSession | None = PrivateAttr(default=None)
    _emulator: _Emulator | None = PrivateAttr(default=None)

    @classmethod
    def from_env(cls, **overrides: object) -> AsicDevice:
        """The resource for ``HASHER_ASIC_URL`` when it is set, else the emulator."""
        return cls(url=os.getenv(ENV_URL) or None, **overrides)

    def open_session(self) -> tuple[AsicSession, _Emulator | None]:
        emulator = None
        url = self.url
        if not url:
            proc, url = start_emulator(
                transport=self.emulator_transport,
                share_bits=self.share_bits,
                nonces_per_work=self.emulator_nonces_per_work,
                chains=self.chain_count,
                chips=self.chip_count,
                backend=self.emulator_backend,
            )
            emulator = _Emulator(proc, url)
        try:
            session = AsicSession(
                url,
                baudrate=self.baudrate,
                timeout_s=self.timeout_s,
                retries=self.retries,
                share_bits=self.share_bits,
                collect_s=self.collect_s,
                frequency_mhz=self.frequency_mhz,
                voltage=bytes.fromhex(self.voltage),
                chain_count=self.chain_count,
                chip_count=self.chip_count,
            )
        except BaseException:
            if emulator:
                stop_emulator(emulator.process)
            raise
        return session, emulator

    @contextlib.contextmanager
    def session(self) -> Iterator[AsicSession]:
        """Open the device (starting the emulator if needed) and close everything afterwards."""
        session, emulator = self.open_session()
        try:
            yield session
        finally:
            session.close()
            if emulator:
                stop_emulator(emulator.process)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._session, self._emulator = self.open_session()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._session is not None:
            self._session.close()
        if self._emulator is not None:
            stop_emulator(self._emulator.process)
        self._session = self._emulator = None

    @property
    def active(self) -> AsicSession:
        if self._session is None:
            raise AsicError(
                "AsicDevice is not open: use `with device.session() as dev:` or run it in Dagster"
            )
        return self._session

    def status(self) -> DeviceStatus:
        return self.active.status()

    def configure(self) -> DeviceStatus:
        return self.active.configure()

    def health_check(self) -> dict:
        return self.active.health_check()

    def submit(self, headers: Sequence[bytes]) -> list[NonceReport]:
        return self.active.submit(headers)

    def mine(self, header: bytes, timeout_s: float | None = None) -> list[int]:
        return self.active.mine(header, timeout_s)

    @property
    def counters(self) -> AsicCounters:
        return self.active.counters


__all__ = [
    "AsicCounters",
    "AsicDevice",
    "AsicSession",
    "DeviceStatus",
    "NonceReport",
    "start_emulator",
    "stop_emulator",
]
