"""Inference (DESIGN §6.1): exact contexts, ambiguous ones, the nearest frame, abstention, recall.

The model's logic is tested on a small bundle with a stand-in for stage 2 (a context's slots are a
function of its last token) and for the kernel (a seed's first bytes say which token its golden
stands for), so each rule shows without a 2^17 search; the real path is the end-to-end test.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from hasher_core import design
from hasher_core.bundle import build_bundle
from hasher_core.errors import InferenceError
from hasher_core.frames.tokens import load_cl100k
from hasher_core.inference import Model
from hasher_core.inference.model import MIN_SUFFIX_TOKENS
from hasher_tests.core.bundle.test_bundle import make_checkpoints

ENCODING = load_cl100k()


def slots_of_last_token(tokens: np.ndarray, begin: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Stand-in for stage 2: a context's slots hold its last token in feature 0 (slot 0's high half),
    so neighbouring token ids are near neighbours over the dequantised features."""
    out = np.zeros((len(end), design.SLOT_COUNT), np.uint32)
    out[:, 0] = np.asarray(tokens)[np.asarray(end) - 1].astype(np.uint32) << np.uint32(16)
    return out


def golden_from_seed(slots: np.ndarray, seeds: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Stand-in for the kernel: the golden whose top 17 bits are the token in seed bytes 0–3."""
    return (seeds[:, :4].copy().view("<u4")[:, 0] << np.uint32(15)).astype(np.uint32)


def bundle_from(slots: np.ndarray, targets, answers, chunk_ids, window_ends, **table_options):
    """A one-partition bundle (doc.txt) of frames with these slots uint32[N, 12], targets, chunk ids
    and window ends, whose seeds give back ``answers`` (through :func:`golden_from_seed`)."""
    return build_bundle(
        {"doc.txt": checkpoints_from(slots, targets, answers, chunk_ids, window_ends, **table_options)},
        pipeline_version="test",
    )


def checkpoints_from(
    slots: np.ndarray,
    targets,
    answers,
    chunk_ids,
    window_ends,
    *,
    partition: str = "doc.txt",
    difficulty_bits: int = design.TOKEN_BITS,
    solved: bool = True,
):
    """:func:`bundle_from`'s checkpoint table of one partition, its rows searched at
    ``difficulty_bits`` and ``solved`` (or not) there."""
    table = make_checkpoints(len(slots), solved_every=1, partition=partition)
    for k in range(design.SLOT_COUNT):
        name = f"asic_slot_{k}"
        table = table.set_column(table.column_names.index(name), name, pa.array(slots[:, k].view(np.int32)))
    seeds = np.zeros((len(slots), design.SEED_BYTES), np.uint8)
    seeds[:, :4] = np.asarray(answers).astype("<u4").view(np.uint8).reshape(-1, 4)
    columns = {
        "target_token_id": pa.array(np.asarray(targets, np.int32)),
        "best_seed": pa.array([s.tobytes() for s in seeds], pa.binary()),
        "chunk_id": pa.array(np.asarray(chunk_ids, np.int32)),
        "window_end": pa.array(np.asarray(window_ends, np.int32)),
        "fingerprint": pa.array([f"{partition}-fp{i:04d}" for i in range(len(slots))]),
        "difficulty_bits": pa.array(np.full(len(slots), difficulty_bits, np.int32)),
        "solved": pa.array(np.full(len(slots), solved)),
    }
    for name, values in columns.items():
        table = table.set_column(table.column_names.index(name), name, values)
    return table


def bundle_of(rows: list[tuple[int, int, int]]):
    """A bundle of rows ``(context's last token, target, token the seed answers)``, in that order."""
    last, target, answer = (np.array(c) for c in zip(*rows, strict=True))
    slots = slots_of_last_token(last, np.arange(len(rows)), np.arange(1, len(rows) + 1))
    return bundle_from(slots, target, answer, np.zeros(len(rows)), np.arange(1, len(rows) + 1))


def model_of(rows: list[tuple[int, int, int]]) -> Model:
    return Model(
        bundle_of(rows),
        encoding=ENCODING,
        window_size=8,
        window_slots=slots_of_last_token,
        evaluate_rows=golden_from_seed,
    )


def test_an_exact_context_answers_with_the_token_its_seed_gives_back():
    model = model_of([(100, 200, 200), (300, 400, 400)])
    step = model.step([7, 8, 100])
    assert (step.token_id, step.exact, step.distance, step.ambiguous) == (200, True, 0.0, False)
    assert step.source_file == "doc.txt" and step.text == ENCODING.decode([200])


def test_a_seed_that_does_not_give_back_its_trained_token_answers_no_token():
    # The seed's golden stands for 999, the frame was trained on 200: neither is reported as the answer.
    model = model_of([(100, 200, 999)])
    step = model.step([100])
    assert (step.token_id, step.text, step.exact) == (None, "", True)
    assert "does not give back its trained token 200: its seed's golden stands for 999" in step.reason
    assert step.as_json()["reason"] == step.reason
    generation = model.generate("x", max_tokens=3)  # "x" is not token 100: the nearest frame is it
    assert generation.tokens == () and generation.stopped == f"abstained: {generation.steps[0].reason}"


def test_an_ambiguous_context_answers_its_most_frequent_target():
    model = model_of([(100, 5, 5), (100, 7, 7), (100, 7, 7), (300, 9, 9)])
    step = model.step([100])
    assert step.token_id == 7 and step.ambiguous and step.candidates == 3


def test_a_tie_goes_to_the_first_row_in_source_order():
    assert model_of([(100, 5, 5), (100, 7, 7)]).step([100]).token_id == 5
    assert model_of([(100, 7, 7), (100, 5, 5)]).step([100]).token_id == 7


def test_an_unseen_context_goes_to_the_nearest_frame_and_says_how_far():
    model = model_of([(100, 200, 200), (300, 400, 400)])
    step = model.step([101], max_distance=1.0)  # feature 101 sits next to feature 100
    assert step.token_id == 200 and not step.exact and 0 < step.distance < 0.001
    assert step.window_end == 1


def test_beyond_max_distance_the_model_abstains_and_generation_stops():
    model = model_of([(100, 200, 200)])
    far = model.step([30_000], max_distance=0.01)
    assert far.token_id is None and far.distance > 0.01 and far.text == ""
    generation = model.generate("anything at all", max_tokens=5, max_distance=0.0)
    assert generation.tokens == () and generation.stopped.startswith(
        "abstained: the nearest deployed context"
    )


def test_generation_appends_each_answer_to_the_context():
    (hello,) = ENCODING.encode_ordinary("Hello")
    model = model_of([(hello, 200, 200), (200, 300, 300), (300, hello, hello)])
    generation = model.generate("Hello", max_tokens=4)
    assert generation.tokens == (200, 300, hello, 200) and generation.stopped == "max_tokens (4)"
    assert generation.continuation == ENCODING.decode([200, 300, hello, 200])
    assert [s["token_id"] for s in generation.as_json()["steps"]] == [200, 300, hello, 200]
    assert all(s["exact"] for s in generation.as_json()["steps"])


def test_a_context_without_tokens_is_a_clear_error():
    with pytest.raises(InferenceError, match="no tokens"):
        model_of([(100, 200, 200)]).step([])


def test_recall_counts_right_answers_ambiguity_and_verbatim_recitation():
    # Chunk [1, 100, 200, 300]: contexts ending 1 → 100, 100 → 200, 200 → 300 (all answered right;
    # the last is ambiguous: trained with 300 and 7, a tie that the first in source order wins).
    # Chunk [1, 100, 5]: 1 → 100 right, then 100 → 200 where the text says 5.
    model = model_of([(100, 200, 200), (200, 300, 300), (200, 7, 7), (1, 100, 100)])
    recall = model.recall([np.array([1, 100, 200, 300]), np.array([1, 100, 5])])
    assert (recall.contexts, recall.chunks, recall.ambiguous, recall.abstained) == (5, 2, 1, 0)
    assert recall.correct == 4 and recall.correct_unambiguous == 3 and recall.recall == 0.75
    assert (recall.mean_verbatim, recall.min_verbatim) == (2.0, 1)
    assert recall.as_metadata()["mean_tokens_recited_verbatim"] == 2.0


WINDOW = 8


def slots_of_window(tokens: np.ndarray, begin: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Stand-in for stage 2 that tells every window apart: slot 0's high half is the last token (so
    near windows are near), slots 1–11 a hash of the whole token sequence."""
    tokens = np.asarray(tokens)
    out = np.zeros((len(end), design.SLOT_COUNT), np.uint32)
    for k, (b, e) in enumerate(zip(begin, end, strict=True)):
        digest = np.frombuffer(hashlib.sha256(tokens[b:e].astype("<i8").tobytes()).digest(), np.uint32)
        out[k, 0] = np.uint32(tokens[e - 1]) << np.uint32(16)
        out[k, 1:] = np.resize(digest, design.SLOT_COUNT - 1)
    return out


def recitation_model(chunks: list[str] | dict[str, list[str]], window: int = WINDOW) -> Model:
    """A model trained on ``chunks`` of doc.txt, or on ``{file: chunks}`` (stage 2's frames: each
    chunk's windows of at most ``WINDOW`` tokens and their next token), with seeds that give back
    every target. ``window`` is the window size."""
    files = chunks if isinstance(chunks, dict) else {"doc.txt": chunks}
    tables = {}
    for name, texts in files.items():
        rows = []
        for chunk_id, text in enumerate(texts):
            tokens = np.asarray(ENCODING.encode_ordinary(text), np.int64)
            for end in range(1, tokens.size):
                begin = max(0, end - window)
                rows.append((chunk_id, end, slots_of_window(tokens, [begin], [end])[0], int(tokens[end])))
        chunk_ids, ends, slots, targets = (np.array(c) for c in zip(*rows, strict=True))
        tables[name] = checkpoints_from(slots, targets, targets, chunk_ids, ends, partition=name)
    return Model(
        build_bundle(tables, pipeline_version="test"),
        encoding=ENCODING,
        window_size=window,
        window_slots=slots_of_window,
        evaluate_rows=golden_from_seed,
    )


# Two chunks of one text overlapping by three words, as the inbox chunker makes them (DESIGN §2).
FIRST = "We hold these truths to be self-evident, that all men are created equal"
SECOND = "are created equal, that they are endowed by their Creator with certain rights."


def test_a_recitation_crosses_into_the_next_overlapping_chunk_and_stops_at_the_end_of_the_text():
    model = recitation_model([FIRST, SECOND])
    generation = model.generate("We hold", max_tokens=200)
    assert "We hold" + generation.continuation == FIRST + SECOND[len("are created equal") :]
    assert all(step.exact for step in generation.steps)
    # Past the first chunk's window, its 8-token context is answered by a shorter suffix: the start
    # of the second chunk ("are created equal", re-tokenised without its leading space).
    bridge = generation.steps[len(ENCODING.encode_ordinary(FIRST)) - len(ENCODING.encode_ordinary("We hold"))]
    assert (bridge.text, bridge.window_end, bridge.matched_tokens) == (",", 3, 3)
    assert generation.stopped == (
        "end of the training text: doc.txt chunk 1 ends here and no deployed frame continues it"
    )
    assert len(generation.steps) == len(generation.tokens)  # nothing was produced past the end


def test_without_the_next_chunk_the_recitation_stops_where_its_chunk_ends():
    model = recitation_model([FIRST])
    generation = model.generate("We hold", max_tokens=200)
    assert "We hold" + generation.continuation == FIRST
    assert generation.stopped.startswith("end of the training text: doc.txt chunk 0 ends here")
    # One step on, the same context is just an unseen one: the nearest frame answers it.
    after = model.step(list(ENCODING.encode_ordinary(FIRST)), max_distance=10.0)
    assert not after.exact and after.distance > 0


# --- answers that claim to be exact (a seed must give back its trained token) ------------------------


def rows_model(tables: dict[str, pa.Table]) -> Model:
    return Model(
        build_bundle(tables, pipeline_version="test"),
        encoding=ENCODING,
        window_size=8,
        window_slots=slots_of_last_token,
        evaluate_rows=golden_from_seed,
    )


def table_of(rows: list[tuple[int, int, int]], **options) -> pa.Table:
    """:func:`bundle_of`'s rows as one partition's checkpoint table (``checkpoints_from`` options)."""
    last, target, answer = (np.array(c) for c in zip(*rows, strict=True))
    slots = slots_of_last_token(last, np.arange(len(rows)), np.arange(1, len(rows) + 1))
    ends = np.arange(1, len(rows) + 1)
    return checkpoints_from(slots, target, answer, np.zeros(len(rows)), ends, **options)


@pytest.mark.parametrize("bits", [1, 8, 12, 16])
def test_a_seed_searched_below_17_bits_is_never_reported_as_the_token(bits):
    # Solved at `bits`: the golden agrees with the target in its top `bits` bits and no further.
    target = 7060
    given = target ^ (1 << (design.TOKEN_BITS - bits - 1))
    table = table_of([(100, target, given)], partition="low.txt", difficulty_bits=bits)
    model = rows_model({"low.txt": table})
    step = model.step([100])
    assert step.token_id is None and step.exact
    assert f"its seed was searched at {bits} bits, which fix only the top {bits}" in step.reason
    assert "retrain with difficulty_bits >= 17" in step.reason
    recall = model.recall([np.array([100, target])])
    assert (recall.correct, recall.abstained, recall.recall) == (0, 1, 0.0)


def test_an_unsolved_row_at_17_bits_is_never_reported_as_the_token():
    model = rows_model({"doc.txt": table_of([(100, 200, 201)], solved=False)})
    step = model.step([100])
    assert step.token_id is None and "its search did not solve the frame" in step.reason
    assert "hasher predict --frame-index 0" in step.reason


@pytest.mark.parametrize("given", [100256, 100261, 100275, 100277, 100348, 2**17 - 1])
def test_a_golden_whose_top_17_bits_are_no_token_id_never_crashes(given):
    # cl100k's ids stop at 100276 and leave gaps; a golden's top 17 bits go up to 131071 (at 1 bit,
    # on a large deployment, the recall check crashed with KeyError: 'Invalid token for decoding').
    model = rows_model({"doc.txt": table_of([(100, 200, given), (200, 300, 300)], difficulty_bits=1)})
    step = model.step([100])
    assert step.token_id is None and f"stands for {given}, which is no token id" in step.reason
    assert model.recall([np.array([100, 200, 300])]).correct == 1
    assert model.generate("x", max_tokens=2).tokens == ()


def test_a_low_bit_file_deployed_beside_an_exact_one_still_answers_no_token():
    model = rows_model(
        {
            "exact.txt": table_of([(100, 200, 200)], partition="exact.txt"),
            "trial.txt": table_of(
                [(300, 400, 401), (500, 600, 600)], partition="trial.txt", difficulty_bits=8
            ),
        }
    )
    assert model.step([100]).token_id == 200
    assert model.step([300]).token_id is None and "searched at 8 bits" in model.step([300]).reason
    # A low-bit seed whose golden happens to carry the whole token does give it back: it is the token.
    assert model.step([500]).token_id == 600


def test_a_context_trained_in_both_files_answers_from_the_row_searched_at_17_bits():
    # Same context, same next token, in a trial file (8 bits, first in source order) and an exact one.
    model = rows_model(
        {
            "a_trial.txt": table_of([(100, 200, 201)], partition="a_trial.txt", difficulty_bits=8),
            "b_exact.txt": table_of([(100, 200, 200)], partition="b_exact.txt"),
        }
    )
    step = model.step([100])
    assert (step.token_id, step.source_file, step.candidates) == (200, "b_exact.txt", 2)


# --- when a suffix of the context is trusted ----------------------------------------------------------

MIT = "Permission is hereby granted to any person obtaining a copy, subject to"
TUTORIAL = "to loop over a list in Python, use a for statement"


@pytest.mark.parametrize("tutorial", [TUTORIAL, " " + TUTORIAL])
def test_a_one_token_suffix_matching_another_files_chunk_start_does_not_continue_the_recitation(tutorial):
    # " to" ends the licence; another file's chunk starts with "to" (or " to": a Data Miner chunk may
    # keep its leading space). Its first frame is a one-token window: it says nothing about the text.
    model = recitation_model({"license.txt": [MIT], "tutorial.txt": [tutorial]})
    generation = model.generate("Permission is hereby", max_tokens=60)
    assert "Permission is hereby" + generation.continuation == MIT
    assert all(step.exact and step.source_file == "license.txt" for step in generation.steps)
    assert generation.stopped.startswith("end of the training text: license.txt chunk 0 ends here")


def test_a_short_suffix_of_another_files_overlap_does_not_bridge_into_it():
    # The same three words that bridge doc.txt's chunks start a chunk of another file: only the
    # file being recited continues.
    other = "are created equal, said nobody in this other file at all."
    model = recitation_model({"a_other.txt": [other], "doc.txt": [FIRST]})
    generation = model.generate("We hold", max_tokens=200)
    assert "We hold" + generation.continuation == FIRST
    assert generation.stopped.startswith("end of the training text: doc.txt chunk 0 ends here")


def test_a_prompt_ending_with_a_chunks_first_words_answers_exactly_only_when_long_enough():
    # A 16-token window: the prompt is shorter, so only a suffix of it can match the chunk's frame.
    model = recitation_model([FIRST, SECOND], window=16)
    opening = "We hold these truths to be self-evident"
    length = len(ENCODING.encode_ordinary(opening))
    assert MIN_SUFFIX_TOKENS <= length < 16
    long = model.step(ENCODING.encode_ordinary("Recite this: " + opening), max_distance=0.0)
    assert long.exact and long.text == "," and long.matched_tokens == length
    short = model.step(ENCODING.encode_ordinary("Recite this: We hold"), max_distance=0.0)
    assert not short.exact and short.token_id is None
