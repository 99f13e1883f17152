"""The search's knobs (DESIGN §4.3–4.4): the one definition of every setting, its default, range and
meaning. The ``seeds`` asset's Dagster config and the search CLI's flags are derived from
:class:`SearchConfig`'s fields (their ``metadata`` holds the description and bounds), not copied.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import typing
from dataclasses import dataclass
from typing import Any

import numpy as np

from hasher_core.design import ALGORITHM_VERSION, DIFFICULTY_BITS
from hasher_core.errors import SearchConfigError

from .reward import elite_count

STRATEGIES = ("grpo", "scan")
MAX_POPULATION = 1 << 16


def knob(default: Any, description: str, **bounds: Any) -> Any:
    """A :class:`SearchConfig` field: its default plus ``description`` and bounds (``ge``, ``le``,
    ``gt``, ``lt``, ``choices``) in the field's metadata, for the UI's config form and the CLI's flags."""
    return dataclasses.field(default=default, metadata={"description": description, **bounds})


@dataclass(frozen=True)
class SearchConfig:
    """Everything that decides the seeds (all but ``frames_per_call`` are part of the fingerprint).

    ``difficulty_schedule``: optional non-decreasing difficulties (each ≤ ``difficulty_bits``)
    a frame climbs through: it searches at the first, and each time its best seed matches the
    current difficulty it moves on to the next; after the schedule it searches at
    ``difficulty_bits``. A frame is *solved* only at ``difficulty_bits``. ``max_generations``
    bounds the whole climb.
    """

    difficulty_bits: int = knob(
        DIFFICULTY_BITS,
        "Leading bits of golden that must match the target word token << 15; 17 = the exact token",
        ge=1,
        le=32,
    )
    difficulty_schedule: tuple[int, ...] | None = knob(
        None, "Difficulty per epoch, rising to difficulty_bits (e.g. 12,16,20)"
    )
    population: int = knob(256, "Candidate seeds per frame per generation", ge=2, le=MAX_POPULATION)
    elite_ratio: float = knob(0.25, "Share of the population kept as elites each generation", gt=0, lt=1)
    # 16384 generations of 192 fresh seeds ≈ 24 × 2^17 evaluations: at the default 17 bits a frame is
    # left unsolved with probability e^-24; at 4096 it was e^-6, two frames of the Gettysburg Address.
    max_generations: int = knob(
        16384, "Give up on a frame after this many generations (≈ 24 × 2^17 evaluations with GRPO)", ge=1
    )
    strategy: str = knob("grpo", "grpo: evolutionary search; scan: consecutive nonces", choices=STRATEGIES)
    reward_weights: tuple[float, float, float] = knob(
        (0.6, 0.3, 0.1), "Weights of the reward's alignment, stability and format terms"
    )
    header_time: int = knob(
        0, "Header bytes 68–71: a constant stored with every seed, never the clock", ge=0, le=0xFFFFFFFF
    )
    rng_seed: int = knob(0, "Seed of the search's randomness: the same config gives the same seeds", ge=0)
    frames_per_call: int = knob(
        256, "Frames searched together per kernel call (not in the fingerprint)", ge=1
    )

    def validate(self) -> SearchConfig:
        """Return ``self`` or raise :class:`SearchConfigError` naming the bad setting."""

        def is_int(v: object) -> bool:
            return isinstance(v, int | np.integer) and not isinstance(v, bool)

        if not is_int(self.difficulty_bits) or not 1 <= self.difficulty_bits <= 32:
            raise SearchConfigError(
                f"difficulty_bits must be an integer in 1–32, got {self.difficulty_bits!r}"
            )
        if self.difficulty_schedule is not None:
            sched = tuple(self.difficulty_schedule)
            if not sched or not all(is_int(d) and 1 <= d <= 32 for d in sched):
                raise SearchConfigError(
                    f"difficulty_schedule must be a non-empty list of integers in 1–32, got {sched!r}"
                )
            if any(b < a for a, b in itertools.pairwise(sched)):
                raise SearchConfigError(f"difficulty_schedule must not decrease, got {sched!r}")
            if sched[-1] > self.difficulty_bits:
                raise SearchConfigError(
                    f"difficulty_schedule {sched!r} goes above difficulty_bits={self.difficulty_bits}"
                )
        if not is_int(self.population) or not 2 <= self.population <= MAX_POPULATION:
            raise SearchConfigError(
                f"population must be an integer in 2–{MAX_POPULATION}, got {self.population!r}"
            )
        if not isinstance(self.elite_ratio, int | float) or not 0.0 < self.elite_ratio < 1.0:
            raise SearchConfigError(f"elite_ratio must be in (0, 1), got {self.elite_ratio!r}")
        if not is_int(self.max_generations) or self.max_generations < 1:
            raise SearchConfigError(
                f"max_generations must be a positive integer, got {self.max_generations!r}"
            )
        if self.strategy not in STRATEGIES:
            raise SearchConfigError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        w = tuple(self.reward_weights)
        if len(w) != 3 or not all(isinstance(x, int | float) and math.isfinite(x) and x >= 0 for x in w):
            raise SearchConfigError(
                "reward_weights must be three finite non-negative numbers (alignment, stability, format), "
                f"got {self.reward_weights!r}"
            )
        if not is_int(self.header_time) or not 0 <= self.header_time <= 0xFFFFFFFF:
            raise SearchConfigError(f"header_time must fit in 32 bits, got {self.header_time!r}")
        if not is_int(self.rng_seed) or not 0 <= self.rng_seed < 1 << 64:
            raise SearchConfigError(f"rng_seed must be an integer in [0, 2**64), got {self.rng_seed!r}")
        if not is_int(self.frames_per_call) or self.frames_per_call < 1:
            raise SearchConfigError(
                f"frames_per_call must be a positive integer, got {self.frames_per_call!r}"
            )
        return self

    @property
    def epochs(self) -> tuple[int, ...]:
        """The difficulties a frame climbs through, ending at ``difficulty_bits``."""
        sched = tuple(int(d) for d in self.difficulty_schedule or ())
        return sched if sched and sched[-1] == self.difficulty_bits else (*sched, int(self.difficulty_bits))

    @property
    def elites(self) -> int:
        return elite_count(int(self.population), float(self.elite_ratio))

    def fingerprint_fields(self) -> dict[str, object]:
        """The settings that change a frame's result (not ``frames_per_call``: batching does not)."""
        return {
            "algorithm_version": ALGORITHM_VERSION,
            "difficulty_bits": int(self.difficulty_bits),
            "difficulty_schedule": list(self.epochs),
            "header_time": int(self.header_time),
            "strategy": self.strategy,
            "population": int(self.population),
            "elite_ratio": float(self.elite_ratio),
            "max_generations": int(self.max_generations),
            "rng_seed": int(self.rng_seed),
            "reward_weights": [float(x) for x in self.reward_weights],
        }


