"""``hasher-asic-emulator``: an Antminer S3 stand-in that speaks the same bytes on a pty or TCP port.

It is a separate process so the host code under test goes through a real file descriptor, the
same way it reaches a board. It answers RxStatus requests, applies TxConfig (chains × chips,
frequency, voltage; a real S3 does not answer TxConfig either) and really searches nonces for each
TxTask work item — from the midstate and header bytes 64–75 only, as a BM1382 does — in a window of
``--nonces-per-work`` nonces spread over the chips, on the kernel backend ``--backend`` names
(resolved and compiled before ``READY``). ``--share-bits N`` reports nonces with ≥ N leading zero
bits; without it the emulator obeys the TxTask diff (32 + diff bits, as the chip does).

Faults (``--fault KIND:TARGET[:WHICH]``, repeatable): KIND is ``crc``, ``drop``, ``stall`` (silent
``--stall-s`` seconds, then send), ``disconnect``, ``wrong-nonce``, ``garbage``, ``truncate`` or
``bad-length``; TARGET is ``status`` or ``nonce``; WHICH the 1-based occurrence (default 1) or ``*``.

Packet boundaries (what a USB serial port does to a stream): ``--delivery packets`` writes each
reply on its own, ``coalesced`` every reply to one host read in one write, ``status-first`` holds the
nonce packets back until the next status reply and writes them after it in the same write (a board
answering status while its nonce queue drains); ``--split-at 1,3,-1`` cuts every write at those byte
offsets (negative: from its end; here inside the header, inside the length and before the CRC's
last byte), a few milliseconds apart, so a packet reaches the host in pieces.

On start it prints one line, ``READY <url>`` (a pty path or ``socket://127.0.0.1:PORT``), and
serves until SIGTERM/SIGINT, a ``disconnect`` fault, or its parent process exits. The model is
described in ``hasher_resources.asic.emulator.board``, the faults in ``….faults``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from hasher_core.asic_codec import MAX_ASICS_PER_CHAIN, MAX_CHAINS
from hasher_core.errors import BackendUnavailableError, KernelInputError
from hasher_resources.asic.emulator import (
    BACKENDS,
    DELIVERIES,
    FAULT_KINDS,
    Board,
    Emulator,
    FaultRule,
    serve_pty,
    serve_tcp,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``hasher-asic-emulator`` argument parser (``--pty`` or ``--listen`` is required)."""
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
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads the kernel hashes on (default: every core; a work item of a few thousand "
        "nonces runs on one thread either way)",
    )
    parser.add_argument(
        "--delivery",
        choices=DELIVERIES,
        default="packets",
        help="one write per reply, every reply to a host read in one write, or the status reply "
        "first with the nonce packets queued behind it in the same write",
    )
    parser.add_argument(
        "--split-at",
        type=_offsets,
        default=(),
        metavar="N[,N...]",
        help="cut every write at these byte offsets (negative: from its end), a few ms apart",
    )
    return parser


def _offsets(text: str) -> tuple[int, ...]:
    try:
        offsets = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--split-at {text!r}: comma-separated integers, e.g. 1,3,-1"
        ) from None
    if 0 in offsets:
        raise argparse.ArgumentTypeError(f"--split-at {text!r}: an offset of 0 cuts nothing")
    return offsets


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until stopped; return the exit status (2 for a bad argument or backend)."""
    args = build_parser().parse_args(argv)
    if not 1 <= args.chains <= MAX_CHAINS or not 1 <= args.chips <= MAX_ASICS_PER_CHAIN:
        print(f"error: 1 ≤ chains ≤ {MAX_CHAINS} and 1 ≤ chips ≤ {MAX_ASICS_PER_CHAIN}", file=sys.stderr)
        return 2
    if args.share_bits is not None and not 0 <= args.share_bits <= 256:
        print("error: --share-bits must be in [0, 256]", file=sys.stderr)
        return 2
    if not 1 <= args.nonces_per_work <= 1 << 32:
        print("error: --nonces-per-work must be in [1, 2**32]", file=sys.stderr)
        return 2
    if args.threads is not None:
        import numba

        if not 1 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
            print(f"error: --threads must be in [1, {numba.config.NUMBA_NUM_THREADS}]", file=sys.stderr)
            return 2
        numba.set_num_threads(args.threads)
    board = Board(args.chains, args.chips, args.share_bits, args.nonces_per_work, backend=args.backend)
    try:
        board.warm_up()
    except (KernelInputError, BackendUnavailableError) as exc:
        print(f"error: --backend {args.backend}: {exc}", file=sys.stderr)
        return 2
    emulator = Emulator(board, list(args.fault), args.stall_s, delivery=args.delivery, split_at=args.split_at)

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
        serve_pty(emulator, alive)
    else:
        serve_tcp(emulator, args.listen, alive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
