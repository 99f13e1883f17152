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

The lookups (exact slots, the answering row, the rows of a frame, the nearest frame) are the bundle's
inference index (``hasher_core.bundle.index``), built once with the bundle and memory-mapped by a
deployed model: opening one rebuilds nothing, and a step reads only the records it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import tiktoken

from hasher_core.bundle import Bundle
from hasher_core.bundle.index import InferenceIndex, build_index
from hasher_core.design import TOKEN_BITS
from hasher_core.errors import InferenceError
from hasher_core.frames.tokens import encode_ordinary, token_text
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
    function (same tokenizer, embedder and projection); ``evaluate_rows`` the kernel's.

    The lookups run on the bundle's :class:`~hasher_core.bundle.index.InferenceIndex`: the one its
    files carry (memory-mapped by the deployment store, so opening costs no rebuild), else one built
    here from the seed table (a bundle of an older format)."""

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
        self.index: InferenceIndex = bundle.index if bundle.index is not None else build_index(bundle.seeds)
        self._answer = self.index.answer
        self._sources = self.index.sources

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

    def _answers(
        self, slots: np.ndarray, max_distance: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For window slots uint32[n, 12]: the answering frame int64[n], whether it matched exactly
        bool[n], its distance float64[n], the token its seed gives back (int64[n], -1 where the
        model does not ask it: beyond ``max_distance``) and the answer: that token where it is the
        answering row's trained token, else -1."""
        frames = self.index.lookup(slots)
        exact = frames >= 0
        distance = np.zeros(frames.size)
        for k in np.flatnonzero(~exact):
            frames[k], distance[k] = self.index.nearest(slots[k])
        answering = exact | (distance <= max_distance)
        picked = self._answer[frames[answering]]
        goldens = self.evaluate_rows(
            np.ascontiguousarray(self.index.slots[frames[answering]]),
            np.ascontiguousarray(picked["seed"]),
            picked["header_time"],
        )
        given = np.full(frames.size, -1, np.int64)
        given[answering] = golden_token(goldens)
        tokens = np.full(frames.size, -1, np.int64)
        mine = np.flatnonzero(answering)[given[answering] == picked["target"]]
        tokens[mine] = given[mine]
        return frames, exact, distance, given, tokens

    def _answer_slots(self, slots: np.ndarray, matched: np.ndarray, max_distance: float) -> list[Step]:
        """One step for each row of window slots uint32[n, 12] made from ``matched[k]`` tokens."""
        frames, exact, distance, given, tokens = self._answers(slots, max_distance)
        records = self._answer[frames]
        steps = []
        for k in range(frames.size):
            a = records[k]
            token, reason = None, None
            if not exact[k] and distance[k] > max_distance:
                reason = (
                    f"the nearest deployed context is at distance {distance[k]:.3f} "
                    f"> max_distance {max_distance}"
                )
            elif tokens[k] >= 0:
                token = int(tokens[k])
            else:
                reason = self._not_reproduced(a, int(given[k]))
            steps.append(
                Step(
                    token_id=token,
                    text="" if token is None else token_text(self.encoding, token) or "",
                    exact=bool(exact[k]),
                    distance=round(float(distance[k]), 6),
                    source_file=self._sources[int(a["source"])],
                    window_end=int(a["window_end"]),
                    row=int(a["row"]),
                    candidates=int(a["rows"]) if exact[k] else 0,
                    ambiguous=bool(a["ambiguous"]) and bool(exact[k]),
                    matched_tokens=int(matched[k]),
                    reason=reason,
                )
            )
        return steps

    def _not_reproduced(self, answer: np.void, seed_token: int) -> str:
        """Why the answering row (its :data:`~hasher_core.bundle.index.ANSWER_DTYPE` record) gives no
        token: its seed's golden stands for ``seed_token``, not its target."""
        row = int(answer["row"])
        text = token_text(self.encoding, seed_token)
        given = f"{seed_token} ({text!r})" if text is not None else f"{seed_token}, which is no token id"
        bits = int(answer["difficulty"])
        if bits < TOKEN_BITS:
            why = (
                f"its seed was searched at {bits} bits, which fix only the top {bits} of the token's "
                f"{TOKEN_BITS} bits (DESIGN §4.3): retrain with difficulty_bits >= {TOKEN_BITS}"
            )
        elif not answer["solved"]:
            why = f"its search did not solve the frame (`hasher predict --frame-index {row}` shows it)"
        else:
            why = f"the seed does not reproduce its golden (`hasher predict --frame-index {row}` shows it)"
        return (
            f"the deployed frame that answers ({self._sources[int(answer['source'])]} chunk "
            f"{int(answer['chunk_id'])} window_end {int(answer['window_end'])}) does not give back its "
            f"trained token {int(answer['target'])}: its seed's golden stands for {given}; {why}"
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
        frames = self.index.lookup(slots)
        for k in np.flatnonzero(frames >= 0):  # longest first
            if lengths[k] >= MIN_SUFFIX_TOKENS or self._continues(after, int(frames[k])):
                return slots[k : k + 1], int(lengths[k])
        return None

    def _continues(self, after: Step | None, frame: int) -> bool:
        """Whether a row of ``frame`` continues the exact step ``after`` in the same source file:
        the next frame of its chunk, or, after its chunk's last frame, a frame of the next chunk
        (chunks overlap, DESIGN §2, so the next chunk's first frames end in the text just recited)."""
        if after is None or not after.exact or after.token_id is None or after.row is None:
            return False
        previous = self.index.place(after.row)
        places = self.index.row_place[self.index.rows_of(frame)]
        same_file = places["source"] == previous["source"]
        chunk = places["chunk_id"].astype(np.int64)
        next_frame = (chunk == int(previous["chunk_id"])) & (
            places["window_end"] == int(previous["window_end"]) + 1
        )
        next_chunk = (chunk == int(previous["chunk_id"]) + 1) & bool(previous["chunk_end"])
        return bool((same_file & (next_frame | next_chunk)).any())

    def _has(self, words: np.ndarray) -> bool:
        """Whether a deployed frame has exactly these slots (uint32[12])."""
        return bool(self.index.lookup(words)[0] >= 0)

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
            place = self.index.place(last.row) if last is not None and last.row is not None else None
            ended = last is not None and last.exact and place is not None and bool(place["chunk_end"])
            if not step.exact and ended:
                return (
                    f"end of the training text: {last.source_file} chunk {int(place['chunk_id'])} "
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

    def recall(self, chunks: Sequence[np.ndarray], stride: int = 1, batch: int = 65_536) -> Recall:
        """One-step answers to every training context of ``chunks`` (token arrays, as stage 2 made
        them) against their next token. A chunk's verbatim recitation from its first window is the
        number of leading contexts answered right: greedy generation would follow exactly them.

        Contexts are answered ``batch`` at a time (one slots call and one kernel call each), as
        arrays: no text is decoded, so a golden whose top bits are no token id is just a wrong answer.
        """
        windows = []  # per chunk: (tokens, context ends, targets)
        for tokens in chunks:
            tokens = np.asarray(tokens, np.int64)
            end = np.arange(1, tokens.size, stride)
            windows.append((tokens, end, tokens[end]))
        contexts = sum(end.size for _, end, _ in windows)
        if contexts == 0:
            return Recall(0, 0, 0, 0, 0, len(chunks), 0.0, 0)
        right = np.zeros(contexts, bool)
        ambiguous = np.zeros(contexts, bool)
        abstained = np.zeros(contexts, bool)
        chunk_of = np.repeat(np.arange(len(windows)), [end.size for _, end, _ in windows])
        done = 0
        pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        pending_size = 0

        def flush() -> None:
            nonlocal done, pending_size
            flat, begins, ends, want, offset = [], [], [], [], 0
            for tokens, end, target in pending:
                flat.append(tokens)
                begins.append(offset + np.maximum(end - self.window_size, 0))
                ends.append(offset + end)
                want.append(target)
                offset += tokens.size
            slots = self.window_slots(np.concatenate(flat), np.concatenate(begins), np.concatenate(ends))
            frames, exact, _, _, got = self._answers(slots, float("inf"))
            n = frames.size
            right[done : done + n] = got == np.concatenate(want)
            ambiguous[done : done + n] = self._answer[frames]["ambiguous"] & exact
            abstained[done : done + n] = got < 0
            done += n
            pending.clear()
            pending_size = 0

        for tokens, end, target in windows:
            for lo in range(0, end.size, batch):
                part = end[lo : lo + batch]
                # Only the tokens these contexts read: from the first window's start to the last end.
                first = max(0, int(part[0]) - self.window_size)
                pending.append((tokens[first : int(part[-1])], part - first, target[lo : lo + batch]))
                pending_size += part.size
                if pending_size >= batch:
                    flush()
        if pending:
            flush()
        verbatim = []
        for c in range(len(windows)):
            mine = right[chunk_of == c]
            verbatim.append(int(mine.size if mine.all() else np.argmin(mine)))
        return Recall(
            contexts=contexts,
            correct=int(right.sum()),
            ambiguous=int(ambiguous.sum()),
            correct_unambiguous=int((right & ~ambiguous).sum()),
            abstained=int(abstained.sum()),
            chunks=len(chunks),
            mean_verbatim=float(np.mean(verbatim)) if verbatim else 0.0,
            min_verbatim=min(verbatim) if verbatim else 0,
        )

    def _text(self, tokens: list[int]) -> str:
        return self.encoding.decode(tokens)

    @property
    def exact_difficulty(self) -> bool:
        """True when every deployed seed was searched at 17 bits or more: answers are exact tokens."""
        return min(_difficulties(self.bundle)) >= TOKEN_BITS


def _difficulties(bundle: Bundle) -> list[int]:
    """The distinct difficulties of the bundle's seeds: the manifest's recipe records them."""
    recorded = (bundle.manifest.get("recipe") or {}).get("difficulty_bits")
    if recorded:
        return [int(d) for d in recorded]
    return bundle.seeds.column("difficulty_bits").to_pylist()
