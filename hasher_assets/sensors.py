"""The sensor on miner output: new or changed source files add partitions and request runs.

A tick stats the candidate files (cheap); only a file whose size or mtime moved is read, and then
each source file inside it gets a content fingerprint, so a touched-but-unchanged file requests
nothing and an edited document re-runs only its own partition. The cursor (JSON) survives
restarts and counts each partition's changes, which makes every run key unique per change (a
file edited back to an earlier content runs again); a tick handles at most
``HASHER_SENSOR_MAX_FILES`` changed files and leaves the rest for the next tick. A source whose
content is trained already — its latest ``knowledge_base`` materialisation has this fingerprint and
``checkpoints`` was materialised after it, by the sensor's run, the CLI or the UI — is not requested
again. Changed partitions are run in ranges of up to ``HASHER_PARTITIONS_PER_RUN`` consecutive ones
(``hasher_assets.partitions``); each run's config names the partitions and fingerprints it was
requested for (what ``dagster sensor preview`` prints).
"""

import hashlib
import json
from collections.abc import Mapping

import dagster as dg

from hasher_resources.settings import load_settings
from hasher_resources.storage import CURSOR_VERSION, HasherStorage, scan_sources

from .jobs import partition_pipeline_job
from .partitions import partition_ranges, partitions_per_run, range_run_request, source_files


def sensor_run_config(requested: Mapping[str, str]) -> dict:
    """Run config of the sensor's run for ``requested`` (partition → content fingerprint): what it was
    requested for (``requested`` in ``knowledge_base``'s config for one partition, ``requested_sources``
    for a range), and ``HASHER_SENSOR_DIFFICULTY_BITS`` overriding the seeds' difficulty (the default,
    17 bits = an exact token, costs about 2^17 evaluations per frame)."""
    sources = [{"partition": k, "fingerprint": fp} for k, fp in requested.items()]
    kb = {"requested": sources[0]} if len(sources) == 1 else {"requested_sources": sources}
    ops: dict = {"knowledge_base": {"config": kb}}
    bits = load_settings().sensor_difficulty_bits
    if bits is not None:
        ops["seeds"] = {"config": {"difficulty_bits": bits}}
    return {"ops": ops}


def trained_content(instance: dg.DagsterInstance, changed: Mapping[str, str]) -> dict[str, str]:
    """Partition → run id, for each source in ``changed`` (partition → content fingerprint) whose
    content is trained already: its latest ``knowledge_base`` materialisation has that fingerprint
    (``source_fingerprint``) and ``checkpoints`` was materialised after it. Three queries a tick."""
    kb, cp = dg.AssetKey("knowledge_base"), dg.AssetKey("checkpoints")
    materialised = dg.DagsterEventType.ASSET_MATERIALIZATION
    latest = instance.get_latest_storage_id_by_partition(kb, materialised, set(changed)) if changed else {}
    after = instance.get_latest_storage_id_by_partition(cp, materialised, set(latest)) if latest else {}
    finished = [storage_id for key, storage_id in latest.items() if after.get(key, -1) > storage_id]
    if not finished:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=kb, storage_ids=finished), limit=len(finished)
    ).records
    trained = {}
    for record in records:
        materialization = record.asset_materialization
        stored = materialization.metadata.get("source_fingerprint") if materialization else None
        key = materialization.partition if materialization else None
        if key in changed and stored is not None and stored.value == changed[key]:
            trained[key] = record.run_id
    return trained


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
    # What the scan skipped and why shows on every tick that requests nothing, not only in the log.
    skipped = "; ".join(f"skipped {path}: {why}" for path, why in new_cursor["skipped"].items())
    if not changed:
        reason = f"no new or changed source files under {storage.miner_path} or {storage.inbox_path}"
        reason += f"; {skipped}" if skipped else ""
        if new_cursor != cursor:
            return dg.SensorResult(skip_reason=reason, cursor=json.dumps(new_cursor))
        return dg.SkipReason(reason)
    registered = context.instance.get_dynamic_partitions(source_files.name)
    existing = set(registered)
    new_keys = sorted(k for k in changed if k not in existing)
    adds = [source_files.build_add_request(new_keys)] if new_keys else []
    trained = trained_content(context.instance, changed)
    for key, run_id in sorted(trained.items()):
        context.log.info(f"{key}: this content is trained already (run {run_id}); not requested again")
    wanted = {k: fp for k, fp in changed.items() if k not in trained}
    # Dagster drops a request whose run_key was used before, forever: a file edited back to an
    # earlier content must still run, so the key counts the partition's changes, not its content.
    changes = dict(cursor.get("changes", {}))
    for key in wanted:
        changes[key] = changes.get(key, 0) + 1
    new_cursor["changes"] = changes
    if not wanted:
        return dg.SensorResult(
            skip_reason=f"trained already, not requested again: {', '.join(sorted(trained))}",
            dynamic_partitions_requests=adds,
            cursor=json.dumps(new_cursor),
        )
    # Runs of up to HASHER_PARTITIONS_PER_RUN consecutive partitions (new ones are added in order,
    # after the existing ones), as a backfill would run them.
    order = [*registered, *new_keys]
    run_keys = {k: f"{k}:{changes[k]}:{fp[:16]}" for k, fp in wanted.items()}
    requests = []
    for keys in partition_ranges(order, list(wanted), partitions_per_run()):
        run_key = run_keys[keys[0]] if len(keys) == 1 else _range_run_key(keys, run_keys)
        requests.append(range_run_request(keys, run_key, sensor_run_config({k: wanted[k] for k in keys})))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=adds,
        cursor=json.dumps(new_cursor),
    )


def _range_run_key(keys: list[str], run_keys: dict[str, str]) -> str:
    """A range run's key: its ends and a digest of its partitions' own keys (each counts its changes)."""
    digest = hashlib.sha256("\n".join(run_keys[k] for k in keys).encode()).hexdigest()[:16]
    return f"{keys[0]}...{keys[-1]}:{len(keys)}:{digest}"
