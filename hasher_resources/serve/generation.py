"""One generation as the server runs it: the model's steps one at a time on the inference worker,
stop sequences, the per-request deadline, and what the answer says about itself.

:func:`generate_stream` drives :meth:`Model.iter_steps <hasher_core.inference.Model.iter_steps>`
(the same loop ``hasher generate`` runs) and yields :class:`Piece` s of text, each with the steps
whose text it carries, then one :class:`Outcome`. Both APIs (OpenAI and Ollama) stream or collect
these; nothing here knows either wire format.

Stop sequences: text that could still turn into a stop sequence is held back until it cannot, so
no client ever sees part of one; a step is reported with the first piece that carries its text.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from typing import Any

from hasher_core.errors import InferenceError
from hasher_core.frames.tokens import encode_ordinary
from hasher_core.inference import Model, Step

from .holder import ServedModel
from .worker import InferenceWorker

log = logging.getLogger("hasher.serve")

#: Seconds one generation may run steps back to back on the worker before the next request's turn:
#: a turn costs two thread hand-offs (event loop → worker → event loop), each a wait for the GIL and
#: the scheduler, so a turn of several steps (a step is ~1 ms) keeps that cost off every token while
#: concurrent streams still take turns many times a second.
TURN_S = 0.005

#: ``Outcome.stop_reason`` → OpenAI's ``finish_reason`` (Ollama's ``done_reason`` uses the same words).
FINISH_REASONS = {
    "max_tokens": "length",
    "deadline": "length",
    "stop_sequence": "stop",
    "end_of_text": "stop",
    "abstained": "stop",
}


@dataclass(frozen=True)
class GenerationRequest:
    """What a client asked for, validated: the prompt text, limits and stop sequences."""

    prompt: str
    max_tokens: int
    max_distance: float
    stop: tuple[str, ...] = ()
    deadline_s: float = 60.0
    #: Token ids of an earlier exchange to continue (Ollama's ``context``), decoded before ``prompt``.
    context: tuple[int, ...] = ()


@dataclass(frozen=True)
class Piece:
    """Text to send, and the model's steps whose text starts in it."""

    text: str
    steps: tuple[Step, ...]

    def honesty(self, bundle: str) -> dict[str, Any]:
        """The ``hasher`` field of a streamed chunk: the bundle and each of its steps."""
        return {"bundle": bundle, "tokens": [step.as_json() for step in self.steps]}


@dataclass
class Outcome:
    """How a generation ended and what it produced, for the answer's honesty field and metrics."""

    bundle: str
    stopped: str
    stop_reason: str
    prompt_token_ids: list[int] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    #: ``time.monotonic()`` of the request's start and of each step's answer.
    started: float = 0.0
    step_times: list[float] = field(default_factory=list)

    @property
    def finish_reason(self) -> str:
        return FINISH_REASONS.get(self.stop_reason, "stop")

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def token_ids(self) -> list[int]:
        return [s.token_id for s in self.steps if s.token_id is not None]

    def token_gaps(self) -> list[float]:
        """Seconds from the request's start to the first step, then between steps."""
        times = [self.started, *self.step_times]
        return [b - a for a, b in itertools.pairwise(times)]

    @property
    def completion_tokens(self) -> int:
        return sum(1 for s in self.steps if s.token_id is not None)

    @property
    def exact_tokens(self) -> int:
        return sum(1 for s in self.steps if s.token_id is not None and s.exact)

    @property
    def guessed_tokens(self) -> int:
        return sum(1 for s in self.steps if s.token_id is not None and not s.exact)

    @property
    def abstained(self) -> bool:
        return any(s.token_id is None for s in self.steps)

    def honesty(self) -> dict[str, Any]:
        """The ``hasher`` field of a whole answer: :meth:`summary` and every step."""
        return self.summary() | {"tokens": [step.as_json() for step in self.steps]}

    def summary(self) -> dict[str, Any]:
        """The honesty field's closing part: bundle, why it stopped, exact and guessed counts."""
        return {
            "bundle": self.bundle,
            "stopped": self.stopped,
            "stop_reason": self.stop_reason,
            "abstained": self.abstained,
            "exact_tokens": self.exact_tokens,
            "guessed_tokens": self.guessed_tokens,
        }


def stop_reason_of(stopped: str) -> str:
    """The kind of a model's stop message (``Model.iter_steps``' return value)."""
    for prefix, kind in (
        ("max_tokens", "max_tokens"),
        ("end of the training text", "end_of_text"),
        ("abstained", "abstained"),
    ):
        if stopped.startswith(prefix):
            return kind
    return "other"


