"""The resources asset tests run with: the storage under test, its Parquet IO manager, the offline
embedder, and (when asked) a kernel and the emulated ASIC."""

from __future__ import annotations

from hasher_assets.definitions import resource_set
from hasher_resources.asic.resource import EmulatedAsicDevice
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage


def local_resources(storage: HasherStorage, kernel_backend: str | None = None) -> dict[str, object]:
    """Resources for ``dg.materialize``: with ``kernel_backend``, also ``kernel`` and ``asic``."""
    if kernel_backend is None:
        return resource_set(storage)
    return resource_set(storage, kernel=Sha256Kernel(backend=kernel_backend), asic=EmulatedAsicDevice())
