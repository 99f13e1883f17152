"""The seed search loop of stage 3 (DESIGN §4.4–4.6): fingerprints, the active set and ``search_frames``.

``search_frames`` takes frames (slots + target token ids), an injectable evaluator (the kernel
resource's ``evaluate_with_keys``, or anything with that shape) and an optional frame store. It
searches each distinct (slots, target) once, many frames per kernel call: an active set of
``frames_per_call`` frames is refilled as frames finish, so every call is ``population × frames``
rows. The host work per generation is two compiled passes over the whole set (``fused.gather_batch``
and ``fused.generation_step``), so the kernel, not Python, sets the pace.

Each frame's randomness is keyed by (rng_seed, fingerprint), so a frame's seed never depends on
batching, on duplicates, or on which frames an earlier (killed) run already finished: a resumed
run produces exactly what an uninterrupted one does.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

import numpy as np

from hasher_core.design import SEED_BYTES, SLOT_COUNT, STABILITY_PASSES, VOCABULARY_SIZE
from hasher_core.errors import FramesInputError
from hasher_core.header import target_word

from . import fused
from .config import SearchConfig
from .driver import PendingFrames, SearchDriver, SearchSink
from .records import FinishedFrame, ProgressStore, SearchHistory, SearchProgress, SearchResults

#: ``(slots uint32[N, 12], seeds uint8[N, 32], header_time) -> (golden uint32[N], keys uint32[N, 3])``.
#: The input arrays are buffers the search reuses on its next call: copy them to keep them.
Evaluator = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class _Fingerprinter:
    """blake2b over the config once, then copied per frame (fast for a million frames)."""

    def __init__(self, config: SearchConfig) -> None:
        self._prefix = hashlib.blake2b(digest_size=16, person=b"hasher-frame")
        self._prefix.update(json.dumps(config.fingerprint_fields(), sort_keys=True).encode())

    def __call__(self, slots: np.ndarray, target: int) -> str:
        h = self._prefix.copy()
        h.update(np.asarray(slots, dtype=np.uint32).astype(">u4").tobytes())
        h.update(int(target).to_bytes(4, "big"))
        return h.hexdigest()


def frame_fingerprint(slots: np.ndarray, target: int, config: SearchConfig) -> str:
    """Hex fingerprint of one frame under ``config``: slots, target, difficulty (schedule
    included), header time, algorithm version and every search setting that changes the seed."""
    slots = np.asarray(slots)
    if slots.shape != (SLOT_COUNT,):
        raise FramesInputError(f"slots must have shape ({SLOT_COUNT},), got {slots.shape}")
    return _Fingerprinter(config)(slots.astype(np.uint32), target)


def frame_fingerprints(slots: np.ndarray, targets: np.ndarray, config: SearchConfig) -> list[str]:
    """The fingerprint of each frame (``slots`` int32/uint32[N, 12], ``targets`` int[N]) under
    ``config``, as :func:`search_frames` computes them: what a store owner needs to know which of
    its frames a finished fingerprint is. Raises :class:`FramesInputError` like ``check_frames``."""
    slots, targets = check_frames(slots, targets)
    fp = _Fingerprinter(config)
    return [fp(slots[i], int(targets[i])) for i in range(slots.shape[0])]


def frame_key(fingerprint: str, rng_seed: int) -> int:
    """The 64-bit key of a frame's random stream, from (rng_seed, fingerprint)."""
    h = hashlib.blake2b(digest_size=8, person=b"hasher-rng")
    h.update(int(rng_seed).to_bytes(8, "big"))
    h.update(bytes.fromhex(fingerprint))
    return int.from_bytes(h.digest(), "big")


