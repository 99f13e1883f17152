"""The miner-output sensor: first tick, no-op tick, touched-but-unchanged, changed, bounded, restart."""

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hasher_assets.knowledge_base import knowledge_base
from hasher_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, partition_ranges, register_partitions
from hasher_assets.sensors import miner_output_sensor
from hasher_resources import files
from hasher_resources.storage import HasherStorage, scan_sources
from hasher_tests.assets.local import local_resources

SAMPLE_KEYS = [
    "gettysburg_address.txt",
    "python_reference_exceptions.txt",
    "python_reference_for_while_if.txt",
    "python_reference_with_statement.txt",
]


@pytest.fixture(autouse=True)
def one_partition_per_run(monkeypatch):
    """The tests of what a change requests run one partition per run; those of ranges set their own."""
    monkeypatch.setenv("HASHER_PARTITIONS_PER_RUN", "1")


def _tick(instance, storage: HasherStorage, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage})
    return miner_output_sensor(context)


def _apply(instance, result) -> None:
    """Do what the daemon does with a SensorResult's partition requests."""
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_first_tick_adds_a_partition_and_a_run_per_source_file(instance, storage):
    (storage.inbox_path / "notes.txt").write_text("one two three four five six seven eight nine ten eleven")
    result = _tick(instance, storage, None)
    assert isinstance(result, dg.SensorResult)
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == sorted([*SAMPLE_KEYS, "notes.txt"])
    assert sorted(r.partition_key for r in result.run_requests) == sorted([*SAMPLE_KEYS, "notes.txt"])
    assert all(r.run_key.startswith(f"{r.partition_key}:") for r in result.run_requests)
    assert json.loads(result.cursor)["partitions"].keys() == {*SAMPLE_KEYS, "notes.txt"}


def test_unchanged_directory_skips(instance, storage):
    first = _tick(instance, storage, None)
    _apply(instance, first)
    second = _tick(instance, storage, first.cursor)
    assert isinstance(second, dg.SkipReason)
    assert "no new or changed source files" in second.skip_message


def test_a_tick_that_requests_nothing_says_what_it_skipped_and_why(instance, storage):
    (storage.inbox_path / "slides.pdf").write_bytes(b"%PDF")
    first = _tick(instance, storage, None)
    _apply(instance, first)
    second = _tick(instance, storage, first.cursor)
    skipped = f"skipped {storage.inbox_path / 'slides.pdf'}: not a .txt or .md file"
    assert second.skip_message.endswith(skipped)


def test_touched_but_unchanged_file_requests_nothing(instance, storage, miner_dir: Path):
    first = _tick(instance, storage, None)
    _apply(instance, first)
    parquet = miner_dir / "ai_knowledge_base.parquet"
    later = time.time() + 60
    os.utime(parquet, (later, later))
    second = _tick(instance, storage, first.cursor)
    assert isinstance(second, dg.SensorResult)
    assert not second.run_requests and not second.dynamic_partitions_requests
    assert json.loads(second.cursor) != json.loads(first.cursor)  # the new mtime is remembered
    assert isinstance(_tick(instance, storage, second.cursor), dg.SkipReason)


