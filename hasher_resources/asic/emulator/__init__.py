"""An Antminer S3 stand-in that speaks the same bytes on a pty or TCP port (DESIGN §7).

``board`` models the chips (status, config, a real nonce search from the midstate), ``faults``
the damage it can inject, ``serve`` the byte stream around them. The ``hasher-asic-emulator``
command is ``hasher_cli.asic_emulator``; the host starts it as a child process
(``hasher_resources.asic.resource.EmulatedAsicDevice``), never by importing this package.
"""

from .board import BACKENDS, FIFO_DEPTH, KERNEL_MAX_SHARE_BITS, Board
from .faults import FAULT_KINDS, FAULT_TARGETS, GARBAGE, FaultRule, damage, with_bad_length
from .serve import DELIVERIES, SPLIT_GAP_S, WRITE_DEADLINE_S, Emulator, serve_in_thread, serve_pty, serve_tcp

__all__ = [
    "BACKENDS",
    "DELIVERIES",
    "FAULT_KINDS",
    "FAULT_TARGETS",
    "FIFO_DEPTH",
    "GARBAGE",
    "KERNEL_MAX_SHARE_BITS",
    "SPLIT_GAP_S",
    "WRITE_DEADLINE_S",
    "Board",
    "Emulator",
    "FaultRule",
    "damage",
    "serve_in_thread",
    "serve_pty",
    "serve_tcp",
    "with_bad_length",
]
