"""The sensor on miner output: new or changed source files add partitions and request runs.

A tick stats the candidate files (cheap); only a file whose size or mtime moved is read, and then
each source file inside it gets a content fingerprint, so a touched-but-unchanged file requests
nothing and an edited document re-runs only its own partition. The cursor (JSON) survives
restarts and counts each partition's changes, which makes every run key unique per change (a
file edited back to an earlier content runs again); a tick handles at most
``HASHER_SENSOR_MAX_FILES`` changed files and leaves the rest for the next tick. Changed partitions
are run in ranges of up to ``HASHER_PARTITIONS_PER_RUN`` consecutive ones (``hasher_assets.partitions``).
"""

import hashlib
import json

import dagster as dg

from hasher_resources.settings import load_settings
from hasher_resources.storage import CURSOR_VERSION, HasherStorage, scan_sources

from .jobs import partition_pipeline_job
from .partitions import partition_ranges, partitions_per_run, range_run_request, source_files


def sensor_run_config() -> dict:
    """Run config of the sensor's runs: ``HASHER_SENSOR_DIFFICULTY_BITS`` overrides the seeds'
    difficulty (the default, 17 bits = an exact token, costs about 2^17 evaluations per frame)."""
    bits = load_settings().sensor_difficulty_bits
    return {"ops": {"seeds": {"config": {"difficulty_bits": bits}}}} if bits is not None else {}


@dg.sensor(
    job=partition_pipeline_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Adds a source_files partition per new miner/inbox source file and runs stages 1–4 for it",
)
def miner_output_sensor(context: dg.SensorEvaluationContext, storage: HasherStorage):
    cursor = json.loads(context.cursor) if context.cursor else {}
    if cursor.get("version", CURSOR_VERSION) != CURSOR_VERSION:
        cursor = {}
    max_files = load_settings().sensor_max_files
    changed, new_cursor, notes = scan_sources(storage, cursor, max_files)
    for note in notes:
        context.log.info(note)
    new_cursor["changes"] = cursor.get("changes", {})
    if not changed:
        if new_cursor != cursor:
            return dg.SensorResult(
                skip_reason="no new or changed source files", cursor=json.dumps(new_cursor)
            )
        return dg.SkipReason(
            f"no new or changed source files under {storage.miner_path} or {storage.inbox_path}"
        )
    registered = context.instance.get_dynamic_partitions(source_files.name)
    existing = set(registered)
    new_keys = sorted(k for k in changed if k not in existing)
    # Dagster drops a request whose run_key was used before, forever: a file edited back to an
    # earlier content must still run, so the key counts the partition's changes, not its content.
    changes = dict(cursor.get("changes", {}))
    for key in changed:
        changes[key] = changes.get(key, 0) + 1
    new_cursor["changes"] = changes
    # Runs of up to HASHER_PARTITIONS_PER_RUN consecutive partitions (new ones are added in order,
    # after the existing ones), as a backfill would run them.
    order = [*registered, *new_keys]
    run_keys = {k: f"{k}:{changes[k]}:{fp[:16]}" for k, fp in changed.items()}
    requests = []
    for keys in partition_ranges(order, list(changed), partitions_per_run()):
        run_key = run_keys[keys[0]] if len(keys) == 1 else _range_run_key(keys, run_keys)
        requests.append(range_run_request(keys, run_key, sensor_run_config()))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[source_files.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(new_cursor),
    )


def _range_run_key(keys: list[str], run_keys: dict[str, str]) -> str:
    """A range run's key: its ends and a digest of its partitions' own keys (each counts its changes)."""
    digest = hashlib.sha256("\n".join(run_keys[k] for k in keys).encode()).hexdigest()[:16]
    return f"{keys[0]}...{keys[-1]}:{len(keys)}:{digest}"
