"""The resources asset tests run with: the storage under test, its Parquet IO manager, the offline
embedder, and (when asked) a kernel and the emulated ASIC."""

from __future__ import annotations

from hasher_resources.asic.resource import EmulatedAsicDevice
from hasher_resources.embedder import HashingEmbedder
from hasher_resources.parquet_io import ParquetIOManager
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage


def local_resources(storage: HasherStorage, kernel_backend: str | None = None) -> dict[str, object]:
    """Resources for ``dg.materialize``: with ``kernel_backend``, also ``kernel`` and ``asic``."""
    resources: dict[str, object] = {
        "storage": storage,
        "parquet_io_manager": ParquetIOManager(base_dir=storage.data_dir),
        "embedder": HashingEmbedder(),
    }
    if kernel_backend is not None:
        resources |= {"kernel": Sha256Kernel(backend=kernel_backend), "asic": EmulatedAsicDevice()}
    return resources
