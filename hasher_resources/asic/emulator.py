"""``hasher-asic-emulator``: an Antminer S3 stand-in that speaks the same bytes on a pty or TCP port.

It is a separate process so the host code under test goes through a real file descriptor, the
same way it reaches a board. It answers RxStatus requests, applies TxConfig (chains × chips,
frequency, voltage; a real S3 does not answer TxConfig either) and really searches nonces for each
TxTask work item — from the midstate and header bytes 64–75 only, as a BM1382 does.

What it models, and what not:

* **Share difficulty.** On the S3 the TxTask ``diff`` byte is log2 of the share difficulty, and
  difficulty 1 means 32 leading zero bits of the byte-reversed double SHA-256, so a chip reports
  nonces with at least ``32 + diff`` leading zero bits. ``--share-bits N`` overrides that with N
  leading zero bits directly (N = 32 + diff reproduces the chip; N = 8 makes tests take
  milliseconds). Without ``--share-bits`` the emulator obeys ``diff``.
* **Nonce space.** A chip sweeps 2^32 nonces per work item (9.7 ms for a whole S3); a CPU cannot.
  The 2^32 space is split evenly over chains × chips, and each chip scans the first
  ``nonces_per_work / (chains × chips)`` nonces of its share, so one work item costs
  ``--nonces-per-work`` hashes and returns every nonce meeting the share target in those windows.
* **Hashing.** A TxTask carries the midstate and header bytes 64–75, not the header; all chip
  windows of a work item are swept by one call of the kernel's ``scan_midstate_windows`` (one
  call per chip would spend more on per-call overhead than on hashing) on the backend ``--backend`` names
  (``auto``: CUDA when a GPU is visible, else the Numba CPU backend; ``reference``: the slow
  pure-Python oracle), two compressions per nonce like the chip. The backend is resolved and
  compiled before ``READY``.
* **Replies.** Nonces go back in RxNonce packets (≤ 128 each) whose ``total_nonce_num`` is the
  running count of nonces the board has found, so a host can spot a lost packet. Each status reply
  is preceded by an empty RxNonce (a fifo report, like the Antminer docs' sample
  ``a2000e00ff00…``), which carries that count up to the moment of the status.
* **Faults** (``--fault KIND:TARGET[:WHICH]``, repeatable): KIND is ``crc`` (flip the CRC),
  ``drop`` (send nothing), ``stall`` (go silent ``--stall-s`` seconds, then send), ``disconnect``
  (close the port and exit), ``wrong-nonce`` (report a nonce that misses the share target),
  ``garbage`` (junk bytes before the packet), ``truncate`` (send only the first half) or
  ``bad-length`` (a packet with a valid CRC but an impossible length); TARGET is ``status`` or
  ``nonce`` (which replies); WHICH is the 1-based occurrence (default 1) or ``*`` for every one.

On start it prints one line, ``READY <url>`` (a pty path or ``socket://127.0.0.1:PORT``), and
serves until SIGTERM/SIGINT, a ``disconnect`` fault, or its parent process exits.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from hasher_core import design
from hasher_core.errors import BackendUnavailableError, KernelInputError
from hasher_resources import sha256

from . import protocol as P
from .midstate import words_of_midstate

#: Kernel backends the emulator can hash on (``auto`` resolves once, at start).
BACKENDS = ("auto", *sha256.BACKENDS)
#: The kernel reports at most 255 leading zero bits; a share target above that (32 + a large TxTask
#: diff) is scanned at 255 and filtered, so nothing is reported — as no real hash reaches it.
KERNEL_MAX_SHARE_BITS = 255
FAULT_KINDS = ("crc", "drop", "stall", "disconnect", "wrong-nonce", "garbage", "truncate", "bad-length")
FAULT_TARGETS = ("status", "nonce")
#: "EMU" + revision: lets a host tell the emulator from a board in health checks.
EMULATOR_HW_VERSION = b"EMU\x01"
FIFO_DEPTH = 1024  # BITMAIN_MAX_WORK_QUEUE_NUM on the S3
#: Junk for the ``garbage`` fault: includes type bytes with impossible lengths to exercise resync.
GARBAGE = b"\x00\x13junk\x51\xff\xff\xa2\x01\x00"
WRITE_DEADLINE_S = 2.0


@dataclass(frozen=True)
class FaultRule:
    """One requested fault: what to do, to which replies, and on which occurrence (None = every)."""

    kind: str
    target: str
    occurrence: int | None = 1

    @classmethod
    def parse(cls, text: str) -> FaultRule:
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
        return self.target == target and (self.occurrence is None or self.occurrence == count)


@dataclass
class Board:
    """The S3's state and behaviour, without I/O: frames in, (target, packet bytes) out."""

    chains: int = 8
    chips: int = 32
    share_bits: int | None = None
    nonces_per_work: int = 4096
    frequency_mhz: int = 250
    voltage: bytes = b"\x00\x00"
    total_nonces: int = 0
    hardware_errors: int = 0
    works_done: int = 0
    hashes_done: int = 0
    hw_version: bytes = EMULATOR_HW_VERSION
    backend: str = "auto"  # the kernel backend that hashes: auto, reference, cpu or cuda
    _kernel_backend: str | None = field(default=None, init=False, repr=False)

    def kernel_backend(self) -> str:
        """The concrete kernel backend, resolved once: ``auto`` probes for a GPU, which costs more
        than hashing a chip window."""
        if self._kernel_backend is None:
            self._kernel_backend = sha256.resolve_backend(self.backend)
        return self._kernel_backend

    def warm_up(self) -> None:
        """Resolve the backend and compile (or load from Numba's disk cache) before serving; raises
        :class:`hasher_core.errors.BackendUnavailableError` or ``KernelInputError`` if it cannot."""
        starts, per_chip = self._window_starts()
        if self.kernel_backend() == "reference":  # nothing to compile, and it hashes ~10k nonces/s
            starts, per_chip = starts[:1], 1
        # The windows real work scans: the same compiled path (serial or parallel) and launch size.
        self._scan_windows(tuple(design.SHA256_IV), bytes(12), 0, starts, per_chip)

    def _window_starts(self) -> tuple[np.ndarray, int]:
        """Each chip's first nonce (its slice of 2^32 starts there) and how many nonces it scans."""
        chips = self.chains * self.chips
        per_chip = -(-self.nonces_per_work // chips)
        return np.arange(chips, dtype=np.uint64) * ((1 << 32) // chips), per_chip

    def chip_windows(self) -> np.ndarray:
        """The nonces one work item scans: a window at the start of each chip's slice of 2^32."""
        starts, per_chip = self._window_starts()
        return (starts[:, None] + np.arange(per_chip, dtype=np.uint64)[None, :]).ravel().astype(np.uint32)

    def _scan_windows(
        self, state: tuple[int, ...], data2: bytes, share_bits: int, starts: np.ndarray, per_window: int
    ) -> list[int]:
        """Nonces in ``per_window`` nonces from each start (mod 2^32) with ≥ ``share_bits`` leading
        zero bits, window by window: one kernel call for all windows."""
        found = sha256.scan_midstate_windows(
            state,
            data2,
            share_bits=min(share_bits, KERNEL_MAX_SHARE_BITS),
            window_starts=starts,
            window_size=per_window,
            backend=self.kernel_backend(),
        )
        return found.nonces[found.bits >= share_bits].tolist()

    def search(self, work: P.Work, share_bits: int) -> list[int]:
        """Every nonce in this work item's windows whose hash has ≥ ``share_bits`` leading zero bits,
        in chip order like the windows."""
        starts, per_chip = self._window_starts()
        found = self._scan_windows(words_of_midstate(work.midstate), work.data2, share_bits, starts, per_chip)
        self.hashes_done += starts.size * per_chip
        self.works_done += 1
        return found

    def miss(self, work: P.Work, share_bits: int) -> int:
        """A nonce that does *not* meet the share target (for the ``wrong-nonce`` fault)."""
        first = 0xFFFF0000
        state = words_of_midstate(work.midstate)
        hits = set(self._scan_windows(state, work.data2, share_bits, np.array([first]), 64))
        return next((n for n in range(first, first + 64) if n not in hits), first)

    def status(self) -> P.RxStatusReply:
        full = (1 << 32) - 1
        chains = []
        for _ in range(self.chains):
            words = [full] * (self.chips // 32) + ([(1 << (self.chips % 32)) - 1] if self.chips % 32 else [])
            chains.append(P.ChainStatus(self.chips, tuple(words), tuple(words)))
        return P.RxStatusReply(
            chains=tuple(chains),
            fifo_space=FIFO_DEPTH,
            hw_version=self.hw_version,
            temps=tuple(40 + c for c in range(self.chains)),
            fans=(60, 60),
            fan_exist=0b11,
            temp_exist=(1 << self.chains) - 1,
            nonce_error=self.hardware_errors,
            reg_value=self.frequency_mhz,
            chip_value_eft=True,
        )

    def nonce_packets(self, entries: list[P.NonceEntry], diff: int) -> list[P.RxNonce]:
        """Split found nonces into RxNonce packets; ``total_nonce_num`` counts through each packet."""
        packets = []
        for i in range(0, len(entries), P.MAX_NONCES_PER_REPLY):
            chunk = tuple(entries[i : i + P.MAX_NONCES_PER_REPLY])
            self.total_nonces += len(chunk)
            packets.append(P.RxNonce(chunk, FIFO_DEPTH, diff, self.total_nonces))
        return packets

    def handle(
        self, frame: P.Frame, faulty_nonce: Callable[[], bool] = lambda: False
    ) -> Iterator[tuple[str, bytes]]:
        """React to one host packet; yield the replies as (target, bytes) as they become ready."""
        if frame.packet_type == P.TX_CONFIG:
            config = P.TxConfig.from_frame(frame)
            if 1 <= config.chain_num <= P.MAX_CHAINS and config.asic_num >= 1:
                self.chains, self.chips = config.chain_num, config.asic_num
            self.frequency_mhz, self.voltage = config.frequency_mhz, config.voltage
            return
        if frame.packet_type == P.RX_STATUS_REQUEST:
            fifo_report = P.RxNonce((), FIFO_DEPTH, 0, self.total_nonces)
            yield "nonce", fifo_report.pack()
            yield "status", self.status().pack()
            return
        if frame.packet_type == P.TX_TASK:
            task = P.TxTask.from_frame(frame)
            share_bits = self.share_bits if self.share_bits is not None else 32 + task.diff
            wrong = faulty_nonce()
            # One reply per work item as it finishes, like chips reporting while the queue drains.
            for k, work in enumerate(task.works):
                entries = [P.NonceEntry(work.work_id, n) for n in self.search(work, share_bits)]
                if wrong and k == 0:
                    entries = [P.NonceEntry(work.work_id, self.miss(work, share_bits)), *entries[1:]]
                for packet in self.nonce_packets(entries, task.diff):
                    yield "nonce", packet.pack()
        # Device-to-host types arriving at the device are ignored, as a board would.


def _bad_length(packet: bytes) -> bytes:
    """The packet padded to a length its type cannot have, with a recomputed CRC."""
    extra = next(n for n in range(1, 2048) if not P.total_size_allowed(packet[0], len(packet) + n))
    body = bytearray(packet[:-2] + bytes(extra))
    body[2:4] = struct.pack("<H", len(body) + 2 - P.HEAD_BYTES)
    return bytes(body) + struct.pack("<H", P.crc16_modbus(body))


@dataclass
class Emulator:
    """Fault injection and the byte stream around a :class:`Board`."""

    board: Board
    faults: list[FaultRule] = field(default_factory=list)
    stall_s: float = 2.0
    counts: dict[str, int] = field(default_factory=lambda: {"status": 0, "nonce": 0, "task": 0})
    deframer: P.Deframer = field(default_factory=P.Deframer)
    disconnect_requested: bool = False

    def _rules(self, target: str, count: int) -> list[str]:
        return [r.kind for r in self.faults if r.fires(target, count)]

    def _task_gets_wrong_nonce(self) -> bool:
        self.counts["task"] += 1
        return any(r.kind == "wrong-nonce" and r.fires("nonce", self.counts["task"]) for r in self.faults)

    def receive(self, data: bytes) -> Iterator[bytes | float]:
        """Bytes from the host → what to write (bytes) and when to stall (float seconds), in order."""
        for frame in self.deframer.feed(data):
            try:
                yield from self._reply(frame)
            except P.AsicProtocolError as exc:
                print(f"emulator: ignoring {exc}", file=sys.stderr, flush=True)
            if self.disconnect_requested:
                return

    def _reply(self, frame: P.Frame) -> Iterator[bytes | float]:
        for target, packet in self.board.handle(frame, self._task_gets_wrong_nonce):
            self.counts[target] += 1
            kinds = self._rules(target, self.counts[target])
            if "disconnect" in kinds:
                self.disconnect_requested = True
                return
            if "stall" in kinds:
                yield self.stall_s
            if "drop" in kinds:
                continue
            if "crc" in kinds:
                packet = packet[:-1] + bytes([packet[-1] ^ 0xFF])
            if "bad-length" in kinds:
                packet = _bad_length(packet)
            if "truncate" in kinds:
                packet = packet[: len(packet) // 2]
            if "garbage" in kinds:
                packet = GARBAGE + packet
            yield packet


def _write_all(fd: int, data: bytes) -> None:
    """Write with a deadline: a host that stopped reading must not wedge the emulator."""
    deadline = time.monotonic() + WRITE_DEADLINE_S
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print(f"emulator: host not reading, dropped {len(view)} bytes", file=sys.stderr, flush=True)
            return
        _, writable, _ = select.select([], [fd], [], remaining)
        if writable:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue


def _pump(emulator: Emulator, read_fd: int, write_fd: int, alive: Callable[[], bool]) -> bool:
    """Serve one connection; return False when the emulator must exit (disconnect fault)."""
    while alive():
        readable, _, _ = select.select([read_fd], [], [], 0.2)
        if not readable:
            continue
        try:
            data = os.read(read_fd, 65536)
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ECONNRESET):
                return True  # the host side closed; wait for the next one
            raise
        if not data:
            return True
        for item in emulator.receive(data):
            if isinstance(item, float):
                time.sleep(item)
            else:
                _write_all(write_fd, item)
        if emulator.disconnect_requested:
            return False
    return False


@contextlib.contextmanager
def serve_in_thread(emulator: Emulator) -> Iterator[str]:
    """Serve on a new pty from a thread of this process; yield the pty path.

    Same bytes and code path as the process, without its start-up cost (the fault-matrix tests
    use it). A ``disconnect`` fault closes the pty's master side, so the host sees it vanish.
    Like the process, it compiles (or loads) the kernel before serving, so the first work item is
    not slowed by it past the host's read timeout.
    """
    emulator.board.warm_up()
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    stop = threading.Event()

    def run() -> None:
        try:
            _pump(emulator, master, master, lambda: not stop.is_set())
        finally:
            os.close(master)

    thread = threading.Thread(target=run, name="hasher-asic-emulator", daemon=True)
    thread.start()
    try:
        yield os.ttyname(slave)
    finally:
        stop.set()
        thread.join(WRITE_DEADLINE_S + emulator.stall_s + 1.0)
        os.close(slave)


def _serve_pty(emulator: Emulator, alive: Callable[[], bool]) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    print(f"READY {os.ttyname(slave)}", flush=True)
    # The emulator keeps the slave open so the pty survives a host closing and reopening it.
    try:
        _pump(emulator, master, master, alive)
    finally:
        os.close(master)
        os.close(slave)


def _serve_tcp(emulator: Emulator, listen: str, alive: Callable[[], bool]) -> None:
    host, _, port = listen.rpartition(":")
    server = socket.create_server((host or "127.0.0.1", int(port)))
    server.settimeout(0.2)
    print(f"READY socket://{host or '127.0.0.1'}:{server.getsockname()[1]}", flush=True)
    try:
        while alive():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.setblocking(False)
                emulator.deframer.reset()
                if not _pump(emulator, conn.fileno(), conn.fileno(), alive):
                    return
    finally:
        server.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hasher-asic-emulator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pty and print its path")
    where.add_argument("--listen", metavar="HOST:PORT", help="serve on a TCP port (PORT 0 picks one)")
    parser.add_argument(
        "--share-bits",
        type=int,
        default=None,
        help="report nonces with ≥ N leading zero bits (default: 32 + the TxTask diff, as the chip does)",
    )
    parser.add_argument("--nonces-per-work", type=int, default=4096, help="hashes spent per work item")
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--chips", type=int, default=32, help="chips per chain")
    parser.add_argument(
        "--fault",
        type=FaultRule.parse,
        action="append",
        default=[],
        help=f"KIND:TARGET[:WHICH], repeatable; KIND in {', '.join(FAULT_KINDS)}; TARGET status|nonce",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="kernel backend that hashes: cpu (Numba, compiled before READY), cuda, reference (pure "
        "Python, slow), or auto (cuda when a GPU is visible, else cpu)",
    )
    parser.add_argument("--stall-s", type=float, default=2.0, help="how long a 'stall' fault stays silent")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.chains <= P.MAX_CHAINS or not 1 <= args.chips <= P.MAX_ASICS_PER_CHAIN:
        print(f"error: 1 ≤ chains ≤ {P.MAX_CHAINS} and 1 ≤ chips ≤ 255", file=sys.stderr)
        return 2
    if args.share_bits is not None and not 0 <= args.share_bits <= 256:
        print("error: --share-bits must be in [0, 256]", file=sys.stderr)
        return 2
    if not 1 <= args.nonces_per_work <= 1 << 32:
        print("error: --nonces-per-work must be in [1, 2**32]", file=sys.stderr)
        return 2
    board = Board(args.chains, args.chips, args.share_bits, args.nonces_per_work, backend=args.backend)
    try:
        board.warm_up()
    except (KernelInputError, BackendUnavailableError) as exc:
        print(f"error: --backend {args.backend}: {exc}", file=sys.stderr)
        return 2
    emulator = Emulator(board, list(args.fault), args.stall_s)

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    parent = os.getppid()

    def alive() -> bool:
        # An orphaned emulator (its test or resource died) exits on its own.
        return not stopping and os.getppid() == parent

    if args.pty:
        _serve_pty(emulator, alive)
    else:
        _serve_tcp(emulator, args.listen, alive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
