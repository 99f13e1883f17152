"""One rule decides whether a stored seed row reproduces (DESIGN §5), for the gate and for deployment."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from hasher_core.search.reproduce import check_reproduction
from hasher_resources.sha256 import evaluate
from hasher_tests.core.bundle.test_bundle import make_checkpoints


def marked_unsolved_although_it_reaches_its_difficulty(rows: int = 6) -> tuple[pa.Table, int]:
    """Checkpoint rows with real goldens where row 0, an exact-token solve at 17 bits, says
    ``solved=False``: the row the gate once passed and deployment verification then failed."""
    table = make_checkpoints(rows, seed=11)
    solved = table.column("solved").to_pylist()
    assert solved[0] and table.column("matched_bits")[0].as_py() >= table.column("difficulty_bits")[0].as_py()
    solved[0] = False
    return table.set_column(table.schema.get_field_index("solved"), "solved", pa.array(solved)), 0


def recomputed(table: pa.Table) -> np.ndarray:
    slots = np.stack([table.column(f"asic_slot_{i}").to_numpy().view(np.uint32) for i in range(12)], axis=1)
    seeds = np.frombuffer(b"".join(table.column("best_seed").to_pylist()), np.uint8).reshape(-1, 32)
    return evaluate(slots, seeds, header_time=0, backend="reference")


def test_rows_whose_every_claim_follows_from_the_golden_reproduce():
    table = make_checkpoints(8, seed=2)
    found = check_reproduction(table, recomputed(table))
    assert found.consistent.all() and [found.problems(k) for k in range(8)] == [[]] * 8


def test_a_row_marked_unsolved_whose_golden_reaches_its_difficulty_does_not_reproduce():
    table, row = marked_unsolved_although_it_reaches_its_difficulty()
    found = check_reproduction(table, recomputed(table))
    assert found.consistent.tolist() == [k != row for k in range(table.num_rows)]
    assert found.problems(row) == ["solved=True at 17 bits, stored False"]


def test_a_row_claiming_a_solve_its_golden_does_not_give_fails_on_the_solved_flag_and_the_token():
    table = make_checkpoints(4, seed=5)
    row = table.column("solved").to_pylist().index(False)
    solved = table.column("solved").to_pylist()
    solved[row] = True
    table = table.set_column(table.schema.get_field_index("solved"), "solved", pa.array(solved))
    problems = check_reproduction(table, recomputed(table)).problems(row)
    assert problems[0].startswith("solved=False at 17 bits, stored True")
    assert problems[1].startswith("predicts token ")


def test_a_wrong_golden_is_named_with_both_values_and_what_it_changes():
    table = make_checkpoints(2, seed=9)  # row 0 solved at 17 bits, row 1 not
    golden = recomputed(table)
    wrong = golden.copy()
    wrong[0] ^= np.uint32(0x80000000)  # the top bit: no leading bit matches the target any more
    found = check_reproduction(table, wrong)
    assert found.consistent.tolist() == [False, True]
    assert found.problems(0) == [
        f"golden {int(wrong[0]):08x}, stored {int(golden[0]):08x}",
        f"matches 0 leading bits, stored {table.column('matched_bits')[0].as_py()}",
        "solved=False at 17 bits, stored True",
        f"predicts token {int(wrong[0]) >> 15}, not {table.column('target_token_id')[0].as_py()}",
    ]