def test_changed_inbox_file_reruns_only_its_partition(instance, storage):
    note = storage.inbox_path / "notes.txt"
    note.write_text("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda")
    first = _tick(instance, storage, None)
    _apply(instance, first)
    note.write_text("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu")
    second = _tick(instance, storage, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["notes.txt"]
    assert not second.dynamic_partitions_requests  # the partition exists already
    assert second.run_requests[0].run_key != next(
        r.run_key for r in first.run_requests if r.partition_key == "notes.txt"
    )


def test_a_file_edited_back_to_an_earlier_content_runs_again_under_a_new_run_key(instance, storage):
    note = storage.inbox_path / "notes.txt"
    original, edited = "one two three four five six", "one two three four five six seven"
    keys = []
    cursor = None
    for text in (original, edited, original):
        note.write_text(text)
        result = _tick(instance, storage, cursor)
        _apply(instance, result)
        assert [r.partition_key for r in result.run_requests if r.partition_key == "notes.txt"] == [
            "notes.txt"
        ]
        keys.append(next(r.run_key for r in result.run_requests if r.partition_key == "notes.txt"))
        cursor = result.cursor
    assert len(set(keys)) == 3, keys  # Dagster would drop a repeated run_key: the revert would never run


def test_cursor_survives_a_restart(instance, storage, monkeypatch):
    # The sample files were copied just now: a digest taken within files._RACY_NS of a file's change
    # is not trusted and is taken again, on a slow machine with a cursor update. Reading the clock
    # as if the copies were older keeps this test about the cursor, not about the machine's speed.
    real = files._now_ns
    monkeypatch.setattr(files, "_now_ns", lambda: real() + 2 * files._RACY_NS)
    first = _tick(instance, storage, None)
    _apply(instance, first)
    with dg.instance_for_test() as fresh_instance:  # a new daemon process: only the cursor carries over
        fresh_instance.add_dynamic_partitions("source_files", SAMPLE_KEYS)
        again = _tick(fresh_instance, storage, first.cursor)
        # Nothing requested. (A tick more than 2 s after the copy re-reads the just-copied file once,
        # to trust its memo, and returns the new cursor with its skip reason: a SensorResult.)
        assert isinstance(again, dg.SkipReason) or not again.run_requests


def test_a_tick_reads_a_bounded_number_of_changed_files(instance, storage, monkeypatch):
    for i in range(3):
        (storage.inbox_path / f"doc{i}.txt").write_text(" ".join(f"w{i}x{j}" for j in range(20)))
    monkeypatch.setenv("HASHER_SENSOR_MAX_FILES", "2")
    first = _tick(instance, storage, None)
    assert len(first.run_requests) < 4 + 3  # not everything in one tick
    _apply(instance, first)
    seen = {r.partition_key for r in first.run_requests}
    cursor = first.cursor
    for _ in range(5):  # bounded: the rest arrives within a few ticks
        result = _tick(instance, storage, cursor)
        if isinstance(result, dg.SkipReason):
            break
        _apply(instance, result)
        seen |= {r.partition_key for r in result.run_requests}
        cursor = result.cursor
    assert seen == {*SAMPLE_KEYS, "doc0.txt", "doc1.txt", "doc2.txt"}


def test_register_partitions_matches_what_the_sensor_finds(instance, storage):
    keys = register_partitions(instance, storage)
    assert keys == SAMPLE_KEYS
    assert sorted(instance.get_dynamic_partitions("source_files")) == SAMPLE_KEYS
    assert register_partitions(instance, storage) == SAMPLE_KEYS  # idempotent


def test_runs_carry_the_difficulty_from_the_environment(instance, storage, monkeypatch):
    monkeypatch.setenv("HASHER_SENSOR_DIFFICULTY_BITS", "14")
    result = _tick(instance, storage, None)
    assert {r.run_config["ops"]["seeds"]["config"]["difficulty_bits"] for r in result.run_requests} == {14}


def _empty_miner_outputs(miner_dir: Path) -> dict[str, Callable[[], Path]]:
    """What the Go miner and other writers leave after a run that found nothing."""

    def json_file(text: str) -> Callable[[], Path]:
        def write() -> Path:
            path = miner_dir / "json" / "ai_knowledge_base.json"
            path.write_text(text)
            return path

        return write

    def empty_parquet() -> Path:
        path = miner_dir / "ai_knowledge_base.parquet"
        pq.write_table(pa.table({"file_name": pa.array([], pa.string())}).slice(0, 0), path)
        return path

    return {
        "null": json_file("null\n"),
        "[]": json_file("[]"),
        "0-byte": json_file(""),
        "0-row Parquet": empty_parquet,
    }


@pytest.mark.parametrize("kind", ["null", "[]", "0-byte", "0-row Parquet"])
def test_an_empty_miner_output_is_a_note_and_the_inbox_is_still_scanned(
    instance, storage, miner_dir: Path, kind: str
):
    shutil.rmtree(miner_dir)
    (miner_dir / "json").mkdir(parents=True)
    empty = _empty_miner_outputs(miner_dir)[kind]()
    (storage.inbox_path / "notes.txt").write_text("one two three four five six seven eight nine ten eleven")
    changed, _cursor, notes = scan_sources(storage, {}, max_files=8)
    assert list(changed) == ["notes.txt"]
    assert any(n.startswith(f"{empty}: no source files in the miner output") for n in notes), notes
    result = _tick(instance, storage, None)
    assert [r.partition_key for r in result.run_requests] == ["notes.txt"]
    assert register_partitions(instance, storage) == ["notes.txt"]


def _ranges(result) -> list[tuple[str, str]]:
    """(first, last) partition of each run request: a range's tags, or a one-partition run's key."""
    return sorted(
        (r.partition_key, r.partition_key)
        if r.partition_key
        else (r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG])
        for r in result.run_requests
    )