def _start(model: Model, request: GenerationRequest) -> tuple[list[int], Generator[Step, None, str]]:
    """On the worker: the prompt's token ids and the step generator (tokenising is model work).
    Raises :class:`InferenceError` for context ids that are not tokens of the model's vocabulary."""
    prompt = request.prompt
    if request.context:
        bad = [t for t in request.context if not 0 <= t < model.encoding.n_vocab]
        if bad:
            raise InferenceError(f"context: {bad[0]} is not a token id of {model.encoding.name}")
        try:
            prompt = model.encoding.decode(list(request.context)) + prompt
        except (KeyError, ValueError) as exc:
            raise InferenceError(f"context: not a sequence of {model.encoding.name} tokens ({exc})") from None
    tokens = encode_ordinary(model.encoding, prompt).tolist()
    model.context_windows(tokens)  # the model's own rule for a prompt it cannot answer, raised now
    return tokens, model.iter_steps(prompt, request.max_tokens, request.max_distance)


def _advance(
    running: Generator[Step, None, str], turn_s: float
) -> tuple[list[tuple[Step, float]], str | None]:
    """On the worker: the next steps of one generation, back to back for up to ``turn_s`` seconds,
    each with the ``time.monotonic()`` it was answered at; and why it stopped, once it has."""
    steps: list[tuple[Step, float]] = []
    ends = time.monotonic() + turn_s
    try:
        while True:
            steps.append((next(running), time.monotonic()))
            if steps[-1][1] >= ends:
                return steps, None
    except StopIteration as done:
        return steps, str(done.value)


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of ``text`` could be the start of a stop sequence."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


class RunningGeneration:
    """One generation on the model a request started on, whatever is swapped in meanwhile:
    ``await start()`` (tokenises the prompt; raises
    :class:`~hasher_core.errors.InferenceError` for a prompt without tokens, before anything is
    sent), then ``async for piece in pieces()``; :attr:`outcome` says how it ended and is kept up
    to date while it runs (also when the client goes away: what was produced is counted)."""

    def __init__(self, served: ServedModel, worker: InferenceWorker, request: GenerationRequest) -> None:
        self.served, self.worker, self.request = served, worker, request
        self.started = time.monotonic()
        self.outcome = Outcome(served.version, "", "other", started=self.started)
        #: True once the generation is over (finished, stopped or failed): nothing runs for it any more.
        self.done = False
        self._running: Generator[Step, None, str] | None = None

    async def start(self) -> None:
        self.outcome.prompt_token_ids, self._running = await self.worker.run(
            _start, self.served.model, self.request
        )

    async def pieces(self) -> AsyncIterator[Piece]:
        """The text as it comes, stop sequences held back and cut (see the module doc)."""
        if self._running is None:
            raise RuntimeError("RunningGeneration.pieces() before start()")
        running, outcome, request = self._running, self.outcome, self.request
        deadline = self.started + request.deadline_s
        held, pending = "", []
        try:
            stopped: str | None = None
            while stopped is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    outcome.stopped = f"deadline: the server's limit of {request.deadline_s:g} s per request"
                    outcome.stop_reason = "deadline"
                    break
                try:
                    turn = self.worker.run(_advance, running, TURN_S)
                    steps, stopped = await asyncio.wait_for(turn, remaining)
                except TimeoutError:
                    continue  # the deadline check above ends it
                if stopped is not None:
                    outcome.stopped = stopped
                    outcome.stop_reason = stop_reason_of(stopped)
                for step, answered_at in steps:
                    outcome.step_times.append(answered_at)
                    outcome.steps.append(step)
                    pending.append(step)
                    text = held + step.text
                    hit = min(((text.find(s), s) for s in request.stop if s and s in text), default=None)
                    if hit is not None:
                        index, stop = hit
                        yield Piece(text[:index], tuple(pending))
                        outcome.stopped = f"stop sequence {stop!r}"
                        outcome.stop_reason = "stop_sequence"
                        held, pending, stopped = "", [], outcome.stopped
                        break
                    keep = _held_back(text, request.stop)
                    emit, held = text[: len(text) - keep], text[len(text) - keep :]
                    if emit or step.token_id is None:
                        yield Piece(emit, tuple(pending))
                        pending = []
            if held or pending:
                yield Piece(held, tuple(pending))
        finally:
            self.done = True
            with contextlib.suppress(RuntimeError):  # the worker is already stopped at shutdown
                self.worker.submit(running.close)  # on the worker: a step may still be running there


async def guarded(run: RunningGeneration) -> AsyncIterator[Piece | str]:
    """The pieces of a stream; an error after the headers went out ends it with a last message
    (a str, for the API to frame) and marks the outcome ``error`` (counted by the metrics)."""
    try:
        async for piece in run.pieces():
            yield piece
    except Exception as exc:
        log.exception("generation failed mid-stream")
        message = f"generation failed: {type(exc).__name__}: {exc}"
        run.outcome.stopped, run.outcome.stop_reason = message, "error"
        yield message
