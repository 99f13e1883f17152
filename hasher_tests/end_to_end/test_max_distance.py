"""The default ``--max-distance`` separates what a recitation of the sample texts needs from what
unrelated prompts are (DESIGN §6.1): measured by :mod:`hasher_tests.end_to_end.max_distance`."""

from __future__ import annotations

import pytest

from hasher_core.inference import DEFAULT_MAX_DISTANCE
from hasher_core.inference.model import MIN_SUFFIX_TOKENS

from .max_distance import longest_coincidental_chunk_start, measure


@pytest.fixture(scope="module")
def distances():
    return measure()


@pytest.mark.slow
def test_every_sample_text_is_recited_verbatim_with_its_guesses_inside_the_default(distances):
    assert distances.recitation_right
    assert max(distances.recitation) < DEFAULT_MAX_DISTANCE


@pytest.mark.slow
def test_a_context_one_token_past_a_trained_one_lies_inside_the_default(distances):
    assert len(distances.one_token_past) == 15 and max(distances.one_token_past) < DEFAULT_MAX_DISTANCE


@pytest.mark.slow
def test_every_unrelated_prompt_lies_beyond_the_default_and_abstains(distances):
    near = {prompt: d for prompt, d in distances.unrelated.items() if d <= DEFAULT_MAX_DISTANCE}
    assert near == {}
    assert distances.unrelated["The weather in Paris is lovely in the spring"] > DEFAULT_MAX_DISTANCE


@pytest.mark.slow
def test_the_default_sits_between_the_groups_with_room_on_both_sides(distances):
    trained = max(*distances.recitation, *distances.one_token_past)
    unrelated = min(distances.unrelated.values())
    assert 2 * trained < DEFAULT_MAX_DISTANCE < unrelated / 1.5


def test_a_suffix_as_long_as_min_suffix_tokens_is_no_sample_chunk_start_found_elsewhere():
    longest, example = longest_coincidental_chunk_start()
    assert (longest, example) == (6, 'The "with" statement ')
    assert longest < MIN_SUFFIX_TOKENS
