"""Inference from text (DESIGN §6.1): a deployed bundle as an associative memory keyed by contexts.

A context is tokenised, its last ``window_size`` tokens are turned into slots exactly as training
did (the caller passes the same ``window_slots`` function stage 2 used), and the slots are looked up
among the deployed frames. Rows sharing the slots (one context seen with several next tokens)
resolve to the most frequent target (ties: the first in source order). When the last ``window_size``
tokens match no frame, the context's shorter suffixes that start at a word are tried next, longest
first: the frames at the start of a chunk have windows shorter than ``window_size``, and chunks
overlap (DESIGN §2), so this is how a recitation crosses from the end of one chunk into the next.
A suffix shorter than the window is trusted only when it is long enough to say where it is
(:data:`MIN_SUFFIX_TOKENS`) or when it continues the recitation in progress in the same source file
(the next frame of the chunk the previous exact step came from, or the start of that file's next
chunk after its last frame): a one-token suffix such as " to" is the first frame of many chunks and
says nothing about which text the context is in. A context neither finds goes to the nearest
deployed frame by Euclidean distance over the 24 dequantised features, said with its distance, and
beyond ``max_distance`` the model abstains.
Greedy generation stops at the end of the training text: after the last frame of a chunk answered
exactly, a context nothing continues is the end of that text, not a question for the nearest frame.
The chosen row's seed is run through the 21-pass recursion on the kernel and the answer is the token
its golden stands for, ``golden >> 15`` (DESIGN §4.3): the bundle's stored golden is never trusted for it.
That token is the answer only when it is the row's trained token (the rule ``hasher predict
--frame-index`` applies: the row *solves*); a seed searched below 17 bits fixes only a prefix of the
token's bits and an unsolved row's golden stands for some other token (or for no token id at all),
so such a step has no token and says why (``Step.reason``).

:meth:`Model.recall` measures the honest figure of a deployment: the share of its training contexts
whose one-step answer is their next token, and how many tokens of each chunk it recites verbatim.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import tiktoken

from hasher_core.bundle import Bundle
from hasher_core.design import TOKEN_BITS
from hasher_core.errors import InferenceError
from hasher_core.frames.tokens import encode_ordinary, token_text
from hasher_core.frames.windows import unpack_slots
from hasher_core.header import golden_token

from .readback import RowEvaluator

#: ``(tokens int[T], begin int[n], end int[n]) -> slots uint32[n, 12]``: stage 2's window slots.
WindowSlots = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
#: Beyond this distance over the dequantised features the model abstains. Measured with the offline
#: embedder on the bundled sample texts (``python -m hasher_tests.end_to_end.max_distance``): the
#: guesses a recitation needs lie at 0.015, a context one token past a trained one at 0.018–0.058,
#: unrelated prompts at 0.24–0.58; the default sits between them. The distance says how far a
#: context is from what was trained, not whether the answer is right.
DEFAULT_MAX_DISTANCE = 0.15
#: A suffix of the context this long or longer that a deployed frame has exactly answers exactly even
#: without a recitation to continue (a prompt that ends with a chunk's first words). In the sample
#: texts a chunk's first 1–6 tokens also occur elsewhere (``The "with" statement``), never 7 or more;
#: a bridge between overlapping chunks matches their 25-word overlap, far more.
MIN_SUFFIX_TOKENS = 8


@dataclass(frozen=True)
class Step:
    """One answer: the token (None when the model abstains), its text, how it was found."""

    token_id: int | None
    text: str
    exact: bool
    distance: float | None
    source_file: str | None
    window_end: int | None
    row: int | None
    candidates: int
    ambiguous: bool
    #: Tokens of context the answering frame was matched on: the window, or a suffix of it.
    matched_tokens: int = 0
    #: Why there is no token (None when there is one): the nearest context is too far, or the frame
    #: that answers has a seed that does not give back its trained token.
    reason: str | None = None

    def as_json(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k not in ("row", "candidates", "ambiguous")}


@dataclass(frozen=True)
class Generation:
    """A greedy continuation: every step, the tokens and text it produced, and why it stopped."""

    prompt: str
    tokens: tuple[int, ...]
    continuation: str
    steps: tuple[Step, ...]
    stopped: str
    bundle: str

    def as_json(self) -> dict[str, object]:
        return {
            "prompt": self.prompt,
            "continuation": self.continuation,
            "tokens": list(self.tokens),
            "steps": [s.as_json() for s in self.steps],
            "stopped": self.stopped,
            "bundle": self.bundle,
        }


@dataclass(frozen=True)
class Recall:
    """One-step inference on training contexts (DESIGN §6.1's honest measure of a deployment)."""

    contexts: int
    correct: int
    ambiguous: int
    correct_unambiguous: int
    abstained: int
    chunks: int
    mean_verbatim: float
    min_verbatim: int

    @property
    def recall(self) -> float:
        """Share of unambiguous contexts answered with their next token (1.0 when there is none)."""
        unambiguous = self.contexts - self.ambiguous
        return self.correct_unambiguous / unambiguous if unambiguous else 1.0

    def summary(self) -> str:
        """One line for logs and the check's description: recall, counts and verbatim recitation."""
        unambiguous = self.contexts - self.ambiguous
        return (
            f"recall {self.recall:.2%} ({self.correct_unambiguous}/{unambiguous} unambiguous contexts), "
            f"{self.ambiguous} ambiguous, {self.abstained} abstained (the answering frame's seed does not "
            f"give back its token); each chunk recited verbatim for "
            f"{self.mean_verbatim:.1f} tokens on average (min {self.min_verbatim}) "
            f"over {self.chunks} chunk(s)"
        )

    def as_metadata(self) -> dict[str, float | int]:
        return {
            "recall": round(self.recall, 6),
            "contexts": self.contexts,
            "correct": self.correct,
            "ambiguous_contexts": self.ambiguous,
            "abstentions": self.abstained,
            "chunks": self.chunks,
            "mean_tokens_recited_verbatim": round(self.mean_verbatim, 2),
            "min_tokens_recited_verbatim": self.min_verbatim,
        }


class Model:
    """A deployed bundle, ready to answer contexts. ``window_slots`` must be the recipe's stage-2
    function (same tokenizer, embedder and projection); ``evaluate_rows`` the kernel's."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        encoding: tiktoken.Encoding,
        window_size: int,
        window_slots: WindowSlots,
        evaluate_rows: RowEvaluator,
    ) -> None:
        if bundle.num_rows == 0:
            raise InferenceError(f"bundle {bundle.version} holds no seed")
        self.bundle = bundle
        self.encoding = encoding
        self.window_size = int(window_size)
        self.window_slots = window_slots
        self.evaluate_rows = evaluate_rows
        slots = bundle.slots()
        self._seeds = bundle.best_seeds()
        table = bundle.seeds
        self._targets = table.column("target_token_id").to_numpy()
        self._times = table.column("header_time").to_numpy()
        self._sources = table.column("source_file").to_pylist()
        self._window_ends = table.column("window_end").to_numpy()
        self._chunk_ids = table.column("chunk_id").to_numpy()
        self._source_ids = np.unique(np.asarray(self._sources, dtype=str), return_inverse=True)[1]
        self._chunk_end = _last_of_chunk(self._source_ids, self._chunk_ids, self._window_ends)
        self._solved = table.column("solved").to_numpy(zero_copy_only=False)
        self._difficulty = table.column("difficulty_bits").to_numpy()
        rows = np.ascontiguousarray(slots).view(np.dtype((np.void, slots.shape[1] * 4))).ravel()
        unique, first, group = np.unique(rows, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # groups in bundle (source) order
        self._index = {unique[g].tobytes(): i for i, g in enumerate(order)}
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        group = rank[group.reshape(-1)]
        self._group = group
        self._group_slots = slots[first[order]]
        # Rows whose record says their seed gives back their token answer first (DESIGN §4.3).
        exact_token = self._solved & (self._difficulty >= TOKEN_BITS)
        self._row, self._size, self._ambiguous = self._resolve(group, first[order], exact_token)
        self._features = _dequantised(self._group_slots)

    def _resolve(self, group: np.ndarray, first_rows: np.ndarray, solved: np.ndarray):
        """Per group: the row that answers (most frequent target, ties: first in source order; a
        row of it solved at 17 bits or more when there is one), the group's size, and whether its
        targets differ."""
        chosen = first_rows.astype(np.int64)
        size = np.bincount(group, minlength=first_rows.size)
        ambiguous = np.zeros(first_rows.size, bool)
        members: dict[int, list[int]] = {}
        for row in np.flatnonzero(size[group] > 1):
            members.setdefault(int(group[row]), []).append(int(row))
        for g, rows in members.items():
            targets = [int(self._targets[r]) for r in rows]
            counts: dict[int, int] = {}
            for t in targets:
                counts[t] = counts.get(t, 0) + 1
            best = max(counts.values())
            winner = next(t for t in targets if counts[t] == best)
            with_winner = [r for r in rows if self._targets[r] == winner]
            chosen[g] = next((r for r in with_winner if solved[r]), with_winner[0])
            ambiguous[g] = len(counts) > 1
        return chosen, size, ambiguous

    def context_windows(self, tokens: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tokens, begin, end)`` of the one window a context is answered from: its last
        ``window_size`` tokens. Raises :class:`InferenceError` for a context without tokens."""
        array = np.asarray(tokens, dtype=np.int64)
        if array.size == 0:
            raise InferenceError("the context has no tokens; give at least one word")
        return array, np.array([max(0, array.size - self.window_size)]), np.array([array.size])

    def answer(
        self,
        tokens: np.ndarray,
        begin: np.ndarray,
        end: np.ndarray,
        max_distance: float = DEFAULT_MAX_DISTANCE,
    ) -> list[Step]:
        """One step for each window ``tokens[begin[k]:end[k]]`` (batched: one slots call, one kernel call)."""
        slots = self.window_slots(np.asarray(tokens), np.asarray(begin), np.asarray(end))
        return self._answer_slots(slots, np.asarray(end) - np.asarray(begin), max_distance)

    def _answer_slots(self, slots: np.ndarray, matched: np.ndarray, max_distance: float) -> list[Step]:
        """One step for each row of window slots uint32[n, 12] made from ``matched[k]`` tokens."""
        groups = np.empty(slots.shape[0], np.int64)
        distance = np.zeros(slots.shape[0])
        exact = np.ones(slots.shape[0], bool)
        for k, words in enumerate(slots):
            hit = self._index.get(np.ascontiguousarray(words, np.uint32).tobytes())
            if hit is None:
                gaps = np.linalg.norm(self._features - _dequantised(words[None, :])[0], axis=1)
                hit = int(np.argmin(gaps))
                distance[k], exact[k] = float(gaps[hit]), False
            groups[k] = hit
        answering = exact | (distance <= max_distance)
        rows = self._row[groups[answering]]
        goldens = self.evaluate_rows(
            self._group_slots[groups[answering]], self._seeds[rows], self._times[rows]
        )
        given = iter(golden_token(goldens).tolist())
        steps = []
        for k in range(slots.shape[0]):
            g, row = int(groups[k]), int(self._row[groups[k]])
            token, reason = None, None
            if not answering[k]:
                reason = (
                    f"the nearest deployed context is at distance {distance[k]:.3f} "
                    f"> max_distance {max_distance}"
                )
            elif (seed_token := next(given)) == int(self._targets[row]):
                token = seed_token
            else:
                reason = self._not_reproduced(row, seed_token)
            steps.append(
                Step(
                    token_id=token,
                    text="" if token is None else token_text(self.encoding, token) or "",
                    exact=bool(exact[k]),
                    distance=round(float(distance[k]), 6),
                    source_file=self._sources[row],
                    window_end=int(self._window_ends[row]),
                    row=row,
                    candidates=int(self._size[g]) if exact[k] else 0,
                    ambiguous=bool(self._ambiguous[g]) and bool(exact[k]),
                    matched_tokens=int(matched[k]),
                    reason=reason,
                )
            )
        return steps

    def _not_reproduced(self, row: int, seed_token: int) -> str:
        """Why row ``row`` gives no token: its seed's golden stands for ``seed_token``, not its target."""
        text = token_text(self.encoding, seed_token)
        given = f"{seed_token} ({text!r})" if text is not None else f"{seed_token}, which is no token id"
        bits = int(self._difficulty[row])
        if bits < TOKEN_BITS:
            why = (
                f"its seed was searched at {bits} bits, which fix only the top {bits} of the token's "
                f"{TOKEN_BITS} bits (DESIGN §4.3): retrain with difficulty_bits >= {TOKEN_BITS}"
            )
        elif not self._solved[row]:
            why = f"its search did not solve the frame (`hasher predict --frame-index {row}` shows it)"
        else:
            why = f"the seed does not reproduce its golden (`hasher predict --frame-index {row}` shows it)"
        return (
            f"the deployed frame that answers ({self._sources[row]} chunk {self._chunk_ids[row]} "
            f"window_end {self._window_ends[row]}) does not give back its trained token "
            f"{int(self._targets[row])}: its seed's golden stands for {given}; {why}"
        )

    def step(
        self, context: Sequence[int], max_distance: float = DEFAULT_MAX_DISTANCE, *, after: Step | None = None
    ) -> Step:
        """The answer to one context given as token ids: its window exactly, else the longest
        trusted suffix starting at a word that a deployed frame has exactly, else the nearest frame.
        ``after`` is the step that produced the context's last token, if any (generation passes
        it): a short suffix is trusted when it continues that step's frame (module docstring)."""
        tokens, begin, _ = self.context_windows(context)
        window = tokens[int(begin[0]) :]
        slots = self.window_slots(window, np.array([0]), np.array([window.size]))
        matched = window.size
        if not self._has(slots[0]):
            found = self._longest_deployed_suffix(window, after)
            if found is not None:
                slots, matched = found
        return self._answer_slots(slots, np.array([matched]), max_distance)[0]

    def _longest_deployed_suffix(
        self, window: np.ndarray, after: Step | None = None
    ) -> tuple[np.ndarray, int] | None:
        """The slots (uint32[1, 12]) and length of the longest trusted suffix of ``window`` that a
        deployed frame has exactly: token suffixes (a frame further into a chunk whose tokens
        agree), and the text's suffixes from each word on, re-tokenised as a chunk starting there
        was (a chunk's first word has no leading space). A suffix is trusted when it has at least
        :data:`MIN_SUFFIX_TOKENS` tokens or continues ``after``'s frame (:meth:`_continues`). None
        when no trusted suffix is deployed."""
        candidates = [window[j:] for j in range(1, window.size)]
        text = self._text(window.tolist())
        for i in range(1, len(text)):
            if not text[i].isspace() and text[i - 1].isspace():
                candidates.append(encode_ordinary(self.encoding, text[i:]).astype(np.int64))
        candidates = [c for c in candidates if 0 < c.size <= self.window_size]
        if not candidates:
            return None
        candidates.sort(key=len, reverse=True)
        lengths = np.array([c.size for c in candidates])
        ends = np.cumsum(lengths)
        slots = self.window_slots(np.concatenate(candidates), ends - lengths, ends)
        for k, words in enumerate(slots):  # longest first
            group = self._index.get(np.ascontiguousarray(words, np.uint32).tobytes())
            if group is not None and (lengths[k] >= MIN_SUFFIX_TOKENS or self._continues(after, group)):
                return slots[k : k + 1], int(lengths[k])
        return None

    def _continues(self, after: Step | None, group: int) -> bool:
        """Whether a frame of ``group`` continues the exact step ``after`` in the same source file:
        the next frame of its chunk, or, after its chunk's last frame, a frame of the next chunk
        (chunks overlap, DESIGN §2, so the next chunk's first frames end in the text just recited)."""
        if after is None or not after.exact or after.token_id is None or after.row is None:
            return False
        previous = after.row
        rows = np.flatnonzero(self._group == group)
        same_file = self._source_ids[rows] == self._source_ids[previous]
        chunk = self._chunk_ids[rows].astype(np.int64)
        next_frame = (chunk == self._chunk_ids[previous]) & (
            self._window_ends[rows] == self._window_ends[previous] + 1
        )
        next_chunk = (chunk == int(self._chunk_ids[previous]) + 1) & bool(self._chunk_end[previous])
        return bool((same_file & (next_frame | next_chunk)).any())

    def _has(self, words: np.ndarray) -> bool:
        """Whether a deployed frame has exactly these slots (uint32[12])."""
        return np.ascontiguousarray(words, np.uint32).tobytes() in self._index

    def iter_steps(
        self, prompt: str, max_tokens: int = 64, max_distance: float = DEFAULT_MAX_DISTANCE
    ) -> Generator[Step, None, str]:
        """Greedy generation one step at a time (DESIGN §6.1): yields each :class:`Step` as it is
        answered (an abstention too, as the last one) and returns why it stopped, the generator's
        return value. :meth:`generate` is this loop run to its end; a server streams it.

        Raises :class:`InferenceError` for a prompt without tokens, at the first ``next()``.
        """
        tokens = encode_ordinary(self.encoding, prompt).tolist()
        last: Step | None = None
        for _ in range(max_tokens):
            step = self.step(tokens, max_distance, after=last)
            if not step.exact and last is not None and last.exact and self._chunk_end[last.row]:
                return (
                    f"end of the training text: {last.source_file} chunk {self._chunk_ids[last.row]} "
                    "ends here and no deployed frame continues it"
                )
            yield step
            if step.token_id is None:
                return f"abstained: {step.reason}"
            tokens.append(step.token_id)
            last = step
        return f"max_tokens ({max_tokens})"

    def generate(
        self, prompt: str, max_tokens: int = 64, max_distance: float = DEFAULT_MAX_DISTANCE
    ) -> Generation:
        """Greedy generation: answer the prompt, append the token, repeat (DESIGN §6.1)."""
        steps: list[Step] = []
        running = self.iter_steps(prompt, max_tokens, max_distance)
        while True:
            try:
                steps.append(next(running))
            except StopIteration as done:
                stopped = done.value
                break
        produced = [s.token_id for s in steps if s.token_id is not None]
        return Generation(
            prompt=prompt,
            tokens=tuple(produced),
            continuation=self._text(produced),
            steps=tuple(steps),
            stopped=stopped,
            bundle=self.bundle.version,
        )

    def recall(self, chunks: Sequence[np.ndarray], stride: int = 1) -> Recall:
        """One-step answers to every training context of ``chunks`` (token arrays, as stage 2 made
        them) against their next token. A chunk's verbatim recitation from its first window is the
        number of leading contexts answered right: greedy generation would follow exactly them."""
        flat, begins, ends, targets, chunk_of = [], [], [], [], []
        offset = 0
        for c, tokens in enumerate(chunks):
            tokens = np.asarray(tokens, np.int64)
            end = np.arange(1, tokens.size, stride)
            flat.append(tokens)
            begins.append(offset + np.maximum(end - self.window_size, 0))
            ends.append(offset + end)
            targets.append(tokens[end])
            chunk_of.append(np.full(end.size, c))
            offset += tokens.size
        if not flat or offset == 0:
            return Recall(0, 0, 0, 0, 0, len(chunks), 0.0, 0)
        steps = self.answer(
            np.concatenate(flat), np.concatenate(begins), np.concatenate(ends), max_distance=float("inf")
        )
        want = np.concatenate(targets)
        got = np.array([-1 if s.token_id is None else s.token_id for s in steps])
        right = got == want
        ambiguous = np.array([s.ambiguous for s in steps], bool)
        which = np.concatenate(chunk_of)
        verbatim = []
        for c in range(len(chunks)):
            mine = right[which == c]
            verbatim.append(int(mine.size if mine.all() else np.argmin(mine)))
        return Recall(
            contexts=int(right.size),
            correct=int(right.sum()),
            ambiguous=int(ambiguous.sum()),
            correct_unambiguous=int((right & ~ambiguous).sum()),
            abstained=int((got < 0).sum()),
            chunks=len(chunks),
            mean_verbatim=float(np.mean(verbatim)) if verbatim else 0.0,
            min_verbatim=min(verbatim) if verbatim else 0,
        )

    def _text(self, tokens: list[int]) -> str:
        return self.encoding.decode(tokens)

    @property
    def exact_difficulty(self) -> bool:
        """True when every deployed seed was searched at 17 bits or more: answers are exact tokens."""
        return min(self.bundle.seeds.column("difficulty_bits").to_pylist()) >= TOKEN_BITS


def _last_of_chunk(source: np.ndarray, chunk_ids: np.ndarray, window_ends: np.ndarray) -> np.ndarray:
    """bool[N]: whether each row is the last frame of its chunk (its ``(source_file, chunk_id)``;
    ``source`` int[N] numbers the source files)."""
    keys = source.astype(np.int64) << 32 | chunk_ids.astype(np.int64) & 0xFFFFFFFF
    _, chunk = np.unique(keys, return_inverse=True)
    last = np.full(chunk.max() + 1 if chunk.size else 0, np.iinfo(np.int64).min)
    np.maximum.at(last, chunk, window_ends.astype(np.int64))
    return last[chunk] == window_ends


def _dequantised(slots: np.ndarray) -> np.ndarray:
    """The 24 features a frame's slots hold (DESIGN §3.4), back in the sigmoid's [0, 1]: float32[N, 24]."""
    return (unpack_slots(slots).astype(np.float32) + np.float32(32768.0)) / np.float32(65535.0)
