"""What the ASIC tests share: a small emulated board (1 chain × 4 chips, share difficulty 6 bits,
512 nonces a work item) and the emulator process run with one fault rule."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from hasher_core.asic_codec import Work, wire_midstate
from hasher_resources.asic.emulator import Board
from hasher_resources.asic.resource import start_emulator, stop_emulator

SHARE_BITS = 6
HEADERS = [bytes([i]) * 80 for i in range(3)]


def small_board() -> Board:
    """The 1 × 4-chip board the in-thread emulators of these tests serve."""
    return Board(chains=1, chips=4, share_bits=SHARE_BITS, nonces_per_work=512)


def expected_nonces(headers: list[bytes] = HEADERS) -> list[tuple[int, int]]:
    """(header index, nonce) of every share the small board finds for ``headers``, by its own search."""
    board = small_board()
    return [
        (i, n)
        for i, h in enumerate(headers)
        for n in sorted(board.search(Work(0, wire_midstate(h), h[64:76]), SHARE_BITS))
    ]


@contextlib.contextmanager
def emulator_process(fault: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """The emulator as its own process (``(process, url)``) on the small board with ``fault``
    (``kind:packet:n``); stopped on exit."""
    proc, url = start_emulator(
        share_bits=SHARE_BITS, chains=1, chips=4, nonces_per_work=512, backend="cpu", faults=[fault]
    )
    try:
        yield proc, url
    finally:
        stop_emulator(proc)