def check_frames(slots: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate frame arrays: ``slots`` int32/uint32[N, 12] (the 32-bit words, bit-cast) and ``targets``
    int[N] token ids in ``[0, VOCABULARY_SIZE)``; return them as uint32. Raises
    :class:`FramesInputError` naming the first bad row."""
    slots = np.asarray(slots)
    targets = np.asarray(targets)
    if slots.ndim != 2 or slots.shape[1] != SLOT_COUNT:
        raise FramesInputError(f"slots must have shape [N, {SLOT_COUNT}], got {list(slots.shape)}")
    if slots.dtype not in (np.dtype(np.uint32), np.dtype(np.int32)):
        raise FramesInputError(f"slots must be int32 or uint32 (32-bit words), got {slots.dtype}")
    if targets.shape != (slots.shape[0],):
        raise FramesInputError(f"targets must have shape [{slots.shape[0]}], got {list(targets.shape)}")
    if targets.size and not np.issubdtype(targets.dtype, np.integer):
        raise FramesInputError(f"targets must be integer token ids, got {targets.dtype}")
    bad = np.flatnonzero((targets < 0) | (targets >= VOCABULARY_SIZE))
    if bad.size:
        r = int(bad[0])
        raise FramesInputError(
            f"target_token_id {int(targets[r])} at row {r} is outside the vocabulary [0, {VOCABULARY_SIZE})"
            + (f"; {bad.size} rows in all" if bad.size > 1 else "")
        )
    return np.ascontiguousarray(slots).view(np.uint32), targets.astype(np.uint32)


class _ActiveSet:
    """The frames being searched now: fixed-size slots, refilled from the queue as frames finish.

    ``first_unevaluated[i]``: population members ``[first, P)`` of slot i still need the kernel
    (0 for a fresh population, the elite count after a GRPO step: elites keep their goldens).
    """

    def __init__(self, capacity: int, population: int) -> None:
        c, p = capacity, population
        self.frame = np.full(c, -1, np.int64)  # index into the unique frames, -1 = free
        self.key = np.zeros(c, np.uint64)
        self.generation = np.zeros(c, np.int64)  # generation of the population held now
        self.epoch = np.zeros(c, np.int64)
        self.slots = np.zeros((c, SLOT_COUNT), np.uint32)
        self.target = np.zeros(c, np.uint32)  # target words (token << 15), not token ids
        self.seeds = np.zeros((c, p, SEED_BYTES), np.uint8)
        self.golden = np.zeros((c, p), np.uint32)
        self.keys = np.zeros((c, p, len(STABILITY_PASSES)), np.uint32)
        self.first_unevaluated = np.zeros(c, np.int64)
        self.best_matched = np.zeros(c, np.int16)
        self.best_reward = np.zeros(c, np.float32)
        self.best_seed = np.zeros((c, SEED_BYTES), np.uint8)
        self.best_golden = np.zeros(c, np.uint32)
        self.evaluations = np.zeros(c, np.int64)
        # The step's per-generation output, and the kernel's input rows (reused every call).
        self.done = np.zeros(c, bool)
        self.batch_slots = np.zeros((c * p, SLOT_COUNT), np.uint32)
        self.batch_seeds = np.zeros((c * p, SEED_BYTES), np.uint8)


def search_frames(
    slots: np.ndarray,
    targets: np.ndarray,
    config: SearchConfig,
    evaluate: Evaluator,
    *,
    store: ProgressStore | None = None,
    progress: Callable[[SearchProgress], None] | None = None,
    progress_every_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    driver: SearchDriver | None = None,
) -> SearchResults:
    """Search a seed for every frame (DESIGN §4.4) and return the per-row results.

    Identical (slots, target) rows are searched once. Frames whose fingerprint is in ``store`` are
    taken from it; every frame finished here is committed to it as it finishes. ``progress`` is
    called at most every ``progress_every_s`` seconds, and once at the end. ``driver`` runs the
    generations instead of the host loop (``evaluate`` is then not called): the device-resident
    search of the ``cuda`` backend; the results are the same either way.
    """
    config.validate()
    slots, targets = check_frames(slots, targets)
    start = clock()
    rows = np.concatenate([slots, targets[:, None]], axis=1)
    if len(rows):
        _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
        # Search distinct frames in order of first appearance (what a user watching expects).
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        unique_index = first[order]
        inverse = rank[inverse.reshape(-1)]
    else:
        unique_index = inverse = np.zeros(0, np.int64)
    u_slots, u_targets = slots[unique_index], targets[unique_index]
    # The search matches goldens against the target word, the token in the top bits (DESIGN §4.3).
    u_words = target_word(u_targets)
    fp = _Fingerprinter(config)
    fingerprints = [fp(u_slots[i], int(u_targets[i])) for i in range(len(unique_index))]
    u = len(fingerprints)

    out_seed = np.zeros((u, SEED_BYTES), np.uint8)
    out_golden = np.zeros(u, np.uint32)
    out_matched = np.zeros(u, np.uint8)
    out_reward = np.zeros(u, np.float32)
    out_generations = np.zeros(u, np.int32)
    out_evaluations = np.zeros(u, np.int64)
    out_solved = np.zeros(u, bool)
    out_from_store = np.zeros(u, bool)

    def record(i: int, r: FinishedFrame) -> None:
        out_seed[i] = np.frombuffer(r.best_seed, np.uint8)
        out_golden[i], out_matched[i], out_reward[i] = r.golden, r.matched_bits, r.reward
        out_generations[i], out_evaluations[i], out_solved[i] = r.generations, r.evaluations, r.solved

    known = store.get_many(fingerprints) if store is not None else {}
    pending: list[int] = []
    for i, f in enumerate(fingerprints):
        if f in known:
            record(i, known[f])
            out_from_store[i] = True
        else:
            pending.append(i)

    history = SearchHistory(frames_total=u)
    stats = {"done": u - len(pending), "solved": int(out_solved.sum()), "evals": 0, "kernel_s": 0.0}
    from_store = stats["done"]
    last_report = [start]

    def report(force: bool) -> None:
        now = clock()
        if progress is None or not (force or now - last_report[0] >= progress_every_s):
            return
        last_report[0] = now
        elapsed = max(now - start, 1e-9)
        searched_done = stats["done"] - from_store
        remaining = u - stats["done"]
        eta = elapsed / searched_done * remaining if searched_done else (0.0 if not remaining else None)
        progress(
            SearchProgress(
                frames_done=stats["done"],
                frames_total=u,
                solved=stats["solved"],
                frames_from_store=from_store,
                evaluations=stats["evals"],
                evaluations_per_s=stats["evals"] / elapsed,
                elapsed_s=elapsed,
                eta_s=eta,
            )
        )

    def finish(finished: list[FinishedFrame], indices: list[int]) -> None:
        for i, r in zip(indices, finished, strict=True):
            record(i, r)
        if store is not None:
            store.put_many(finished)  # one transaction per generation step
        stats["done"] += len(finished)
        stats["solved"] += sum(r.solved for r in finished)

    if pending and driver is not None:
        idx = np.asarray(pending, np.int64)
        work = PendingFrames(
            slots=u_slots[idx],
            target_words=u_words[idx],
            keys=np.array([frame_key(fingerprints[i], config.rng_seed) for i in pending], np.uint64),
            fingerprints=[fingerprints[i] for i in pending],
        )
        sink = SearchSink(
            lambda results, positions: finish(results, [pending[j] for j in positions]),
            report,
            history,
            stats,
            clock,
            start,
        )
        driver.run(config, work, sink)
    elif pending:
        _run(
            config,
            evaluate,
            (u_slots, u_words, fingerprints),
            pending,
            history,
            stats,
            finish,
            report,
            clock,
            start,
        )
    history.elapsed_s.append(clock() - start)
    history.frames_done.append(stats["done"])
    history.solved.append(stats["solved"])
    report(True)

    hamming = np.bitwise_count(out_golden ^ u_words).astype(np.uint8)
    return SearchResults(
        fingerprint=np.asarray(fingerprints, dtype=object)[inverse] if u else np.zeros(0, object),
        best_seed=out_seed[inverse],
        golden=out_golden[inverse],
        matched_bits=out_matched[inverse],
        hamming=hamming[inverse],
        reward=out_reward[inverse],
        generations=out_generations[inverse],
        evaluations=out_evaluations[inverse],
        solved=out_solved[inverse],
        from_store=out_from_store[inverse],
        difficulty_bits=int(config.difficulty_bits),
        unique_frames=u,
        frames_searched=len(pending),
        run_evaluations=int(stats["evals"]),
        kernel_seconds=float(stats["kernel_s"]),
        wall_seconds=clock() - start,
        history=history,
    )


def _run(
    config: SearchConfig,
    evaluate: Evaluator,
    frames: tuple[np.ndarray, np.ndarray, list[str]],
    pending: list[int],
    history: SearchHistory,
    stats: dict,
    finish: Callable[[list[FinishedFrame], list[int]], None],
    report: Callable[[bool], None],
    clock: Callable[[], float],
    start: float,
) -> None:
    """The generation loop: one kernel call and one compiled step per generation for all frames.

    Everything per frame and per population member (reward, best seed, advantages, selection,
    mutation, fresh seeds, the next batch) happens in ``fused``'s compiled functions;
    Python here only refills free slots, calls the kernel and records finished frames.
    """
    u_slots, u_words, fingerprints = frames
    p = int(config.population)
    elites = config.elites
    difficulty = int(config.difficulty_bits)
    epochs = np.asarray(config.epochs, np.int64)
    weights = np.asarray(config.reward_weights, np.float32)
    grpo = config.strategy == "grpo"
    header_time = int(config.header_time)
    s = _ActiveSet(min(int(config.frames_per_call), len(pending)), p)
    queue = iter(pending)
    queue_left = len(pending)
    active = 0
    last_sample = -1.0
    # History sums per generation index; a frame's generation never exceeds the loop count.
    history_frames, history_mean, history_best = np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    loops = 0

    while True:
        if queue_left and active < len(s.frame):
            free = np.flatnonzero(s.frame < 0)
            take = min(len(free), queue_left)
            new = free[:take]
            idx = np.fromiter((next(queue) for _ in range(take)), np.int64, take)
            queue_left -= take
            active += take
            s.frame[new] = idx
            s.key[new] = [frame_key(fingerprints[i], config.rng_seed) for i in idx]
            s.generation[new] = 0
            s.epoch[new] = 0
            s.slots[new] = u_slots[idx]
            s.target[new] = u_words[idx]
            s.best_matched[new] = -1
            s.best_reward[new] = -np.inf
            s.evaluations[new] = 0
            s.first_unevaluated[new] = 0
            fused.start_populations(s.seeds, new, s.key, grpo)
        if not active:
            break

        # One kernel call over every seed the active frames have not evaluated yet.
        n = fused.gather_batch(s.frame, s.first_unevaluated, s.slots, s.seeds, s.batch_slots, s.batch_seeds)
        t0 = clock()
        golden, keys = evaluate(s.batch_slots[:n], s.batch_seeds[:n], header_time)
        stats["kernel_s"] += clock() - t0
        _check_evaluator_output(golden, keys, n)
        stats["evals"] += n

        if loops >= len(history_frames):
            grow = max(64, len(history_frames))
            history_frames = np.concatenate([history_frames, np.zeros(grow, np.int64)])
            history_mean = np.concatenate([history_mean, np.zeros(grow)])
            history_best = np.concatenate([history_best, np.zeros(grow)])
        loops += 1
        finished = fused.generation_step(
            s.frame,
            s.generation,
            s.epoch,
            s.key,
            s.target,
            s.seeds,
            s.golden,
            s.keys,
            s.first_unevaluated,
            golden.astype(np.uint32, copy=False),
            keys.astype(np.uint32, copy=False),
            s.best_matched,
            s.best_reward,
            s.best_seed,
            s.best_golden,
            s.evaluations,
            epochs,
            difficulty,
            int(config.max_generations),
            weights,
            elites,
            grpo,
            s.done,
            history_frames,
            history_mean,
            history_best,
        )
        if finished:
            d = np.flatnonzero(s.done)
            results = [
                FinishedFrame(
                    fingerprint=fingerprints[int(s.frame[j])],
                    best_seed=s.best_seed[j].tobytes(),
                    golden=int(s.best_golden[j]),
                    matched_bits=int(s.best_matched[j]),
                    hamming=int(np.bitwise_count(s.best_golden[j] ^ s.target[j])),
                    reward=float(s.best_reward[j]),
                    generations=int(s.generation[j] + 1),
                    evaluations=int(s.evaluations[j]),
                    solved=bool(s.best_matched[j] >= difficulty),
                )
                for j in d
            ]
            finish(results, [int(s.frame[j]) for j in d])
            s.frame[d] = -1
            active -= d.size

        now = clock() - start
        if now - last_sample >= 0.25:
            last_sample = now
            history.elapsed_s.append(now)
            history.frames_done.append(stats["done"])
            history.solved.append(stats["solved"])
        report(False)
    history.set_generations(history_frames, history_mean, history_best)


def _check_evaluator_output(golden: object, keys: object, rows: int) -> None:
    if not (isinstance(golden, np.ndarray) and golden.shape == (rows,)):
        raise TypeError(
            f"the evaluator must return golden uint32[{rows}], got {getattr(golden, 'shape', golden)!r}"
        )
    want = (rows, len(STABILITY_PASSES))
    if not (isinstance(keys, np.ndarray) and keys.shape == want):
        raise TypeError(
            f"the evaluator must return keys uint32{list(want)}, got {getattr(keys, 'shape', keys)!r}"
        )
