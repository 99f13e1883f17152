"""One served generation: the model's own loop step by step on the worker, stop sequences that no
client ever sees part of, the per-request deadline, abstention as an answer.

The model is the core tests' small bundle with a stand-in for stage 2 and the kernel (a context's
slots are its last token, a seed's bytes its answer), so every continuation is known exactly.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from hasher_core.errors import InferenceError
from hasher_resources.serve.generation import (
    GenerationRequest,
    RunningGeneration,
    _held_back,
    stop_reason_of,
)
from hasher_resources.serve.holder import ServedModel
from hasher_resources.serve.worker import InferenceWorker
from hasher_tests.core.inference.test_model import ENCODING, model_of

(HELLO,) = ENCODING.encode_ordinary("Hello")
ONE, TWO, THREE = (ENCODING.encode_ordinary(w)[0] for w in (" one", " two", " three"))


@pytest.fixture(scope="module")
def served() -> ServedModel:
    """ "Hello" → " one two three one two three …" for ever."""
    model = model_of([(HELLO, ONE, ONE), (ONE, TWO, TWO), (TWO, THREE, THREE), (THREE, ONE, ONE)])
    return ServedModel(model, model.bundle.version, dict(model.bundle.manifest), "test", time.time())


@pytest.fixture(scope="module")
def worker():
    w = InferenceWorker()
    yield w
    w.close()


def run(served, worker, **request) -> tuple[list, RunningGeneration]:
    async def go():
        generation = RunningGeneration(served, worker, GenerationRequest(**request))
        await generation.start()
        return [piece async for piece in generation.pieces()], generation

    return asyncio.run(go())


def test_the_served_generation_is_model_generate_step_for_step(served, worker):
    pieces, generation = run(served, worker, prompt="Hello", max_tokens=7, max_distance=0.5)
    expected = served.model.generate("Hello", 7)
    assert "".join(p.text for p in pieces) == expected.continuation == " one two three one two three one"
    assert [s for p in pieces for s in p.steps] == list(expected.steps)
    outcome = generation.outcome
    assert outcome.token_ids == list(expected.tokens) and outcome.stopped == expected.stopped
    assert (outcome.stop_reason, outcome.finish_reason) == ("max_tokens", "length")
    assert (
        outcome.prompt_token_ids == [HELLO] and outcome.exact_tokens == 7 and outcome.bundle == served.version
    )
    assert len(outcome.token_gaps()) == 7 and all(gap >= 0 for gap in outcome.token_gaps())


def test_a_stop_sequence_ends_the_answer_before_it_and_is_never_sent(served, worker):
    pieces, generation = run(
        served, worker, prompt="Hello", max_tokens=20, max_distance=0.5, stop=(" three",)
    )
    assert "".join(p.text for p in pieces) == " one two"
    assert generation.outcome.stopped == "stop sequence ' three'"
    assert generation.outcome.finish_reason == "stop" and generation.outcome.completion_tokens == 3


def test_text_that_may_start_a_stop_sequence_is_held_back_until_it_cannot(served, worker):
    # " two th" could become " two three": " two" is held until " three" arrives, then cut.
    pieces, _ = run(served, worker, prompt="Hello", max_tokens=20, max_distance=0.5, stop=(" two three",))
    assert [p.text for p in pieces] == [" one", ""] and "".join(p.text for p in pieces) == " one"
    # a partial match that fails is sent as soon as it fails, nothing lost
    pieces, generation = run(
        served, worker, prompt="Hello", max_tokens=4, max_distance=0.5, stop=(" two four",)
    )
    assert "".join(p.text for p in pieces) == " one two three one"
    assert generation.outcome.stop_reason == "max_tokens"


def test_held_back_is_the_longest_end_that_starts_a_stop_sequence():
    assert _held_back("abc", ("cde",)) == 1
    assert _held_back("abcd", ("cdx", "bcdy")) == 3
    assert _held_back("abc", ("xyz",)) == 0
    assert _held_back("", ("a",)) == 0


def test_the_deadline_ends_a_generation_with_a_reason(served, worker):
    pieces, generation = run(
        served, worker, prompt="Hello", max_tokens=4000, max_distance=0.5, deadline_s=0.05
    )
    outcome = generation.outcome
    assert outcome.stop_reason == "deadline" and outcome.finish_reason == "length"
    assert outcome.stopped == "deadline: the server's limit of 0.05 s per request"
    assert 0 < outcome.completion_tokens < 4000 and "".join(p.text for p in pieces).startswith(" one")


def test_an_abstention_is_an_answer_that_says_so(served, worker):
    pieces, generation = run(served, worker, prompt="unrelated words", max_tokens=5, max_distance=0.0)
    outcome = generation.outcome
    assert [p.text for p in pieces] == [""] and pieces[0].steps[0].token_id is None
    assert outcome.abstained and outcome.stop_reason == "abstained" and outcome.completion_tokens == 0
    assert outcome.summary()["abstained"] is True


def test_a_prompt_without_tokens_is_refused_before_anything_is_sent(served, worker):
    with pytest.raises(InferenceError, match="no tokens"):
        run(served, worker, prompt="", max_tokens=5, max_distance=0.5)


def test_context_tokens_continue_an_earlier_exchange_and_bad_ids_are_refused(served, worker):
    pieces, generation = run(served, worker, prompt=" one", max_tokens=2, max_distance=0.5, context=(HELLO,))
    assert "".join(p.text for p in pieces) == " two three"
    assert generation.outcome.prompt_token_ids == [HELLO, ONE]
    with pytest.raises(InferenceError, match="not a token id"):
        run(served, worker, prompt="x", max_tokens=2, max_distance=0.5, context=(10**9,))


def test_stop_reasons_are_named_from_the_models_messages():
    assert stop_reason_of("max_tokens (5)") == "max_tokens"
    assert stop_reason_of("end of the training text: a.txt chunk 0 ends here") == "end_of_text"
    assert stop_reason_of("abstained: the nearest deployed context is at distance 0.7") == "abstained"
    assert stop_reason_of("something new") == "other"
