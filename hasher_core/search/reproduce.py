"""Whether a stored seed row reproduces (DESIGN §5): the one rule both the checkpoints gate and the
deployment's read-back verification apply to a golden recomputed from the row's slots, seed and
header time.

A row reproduces when everything it claims follows from the recomputed golden: the golden itself,
its matched bits against the target word (DESIGN §4.3), its solved flag (solved exactly when the
matched bits reach the row's difficulty, as the search decides it; a row marked unsolved whose golden
does reach its difficulty is as wrong as the opposite), and, for a row solved at 17 bits or more, the
token it gives back (``golden >> 15``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from hasher_core.design import TOKEN_BITS
from hasher_core.header import golden_token, leading_equal_bits, target_word

#: The columns of a seed row the rule reads (seeds, checkpoints and bundle tables all carry them).
CLAIM_COLUMNS = ("golden", "target_token_id", "matched_bits", "difficulty_bits", "solved")


@dataclass(frozen=True)
class Reproduction:
    """Per row (bool[N] each), which claims the recomputed golden contradicts, with what it recomputed."""

    recomputed: np.ndarray  # uint32[N]
    matched: np.ndarray  # int64[N]: leading bits of the recomputed golden equal to the target word's
    stored_golden: np.ndarray  # uint32[N]
    stored_matched: np.ndarray  # int64[N]
    difficulty: np.ndarray  # int64[N]
    claims_solved: np.ndarray  # bool[N]
    target: np.ndarray  # int64[N]
    golden_differs: np.ndarray
    matched_differs: np.ndarray
    solved_differs: np.ndarray
    token_differs: np.ndarray

    @property
    def consistent(self) -> np.ndarray:
        """bool[N]: the rows whose every claim the recomputed golden confirms."""
        return ~(self.golden_differs | self.matched_differs | self.solved_differs | self.token_differs)

    def problems(self, k: int) -> list[str]:
        """What row ``k`` claims that its recomputed golden contradicts, one phrase each (empty when
        it reproduces)."""
        out = []
        if self.golden_differs[k]:
            out.append(f"golden {int(self.recomputed[k]):08x}, stored {int(self.stored_golden[k]):08x}")
        if self.matched_differs[k]:
            out.append(f"matches {int(self.matched[k])} leading bits, stored {int(self.stored_matched[k])}")
        if self.solved_differs[k]:
            out.append(
                f"solved={not self.claims_solved[k]} at {int(self.difficulty[k])} bits, "
                f"stored {bool(self.claims_solved[k])}"
            )
        if self.token_differs[k]:
            out.append(f"predicts token {int(golden_token(self.recomputed[k]))}, not {int(self.target[k])}")
        return out


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def check_reproduction(table: pa.Table, recomputed: np.ndarray) -> Reproduction:
    """The rule above for every row of ``table`` (a seed table with :data:`CLAIM_COLUMNS`) against
    ``recomputed`` uint32[N], the goldens of its rows recomputed on an independent path."""
    recomputed = np.asarray(recomputed, dtype=np.uint32)
    target = _column(table, "target_token_id").astype(np.int64)
    stored_golden = _column(table, "golden").astype(np.uint32)
    stored_matched = _column(table, "matched_bits").astype(np.int64)
    difficulty = _column(table, "difficulty_bits").astype(np.int64)
    claims_solved = _column(table, "solved").astype(bool)
    matched = leading_equal_bits(recomputed, target_word(target)).astype(np.int64)
    return Reproduction(
        recomputed=recomputed,
        matched=matched,
        stored_golden=stored_golden,
        stored_matched=stored_matched,
        difficulty=difficulty,
        claims_solved=claims_solved,
        target=target,
        golden_differs=recomputed != stored_golden,
        matched_differs=matched != stored_matched,
        solved_differs=(matched >= difficulty) != claims_solved,
        token_differs=claims_solved & (difficulty >= TOKEN_BITS) & (golden_token(recomputed) != target),
    )
