"""The knowledge_base asset: one split of the miner file serves every partition; any embedding length;
clear errors."""

import hashlib
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.parquet as pq

from hasher_assets.checks import knowledge_base_check, knowledge_base_is_well_formed
from hasher_assets.definitions import resource_set
from hasher_assets.knowledge_base import knowledge_base
from hasher_resources.embedder import HashingEmbedder
from hasher_resources.parquet_io import ParquetPartition
from hasher_resources.sample_writer import write_sample_knowledge_base
from hasher_resources.storage import HasherStorage
from hasher_tests.assets.local import local_resources

KEYS = ["gettysburg_address.txt", "python_reference_exceptions.txt"]


def _run(instance, storage: HasherStorage, key: str, raise_on_error: bool = True):
    return dg.materialize(
        [knowledge_base],
        partition_key=key,
        instance=instance,
        resources=local_resources(storage),
        raise_on_error=raise_on_error,
    )


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_go_json_is_split_once_for_all_partitions_and_the_miner_dir_is_untouched(
    instance, storage, miner_dir
):
    (miner_dir / "ai_knowledge_base.parquet").rename(miner_dir.parent / "moved.parquet")  # force the Go JSON
    before = _digests(miner_dir)
    instance.add_dynamic_partitions("source_files", KEYS)
    built = []
    for key in KEYS:
        result = _run(instance, storage, key)
        meta = result.asset_materializations_for_node("knowledge_base")[0].metadata
        assert meta["input_format"].value == "json_array"
        built.append(meta["split_built_this_run"].value)
        table = pq.read_table(storage.data_path / "knowledge_base" / f"{key}.parquet")
        assert set(table.column("source_file").to_pylist()) == {key}
        assert table.column("chunk_id").to_pylist() == sorted(table.column("chunk_id").to_pylist())
    assert built == [True, False]
    assert _digests(miner_dir) == before


def test_an_empty_miner_directory_names_every_path_searched(instance, tmp_path):
    empty = tmp_path / "empty_miner"
    empty.mkdir()
    storage = HasherStorage(
        miner_dir=str(empty), inbox_dir=str(tmp_path / "none"), data_dir=str(tmp_path / "d")
    )
    instance.add_dynamic_partitions("source_files", ["a.txt"])
    result = _run(instance, storage, "a.txt", raise_on_error=False)
    assert not result.success
    text = str(result.all_events)
    assert "ai_knowledge_base.parquet" in text and "json/ai_knowledge_base.arrow" in text


def test_an_unknown_partition_is_a_clear_error(instance, storage):
    instance.add_dynamic_partitions("source_files", ["not-in-the-file.txt"])
    result = _run(instance, storage, "not-in-the-file.txt", raise_on_error=False)
    assert not result.success
    assert "not-in-the-file.txt" in str(result.all_events)
    assert not (storage.data_path / "knowledge_base" / "not-in-the-file.txt.parquet").exists()


def test_embedding_dims_other_than_768_materialise_and_pass_the_check(instance, tmp_path):
    """Regression: the asset cast every batch to a fixed 768 schema and the check hard-coded 768."""
    dims = 16
    miner = tmp_path / "miner16"
    write_sample_knowledge_base(
        miner, {"doc.txt": " ".join(f"w{i}" for i in range(200))}, HashingEmbedder(dims=dims)
    )
    storage = HasherStorage(
        miner_dir=str(miner), inbox_dir=str(tmp_path / "none"), data_dir=str(tmp_path / "d")
    )
    instance.add_dynamic_partitions("source_files", ["doc.txt"])
    result = dg.materialize(
        [knowledge_base, knowledge_base_is_well_formed],
        partition_key="doc.txt",
        instance=instance,
        resources=resource_set(storage, embedder=HashingEmbedder(dims=dims)),
        run_config={"ops": {"knowledge_base": {"config": {"embedding_dims": dims}}}},
    )
    table = pq.read_table(storage.data_path / "knowledge_base" / "doc.txt.parquet")
    assert table.schema.field("embedding").type.list_size == dims
    meta = result.asset_materializations_for_node("knowledge_base")[0].metadata
    assert meta["embedding_dims"].value == dims
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["embedding_dims"].value == dims
    assert check.metadata["wrong_dimension"].value == 0


def test_the_check_fails_when_the_stored_embeddings_do_not_have_the_configured_length(instance, storage):
    instance.add_dynamic_partitions("source_files", KEYS[:1])
    _run(instance, storage, KEYS[0])
    stored = ParquetPartition(storage.data_path / "knowledge_base" / f"{KEYS[0]}.parquet", KEYS[0])
    assert knowledge_base_check(stored, 768).passed
    wrong = knowledge_base_check(stored, 16)
    assert not wrong.passed and wrong.metadata["wrong_dimension"].value == stored.num_rows()


def test_an_inbox_file_is_chunked_and_embedded_by_the_asset(instance, storage):
    words = [f"word{i}" for i in range(300)]
    (storage.inbox_path / "notes.md").write_text(" ".join(words))
    instance.add_dynamic_partitions("source_files", ["notes.md"])
    meta = _run(instance, storage, "notes.md").asset_materializations_for_node("knowledge_base")[0].metadata
    assert meta["source"].value == f"inbox file {storage.inbox_path / 'notes.md'}"
    table = pq.read_table(storage.data_path / "knowledge_base" / "notes.md.parquet")
    # DESIGN §2: 150-word chunks overlapping by 25 words; the 50-word tail is kept (>= 10 words).
    assert table.column("content").to_pylist() == [
        " ".join(words[a:b]) for a, b in ((0, 150), (125, 275), (250, 300))
    ]
    assert set(table.column("source_file").to_pylist()) == {"notes.md"}
    expected = HashingEmbedder().embed(table.column("content").to_pylist())
    assert np.array_equal(
        table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, 768), expected
    )


def test_an_inbox_file_wins_over_the_miner_output_of_the_same_name(instance, storage):
    key = KEYS[0]  # also a source file of the sample miner output
    text = " ".join(f"inbox{i}" for i in range(40))
    (storage.inbox_path / key).write_text(text)
    instance.add_dynamic_partitions("source_files", [key])
    meta = _run(instance, storage, key).asset_materializations_for_node("knowledge_base")[0].metadata
    assert meta["source"].value.startswith("inbox file ")
    table = pq.read_table(storage.data_path / "knowledge_base" / f"{key}.parquet")
    assert table.column("content").to_pylist() == [text]
    # Told to read a miner file explicitly, the asset reads the miner output instead.
    explicit = dg.materialize(
        [knowledge_base],
        partition_key=key,
        instance=instance,
        resources=local_resources(storage),
        run_config={"ops": {"knowledge_base": {"config": {"input_path": "ai_knowledge_base.parquet"}}}},
    )
    assert (
        explicit.asset_materializations_for_node("knowledge_base")[0]
        .metadata["source"]
        .value.startswith("miner directory")
    )
    assert "inbox0" not in " ".join(
        pq.read_table(storage.data_path / "knowledge_base" / f"{key}.parquet").column("content").to_pylist()
    )
