"""The one partitioning scheme of the pipeline: a dynamic partition per source file.

A partition per ``file_name`` of the miner's knowledge base and one per inbox file; finding them is
``hasher_resources.storage.scan_sources``, shared by the sensor and ``hasher partitions sync``.
"""

from dataclasses import dataclass

import dagster as dg

from hasher_resources.storage import HasherStorage, scan_sources

#: One partition per source file (a Data Miner ``file_name`` or an inbox file); keys are made safe
#: by ``hasher_core.knowledge.keys.safe_partition_key`` and the original name stays in the data.
source_files = dg.DynamicPartitionsDefinition(name="source_files")


@dataclass(frozen=True)
class PartitionSync:
    """What :func:`sync_partitions` found: every key, the keys it added, and the inputs it skipped
    (path → why: see ``hasher_resources.storage.scan_sources``)."""

    keys: list[str]
    added: list[str]
    skipped: dict[str, str]


def sync_partitions(instance: dg.DagsterInstance, storage: HasherStorage) -> PartitionSync:
    """Add a partition for every source file found now; what was found, added and skipped."""
    _, cursor, _ = scan_sources(storage, {}, max_files=1_000_000)
    keys = sorted(cursor["partitions"])
    existing = set(instance.get_dynamic_partitions(source_files.name))
    new = [k for k in keys if k not in existing]
    if new:
        instance.add_dynamic_partitions(source_files.name, new)
    return PartitionSync(keys, new, cursor["skipped"])


def register_partitions(instance: dg.DagsterInstance, storage: HasherStorage) -> list[str]:
    """Add a partition for every source file found now; returns all keys, sorted."""
    return sync_partitions(instance, storage).keys
