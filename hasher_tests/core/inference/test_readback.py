"""Inference readback: ``predict`` on a bundle and the ``hasher predict`` command line."""

from __future__ import annotations

import numpy as np
import pytest

from hasher_core.bundle import Bundle, build_bundle
from hasher_core.errors import PredictInputError
from hasher_core.header import seed_with_nonce
from hasher_core.inference.readback import predict, predict_row
from hasher_resources.sha256 import evaluate
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_tests.core.bundle.test_bundle import make_checkpoints

REFERENCE = Sha256Kernel(backend="reference")


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    # 8 rows, pairs share slots; even rows solved (target = golden), odd rows not.
    return build_bundle({"a.txt": make_checkpoints(8, seed=3)}, pipeline_version="0.1.0")


def row_of(bundle: Bundle, solved: bool) -> int:
    return bundle.seeds.column("solved").to_pylist().index(solved)


def test_a_solving_seed_predicts_its_target_token(bundle):
    row = row_of(bundle, True)
    p = predict(bundle, bundle.slots()[row], REFERENCE.evaluate_rows, backend="reference")
    target = bundle.seeds.column("target_token_id")[row].as_py()
    assert p.solved and target in p.token_ids
    # the golden is recomputed, not read back: it agrees with an independent kernel call
    golden = evaluate(bundle.slots()[row : row + 1], bundle.best_seeds()[row : row + 1], backend="reference")[
        0
    ]
    assert int(golden) >> 15 == target  # DESIGN §4.3: the token sits in the golden's top 17 bits
    assert "solved: token" in p.describe()


def test_frames_sharing_slots_return_every_candidate(bundle):
    row = row_of(bundle, True)
    p = predict(bundle, bundle.slots()[row], REFERENCE.evaluate_rows, backend="reference")
    assert len(p.candidates) == 2
    assert sorted(c.solves for c in p.candidates) == [False, True]
    assert p.token_ids == tuple(c.golden >> 15 for c in p.candidates if c.solves)


def test_a_seed_that_misses_says_it_does_not_solve(bundle):
    t = make_checkpoints(2, seed=9, solved_every=0)
    unsolved = build_bundle({"u": t}, pipeline_version="0.1.0")
    p = predict(unsolved, unsolved.slots()[0], REFERENCE.evaluate_rows, backend="reference")
    assert not p.solved and p.token_id is None and len(p.candidates) == 2
    assert not any(c.solves for c in p.candidates)
    assert p.describe().startswith("not solved: best of 2 candidate row(s) matches")


def test_unknown_frame_has_no_candidates(bundle):
    p = predict(bundle, [1] * 12, REFERENCE.evaluate_rows, backend="reference")
    assert not p.solved and p.candidates == ()
    assert p.describe() == f"no seed for this frame in bundle {bundle.version}: not solved"


def test_int32_bit_cast_slots_are_the_same_frame(bundle):
    row = row_of(bundle, True)
    as_int32 = bundle.slots()[row].view(np.int32).tolist()
    assert (
        predict(bundle, as_int32, REFERENCE.evaluate_rows, backend="reference").token_ids
        == predict_row(bundle, row, REFERENCE.evaluate_rows, backend="reference").token_ids
    )


def test_the_wrong_header_time_does_not_reproduce(bundle):
    row = row_of(bundle, True)
    p = predict(bundle, bundle.slots()[row], REFERENCE.evaluate_rows, header_time=1, backend="reference")
    assert not p.solved


def test_a_known_vector_predicts_the_design_golden():
    """DESIGN §4.2 test vector: golden 0x18867801 stands for token 0x18867801 >> 15 = 12556 (§4.3)."""
    t = make_checkpoints(1, solved_every=0)
    import pyarrow as pa

    slots = [((i + 1) * 0x11111111) & 0xFFFFFFFF for i in range(12)]
    seed = seed_with_nonce(bytes(range(16)), 0x1C1D1E1F)
    for i, w in enumerate(slots):
        t = t.set_column(
            t.schema.get_field_index(f"asic_slot_{i}"),
            f"asic_slot_{i}",
            pa.array(np.array([w], np.uint32).view(np.int32)),
        )
    for name, value in {"best_seed": pa.array([seed]), "target_token_id": pa.array([12556], pa.int32()),
                        "golden": pa.array([0x18867801], pa.int64()), "matched_bits": pa.array([17]),
                        "solved": pa.array([True])}.items():  # fmt: skip
        t = t.set_column(t.schema.get_field_index(name), name, value)
    b = build_bundle({"vector": t}, pipeline_version="0.1.0")
    assert predict(b, slots, REFERENCE.evaluate_rows, backend="reference").token_ids == (12556,)


@pytest.mark.parametrize(
    ("slots", "message"),
    [([0] * 11, "a frame has 12 slots, got 11"), ([0] * 11 + [2**32], "slot value 4294967296 does not fit")],
)
def test_bad_slots_are_rejected(bundle, slots, message):
    with pytest.raises(PredictInputError, match=message):
        predict(bundle, slots, REFERENCE.evaluate_rows, backend="reference")


def test_frame_index_outside_the_bundle_is_rejected(bundle):
    with pytest.raises(PredictInputError, match="frame index 8 outside the bundle's 8 rows"):
        predict_row(bundle, 8, REFERENCE.evaluate_rows)
