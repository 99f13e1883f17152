"""The seeds asset's config is generated from SearchConfig: the same fields, defaults, bounds and words."""

from __future__ import annotations

import pydantic
import pytest

from hasher_assets.seeds import SeedsConfig, search_config
from hasher_core.errors import SearchConfigError
from hasher_core.search.config import SearchConfig, knobs


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
