"""The ASIC device as Dagster resources: a real S3 at a URL, or the bundled emulator as a child process.

This module owns configuration and lifetime, not I/O (that is :class:`~.session.AsicSession`):

* :class:`AsicResource` — the shared settings and methods (``session()``, ``status()``, ``mine()``…);
* :class:`AsicDevice` — a board at ``url`` (a device path, a pty or ``socket://host:port``). It
  never imports or starts the emulator;
* :class:`EmulatedAsicDevice` — starts ``hasher-asic-emulator`` as a child process
  (``python -m hasher_cli.asic_emulator`` on a pty or a loopback TCP port) and stops it, by its own
  PID, at teardown.

``asic_resource_from_env()`` picks one: ``HASHER_ASIC_URL`` set → ``AsicDevice(url=…)``, unset →
``EmulatedAsicDevice()``; the Definitions call it. Outside Dagster:
``with EmulatedAsicDevice().session() as dev: dev.mine(header)``.
"""

from __future__ import annotations

import contextlib
import select
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dagster as dg
from pydantic import Field, PrivateAttr

from hasher_core.errors import AsicError, AsicNotFoundError

from ..settings import load_settings
from .session import AsicSession
from .status import AsicCounters, DeviceStatus, NonceReport

ENV_URL = "HASHER_ASIC_URL"
EMULATOR_MODULE = "hasher_cli.asic_emulator"


@dataclass(frozen=True)
class EmulatorProcess:
    """An emulator this process started: the child and the URL it printed in its READY line."""

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
    delivery: str = "packets",
    split_at: Sequence[int] = (),
    ready_timeout_s: float = 60.0,
    threads: int | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start ``hasher-asic-emulator`` as a child process; return it and the URL it printed.

    ``transport`` is ``pty`` or ``tcp`` (a loopback port it picks); ``faults`` are ``--fault``
    specs; ``delivery`` and ``split_at`` arrange the replies into writes (``--delivery``,
    ``--split-at``). Raises ValueError for another transport and :class:`AsicNotFoundError` (with the tail of
    its stderr) when it does not print ``READY <url>`` within ``ready_timeout_s`` seconds.
    """
    if transport not in ("pty", "tcp"):
        raise ValueError(f"emulator transport must be 'pty' or 'tcp', got {transport!r}")
    where = ["--pty"] if transport == "pty" else ["--listen", "127.0.0.1:0"]
    argv = [sys.executable, "-m", EMULATOR_MODULE, *where, "--share-bits", str(share_bits)]
    argv += ["--nonces-per-work", str(nonces_per_work), "--chains", str(chains), "--chips", str(chips)]
    argv += ["--stall-s", str(stall_s), "--backend", backend]
    if threads is not None:
        argv += ["--threads", str(threads)]
    for fault in faults:
        argv += ["--fault", fault]
    argv += ["--delivery", delivery]
    if split_at:
        argv.append("--split-at=" + ",".join(str(at) for at in split_at))  # "-1,3" would look like a flag
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


class AsicResource(dg.ConfigurableResource, ABC):
    """What every ASIC resource shares: session settings, lifetime and the device methods.

    Subclasses say only where the device is (:meth:`_start`). The device methods need an open
    session — Dagster's setup, or ``with resource.session() as dev:`` — and raise
    :class:`AsicError` without one.
    """

    baudrate: int = Field(
        default=115200, description="Serial speed (cgminer's S3 setting; ignored over USB bulk or TCP)."
    )
    timeout_s: float = Field(default=1.0, description="Deadline of each read exchange, seconds.")
    retries: int = Field(default=2, description="Extra attempts after a timeout, CRC failure or loss.")
    frequency_mhz: int = Field(
        default=250, description="Chip clock sent in TxConfig, MHz (the S3 runs 200–275)."
    )
    voltage: str = Field(default="0000", description="Two voltage bytes as hex (S3 default 0000).")
    chain_count: int = Field(default=8, description="Hash chains configured in TxConfig (8 on an S3).")
    chip_count: int = Field(default=32, description="Chips per chain configured in TxConfig (32 on an S3).")
    share_bits: int = Field(
        default=8,
        description="Leading zero bits a returned nonce must have. A real S3 reports ≥ 32 + diff "
        "(difficulty 1 = 32 bits), so use ≥ 32 with a board; the emulator takes it as --share-bits.",
    )
    collect_s: float = Field(default=0.0, description="Sweep time to wait before the status barrier.")

    _session: AsicSession | None = PrivateAttr(default=None)
    _cleanup: contextlib.ExitStack | None = PrivateAttr(default=None)

    @abstractmethod
    def _start(self, cleanup: contextlib.ExitStack) -> str:
        """Make the device reachable and return its URL; push on ``cleanup`` whatever must be
        undone after the session closes."""

    def _open(self) -> tuple[AsicSession, contextlib.ExitStack]:
        cleanup = contextlib.ExitStack()
        try:
            url = self._start(cleanup)
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
            cleanup.enter_context(session)  # closed first, before anything _start pushed
        except BaseException:
            cleanup.close()
            raise
        return session, cleanup

    @contextlib.contextmanager
    def session(self) -> Iterator[AsicSession]:
        """Open the device (starting what it needs) and close everything afterwards.

        Raises :class:`AsicNotFoundError` when the device cannot be opened or started.
        """
        session, cleanup = self._open()
        with cleanup:
            yield session

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Open the session for the duration of a Dagster step."""
        self._session, self._cleanup = self._open()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the session and undo what opening it started."""
        if self._cleanup is not None:
            self._cleanup.close()
        self._session = self._cleanup = None

    @property
    def active(self) -> AsicSession:
        """The open session; raises :class:`AsicError` when the resource is not open."""
        if self._session is None:
            raise AsicError(
                f"{type(self).__name__} is not open: use `with device.session() as dev:` or run it in Dagster"
            )
        return self._session

    def status(self) -> DeviceStatus:
        """The device's status (see :meth:`AsicSession.status`)."""
        return self.active.status()

    def configure(self) -> DeviceStatus:
        """Send TxConfig and confirm with a status request (see :meth:`AsicSession.configure`)."""
        return self.active.configure()

    def health_check(self, tolerance: float = 0.01) -> dict:
        """Status plus session counters as plain values, ``ok`` False for a device unfit to deploy to
        (see :meth:`AsicSession.health_check`)."""
        return self.active.health_check(tolerance)

    def submit(self, headers: Sequence[bytes]) -> list[NonceReport]:
        """Every verified nonce for 80-byte headers (see :meth:`AsicSession.submit`)."""
        return self.active.submit(headers)

    def mine(self, header: bytes, timeout_s: float | None = None) -> list[int]:
        """The valid nonces for one header, ascending (see :meth:`AsicSession.mine`)."""
        return self.active.mine(header, timeout_s)

    @property
    def counters(self) -> AsicCounters:
        """The open session's running counts."""
        return self.active.counters


