"""hasher's side of Dagster's concurrency pools (``sha256``, ``asic``): claims that hold, and slots
that a killed run cannot keep forever.

Two upstream behaviours of Dagster 1.13 (``dagster._core.storage.event_log.sql_event_log``) and what
hasher does about each; :func:`install` applies both and the code location calls it when it loads,
so every process that runs hasher's jobs (the CLI, run workers, code servers) has them:

1. **A slot claim is not atomic.** ``SqlEventLogStorage._claim_concurrency_slot`` selects a free
   slot row ``FOR UPDATE SKIP LOCKED`` and then updates that row by id. SQLite has no row locks,
   and dagster-postgres opens its connections in AUTOCOMMIT, so the lock ends with the SELECT: two
   runs whose pending steps were both assigned (itself a check-then-insert race in
   ``add_pending_step``) can select the same free slot and both claim it — two ``seeds`` steps ran
   together 47 ms apart in the Ray test. hasher's claim updates a slot only while it is still free
   (``UPDATE … WHERE id = ? AND step_key IS NULL``), a compare-and-set that SQLite and PostgreSQL
   execute atomically; the loser looks for another free slot or stays blocked.
2. **A killed run keeps its slots.** The run worker frees a step's slot when the step ends; a run
   worker killed by SIGKILL (an OOM kill, ``docker kill``, a CI timeout) never does, and its run
   stays STARTED. Dagster frees slots only of runs that have *ended*, from the daemon
   (``run_monitoring.free_slots_after_run_end_seconds``), and the default run launcher cannot see a
   dead run worker (run monitoring's health check needs another launcher). So hasher gives each run
   a **lease**: a shared ``flock`` on ``$DAGSTER_HOME/hasher/run-leases/<run_id>.lock``, held by the
   process that claims the run's slots while it holds any, and by each of its step processes while
   they run. The kernel drops a dead process's locks, so a lease nobody holds means the run's
   processes on this machine are all gone. A claim that is blocked looks at the runs holding the
   pool: a run whose lease is free is marked failed and its slots are freed; a run with no lease
   file here (another machine, or hasher before leases) is named in the blocked run's log with the
   command that frees it, ``hasher pools free RUN_ID`` (:func:`free_run`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import inspect
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .files import network_filesystem

LEASE_DIR = Path("hasher") / "run-leases"
#: Longest nap of a run loop whose steps all wait on a pool (upstream spins a core there, see install).
BLOCKED_NAP_S = 0.25
#: Pools whose steps hold a device: the ones hasher's assets use.
HASHER_POOLS = ("sha256", "asic")

LeaseState = Literal["running", "gone", "unknown"]

_lock = threading.Lock()
_leases: dict[str, int] = {}  # run id → fd holding a shared lock, in this process
_lease_users: dict[str, int] = {}  # run id → how many holders in this process (claims + steps)
_claimed: dict[str, set[str]] = {}  # run id → step keys whose slot this process claimed
_named: set[tuple[str, str]] = set()  # (blocked run, holder) pairs already named in a run's log


def lease_path(instance_root: str | os.PathLike[str], run_id: str) -> Path:
    """The lease file of ``run_id`` in the instance whose root directory (``DAGSTER_HOME``) is given."""
    return Path(instance_root) / LEASE_DIR / f"{run_id}.lock"


def hold_lease(instance_root: str | os.PathLike[str], run_id: str) -> bool:
    """Take (or count once more) this process's shared lock on the run's lease; False when the lease
    directory cannot be written (the run goes on; it can then only be freed by hand)."""
    with _lock:
        if run_id in _leases:
            _lease_users[run_id] += 1
            return True
        path = lease_path(instance_root, run_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return False
        fcntl.flock(fd, fcntl.LOCK_SH)
        _leases[run_id], _lease_users[run_id] = fd, 1
        return True


def release_lease(run_id: str) -> None:
    """Give back one hold on the run's lease; the lock goes with the last one."""
    with _lock:
        if run_id not in _leases:
            return
        _lease_users[run_id] -= 1
        if _lease_users[run_id] <= 0:
            os.close(_leases.pop(run_id))
            del _lease_users[run_id]


@contextlib.contextmanager
def _probe(instance_root: str | os.PathLike[str], run_id: str):
    """Yield the run's lease state; while the block runs, a ``gone`` lease stays locked by us."""
    path = lease_path(instance_root, run_id)
    if network_filesystem(Path(instance_root)):
        yield "unknown"  # a lock there may not be seen by other hosts: never free on its word
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield "unknown"
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            yield "running"
            return
        yield "gone"
    finally:
        os.close(fd)


def lease_state(instance_root: str | os.PathLike[str], run_id: str) -> LeaseState:
    """``running`` (a process of the run holds its lease on this machine), ``gone`` (the lease is
    here and nobody holds it: every process of the run has ended) or ``unknown`` (no lease here)."""
    with _probe(instance_root, run_id) as state:
        return state


