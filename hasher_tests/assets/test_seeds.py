"""The seeds asset: its config is generated from SearchConfig (the same fields, defaults, bounds and
words), and a rerun resumes finished frames from the progress store."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq
import pydantic
import pytest

from hasher_assets.knowledge_base import knowledge_base
from hasher_assets.seeds import SeedsConfig, search_config, seeds
from hasher_assets.training_frames import training_frames
from hasher_core.errors import SearchConfigError
from hasher_core.search.config import SearchConfig, knobs
from hasher_tests.assets.local import local_resources


def test_every_search_setting_is_a_config_field_with_the_same_default_and_description():
    fields = SeedsConfig.model_fields
    assert list(fields) == [knob.name for knob in knobs()]
    for knob in knobs():
        default = list(knob.default) if isinstance(knob.default, tuple) else knob.default
        assert fields[knob.name].default == default, knob.name
        assert fields[knob.name].description == knob.description
    assert search_config(SeedsConfig()) == SearchConfig()


@pytest.mark.parametrize(
    "bad",
    [{"difficulty_bits": 33}, {"population": 1}, {"elite_ratio": 1.0}, {"strategy": "guess"},
     {"reward_weights": [1.0, 0.0]}, {"header_time": -1}],
)  # fmt: skip
def test_the_launchpad_rejects_what_the_search_rejects(bad):
    with pytest.raises(pydantic.ValidationError):
        SeedsConfig(**bad)


def test_lists_in_the_config_become_the_tuples_of_the_search():
    config = SeedsConfig(difficulty_bits=8, difficulty_schedule=[4, 6], reward_weights=[0.2, 0.5, 0.3])
    assert search_config(config) == SearchConfig(
        difficulty_bits=8, difficulty_schedule=(4, 6), reward_weights=(0.2, 0.5, 0.3)
    )
    with pytest.raises(SearchConfigError, match="difficulty_schedule"):
        search_config(SeedsConfig(difficulty_bits=8, difficulty_schedule=[9]))


def test_dagster_builds_a_config_schema_for_it():
    schema = SeedsConfig.to_config_schema().as_field().config_type
    assert {"difficulty_bits", "reward_weights", "strategy"} <= set(schema.fields)


SMALL_SEARCH = {"difficulty_bits": 4, "population": 16, "max_generations": 8}


def _materialize_seeds(instance, storage, search: dict):
    return dg.materialize(
        [knowledge_base, training_frames, seeds],
        partition_key="notes.txt",
        instance=instance,
        resources=local_resources(storage, "cpu"),
        run_config={
            "ops": {"seeds": {"config": search}, "training_frames": {"config": {"embedding_source": "chunk"}}}
        },
    )


def _seeds_metadata(result) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("seeds")[0].metadata.items()}


def test_a_rerun_resumes_every_frame_from_the_progress_store_and_a_new_search_none(instance, storage):
    (storage.inbox_path / "notes.txt").write_text(" ".join(f"w{i}" for i in range(14)))
    instance.add_dynamic_partitions("source_files", ["notes.txt"])
    first = _seeds_metadata(_materialize_seeds(instance, storage, SMALL_SEARCH))
    stored = pq.read_table(storage.data_path / "seeds" / "notes.txt.parquet")
    frames = stored.num_rows
    assert frames > 10 and first["frames_from_store"] == 0 and first["evaluations_this_run"] > 0

    again = _seeds_metadata(_materialize_seeds(instance, storage, SMALL_SEARCH))
    assert again["frames_from_store"] == frames and again["evaluations_this_run"] == 0
    resumed = pq.read_table(storage.data_path / "seeds" / "notes.txt.parquet")
    for column in ("best_seed", "golden", "matched_bits", "solved"):
        assert resumed.column(column).to_pylist() == stored.column(column).to_pylist(), column

    other = _seeds_metadata(_materialize_seeds(instance, storage, {**SMALL_SEARCH, "rng_seed": 7}))
    assert other["frames_from_store"] == 0 and other["evaluations_this_run"] > 0
