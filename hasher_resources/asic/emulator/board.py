"""The emulated S3's chips: state and behaviour without I/O — host packets in, reply bytes out.

What it models, and what not:

* **Share difficulty.** On the S3 the TxTask ``diff`` byte is log2 of the share difficulty, and
  difficulty 1 means 32 leading zero bits of the byte-reversed double SHA-256, so a chip reports
  nonces with at least ``32 + diff`` leading zero bits. ``share_bits = N`` overrides that with N
  leading zero bits directly (N = 32 + diff reproduces the chip; N = 8 makes tests take
  milliseconds). With ``share_bits = None`` the board obeys ``diff``.
* **Nonce space.** A chip sweeps 2^32 nonces per work item (9.7 ms for a whole S3); a CPU cannot.
  The 2^32 space is split evenly over chains × chips, and each chip scans the first
  ``nonces_per_work / (chains × chips)`` nonces of its share, so one work item costs
  ``nonces_per_work`` hashes and returns every nonce meeting the share target in those windows.
* **Hashing.** A TxTask carries the midstate and header bytes 64–75, not the header; all chip
  windows of a work item are swept by one call of the kernel's ``scan_midstate_windows`` (one
  call per chip would spend more on per-call overhead than on hashing) on the ``backend`` named
  (``auto``: CUDA when a GPU is visible, else the Numba CPU backend; ``reference``: the slow
  pure-Python oracle), two compressions per nonce like the chip.
* **Replies.** Nonces go back in RxNonce packets (≤ 128 each) whose ``total_nonce_num`` is the
  running count of nonces the board has found, so a host can spot a lost packet. Each status reply
  is preceded by an empty RxNonce (a fifo report, like the Antminer docs' sample
  ``a2000e00ff00…``), which carries that count up to the moment of the status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from hasher_core import design
from hasher_core.asic_codec import (
    MAX_CHAINS,
    MAX_NONCES_PER_REPLY,
    RX_STATUS_REQUEST,
    TX_CONFIG,
    TX_TASK,
    ChainStatus,
    NonceEntry,
    Packet,
    RxNonce,
    RxStatusReply,
    TxConfig,
    TxTask,
    Work,
    midstate_from_wire,
)
from hasher_resources import sha256
from hasher_resources.asic.status import EMULATOR_HW_VERSION

#: Kernel backends the emulator can hash on (``auto`` resolves once, at start).
BACKENDS = ("auto", *sha256.BACKENDS)
#: The kernel reports at most 255 leading zero bits; a share target above that (32 + a large TxTask
#: diff) is scanned at 255 and filtered, so nothing is reported — as no real hash reaches it.
KERNEL_MAX_SHARE_BITS = 255
FIFO_DEPTH = 1024  # BITMAIN_MAX_WORK_QUEUE_NUM on the S3


def _chip_words(chips: int, set_bits: int) -> tuple[int, ...]:
    """A chain's status bitmap: one bit per chip in 32-bit words, the first ``set_bits`` set."""
    words = []
    for first in range(0, chips, 32):
        bits = max(0, min(32, set_bits - first))
        words.append((1 << bits) - 1)
    return tuple(words)


@dataclass
class Board:
    """The S3's state and behaviour, without I/O: packets in, (target, packet bytes) out."""

    chains: int = 8
    chips: int = 32
    share_bits: int | None = None
    nonces_per_work: int = 4096
    frequency_mhz: int = 250
    voltage: bytes = b"\x00\x00"
    total_nonces: int = 0
    hardware_errors: int = 0
    #: Chips whose status bit is set, counted from the first; None = every configured chip (a board
    #: with dead chips, for the health check).
    chips_alive: int | None = None
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
        """The nonces one work item scans (uint32, chip by chip): a window at the start of each
        chip's slice of 2^32."""
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

    def search(self, work: Work, share_bits: int) -> list[int]:
        """Every nonce in this work item's windows whose hash has ≥ ``share_bits`` leading zero bits,
        in chip order like the windows."""
        starts, per_chip = self._window_starts()
        found = self._scan_windows(
            midstate_from_wire(work.midstate), work.data2, share_bits, starts, per_chip
        )
        self.hashes_done += starts.size * per_chip
        self.works_done += 1
        return found

    def miss(self, work: Work, share_bits: int) -> int:
        """A nonce that does *not* meet the share target (for the ``wrong-nonce`` fault)."""
        first = 0xFFFF0000
        state = midstate_from_wire(work.midstate)
        hits = set(self._scan_windows(state, work.data2, share_bits, np.array([first]), 64))
        return next((n for n in range(first, first + 64) if n not in hits), first)

    def status(self) -> RxStatusReply:
        """The status reply: every configured chip present, ``chips_alive`` of them (default all)
        alive, made-up temperatures and fans, the hardware-error count and the frequency in
        ``reg_value``."""
        alive_left = self.chains * self.chips if self.chips_alive is None else self.chips_alive
        chains = []
        for _ in range(self.chains):
            alive = min(alive_left, self.chips)
            alive_left -= alive
            present = _chip_words(self.chips, self.chips)
            chains.append(ChainStatus(self.chips, present, _chip_words(self.chips, alive)))
        return RxStatusReply(
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

    def nonce_packets(self, entries: list[NonceEntry], diff: int) -> list[RxNonce]:
        """Split found nonces into RxNonce packets; ``total_nonce_num`` counts through each packet."""
        packets = []
        for i in range(0, len(entries), MAX_NONCES_PER_REPLY):
            chunk = tuple(entries[i : i + MAX_NONCES_PER_REPLY])
            self.total_nonces += len(chunk)
            packets.append(RxNonce(chunk, FIFO_DEPTH, diff, self.total_nonces))
        return packets

    def handle(
        self, packet: Packet, faulty_nonce: Callable[[], bool] = lambda: False
    ) -> Iterator[tuple[str, bytes]]:
        """React to one host packet; yield the replies as (target, bytes) as they become ready.

        ``target`` is ``"status"`` or ``"nonce"`` (what a fault rule can aim at). Raises
        :class:`hasher_core.errors.AsicProtocolError` for a host packet it cannot decode.
        """
        if packet.packet_type == TX_CONFIG:
            config = TxConfig.from_packet(packet)
            if 1 <= config.chain_num <= MAX_CHAINS and config.asic_num >= 1:
                self.chains, self.chips = config.chain_num, config.asic_num
            self.frequency_mhz, self.voltage = config.frequency_mhz, config.voltage
            return
        if packet.packet_type == RX_STATUS_REQUEST:
            fifo_report = RxNonce((), FIFO_DEPTH, 0, self.total_nonces)
            yield "nonce", fifo_report.pack()
            yield "status", self.status().pack()
            return
        if packet.packet_type == TX_TASK:
            task = TxTask.from_packet(packet)
            share_bits = self.share_bits if self.share_bits is not None else 32 + task.diff
            wrong = faulty_nonce()
            # One reply per work item as it finishes, like chips reporting while the queue drains.
            for k, work in enumerate(task.works):
                entries = [NonceEntry(work.work_id, n) for n in self.search(work, share_bits)]
                if wrong and k == 0:
                    entries = [NonceEntry(work.work_id, self.miss(work, share_bits)), *entries[1:]]
                for reply in self.nonce_packets(entries, task.diff):
                    yield "nonce", reply.pack()
        # Device-to-host types arriving at the device are ignored, as a board would.