@dataclass(frozen=True)
class SlotHolder:
    """One claimed slot of a pool: the run and step holding it, the run's status and lease state."""

    pool: str
    run_id: str
    step_key: str
    run_status: str
    lease: LeaseState


def holders(instance: Any, pools: tuple[str, ...] | None = None) -> list[SlotHolder]:
    """Every claimed slot of ``pools`` (default: every pool of the instance), with its run's state."""
    storage = instance.event_log_storage
    found = []
    for pool in sorted(pools or storage.get_concurrency_keys()):
        for slot in storage.get_concurrency_info(pool).claimed_slots:
            run = instance.get_run_by_id(slot.run_id)
            status = run.status.value if run else "DELETED"
            lease = lease_state(instance.root_directory, slot.run_id)
            found.append(SlotHolder(pool, slot.run_id, slot.step_key, status, lease))
    return found


def _free(instance: Any, run_id: str, message: str) -> list[str]:
    """Mark the run failed (when it has not ended) and free its slots; returns the pools freed."""
    from dagster import DagsterRunStatus
    from dagster._core.storage.dagster_run import FINISHED_STATUSES

    storage = instance.event_log_storage
    pools = sorted(
        pool
        for pool in storage.get_concurrency_keys()
        if any(s.run_id == run_id for s in storage.get_concurrency_info(pool).claimed_slots)
    )
    run = instance.get_run_by_id(run_id)
    if run is not None and run.status not in FINISHED_STATUSES and run.status != DagsterRunStatus.CANCELING:
        instance.report_run_failed(run, message)
    storage.free_concurrency_slots_for_run(run_id)
    return pools


def release_dead_holders(instance: Any, pool: str, *, by_run: str | None = None) -> list[str]:
    """Free the slots of ``pool`` held by runs whose lease is here and held by nobody (every process
    of the run has ended: killed); each such run is marked failed. Returns their run ids."""
    storage = instance.event_log_storage
    freed = []
    for run_id in sorted({s.run_id for s in storage.get_concurrency_info(pool).claimed_slots}):
        if run_id == by_run:
            continue
        with _probe(instance.root_directory, run_id) as state:
            if state != "gone":
                continue
            steps = [
                s.step_key for s in storage.get_concurrency_info(pool).claimed_slots if s.run_id == run_id
            ]
            why = f" (found by run {by_run}, blocked on pool {pool!r})" if by_run else ""
            _free(
                instance,
                run_id,
                f"hasher: every process of this run has ended (killed?) while it held pool {pool!r} "
                f"(step {', '.join(steps)}); marked failed and its pool slots freed{why}",
            )
            lease_path(instance.root_directory, run_id).unlink(missing_ok=True)
        freed.append(run_id)
    return freed


def free_run(instance: Any, run_id: str, *, force: bool = False) -> list[str]:
    """``hasher pools free RUN_ID``: mark a run that holds pool slots failed and free them; returns
    the pools freed. Raises ValueError when the run holds no slot, or when its lease shows that a
    process of it still runs on this machine (``force`` frees it anyway)."""
    state = lease_state(instance.root_directory, run_id)
    if state == "running" and not force:
        raise ValueError(
            f"run {run_id} is still running on this machine (a process of it holds "
            f"{lease_path(instance.root_directory, run_id)}): stop it, or use --force"
        )
    pools = _free(instance, run_id, "hasher pools free: marked failed and its pool slots freed by hand")
    if not pools:
        raise ValueError(f"run {run_id} holds no pool slot (hasher pools lists the ones held)")
    lease_path(instance.root_directory, run_id).unlink(missing_ok=True)
    return pools


def _atomic_claim_slot(self: Any, concurrency_key: str, run_id: str, step_key: str) -> Any:
    """``SqlEventLogStorage._claim_concurrency_slot`` as a compare-and-set (see the module docstring)."""
    import sqlalchemy as db
    from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
    from dagster._utils.concurrency import ConcurrencySlotStatus

    slots = ConcurrencySlotsTable.c
    free = db.and_(
        slots.concurrency_key == concurrency_key, slots.step_key.is_(None), slots.deleted.is_(False)
    )
    with self.index_connection() as conn:
        for _ in range(3):  # another claimer may take the slot we saw; look once or twice more
            row = conn.execute(db.select(slots.id).where(free).limit(1)).fetchone()
            if row is None:
                return ConcurrencySlotStatus.BLOCKED
            taken = conn.execute(
                ConcurrencySlotsTable.update()
                .where(db.and_(slots.id == row[0], free))
                .values(run_id=run_id, step_key=step_key)
            ).rowcount
            if taken:
                return ConcurrencySlotStatus.CLAIMED
    return ConcurrencySlotStatus.BLOCKED


