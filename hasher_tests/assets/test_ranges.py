"""Runs over a range of partitions (a backfill's runs, the sensor's): every stage handles every key of
its run, each partition gets its own file, metadata and check results, and the seeds are the ones
one run per partition gives."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq
import pytest

from hasher_assets.definitions import ASSET_CHECKS, ASSETS
from hasher_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, backfill_policy
from hasher_resources.storage import HasherStorage
from hasher_tests.assets.local import local_resources

STAGES = dg.AssetSelection.assets("knowledge_base", "training_frames", "seeds", "checkpoints")
TEXTS = {
    "doc-a.txt": "The first little document has a handful of words to make a few frames from.",
    "doc-b.txt": "A second one, shorter, but with ten words or so in it.",
    "doc-c.txt": "And a third: its words are not the words of the other two documents at all.",
}
CONFIG = {"ops": {"seeds": {"config": {"difficulty_bits": 4}}}}


def scratch(root) -> HasherStorage:
    (root / "inbox").mkdir(parents=True)
    (root / "miner").mkdir()
    for name, text in TEXTS.items():
        (root / "inbox" / name).write_text(text)
    return HasherStorage(
        miner_dir=str(root / "miner"),
        inbox_dir=str(root / "inbox"),
        data_dir=str(root / "data"),
        progress_dir=str(root / "data" / "seeds_progress"),
    )


@pytest.fixture(scope="module")
def ranged(tmp_path_factory):
    storage = scratch(tmp_path_factory.mktemp("ranged"))
    keys = sorted(TEXTS)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source_files", keys)
        result = dg.materialize(
            [*ASSETS, *ASSET_CHECKS],
            selection=STAGES,
            tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
            instance=instance,
            resources=local_resources(storage, "cpu"),
            run_config=CONFIG,
        )
    return storage, result


@pytest.mark.slow
def test_one_run_materialises_every_partition_of_its_range_with_its_own_metadata(ranged):
    storage, result = ranged
    assert result.success
    for stage in ("knowledge_base", "training_frames", "seeds", "checkpoints"):
        materialisations = {m.partition: m for m in result.asset_materializations_for_node(stage)}
        assert sorted(materialisations) == sorted(TEXTS), stage
        for key, m in materialisations.items():
            rows = pq.ParquetFile(storage.data_path / stage / f"{key}.parquet").metadata.num_rows
            assert m.metadata["dagster/row_count"].value == rows, (stage, key)


@pytest.mark.slow
def test_each_check_is_evaluated_once_per_partition_of_the_range(ranged):
    _, result = ranged
    evaluations = result.get_asset_check_evaluations()
    for name in ("knowledge_base_is_well_formed", "training_frames_are_consistent", "checkpoints_gate"):
        mine = [e for e in evaluations if e.check_name == name]
        assert sorted(e.partition for e in mine) == sorted(TEXTS), name
        assert all(e.passed for e in mine), name


@pytest.mark.slow
def test_a_range_run_gives_the_seeds_one_run_per_partition_gives(ranged, tmp_path):
    storage, _ = ranged
    single = scratch(tmp_path / "single")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source_files", sorted(TEXTS))
        for key in sorted(TEXTS):
            dg.materialize(
                [*ASSETS, *ASSET_CHECKS],
                selection=STAGES,
                partition_key=key,
                instance=instance,
                resources=local_resources(single, "cpu"),
                run_config=CONFIG,
            )
    for key in TEXTS:
        columns = ["chunk_id", "window_end", "best_seed", "golden", "solved", "fingerprint"]
        together = pq.read_table(storage.data_path / "checkpoints" / f"{key}.parquet", columns=columns)
        alone = pq.read_table(single.data_path / "checkpoints" / f"{key}.parquet", columns=columns)
        assert together.equals(alone), key


def test_the_stages_carry_the_backfill_policy_of_the_environment(monkeypatch):
    monkeypatch.setenv("HASHER_PARTITIONS_PER_RUN", "7")
    assert backfill_policy() == dg.BackfillPolicy.multi_run(7)
    monkeypatch.setenv("HASHER_PARTITIONS_PER_RUN", "all")
    assert backfill_policy() == dg.BackfillPolicy.single_run()
    for asset in ASSETS[:4]:
        assert asset.backfill_policy is not None, asset.key
