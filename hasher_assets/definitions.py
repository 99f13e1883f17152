"""The code location: five stages, their checks, the sensor, the jobs and the resources.

Resources are chosen here, once, from the environment, validated by
``hasher_resources.settings`` (a bad or unknown ``HASHER_*`` variable fails the load, naming it):

- ``HASHER_MINER_DIR`` / ``HASHER_INBOX_DIR`` / ``HASHER_DATA_DIR``: inputs and outputs;
- ``HASHER_KERNEL_BACKEND``: ``auto`` (CUDA when CuPy sees a GPU, else CPU), ``cpu``, ``cuda``, ``reference``;
- ``HASHER_EMBEDDER``: ``hashing`` (offline, lexical) or ``ollama`` (with ``HASHER_OLLAMA_URL``);
- ``HASHER_ASIC_URL``: a serial device, ``socket://host:port`` or a pty; unset = the bundled emulator;
- ``HASHER_EXECUTOR``: where steps run, ``multiprocess`` (default), ``ray`` or ``k8s``
  (``hasher_assets.executors``).
"""

import dagster as dg

from hasher_resources.asic.resource import AsicResource, asic_resource_from_env
from hasher_resources.embedder import Embedder, HashingEmbedder, OllamaEmbedder
from hasher_resources.parquet_io import ParquetIOManager
from hasher_resources.pools import install as install_pool_fixes
from hasher_resources.settings import HasherSettings, load_settings
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage

from .checkpoints import checkpoints
from .checks import (
    checkpoints_gate,
    deployment_recall,
    knowledge_base_is_well_formed,
    training_frames_are_consistent,
)
from .deployment import deployment
from .executors import executor_from_env, scale_out_settings
from .jobs import deployment_job, partition_pipeline_job
from .knowledge_base import knowledge_base
from .seeds import seeds
from .sensors import miner_output_sensor
from .training_frames import training_frames

ASSETS = [knowledge_base, training_frames, seeds, checkpoints, deployment]
ASSET_CHECKS = [
    knowledge_base_is_well_formed,
    training_frames_are_consistent,
    checkpoints_gate,
    deployment_recall,
]


def embedder_from_env(settings: HasherSettings | None = None) -> Embedder:
    """``HASHER_EMBEDDER=ollama`` selects Ollama (at ``HASHER_OLLAMA_URL``), ``hashing`` (the default)
    the offline hashing embedder; any other value is a :class:`~hasher_resources.settings.SettingsError`."""
    settings = settings or load_settings()
    if settings.embedder == "ollama":
        return OllamaEmbedder(url=settings.ollama_url)
    return HashingEmbedder()


def resource_set(
    storage: HasherStorage,
    *,
    embedder: Embedder | None = None,
    kernel: Sha256Kernel | None = None,
    asic: AsicResource | None = None,
) -> dict[str, object]:
    """The resources the stages ask for, by key: ``storage``, the Parquet IO manager over its data
    directory, the ``embedder`` (default: the offline hashing one), and ``kernel`` and ``asic`` when
    given (the stages from ``seeds`` on need them). Tests, the scratch driver and the code location
    all build their resources here."""
    resources: dict[str, object] = {
        "storage": storage,
        "parquet_io_manager": ParquetIOManager(base_dir=storage.data_dir),
        "embedder": embedder if embedder is not None else HashingEmbedder(),
    }
    if kernel is not None:
        resources["kernel"] = kernel
    if asic is not None:
        resources["asic"] = asic
    return resources


def resources_from_env() -> dict[str, object]:
    """The default resources: local directories, CPU/GPU kernel, hashing embedder, emulated ASIC.

    Raises :class:`~hasher_resources.settings.SettingsError` for any bad ``HASHER_*`` variable.
    """
    settings = load_settings()
    return resource_set(
        HasherStorage(),
        embedder=embedder_from_env(settings),
        # HASHER_SEEDS_CPUS: the cores the seeds step asks a cluster for are the threads it hashes on
        kernel=Sha256Kernel(backend=settings.kernel_backend, threads=scale_out_settings().seeds_cpus),
        asic=asic_resource_from_env(),
    )


# Dagster's pool slots: atomic claims, and slots of killed runs freed (see hasher_resources.pools).
install_pool_fixes()

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=ASSET_CHECKS,
    jobs=[partition_pipeline_job, deployment_job],
    sensors=[miner_output_sensor],
    resources=resources_from_env(),
    executor=executor_from_env(),
)
