"""The machinery of one deploy (DESIGN §6): its report, the deadline every step runs under (device
calls in a worker thread, so a hung device cannot outlive it), and the health-check rule.

``DeploymentStore.deploy`` drives the steps; this module holds what the steps share.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hasher_core.bundle.diff import BundleDiff

if TYPE_CHECKING:
    from .verify import VerifyReport


@dataclass
class DeployReport:
    """What a deploy (or dry run) did, step by step; ``as_metadata()`` is for the Dagster asset."""

    version: str
    previous_version: str | None
    status: str  # "deployed" | "unchanged" | "dry_run"
    attempts: int = 0
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)
    backup_path: str | None = None
    pruned_backups: list[str] = field(default_factory=list)
    diff: BundleDiff | None = None
    verify: VerifyReport | None = None
    health_before: dict[str, Any] | None = None
    health_after: dict[str, Any] | None = None
    retried_errors: list[str] = field(default_factory=list)
    current_error: str | None = None
    #: What killed deploys had left and this deploy removed (paths relative to the store).
    stale_removed: list[str] = field(default_factory=list)

    @property
    def would_change(self) -> bool:
        return self.version != self.previous_version

    def as_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "version": self.version,
            "previous_version": self.previous_version or "",
            "status": self.status,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 4),
            "step_seconds": {k: round(v, 4) for k, v in self.step_seconds.items()},
            "backup_path": self.backup_path or "",
            "pruned_backups": list(self.pruned_backups),
            "retried_errors": list(self.retried_errors),
        }
        if self.diff is not None:
            meta["diff"] = self.diff.as_metadata()
        if self.verify is not None:
            meta["verify"] = self.verify.as_metadata()
        if self.health_before is not None:
            meta["health_before"] = self.health_before
        if self.health_after is not None:
            meta["health_after"] = self.health_after
        if self.current_error:
            meta["current_error"] = self.current_error
        if self.stale_removed:
            meta["stale_removed"] = list(self.stale_removed)
        return meta


class StepFailed(Exception):
    """One step of a deploy failed (or overran the deadline); the deploy rolls back and may retry."""

    def __init__(self, step: str, reason: str):
        self.step, self.reason = step, reason
        super().__init__(f"{step}: {reason}")


def call_with_timeout(fn: Callable[[], Any], timeout_s: float, step: str) -> Any:
    """Run an injected (device-side) callable, giving up when the deadline passes."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    # A daemon thread: a device call that never returns must not keep the process alive.
    worker = threading.Thread(target=target, name=f"deploy-{step}", daemon=True)
    worker.start()
    worker.join(max(timeout_s, 0.0))
    if worker.is_alive():
        raise StepFailed(step, f"deadline exceeded: still running after {timeout_s:.3f} s")
    if "error" in box:
        e = box["error"]
        raise StepFailed(step, f"{type(e).__name__}: {e}") from e
    return box.get("value")


def check_health(result: Any, step: str) -> dict[str, Any]:
    if not isinstance(result, Mapping):
        raise StepFailed(step, f"health check returned {type(result).__name__}, expected a dict")
    for key in ("ok", "healthy"):
        if key in result and not result[key]:
            raise StepFailed(step, f"device reports unhealthy: {dict(result)}")
    return dict(result)


class Deadline:
    """The deploy's deadline: checked before and after every step, enforced on injected callables."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.monotonic()
        self.last_step_s = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def run(self, name: str, fn: Callable[[], Any], *, injected: bool) -> Any:
        if self.remaining() <= 0:
            raise StepFailed(name, f"deadline of {self.seconds} s exceeded before the step started")
        t0 = time.monotonic()
        try:
            result = call_with_timeout(fn, self.remaining(), name) if injected else fn()
        except StepFailed:
            raise
        except Exception as e:
            raise StepFailed(name, f"{type(e).__name__}: {e}") from e
        finally:
            self.last_step_s = time.monotonic() - t0
        if self.remaining() <= 0:
            raise StepFailed(name, f"deadline of {self.seconds} s exceeded during the step")
        return result
