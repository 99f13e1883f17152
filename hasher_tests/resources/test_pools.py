"""Concurrency pools that hold (issue 18, kind 13) and slots a killed run cannot keep (kind 4).

Kind 13: two claims of the one free slot of ``sha256`` or ``asic`` — the state Dagster's pending-step
race leaves, replayed deterministically by holding one claim between its SELECT and its UPDATE —
give the slot to one run only, on the SQLite instance of ``dagster.yaml`` (and on PostgreSQL in
``hasher_tests/end_to_end/test_pool_kills.py``); and real processes hammering one slot never hold it
together. Kind 4: a real process claims a slot and is killed (SIGKILL, SIGTERM), alone or leaving
its step process behind; the next claim on the pool gets the slot once every process of the dead
run has ended, the dead run is marked failed, and a holder hasher cannot judge is named with the
command that frees it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy
from dagster._core.storage.dagster_run import DagsterRun

from hasher_resources import pools
from hasher_tests.servers import ROOT

pytestmark = pytest.mark.timeout(120)

POOLS = ["sha256", "asic"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME with the repository's dagster.yaml (SQLite, every pool limited to 1)."""
    path = tmp_path / "dagster_home"
    path.mkdir()
    shutil.copy(ROOT / "dagster.yaml", path / "dagster.yaml")
    return path


@pytest.fixture
def instance(home: Path) -> Iterator[dg.DagsterInstance]:
    pools.install()
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def _run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name="partition_pipeline", run_id=run_id, status=status))
    return run_id


def _holders(instance: dg.DagsterInstance, pool: str) -> list[str]:
    return [slot.run_id for slot in instance.event_log_storage.get_concurrency_info(pool).claimed_slots]


def claim_race(instance: dg.DagsterInstance, other: dg.DagsterInstance, pool: str) -> list[bool]:
    """Two runs' steps, both assigned to the pool's one free slot, claim it from two instances (two
    processes, as two run workers are; one instance serialises its own SQLite connections): the
    first pauses between finding the free slot and taking it while the second claims. Returns who
    got it."""
    storage = instance.event_log_storage
    storage.set_concurrency_slots(pool, 1)
    first, second = _run(instance), _run(instance)
    for run_id in (first, second):  # both assigned: what two concurrent add_pending_step calls leave
        storage.add_pending_step(pool, run_id, "step", should_assign=True)
    in_first, paused, resume = threading.local(), threading.Event(), threading.Event()

    def hold_the_first_update(conn, cursor, statement, parameters, context, executemany):
        if getattr(in_first, "on", False) and statement.lstrip().upper().startswith(
            "UPDATE CONCURRENCY_SLOTS"
        ):
            paused.set()
            assert resume.wait(30), "the second claim never finished"

    results: dict[str, bool] = {}

    def claim_first() -> None:
        in_first.on = True
        results[first] = storage.claim_concurrency_slot(pool, first, "step").is_claimed

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", hold_the_first_update)
    try:
        thread = threading.Thread(target=claim_first)
        thread.start()
        assert paused.wait(30), "the first claim never reached its UPDATE"
        results[second] = other.event_log_storage.claim_concurrency_slot(pool, second, "step").is_claimed
        resume.set()
        thread.join(30)
    finally:
        resume.set()
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", hold_the_first_update)
    assert len(_holders(instance, pool)) <= 1
    return [results[first], results[second]]


@pytest.mark.parametrize("pool", POOLS)
def test_two_claims_of_the_one_free_slot_give_it_to_one_run(instance, home, pool):
    # Upstream, the first UPDATE overwrote the second's claim and both steps ran.
    with dg.DagsterInstance.from_config(str(home)) as other:
        assert claim_race(instance, other, pool) == [False, True]


HAMMER = """
import sys, time, dagster as dg
from hasher_resources import pools
pools.install()
home, pool, me, rounds, log = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
with dg.DagsterInstance.from_config(home) as instance, open(log, "a") as out:
    storage = instance.event_log_storage
    for k in range(rounds):
        run_id = f"{me}-{k}"
        while not storage.claim_concurrency_slot(pool, run_id, "seeds").is_claimed:
            time.sleep(0.001)
        start = time.time()
        time.sleep(0.005)
        out.write(f"{start} {time.time()}\\n")
        out.flush()
        storage.free_concurrency_slot_for_step(run_id, "seeds")
"""