@dataclass(frozen=True)
class Knob:
    """One :class:`SearchConfig` field as a form or a command line needs it.

    ``kind`` is the type of the value (or of each item when ``is_list``); ``length`` the fixed item
    count of a tuple like ``reward_weights``; ``optional`` whether None is allowed; ``bounds`` the
    ``ge``/``le``/``gt``/``lt`` limits; ``choices`` the allowed strings.
    """

    name: str
    kind: type
    default: Any
    description: str
    is_list: bool = False
    length: int | None = None
    optional: bool = False
    bounds: dict[str, Any] = dataclasses.field(default_factory=dict)
    choices: tuple[str, ...] | None = None


def knobs() -> list[Knob]:
    """Every :class:`SearchConfig` field as a :class:`Knob`, in declaration order: what the ``seeds``
    asset's config class and the search CLI's flags are generated from."""
    hints = typing.get_type_hints(SearchConfig)
    out = []
    for f in dataclasses.fields(SearchConfig):
        kind = hints[f.name]
        args = typing.get_args(kind)
        optional = type(None) in args
        tuple_type = next((t for t in (kind, *args) if typing.get_origin(t) is tuple), None)
        bounds = {k: f.metadata[k] for k in ("ge", "le", "gt", "lt") if k in f.metadata}
        common = {
            "name": f.name,
            "default": f.default,
            "description": f.metadata["description"],
            "bounds": bounds,
        }
        if tuple_type is not None:
            items = typing.get_args(tuple_type)
            length = None if Ellipsis in items else len(items)
            out.append(Knob(kind=items[0], is_list=True, length=length, optional=optional, **common))
        else:
            out.append(Knob(kind=kind, choices=f.metadata.get("choices"), **common))
    return out
