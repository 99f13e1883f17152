"""The stage 1–2 checks fail on the input they exist to catch, and the frames check uses the W and S
the frames were built with (not the defaults)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hasher_assets.checks import knowledge_base_check, training_frames_are_consistent, training_frames_check
from hasher_assets.knowledge_base import knowledge_base
from hasher_assets.training_frames import training_frames
from hasher_core.design import VOCABULARY_SIZE
from hasher_core.frames.gorand import projection_matrix
from hasher_core.frames.recipe import frame_recipe, recipe_to_metadata
from hasher_resources.embedder import HashingEmbedder
from hasher_resources.frames_writer import write_frames
from hasher_resources.parquet_io import ParquetPartition
from hasher_resources.storage import HasherStorage
from hasher_tests.assets.local import local_resources

KEY = "gettysburg_address.txt"


@pytest.fixture
def stored_kb(instance, storage: HasherStorage) -> ParquetPartition:
    instance.add_dynamic_partitions("source_files", [KEY])
    dg.materialize([knowledge_base], partition_key=KEY, instance=instance, resources=local_resources(storage))
    return ParquetPartition(storage.data_path / "knowledge_base" / f"{KEY}.parquet", KEY)


def rewrite(partition: ParquetPartition, table: pa.Table, tmp_path: Path, name: str) -> ParquetPartition:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    return ParquetPartition(path, partition.partition_key)


def with_row(table: pa.Table, column: str, row: int, value: object) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    i = table.schema.get_field_index(column)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


KB_FAULTS = {
    "empty_content": lambda t: with_row(t, "content", 1, "   "),
    "non_finite_embedding": lambda t: with_row(t, "embedding", 2, [float("nan")] + [0.0] * 767),
    "duplicate_chunk_ids": lambda t: with_row(t, "chunk_id", 1, t.column("chunk_id")[0].as_py()),
}


@pytest.mark.parametrize("fault", list(KB_FAULTS))
def test_knowledge_base_check_fails_on_what_it_guards_against(stored_kb, tmp_path: Path, fault: str):
    assert knowledge_base_check(stored_kb, 768).passed
    broken = rewrite(stored_kb, KB_FAULTS[fault](stored_kb.read()), tmp_path, fault)
    result = knowledge_base_check(broken, 768)
    assert not result.passed
    assert result.metadata[fault].value == 1
    others = {"empty_content", "non_finite_embedding", "duplicate_chunk_ids", "wrong_dimension"} - {fault}
    assert all(result.metadata[name].value == 0 for name in others)


def frames_of(stored_kb: ParquetPartition, tmp_path: Path, window: int, stride: int) -> ParquetPartition:
    """Frames written as the asset writes them, recipe in the file, and no materialisation record."""
    path = tmp_path / "frames" / f"{KEY}.parquet"
    path.parent.mkdir(exist_ok=True)
    write_frames(
        stored_kb.iter_batches(),
        path,
        projection=projection_matrix(),
        window=window,
        stride=stride,
        embedding_source="chunk",
        metadata=recipe_to_metadata(
            frame_recipe(embedder=HashingEmbedder().recipe(), window_size=window, stride=stride)
        ),
    )
    return ParquetPartition(path, KEY)


def longer_context(table: pa.Table, row: int, length: int) -> pa.Table:
    """Frame ``row`` claims a context of ``length`` tokens (consistently: end - start = length)."""
    end = table.column("window_start")[row].as_py() + length
    return with_row(with_row(table, "window_end", row, end), "context_length", row, length)


FRAME_FAULTS = {
    "a frame lost": (lambda t: t.slice(1), "expected_rows"),
    "context longer than W": (lambda t: longer_context(t, 0, 9), "bad_context_length"),
    "context_length disagrees": (lambda t: with_row(t, "context_length", 3, 2), "bad_context_length"),
    "token id past the vocabulary": (
        lambda t: with_row(t, "target_token_id", 0, VOCABULARY_SIZE),
        "token_ids_out_of_vocabulary",
    ),
    "schema changed": (lambda t: t.drop(["best_seed"]), "schema_matches"),
}


@pytest.mark.parametrize("fault", list(FRAME_FAULTS))
def test_training_frames_check_fails_on_what_it_guards_against(stored_kb, tmp_path: Path, fault: str):
    frames = frames_of(stored_kb, tmp_path, window=8, stride=3)
    assert training_frames_check(frames, stored_kb, 8, 3).passed
    change, counter = FRAME_FAULTS[fault]
    result = training_frames_check(rewrite(frames, change(frames.read()), tmp_path, "bad"), stored_kb, 8, 3)
    assert not result.passed
    if counter == "expected_rows":
        assert result.metadata["rows"].value == result.metadata["expected_rows"].value - 1
    elif counter == "schema_matches":
        assert result.metadata["schema_matches"].value is False
    else:
        assert result.metadata[counter].value == 1


def test_training_frames_check_with_the_wrong_window_or_stride_fails(stored_kb, tmp_path: Path):
    frames = frames_of(stored_kb, tmp_path, window=8, stride=3)
    assert not training_frames_check(frames, stored_kb, 128, 1).passed  # the defaults: wrong here
    assert not training_frames_check(frames, stored_kb, 4, 3).passed  # contexts longer than W=4


def test_the_asset_check_reads_w_and_s_from_the_frames_not_the_defaults(
    instance, storage: HasherStorage, stored_kb
):
    # Frames stored with W=8, S=3 but no materialisation metadata (written outside a Dagster run):
    # falling back to W=128, S=1 would call good frames bad.
    frames_of(stored_kb, storage.data_path, window=8, stride=3)
    (storage.data_path / "frames" / f"{KEY}.parquet").rename(
        storage.stage_dir("training_frames") / f"{KEY}.parquet"
    )
    check_only = dg.define_asset_job(
        "check_only", selection=dg.AssetSelection.checks(training_frames_are_consistent)
    )
    defs = dg.Definitions(
        assets=[knowledge_base, training_frames],
        asset_checks=[training_frames_are_consistent],
        jobs=[check_only],
        resources=local_resources(storage),
    )
    # The partition goes in as a run tag: a checks-only job has no asset to validate a key against.
    job = defs.resolve_job_def("check_only")
    result = job.execute_in_process(instance=instance, tags={"dagster/partition": KEY})
    assert not instance.fetch_materializations(dg.AssetKey("training_frames"), limit=1).records
    (check,) = result.get_asset_check_evaluations()
    assert check.passed, check.metadata
    assert (check.metadata["window_size"].value, check.metadata["stride"].value) == (8, 3)
    assert check.metadata["rows"].value == check.metadata["expected_rows"].value > 0
    assert check.metadata["expected_ratio"].value == 1.0


def test_a_materialised_partition_with_non_default_w_and_s_passes_its_check(instance, storage):
    instance.add_dynamic_partitions("source_files", [KEY])
    result = dg.materialize(
        [knowledge_base, training_frames, training_frames_are_consistent],
        partition_key=KEY,
        instance=instance,
        resources=local_resources(storage),
        run_config={"ops": {"training_frames": {"config": {"window_size": 16, "stride": 5}}}},
    )
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    assert (check.metadata["window_size"].value, check.metadata["stride"].value) == (16, 5)


def test_an_empty_knowledge_base_passes_its_check_with_a_note_unless_its_schema_is_wrong(
    stored_kb, tmp_path: Path
):
    empty = rewrite(stored_kb, stored_kb.read().slice(0, 0), tmp_path, "empty")
    result = knowledge_base_check(empty, 768)
    assert result.passed and result.metadata["rows"].value == 0
    assert result.metadata["note"].value == "no chunks: nothing to check (see knowledge_base's note)"
    assert not knowledge_base_check(empty, 384).passed  # an embedding length the partition does not have
