"""Inference from text (DESIGN §6.1): a deployed bundle as an associative memory keyed by contexts.

A context is tokenised, its last ``window_size`` tokens are turned into slots exactly as training
did (the caller passes the same ``window_slots`` function stage 2 used), and the slots are looked up
among the deployed frames. Rows sharing the slots (one context seen with several next tokens)
resolve to the most frequent target (ties: the first in source order). When the last ``window_size``
tokens match no frame, the context's shorter suffixes that start at a word are tried next, longest
first: the frames at the start of a chunk have windows shorter than ``window_size``, and chunks
overlap (DESIGN §2), so this is how a recitation crosses from the end of one chunk into the next.
A context neither finds goes to the nearest deployed frame by Euclidean distance over the 24
dequantised features, said with its distance, and beyond ``max_distance`` the model abstains.
Greedy generation stops at the end of the training text: after the last frame of a chunk answered
exactly, a context nothing continues is the end of that text, not a question for the nearest frame.
The chosen row's seed is run through the 21-pass recursion on the kernel and the answer is the token
its golden stands for, ``golden >> 15`` (§4.3): the bundle's stored golden is never trusted for it.

:meth:`Model.recall` measures the honest figure of a deployment: the share of its training contexts
whose one-step answer is their next token, and how many tokens of each chunk it recites verbatim.

The lookups (exact slots, the answering row, the nearest frame) are the bundle's inference index
(``hasher_core.bundle.index``), built once with the bundle; a golden whose top bits are no token id
(a seed searched below 17 bits) is an answer that decodes to U+FFFD and ends a generation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import tiktoken

from hasher_core.bundle import Bundle
from hasher_core.bundle.index import InferenceIndex, build_index
from hasher_core.design import TOKEN_BITS
from hasher_core.errors import InferenceError
from hasher_core.frames.tokens import encode_ordinary
from hasher_core.header import golden_token

#: ``(tokens int[T], begin int[n], end int[n]) -> slots uint32[n, 12]``: stage 2's window slots.
WindowSlots = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
#: ``(slots uint32[N, 12], seeds uint8[N, 32], header_times int[N]) -> goldens uint32[N]``.
RowEvaluator = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
#: Beyond this distance over the dequantised features the model abstains. With the offline embedder
#: a context one token past a trained one lies at ~0.02, unrelated prompts at ~0.3–0.6: the
#: distance says how far an answer is from what was trained, not whether it is right.
DEFAULT_MAX_DISTANCE = 0.5


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
            f"{self.ambiguous} ambiguous, {self.abstained} abstained; each chunk recited verbatim for "
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

    The lookups run on the bundle's :class:`~hasher_core.inference.index.InferenceIndex`: the one
    its files carry (memory-mapped by the deployment store, so opening costs no rebuild), else one
    built here from the seed table (a bundle of an older format)."""

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
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For window slots uint32[n, 12]: the answering frame int64[n], whether it matched exactly,
        its distance float64[n] and the token its seed gives back (int64[n], -1 where it abstains)."""
        frames = self.index.lookup(slots)
        exact = frames >= 0
        distance = np.zeros(frames.size)
        for k in np.flatnonzero(~exact):
            frames[k], distance[k] = self.index.nearest(slots[k])
        answering = exact | (distance <= max_distance)
        chosen = frames[answering]
        picked = self._answer[chosen]
        goldens = self.evaluate_rows(
            np.ascontiguousarray(self.index.slots[chosen]),
            np.ascontiguousarray(picked["seed"]),
            picked["header_time"],
        )
        tokens = np.full(frames.size, -1, np.int64)
        tokens[answering] = golden_token(goldens)
        return frames, exact, distance, tokens

    def _answer_slots(self, slots: np.ndarray, matched: np.ndarray, max_distance: float) -> list[Step]:
        """One step for each row of window slots uint32[n, 12] made from ``matched[k]`` tokens."""
        return [step for step, _ in self._steps(slots, matched, max_distance)]

    def _steps(self, slots: np.ndarray, matched: np.ndarray, max_distance: float) -> list[tuple[Step, int]]:
        """Each window's :class:`Step` and the frame that answered it."""
        frames, exact, distance, tokens = self._answers(slots, max_distance)
        out = []
        for k in range(frames.size):
            frame = int(frames[k])
            a = self._answer[frame]
            token = None if tokens[k] < 0 else int(tokens[k])
            out.append(
                (
                    Step(
                        token_id=token,
                        text="" if token is None else self._text([token]),
                        exact=bool(exact[k]),
                        distance=round(float(distance[k]), 6),
                        source_file=self._sources[int(a["source"])],
                        window_end=int(a["window_end"]),
                        row=int(a["row"]),
                        candidates=int(a["rows"]) if exact[k] else 0,
                        ambiguous=bool(a["ambiguous"]) and bool(exact[k]),
                        matched_tokens=int(matched[k]),
                    ),
                    frame,
                )
            )
        return out

    def step(self, context: Sequence[int], max_distance: float = DEFAULT_MAX_DISTANCE) -> Step:
        """The answer to one context given as token ids: its window exactly, else the longest
        suffix starting at a word that a deployed frame has exactly, else the nearest frame."""
        return self._step(context, max_distance)[0]

    def _step(self, context: Sequence[int], max_distance: float) -> tuple[Step, int]:
        tokens, begin, _ = self.context_windows(context)
        window = tokens[int(begin[0]) :]
        slots = self.window_slots(window, np.array([0]), np.array([window.size]))
        matched = window.size
        if not self._has(slots[0]):
            found = self._longest_deployed_suffix(window)
            if found is not None:
                slots, matched = found
        return self._steps(slots, np.array([matched]), max_distance)[0]

    def _longest_deployed_suffix(self, window: np.ndarray) -> tuple[np.ndarray, int] | None:
        """The slots (uint32[1, 12]) and length of the longest suffix of ``window`` that a deployed
        frame has exactly: token suffixes (a frame further into a chunk whose tokens agree), and the
        text's suffixes from each word on, re-tokenised as a chunk starting there was (a chunk's
        first word has no leading space). None when none is deployed."""
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
        hits = np.flatnonzero(self.index.lookup(slots) >= 0)  # candidates are longest first
        if not hits.size:
            return None
        k = int(hits[0])
        return slots[k : k + 1], int(lengths[k])

    def _has(self, words: np.ndarray) -> bool:
        """Whether a deployed frame has exactly these slots (uint32[12])."""
        return bool(self.index.lookup(words)[0] >= 0)

    def generate(
        self, prompt: str, max_tokens: int = 64, max_distance: float = DEFAULT_MAX_DISTANCE
    ) -> Generation:
        """Greedy generation: answer the prompt, append the token, repeat (DESIGN §6.1)."""
        tokens = encode_ordinary(self.encoding, prompt).tolist()
        produced: list[int] = []
        steps: list[Step] = []
        stopped = f"max_tokens ({max_tokens})"
        last_frame = -1
        for _ in range(max_tokens):
            step, frame = self._step(tokens, max_distance)
            last = steps[-1] if steps else None
            ended = last is not None and last.exact and bool(self._answer[last_frame]["chunk_end"])
            if not step.exact and ended:
                chunk = int(self._answer[last_frame]["chunk_id"])
                stopped = (
                    f"end of the training text: {last.source_file} chunk {chunk} ends here and no "
                    "deployed frame continues it"
                )
                break
            steps.append(step)
            last_frame = frame
            if step.token_id is None:
                stopped = (
                    f"abstained: the nearest deployed context is at distance {step.distance:.3f} "
                    f"> max_distance {max_distance}"
                )
                break
            if not self._is_token(step.token_id):
                stopped = (
                    f"the seed's golden stands for {step.token_id}, which is not a token id (a seed searched "
                    f"below {TOKEN_BITS} bits gives back only the top bits of its token)"
                )
                break
            tokens.append(step.token_id)
            produced.append(step.token_id)
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
            frames, exact, _, got = self._answers(slots, float("inf"))
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

    def _is_token(self, token: int) -> bool:
        return 0 <= token < self.encoding.n_vocab and token in self._decodable()

    def _decodable(self) -> _Decodable:
        if self.__dict__.get("_decodable_ids") is None:
            self.__dict__["_decodable_ids"] = _Decodable(self.encoding)
        return self.__dict__["_decodable_ids"]

    def _text(self, tokens: list[int]) -> str:
        """The text of ``tokens``; an id that is no token of the encoding reads as U+FFFD."""
        ok = self._decodable()
        if all(t in ok for t in tokens):
            return self.encoding.decode(tokens)
        return "".join(self.encoding.decode([t]) if t in ok else "\ufffd" for t in tokens)

    @property
    def exact_difficulty(self) -> bool:
        """True when every deployed seed was searched at 17 bits or more: answers are exact tokens."""
        return min(_difficulties(self.bundle)) >= TOKEN_BITS


class _Decodable:
    """Membership of the ids ``encoding.decode`` accepts: its byte-pair ranks and special tokens
    (cl100k has no ids 100256 and 100261–100275 although ``n_vocab`` counts past them)."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.encoding = encoding
        self._ok: dict[int, bool] = {}

    def __contains__(self, token: object) -> bool:
        if not isinstance(token, int | np.integer):
            return False
        t = int(token)
        if t not in self._ok:
            try:
                self.encoding.decode_single_token_bytes(t)
                self._ok[t] = True
            except (KeyError, ValueError, OverflowError):
                self._ok[t] = False
        return self._ok[t]


def _difficulties(bundle: Bundle) -> list[int]:
    """The distinct difficulties of the bundle's seeds: the manifest's recipe records them."""
    recorded = (bundle.manifest.get("recipe") or {}).get("difficulty_bits")
    if recorded:
        return [int(d) for d in recorded]
    return bundle.seeds.column("difficulty_bits").to_pylist()