@pytest.mark.slow
def test_processes_claiming_one_slot_never_hold_it_together(instance, home, tmp_path):
    instance.event_log_storage.set_concurrency_slots("sha256", 1)
    log = tmp_path / "held.log"
    procs = [
        subprocess.Popen([sys.executable, "-c", HAMMER, str(home), "sha256", f"p{i}", "25", str(log)])
        for i in range(3)
    ]
    for proc in procs:
        assert proc.wait(timeout=100) == 0
    spans = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())
    assert len(spans) == 75
    overlaps = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert overlaps == []


HOLDER = """
import os, sys, time, dagster as dg
from hasher_resources import pools
pools.install()
home, pool, run_id, step_process = sys.argv[1:5]
with dg.DagsterInstance.from_config(home) as instance:
    status = instance.event_log_storage.claim_concurrency_slot(pool, run_id, "deployment")
    print("claimed" if status.is_claimed else "blocked", flush=True)
    if step_process == "yes" and os.fork() == 0:  # a step process of the run, with its own hold
        pools.hold_lease(home, run_id)
        print("step", flush=True)
    time.sleep(300)
"""


@contextlib.contextmanager
def holder(home: Path, pool: str, run_id: str, *, step_process: bool = False) -> Iterator[subprocess.Popen]:
    """A real process (its own process group) that claims ``pool`` for ``run_id`` and then waits."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(home), pool, run_id, "yes" if step_process else "no"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        lines = [proc.stdout.readline().strip() for _ in range(2 if step_process else 1)]
        assert lines == ["claimed", "step"][: len(lines)], lines
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()


def _claim(instance: dg.DagsterInstance, pool: str, run_id: str) -> bool:
    return instance.event_log_storage.claim_concurrency_slot(pool, run_id, "deployment").is_claimed


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("pool", POOLS)
def test_a_killed_holder_does_not_block_the_next_claim(instance, home, pool, sig):
    dead, waiting = _run(instance), _run(instance)
    instance.event_log_storage.set_concurrency_slots(pool, 1)
    with holder(home, pool, dead) as proc:
        assert not _claim(instance, pool, waiting)  # alive: the slot is its
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert _claim(instance, pool, waiting)
    assert _holders(instance, pool) == [waiting]
    run = instance.get_run_by_id(dead)
    assert run.status == dg.DagsterRunStatus.FAILURE
    failure = instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)[0]
    assert f"every process of this run has ended (killed?) while it held pool {pool!r}" in failure.message
    assert f"found by run {waiting}" in failure.message


@pytest.mark.slow
@pytest.mark.parametrize("pool", POOLS)
def test_a_step_process_that_outlives_its_run_worker_keeps_the_slot_until_it_ends(instance, home, pool):
    dead, waiting = _run(instance), _run(instance)
    instance.event_log_storage.set_concurrency_slots(pool, 1)
    with holder(home, pool, dead, step_process=True) as proc:
        os.kill(proc.pid, signal.SIGKILL)  # the run worker only; its step process goes on
        proc.wait(timeout=30)
        assert not _claim(instance, pool, waiting)  # the device may still be in use
        assert pools.lease_state(home, dead) == "running"
        os.killpg(proc.pid, signal.SIGKILL)  # now the step process too
        deadline = time.monotonic() + 10
        while pools.lease_state(home, dead) == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _claim(instance, pool, waiting)
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE


def test_a_holder_hasher_cannot_judge_is_named_with_the_command_that_frees_it(instance, home):
    storage = instance.event_log_storage
    storage.set_concurrency_slots("asic", 1)
    elsewhere, waiting = _run(instance), _run(instance)
    assert _claim(instance, "asic", elsewhere)
    pools.release_lease(elsewhere)
    pools.lease_path(home, elsewhere).unlink()  # as if its run worker were on another machine
    assert not _claim(instance, "asic", waiting)
    assert not _claim(instance, "asic", waiting)  # named once, not on every attempt
    notes = [e.message for e in instance.all_logs(waiting, of_type=dg.DagsterEventType.ENGINE_EVENT)]
    assert len(notes) == 1
    assert f"pool 'asic' is held by run {elsewhere} (step deployment, STARTED)" in notes[0]
    assert f"If that run is dead: hasher pools free {elsewhere}" in notes[0]
    assert instance.get_run_by_id(elsewhere).status == dg.DagsterRunStatus.STARTED  # not judged


def test_hasher_pools_lists_the_holders_and_frees_a_dead_run(instance, home, monkeypatch, capsys):
    from hasher_cli.main import main

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance.event_log_storage.set_concurrency_slots("asic", 1)
    elsewhere = _run(instance)
    assert _claim(instance, "asic", elsewhere)
    assert main(["pools"]) == 0
    listing = capsys.readouterr().out
    assert "asic: 1 of 1 slot(s) held" in listing
    assert f"run {elsewhere} step deployment: STARTED, running on this machine" in listing
    assert main(["pools", "free", elsewhere]) == 2  # its lease is held: refused
    assert "is still running on this machine" in capsys.readouterr().err
    pools.release_lease(elsewhere)
    pools.lease_path(home, elsewhere).unlink()
    assert main(["pools"]) == 0
    assert "no lease on this machine: if it is dead, hasher pools free" in capsys.readouterr().out
    assert main(["pools", "free", elsewhere]) == 0
    assert f"freed pool(s) asic of run {elsewhere}" in capsys.readouterr().out
    assert _holders(instance, "asic") == []
    assert instance.get_run_by_id(elsewhere).status == dg.DagsterRunStatus.FAILURE
    assert main(["pools", "free", elsewhere]) == 2
    assert "holds no pool slot" in capsys.readouterr().err


def test_a_lease_on_a_network_filesystem_is_never_taken_for_a_dead_run(home, monkeypatch):
    run_id = str(uuid.uuid4())
    assert pools.hold_lease(home, run_id)
    pools.release_lease(run_id)
    assert pools.lease_state(home, run_id) == "gone"  # nobody holds it: the run's processes ended
    monkeypatch.setattr(pools, "network_filesystem", lambda path: "nfs4")
    assert pools.lease_state(home, run_id) == "unknown"  # a lock there may be invisible to other hosts


def test_install_leaves_a_changed_dagster_alone_and_says_so(monkeypatch):
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    def renamed(self, key, run, step, extra):  # a future Dagster's different signature
        raise AssertionError("not called")

    monkeypatch.setattr(SqlEventLogStorage, "_hasher_pools_installed", False)
    monkeypatch.setattr(SqlEventLogStorage, "_claim_concurrency_slot", renamed)
    with pytest.warns(UserWarning, match=r"SqlEventLogStorage\._claim_concurrency_slot changed"):
        pools.install()
    assert SqlEventLogStorage._claim_concurrency_slot is renamed


def test_dagster_yaml_frees_the_slots_of_runs_that_ended():
    import yaml

    for path in (ROOT / "dagster.yaml", ROOT / "deploy" / "dagster-postgres.yaml"):
        monitoring = yaml.safe_load(path.read_text())["run_monitoring"]
        assert monitoring["enabled"] and monitoring["free_slots_after_run_end_seconds"] > 0, path


def test_a_run_waiting_for_a_pool_naps_instead_of_spinning_a_core(instance):
    # Upstream, the executor loops on the claim without sleeping while every step waits: 100 % of a core.
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    instance.event_log_storage.set_concurrency_slots("sha256", 1)
    holder, waiting = _run(instance), _run(instance)
    assert instance.event_log_storage.claim_concurrency_slot("sha256", holder, "seeds").is_claimed
    with InstanceConcurrencyContext(instance, instance.get_run_by_id(waiting)) as context:
        cpu, wall = time.process_time(), time.monotonic()
        while time.monotonic() - wall < 3.0:  # what the multiprocess executor's loop does
            assert not context.claim("sha256", "seeds")
        busy = (time.process_time() - cpu) / (time.monotonic() - wall)
    assert busy < 0.3, f"the waiting loop used {busy:.0%} of a core"