def test_new_partitions_run_in_ranges_of_the_configured_size(instance, storage, monkeypatch):
    monkeypatch.setenv("HASHER_PARTITIONS_PER_RUN", "2")
    (storage.inbox_path / "notes.txt").write_text("one two three four five six seven eight nine ten eleven")
    result = _tick(instance, storage, None)
    new = sorted([*SAMPLE_KEYS, "notes.txt"])  # added in this order, after the existing (none)
    assert list(result.dynamic_partitions_requests[0].partition_keys) == new
    assert _ranges(result) == [(new[0], new[1]), (new[2], new[3]), (new[4], new[4])]
    assert len({r.run_key for r in result.run_requests}) == 3
    monkeypatch.setenv("HASHER_PARTITIONS_PER_RUN", "all")
    assert _ranges(_tick(instance, storage, None)) == [(new[0], new[-1])]


def test_a_range_run_materialises_every_partition_of_the_range(instance, storage, monkeypatch):
    monkeypatch.setenv("HASHER_PARTITIONS_PER_RUN", "all")
    result = _tick(instance, storage, None)
    _apply(instance, result)
    (request,) = result.run_requests
    run = dg.materialize(
        [knowledge_base], instance=instance, resources=local_resources(storage), tags=request.tags
    )
    materialised = sorted(m.partition for m in run.asset_materializations_for_node("knowledge_base"))
    assert materialised == sorted(SAMPLE_KEYS)
    assert all((storage.data_path / "knowledge_base" / f"{k}.parquet").exists() for k in SAMPLE_KEYS)


def test_changed_partitions_that_are_not_neighbours_run_separately(instance, storage, monkeypatch):
    monkeypatch.setenv("HASHER_PARTITIONS_PER_RUN", "all")
    for name in ("a.txt", "b.txt", "c.txt"):
        (storage.inbox_path / name).write_text(f"{name} one two three four five six seven eight nine ten")
    first = _tick(instance, storage, None)
    _apply(instance, first)
    order = instance.get_dynamic_partitions("source_files")
    for name in ("a.txt", "c.txt"):
        (storage.inbox_path / name).write_text(f"{name} changed one two three four five six seven eight nine")
    second = _tick(instance, storage, first.cursor)
    assert order.index("c.txt") - order.index("a.txt") == 2  # b.txt sits between them
    assert _ranges(second) == [("a.txt", "a.txt"), ("c.txt", "c.txt")]


def test_partition_ranges_follow_the_partitions_order_and_the_size_limit():
    order = ["a", "b", "c", "d", "e", "f"]
    assert partition_ranges(order, ["f", "a", "b", "c", "e"], None) == [["a", "b", "c"], ["e", "f"]]
    assert partition_ranges(order, ["a", "b", "c", "e", "f"], 2) == [["a", "b"], ["c"], ["e", "f"]]
    assert partition_ranges(order, ["x", "b"], 5) == [["b"]]
    assert partition_ranges(order, [], 5) == []
