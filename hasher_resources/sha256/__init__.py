"""The SHA-256 recursion kernel (DESIGN §4.2, §7): ``api`` over the ``reference``, ``cpu`` and ``cuda``
backends, and ``resource.Sha256Kernel``, the Dagster resource through which assets hash.

``from hasher_resources import sha256; sha256.evaluate(...)`` is the plain-function API; the
backends load on first use, so importing this package compiles nothing.
"""

from .api import (
    BACKENDS,
    NonceScanResult,
    cuda_available,
    evaluate,
    evaluate_with_keys,
    resolve_backend,
    scan_header_nonces,
    scan_midstate_nonces,
    scan_midstate_windows,
    scan_seed_nonces,
    window_nonces,
)
from .inputs import check_rows, header_time_groups

__all__ = [
    "BACKENDS",
    "NonceScanResult",
    "check_rows",
    "cuda_available",
    "evaluate",
    "evaluate_with_keys",
    "header_time_groups",
    "resolve_backend",
    "scan_header_nonces",
    "scan_midstate_nonces",
    "scan_midstate_windows",
    "scan_seed_nonces",
    "window_nonces",
]
