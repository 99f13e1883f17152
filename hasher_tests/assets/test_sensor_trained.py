"""The sensor does not re-train what is trained already, whoever trained it (issue 18, kind 14).

After the quickstart trained three texts through the CLI, switching the sensor on requested runs for
them again, and ``dagster sensor preview`` printed ``{}`` per run. Members: a source trained by a
run the sensor did not request (the CLI's ``dagster asset materialize``, the UI, ``dg.materialize``),
from the inbox and from the miner file; its content edited afterwards (requested again); a run that
stopped before ``checkpoints`` (requested again); the fingerprints of both sides agreeing for every
source; the run config naming the partition it was requested for, in the preview too.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import dagster as dg
import pytest

from hasher_assets.definitions import ASSETS, defs
from hasher_assets.knowledge_base import knowledge_base
from hasher_core.errors import KnowledgeBaseError
from hasher_resources.storage import HasherStorage, scan_sources
from hasher_tests.assets.local import local_resources
from hasher_tests.assets.test_sensors import SAMPLE_KEYS, _tick
from hasher_tests.servers import BIN, ROOT, dagster_home

NOTE = "notes.txt"
TEXT = "The river carries fine sand from the hills down to the wide valley floor, where farmers plant rice."
TRAIN = ["knowledge_base", "training_frames", "seeds", "checkpoints"]
FAST = {"ops": {"seeds": {"config": {"difficulty_bits": 4}}, "checkpoints": {"config": {"device_sample": 0}}}}


def _train(instance: dg.DagsterInstance, storage: HasherStorage, key: str, stages: list[str] = TRAIN) -> None:
    """Materialise ``stages`` of ``key`` as a run the sensor did not request (the CLI's way)."""
    instance.add_dynamic_partitions("source_files", [key])
    result = dg.materialize(
        ASSETS,
        selection=stages,
        partition_key=key,
        instance=instance,
        resources=local_resources(storage, "cpu"),
        run_config={"ops": {k: v for k, v in FAST["ops"].items() if k in stages}},
    )
    assert result.success


def _sources(request: dg.RunRequest) -> list[dict]:
    """What one run request's config says it was requested for: ``[{partition, fingerprint}]``, one
    for a run of one partition, one per partition for a run over a range."""
    config = request.run_config["ops"]["knowledge_base"]["config"]
    return [config["requested"]] if "requested" in config else config["requested_sources"]


def _requested(result) -> list[str]:
    if isinstance(result, dg.SkipReason):
        return []
    return sorted(s["partition"] for r in result.run_requests for s in _sources(r))


@pytest.mark.slow
@pytest.mark.parametrize("key", [NOTE, SAMPLE_KEYS[0]], ids=["inbox", "miner"])
def test_a_source_trained_outside_the_sensor_is_not_requested_again(instance, storage, key):
    (storage.inbox_path / NOTE).write_text(TEXT)
    _train(instance, storage, key)
    first = _tick(instance, storage, None)  # the sensor switched on after the training
    assert key not in _requested(first)
    assert _requested(first) == sorted({*SAMPLE_KEYS, NOTE} - {key})


@pytest.mark.slow
def test_a_source_edited_after_training_is_requested(instance, storage):
    note = storage.inbox_path / NOTE
    note.write_text(TEXT)
    _train(instance, storage, NOTE)
    first = _tick(instance, storage, None)
    note.write_text(TEXT + " The herons wait in the shallow water.")
    assert _requested(_tick(instance, storage, first.cursor)) == [NOTE]


@pytest.mark.slow
def test_a_source_whose_training_stopped_before_checkpoints_is_requested(instance, storage):
    (storage.inbox_path / NOTE).write_text(TEXT)
    _train(instance, storage, NOTE, ["knowledge_base", "training_frames", "seeds"])
    assert NOTE in _requested(_tick(instance, storage, None))


def test_knowledge_base_records_the_fingerprint_the_sensor_computes_for_every_source(instance, storage):
    (storage.inbox_path / NOTE).write_text(TEXT)
    changed, _, _ = scan_sources(storage, {}, max_files=100)
    assert sorted(changed) == sorted([*SAMPLE_KEYS, NOTE])
    instance.add_dynamic_partitions("source_files", sorted(changed))
    for key, fingerprint in changed.items():
        result = dg.materialize(
            [knowledge_base], instance=instance, partition_key=key, resources=local_resources(storage)
        )
        metadata = result.asset_materializations_for_node("knowledge_base")[0].metadata
        assert metadata["source_fingerprint"].value == fingerprint, key


def test_each_run_config_names_the_partition_and_content_it_was_requested_for(instance, storage):
    result = _tick(instance, storage, None)
    changed, _, _ = scan_sources(storage, {}, max_files=100)
    job = defs.resolve_job_def("partition_pipeline")
    named = []
    for request in result.run_requests:
        for requested in _sources(request):
            assert requested == {
                "partition": requested["partition"],
                "fingerprint": changed[requested["partition"]],
            }
            named.append(requested["partition"])
        if request.partition_key is not None:  # a run of one partition names that one
            assert [s["partition"] for s in _sources(request)] == [request.partition_key]
        assert dg.validate_run_config(job, request.run_config)
    assert sorted(named) == sorted(changed)


def test_a_run_config_requested_for_another_partition_is_refused(instance, storage):
    instance.add_dynamic_partitions("source_files", SAMPLE_KEYS)
    config = {"requested": {"partition": SAMPLE_KEYS[1], "fingerprint": "0" * 32}}
    with pytest.raises(
        KnowledgeBaseError, match=f"requested partition '{SAMPLE_KEYS[1]}', but this run is for"
    ):
        dg.materialize(
            [knowledge_base],
            instance=instance,
            partition_key=SAMPLE_KEYS[0],
            resources=local_resources(storage),
            run_config={"ops": {"knowledge_base": {"config": config}}},
        )


@pytest.mark.slow
def test_sensor_preview_names_each_partition(tmp_path, storage):
    home = dagster_home(tmp_path / "dagster_home")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "HASHER_MINER_DIR": storage.miner_dir,
        "HASHER_INBOX_DIR": storage.inbox_dir,
        "HASHER_DATA_DIR": storage.data_dir,
        "HASHER_PARTITIONS_PER_RUN": "1",  # a run per partition (ranges: test_each_run_config_names…)
    }
    preview = subprocess.run(
        [str(BIN / "dagster"), "sensor", "preview", "miner_output_sensor", "-m", "hasher_assets.definitions"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert preview.returncode == 0, preview.stderr[-3000:]
    assert f"Sensor returning run requests for {len(SAMPLE_KEYS)} run(s)" in preview.stdout
    for key in SAMPLE_KEYS:
        assert f"partition: {key}" in preview.stdout
    assert "{}" not in preview.stdout


def test_the_requested_fingerprint_is_checked_against_what_was_read(instance, storage, caplog):
    instance.add_dynamic_partitions("source_files", SAMPLE_KEYS)
    config = {"requested": {"partition": SAMPLE_KEYS[0], "fingerprint": "0" * 32}}
    result = dg.materialize(
        [knowledge_base],
        instance=instance,
        partition_key=SAMPLE_KEYS[0],
        resources=local_resources(storage),
        run_config={"ops": {"knowledge_base": {"config": config}}},
    )
    warnings = [
        e.message
        for e in instance.all_logs(result.run_id)
        if e.level >= 30 and "changed since the run was requested" in (e.message or "")
    ]
    assert len(warnings) == 1 and "this run trains the content it read" in warnings[0]


@pytest.mark.slow
def test_a_tick_that_finds_only_trained_sources_says_so(instance, storage, miner_dir):
    shutil.rmtree(miner_dir)
    miner_dir.mkdir()
    (storage.inbox_path / NOTE).write_text(TEXT)
    _train(instance, storage, NOTE)
    result = _tick(instance, storage, None)
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    assert result.skip_reason.skip_message == f"trained already, not requested again: {NOTE}"
    again = _tick(instance, storage, result.cursor)  # a SensorResult if it re-read a just-written file
    assert _requested(again) == [] and "no new or changed source files" in str(again)
