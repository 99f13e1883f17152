"""Inference (DESIGN §6.1): exact contexts, ambiguous ones, the nearest frame, abstention, recall.

The model's logic is tested on a small bundle with a stand-in for stage 2 (a context's slots are a
function of its last token) and for the kernel (a seed's first bytes say which token its golden
stands for), so each rule shows without a 2^17 search; the real path is the end-to-end test.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from hasher_core import design
from hasher_core.bundle import build_bundle
from hasher_core.errors import InferenceError
from hasher_core.frames.tokens import load_cl100k
from hasher_core.inference import Model
from hasher_tests.core.test_bundle import make_checkpoints

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


def bundle_of(rows: list[tuple[int, int, int]]):
    """A bundle of rows ``(context's last token, target, token the seed answers)``, in that order."""
    table = make_checkpoints(len(rows), solved_every=1, partition="doc.txt")
    last, target, answer = (np.array(c) for c in zip(*rows, strict=True))
    slots = slots_of_last_token(last, np.arange(len(rows)), np.arange(1, len(rows) + 1))
    for k in range(design.SLOT_COUNT):
        name = f"asic_slot_{k}"
        table = table.set_column(table.column_names.index(name), name, pa.array(slots[:, k].view(np.int32)))
    seeds = np.zeros((len(rows), design.SEED_BYTES), np.uint8)
    seeds[:, :4] = answer.astype("<u4").view(np.uint8).reshape(-1, 4)
    columns = {
        "target_token_id": pa.array(target.astype(np.int32)),
        "best_seed": pa.array([s.tobytes() for s in seeds], pa.binary()),
        "chunk_id": pa.array(np.zeros(len(rows), np.int32)),
        "window_end": pa.array(np.arange(1, len(rows) + 1, dtype=np.int32)),
        "fingerprint": pa.array([f"fp{i:04d}" for i in range(len(rows))]),
    }
    for name, values in columns.items():
        table = table.set_column(table.column_names.index(name), name, values)
    return build_bundle({"doc.txt": table}, pipeline_version="test")


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


def test_the_answer_is_what_the_seed_gives_back_not_the_stored_target():
    assert model_of([(100, 200, 999)]).step([100]).token_id == 999


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
