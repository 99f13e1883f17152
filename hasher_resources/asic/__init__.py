"""The ASIC device side: Bitmain S3 packet codec, midstate, the pyserial resource, the emulator,
and cross-hardware validation (DESIGN §7).

Importing this package does not import Dagster; ``device`` and ``validation`` do.
"""

from .errors import (
    AsicCrcError,
    AsicDisconnectedError,
    AsicError,
    AsicNotFoundError,
    AsicProtocolError,
    AsicTimeoutError,
    WrongDeviceError,
)

__all__ = [
    "AsicCrcError",
    "AsicDisconnectedError",
    "AsicError",
    "AsicNotFoundError",
    "AsicProtocolError",
    "AsicTimeoutError",
    "WrongDeviceError",
]