def _claim_with_leases(claim):
    def claim_concurrency_slot(self, concurrency_key, run_id, step_key, priority=None):
        root = self._instance.root_directory if self.has_instance else None
        if root is None:
            return claim(self, concurrency_key, run_id, step_key, priority)
        with _lock:
            holding = bool(_claimed.get(run_id))
        if not holding:
            hold_lease(root, run_id)  # before the claim: a slot is never held without a lease
        claimed = False
        try:
            status = claim(self, concurrency_key, run_id, step_key, priority)
            if not status.is_claimed:
                if release_dead_holders(self._instance, concurrency_key, by_run=run_id):
                    status = claim(self, concurrency_key, run_id, step_key, priority)
                else:
                    _name_unknown_holders(self._instance, concurrency_key, run_id)
            claimed = status.is_claimed
        finally:
            with _lock:
                if claimed:
                    _claimed.setdefault(run_id, set()).add(step_key)
                keep = holding or claimed
            if not keep:
                release_lease(run_id)
        return status

    claim_concurrency_slot.__doc__ = claim.__doc__
    return claim_concurrency_slot


def _free_with_leases(free):
    def free_concurrency_slot_for_step(self, run_id, step_key):
        free(self, run_id, step_key)
        with _lock:
            steps = _claimed.get(run_id)
            done = steps is not None and step_key in steps and len(steps) == 1
            if steps is not None:
                steps.discard(step_key)
                if not steps:
                    del _claimed[run_id]
        if done:
            release_lease(run_id)

    free_concurrency_slot_for_step.__doc__ = free.__doc__
    return free_concurrency_slot_for_step


def _name_unknown_holders(instance: Any, pool: str, run_id: str) -> None:
    """Say once, in the blocked run's log, which run holds the pool when hasher cannot tell whether
    it still runs (no lease here), and the command that frees it."""
    for holder in holders(instance, (pool,)):
        if holder.lease != "unknown" or holder.run_id == run_id or (run_id, holder.run_id) in _named:
            continue
        _named.add((run_id, holder.run_id))
        run = instance.get_run_by_id(run_id)
        if run is None:
            continue
        instance.report_engine_event(
            f"pool {pool!r} is held by run {holder.run_id} (step {holder.step_key}, {holder.run_status}), "
            "which has no lease on this machine, so hasher cannot tell whether it still runs; "
            f"this step waits for it. If that run is dead: hasher pools free {holder.run_id}",
            run,
        )


def install() -> None:
    """Patch Dagster's SQL event log storage (SQLite and PostgreSQL alike) with the atomic slot
    claim and the run leases; idempotent. Warns, and leaves Dagster as it is, when its slot-claim
    methods no longer have the shape this was written for (Dagster 1.13)."""
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    if getattr(SqlEventLogStorage, "_hasher_pools_installed", False):
        return
    expected = {
        "_claim_concurrency_slot": ["self", "concurrency_key", "run_id", "step_key"],
        "claim_concurrency_slot": ["self", "concurrency_key", "run_id", "step_key", "priority"],
        "free_concurrency_slot_for_step": ["self", "run_id", "step_key"],
    }
    for name, params in expected.items():
        method = getattr(SqlEventLogStorage, name, None)
        if method is None or list(inspect.signature(method).parameters) != params:
            warnings.warn(
                f"hasher: dagster's SqlEventLogStorage.{name} changed; pool claims are Dagster's own "
                "(not atomic on SQLite/PostgreSQL) and killed runs are not released",
                stacklevel=2,
            )
            return
    SqlEventLogStorage._claim_concurrency_slot = _atomic_claim_slot
    SqlEventLogStorage.claim_concurrency_slot = _claim_with_leases(SqlEventLogStorage.claim_concurrency_slot)
    SqlEventLogStorage.free_concurrency_slot_for_step = _free_with_leases(
        SqlEventLogStorage.free_concurrency_slot_for_step
    )
    SqlEventLogStorage._hasher_pools_installed = True
    _install_blocked_nap()


def _install_blocked_nap() -> None:
    # Upstream: while every step of a run waits on a pool, the multiprocess executor's loop never
    # sleeps, and ActiveExecution.sleep_interval() (min with 0) never does either: a run waiting for
    # another's slot spins a core, on a 2-core machine half of what the slot holder could use. A
    # refused claim naps until its next check is due, at most BLOCKED_NAP_S.
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    claim = InstanceConcurrencyContext.claim
    if list(inspect.signature(claim).parameters) != ["self", "concurrency_key", "step_key", "step_priority"]:
        warnings.warn(
            "hasher: dagster's InstanceConcurrencyContext.claim changed; a blocked run may spin", stacklevel=3
        )
        return

    def claim_or_nap(self, concurrency_key, step_key, step_priority=0):
        if claim(self, concurrency_key, step_key, step_priority):
            return True
        due = getattr(self, "_pending_timeouts", {}).get(step_key, 0.0)
        time.sleep(min(BLOCKED_NAP_S, max(0.0, due - time.time())))
        return False

    InstanceConcurrencyContext.claim = claim_or_nap
