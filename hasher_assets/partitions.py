"""The one partitioning scheme of the pipeline: a dynamic partition per source file, and how many
partitions one run materialises.

A partition per ``file_name`` of the miner's knowledge base and one per inbox file; finding them is
``hasher_resources.storage.scan_sources``, shared by the sensor and ``hasher partitions sync``.

**Many small partitions at the cost of their work.** A run has a fixed cost (a process, resource
set-up, the event log: ~30 s through ``dagster asset materialize`` against ~4 s of work for a
50-frame partition), so stages 1–4 carry Dagster's own backfill policy: a backfill over N
partitions launches runs of up to ``HASHER_PARTITIONS_PER_RUN`` partitions each (default 100;
``all`` = one run for the whole backfill, which
``dagster asset materialize --partition-range A...B`` requires), the sensor asks for ranges the same
size (:func:`partition_ranges`), and each asset handles every key of its run
(``context.partition_keys``): one read of the miner file, one seed search over all their frames,
one device check. A partition is still one file per stage and one materialisation, with its own
metadata and check results.
"""

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from hasher_resources.settings import load_settings
from hasher_resources.storage import HasherStorage, scan_sources

# Dagster 1.13 marks an asset's backfill_policy as beta and warns at every import of the code location;
# hasher needs it (many partitions per run, above): only this one warning is silenced.
warnings.filterwarnings(
    "ignore", message="Parameter `backfill_policy` of function `asset`", category=dg.BetaWarning
)

#: One partition per source file (a Data Miner ``file_name`` or an inbox file); keys are made safe
#: by ``hasher_core.knowledge.keys.safe_partition_key`` and the original name stays in the data.
source_files = dg.DynamicPartitionsDefinition(name="source_files")


#: The run tags that make a run materialise a range of partitions (what a backfill's runs carry).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

#: An upstream partition as the IO manager hands it over: a ``ParquetPartition`` to a run of one
#: partition, ``{key: ParquetPartition}`` to a run over a range (:func:`by_partition` makes the two
#: one). Dagster types an input by its annotation and takes no unions, hence ``Any``.
PartitionInput = Any


def partitions_per_run() -> int | None:
    """``HASHER_PARTITIONS_PER_RUN`` as a number of partitions, None for ``all`` (one run)."""
    value = load_settings().partitions_per_run
    return None if value == "all" else int(value)


def backfill_policy() -> dg.BackfillPolicy:
    """The stages' backfill policy: ``multi_run(partitions_per_run())``, or ``single_run()``."""
    per_run = partitions_per_run()
    if per_run is None:
        return dg.BackfillPolicy.single_run()
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=per_run)


def partition_ranges(order: Sequence[str], wanted: Sequence[str], per_run: int | None) -> list[list[str]]:
    """The partitions ``wanted`` cut into runs as a backfill would cut them: consecutive in the
    partitions definition's ``order`` (a run takes a key range), at most ``per_run`` each (None:
    no limit). Keys not in ``order`` are ignored."""
    position = {key: i for i, key in enumerate(order)}
    ranked = sorted((position[k], k) for k in set(wanted) if k in position)
    runs: list[list[str]] = []
    for i, key in ranked:
        current = runs[-1] if runs else None
        if current and position[current[-1]] == i - 1 and (per_run is None or len(current) < per_run):
            current.append(key)
        else:
            runs.append([key])
    return runs


def range_run_request(keys: Sequence[str], run_key: str, run_config: Mapping) -> dg.RunRequest:
    """A run of stages 1–4 over ``keys`` (consecutive partitions): a one-partition run for one key,
    a run over the range first…last for more (as a backfill's run is)."""
    if len(keys) == 1:
        return dg.RunRequest(partition_key=keys[0], run_key=run_key, run_config=run_config)
    tags = {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}
    return dg.RunRequest(run_key=run_key, run_config=run_config, tags=tags)


def by_partition(context: dg.AssetExecutionContext, value: object) -> dict[str, object]:
    """An input of a partitioned asset keyed by the run's partitions, in their order: the IO manager
    hands one partition's handle to a single-partition run and ``{key: handle}`` to a range run.
    Raises FileNotFoundError naming the partitions of the run whose input is not there."""
    keys = list(context.partition_keys)
    if not isinstance(value, Mapping):
        return {keys[0]: value}
    missing = [k for k in keys if k not in value]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} partition(s) of this run have no upstream input: {', '.join(missing[:10])}"
        )
    return {k: value[k] for k in keys}


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
