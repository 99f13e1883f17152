"""The emulator's byte stream: fault injection around a :class:`~.board.Board`, served on a pty or TCP.

This module owns the I/O side: reading host bytes, cutting them into packets, applying the fault
rules (stall, drop, disconnect, damaged bytes) to the board's replies, arranging them into writes
(the ``delivery``: one write per packet, every reply to one host read in one write, or the status
reply first with the nonce packets still queued behind it, each write optionally cut at
``split_at``) and writing them with a deadline. ``serve_pty``/``serve_tcp`` run the
``hasher-asic-emulator`` process; ``serve_in_thread`` runs the same loop from a thread of the
caller (the fault-matrix tests).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from hasher_core.asic_codec import Packet
from hasher_core.errors import AsicProtocolError
from hasher_resources.asic.framing import PacketReader

from .board import Board
from .faults import FaultRule, damage

WRITE_DEADLINE_S = 2.0
#: How replies become writes: ``packets`` one write each; ``coalesced`` every reply to one host read
#: in one write; ``status-first`` nonce packets held back until the next status reply, then written
#: after it in the same write (a board answering status while its nonce queue still drains).
DELIVERIES = ("packets", "coalesced", "status-first")
#: The pause between the pieces of a cut write, so that the host reads them separately.
SPLIT_GAP_S = 0.005


@dataclass
class Emulator:
    """Fault injection and the byte stream around a :class:`Board`."""

    board: Board
    faults: list[FaultRule] = field(default_factory=list)
    stall_s: float = 2.0
    counts: dict[str, int] = field(default_factory=lambda: {"status": 0, "nonce": 0, "task": 0})
    reader: PacketReader = field(default_factory=PacketReader)
    disconnect_requested: bool = False
    delivery: str = "packets"
    #: Byte offsets at which every write is cut (negative: from its end), ``SPLIT_GAP_S`` apart.
    split_at: tuple[int, ...] = ()
    _held: bytearray = field(default_factory=bytearray, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.delivery not in DELIVERIES:
            raise ValueError(f"delivery {self.delivery!r} is not one of {', '.join(DELIVERIES)}")

    def _rules(self, target: str, count: int) -> list[str]:
        return [r.kind for r in self.faults if r.fires(target, count)]

    def _task_gets_wrong_nonce(self) -> bool:
        self.counts["task"] += 1
        return any(r.kind == "wrong-nonce" and r.fires("nonce", self.counts["task"]) for r in self.faults)

    def receive(self, data: bytes) -> Iterator[bytes | float]:
        """Bytes from the host → each reply's bytes and when to stall (float seconds), in order.

        A host packet the board cannot decode is reported on stderr and ignored; after a
        ``disconnect`` fault fires nothing more is yielded and ``disconnect_requested`` is set.
        """
        for item in self._replies(data):
            yield item if isinstance(item, float) else item[1]

    def deliver(self, data: bytes) -> Iterator[bytes | float]:
        """Bytes from the host → what to write (bytes) and how long to pause (float seconds): the
        replies of :meth:`receive` arranged by ``delivery`` and cut at ``split_at``."""
        together = bytearray()
        for item in self._replies(data):
            if isinstance(item, float):
                yield from self._cut(bytes(together))
                together.clear()
                yield item
                continue
            target, reply = item
            if self.delivery == "packets":
                yield from self._cut(reply)
            elif self.delivery == "coalesced":
                together += reply
            elif target == "status":
                yield from self._cut(reply + bytes(self._held))
                self._held.clear()
            else:
                self._held += reply
        yield from self._cut(bytes(together))

    def _cut(self, data: bytes) -> Iterator[bytes | float]:
        cuts = sorted({at % len(data) if at < 0 else at for at in self.split_at if 0 < abs(at) < len(data)})
        for begin, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            if begin:
                yield SPLIT_GAP_S
            if end > begin:
                yield data[begin:end]

    def _replies(self, data: bytes) -> Iterator[tuple[str, bytes] | float]:
        for packet in self.reader.feed(data):
            try:
                yield from self._reply(packet)
            except AsicProtocolError as exc:
                print(f"emulator: ignoring {exc}", file=sys.stderr, flush=True)
            if self.disconnect_requested:
                return

    def _reply(self, packet: Packet) -> Iterator[tuple[str, bytes] | float]:
        for target, reply in self.board.handle(packet, self._task_gets_wrong_nonce):
            self.counts[target] += 1
            kinds = self._rules(target, self.counts[target])
            if "disconnect" in kinds:
                self.disconnect_requested = True
                return
            if "stall" in kinds:
                yield self.stall_s
            if "drop" in kinds:
                continue
            yield target, damage(reply, kinds)


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
        for item in emulator.deliver(data):
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


def serve_pty(emulator: Emulator, alive: Callable[[], bool]) -> None:
    """Serve on a new pty until ``alive()`` is false or a disconnect fault; print ``READY <path>``."""
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


def serve_tcp(emulator: Emulator, listen: str, alive: Callable[[], bool]) -> None:
    """Serve connections on ``HOST:PORT`` (port 0 picks one), one at a time, until ``alive()`` is
    false or a disconnect fault; print ``READY socket://HOST:PORT``."""
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
                emulator.reader.reset()
                if not _pump(emulator, conn.fileno(), conn.fileno(), alive):
                    return
    finally:
        server.close()