class AsicDevice(AsicResource):
    """An Antminer S3 reached through pyserial at ``url``; nothing is started for it."""

    url: str = Field(description=f"Device path, pty or socket://host:port (the Definitions use ${ENV_URL}).")

    def _start(self, cleanup: contextlib.ExitStack) -> str:
        return self.url


class EmulatedAsicDevice(AsicResource):
    """The bundled emulator, started as a child process for each session and stopped after it."""

    transport: str = Field(default="pty", description="pty or tcp (a loopback port).")
    nonces_per_work: int = Field(default=4096, description="Hashes the emulator spends per work item.")
    backend: str = Field(
        default="auto",
        description="Kernel backend the emulator hashes on: auto (cuda if a GPU is visible, else cpu), "
        "cpu, cuda or reference.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads the emulator hashes on; None uses every core (small work items run on "
        "one thread either way).",
    )

    _emulator: EmulatorProcess | None = PrivateAttr(default=None)

    def _start(self, cleanup: contextlib.ExitStack) -> str:
        proc, url = start_emulator(
            transport=self.transport,
            share_bits=self.share_bits,
            nonces_per_work=self.nonces_per_work,
            chains=self.chain_count,
            chips=self.chip_count,
            backend=self.backend,
            threads=self.threads,
        )
        self._emulator = EmulatorProcess(proc, url)
        cleanup.callback(self._stop, proc)
        return url

    def _stop(self, proc: subprocess.Popen) -> None:
        stop_emulator(proc)
        if self._emulator is not None and self._emulator.process is proc:
            self._emulator = None


def asic_resource_from_env(**settings: object) -> AsicResource:
    """``AsicDevice(url=$HASHER_ASIC_URL)`` when the variable is set and not empty, else
    ``EmulatedAsicDevice()``; ``settings`` go to either (shared fields only, to be safe)."""
    url = load_settings().asic_url
    if url:
        return AsicDevice(url=url, **settings)
    return EmulatedAsicDevice(**settings)


__all__ = [
    "AsicDevice",
    "AsicResource",
    "EmulatedAsicDevice",
    "EmulatorProcess",
    "asic_resource_from_env",
    "start_emulator",
    "stop_emulator",
]
