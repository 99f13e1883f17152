"""What a deploy changes (DESIGN §6): two bundles compared frame by frame (by fingerprint).

A frame is *changed* when its seeds (seed, header time, golden) differ; the dry run and every
deploy report this before touching the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .format import Bundle


@dataclass(frozen=True)
class BundleDiff:
    """What a deploy changes, by frame fingerprint (a frame is changed when its seeds differ)."""

    rows_before: int
    rows_after: int
    frames_added: int
    frames_removed: int
    frames_changed: int
    frames_unchanged: int
    examples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, Any]:
        return {
            "rows_before": self.rows_before,
            "rows_after": self.rows_after,
            "frames_added": self.frames_added,
            "frames_removed": self.frames_removed,
            "frames_changed": self.frames_changed,
            "frames_unchanged": self.frames_unchanged,
            "examples": {k: list(v) for k, v in self.examples.items()},
        }


def _frames_by_fingerprint(bundle: Bundle | None) -> dict[str, tuple]:
    if bundle is None:
        return {}
    t = bundle.seeds
    out: dict[str, list] = {}
    for fp, seed, ht, golden in zip(
        t.column("fingerprint").to_pylist(),
        t.column("best_seed").to_pylist(),
        t.column("header_time").to_pylist(),
        t.column("golden").to_pylist(),
        strict=True,
    ):
        out.setdefault(fp, []).append((seed, ht, golden))
    return {fp: tuple(sorted(v)) for fp, v in out.items()}


def diff_bundles(before: Bundle | None, after: Bundle, examples: int = 5) -> BundleDiff:
    """Rows and frames added, removed and changed going from ``before`` to ``after``."""
    old, new = _frames_by_fingerprint(before), _frames_by_fingerprint(after)
    added = sorted(new.keys() - old.keys())
    removed = sorted(old.keys() - new.keys())
    common = old.keys() & new.keys()
    changed = sorted(fp for fp in common if old[fp] != new[fp])
    return BundleDiff(
        rows_before=before.num_rows if before is not None else 0,
        rows_after=after.num_rows,
        frames_added=len(added),
        frames_removed=len(removed),
        frames_changed=len(changed),
        frames_unchanged=len(common) - len(changed),
        examples={"added": tuple(added[:examples]), "removed": tuple(removed[:examples]),
                  "changed": tuple(changed[:examples])},
    )  # fmt: skip
