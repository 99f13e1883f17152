"""A run killed in a step that holds a pool slot does not block the next run (issue 18, kind 4).

Real ``dagster asset materialize`` runs on a SQLite instance made from ``dagster.yaml``, killed by a
real signal while their ``seeds`` (pool ``sha256``), ``checkpoints`` or ``deployment`` (pool
``asic``) step holds the slot: SIGKILL to the whole process group (an OOM kill, ``docker kill``),
SIGKILL to the run worker alone (its step process goes on and finishes), SIGKILL to the step process
alone (the run worker sees it die), and SIGTERM to the run worker. Each time the next run of a step
in that pool finishes, and the killed run does not stay STARTED. Before, the next run waited forever
on "Step blocked by limit for pool asic", spinning a core (case 02). The same race as
``hasher_tests/resources/test_pools.py`` is replayed on PostgreSQL with
``deploy/dagster-postgres.yaml``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from hasher_resources import pools
from hasher_tests.resources.test_pools import claim_race
from hasher_tests.servers import BIN, ROOT, dagster_env, dagster_home, postgres_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TEXTS = {
    "river.txt": "The river carries fine sand from the hills down to the wide valley floor, where farmers "
    "plant rice every spring and the herons wait in the shallow water for fish.",
    "hills.txt": "Above the valley the hills turn brown in late summer, and shepherds bring their flocks "
    "down the old stone paths before the first snow closes the high passes for the winter.",
}
UPSTREAM = "knowledge_base,training_frames,seeds,checkpoints"
QUICK = {"ops": {"seeds": {"config": {"difficulty_bits": 6}}}}
SLOW_SEEDS = {"ops": {"seeds": {"config": {"difficulty_bits": 26, "max_generations": 1_000_000}}}}
NEXT_RUN_S = 300


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """An instance with both texts registered and stages 1-4 materialised for both."""
    root = tmp_path_factory.mktemp("pool_kills")
    inbox, miner = root / "inbox", root / "miner"
    inbox.mkdir()
    miner.mkdir()
    for name, text in TEXTS.items():
        (inbox / name).write_text(text)
    home = dagster_home(root / "dagster_home")
    env = dagster_env(home, root / "data", miner, inbox)
    sync = subprocess.run(
        [str(BIN / "hasher"), "partitions", "sync"], env=env, capture_output=True, text=True
    )
    assert sync.returncode == 0, sync.stderr
    for key in TEXTS:
        done = _materialize(env, UPSTREAM, key, {**QUICK, "execution": {"config": {"in_process": {}}}})
        assert done.wait(timeout=600) == 0, done.stdout.read()[-3000:]
        done.stdout.close()
    return {"home": home, "env": env}


def _materialize(env: dict[str, str], select: str, key: str | None, config: dict) -> subprocess.Popen:
    argv = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "hasher_assets.definitions",
        "--select",
        select,
    ]
    if key:
        argv += ["--partition", key]
    argv += ["--config-json", json.dumps(config)]
    return subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def _wait_for_holder(home: Path, pool: str, proc: subprocess.Popen, timeout_s: float = 300) -> str:
    """The run id holding ``pool`` once the run started by ``proc`` claims it."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            held = instance.event_log_storage.get_concurrency_info(pool).claimed_slots
            if held:
                return held[0].run_id
            assert proc.poll() is None, (
                f"the run ended before it claimed {pool}: {proc.stdout.read()[-3000:]}"
            )
            time.sleep(0.1)
    raise AssertionError(f"no run claimed pool {pool} within {timeout_s} s")


def _step_process(run_worker: int) -> int:
    """The pid of the multiprocess executor's step process: the run worker's spawned child."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = Path(f"/proc/{run_worker}/task/{run_worker}/children").read_text().split()
        for pid in children:
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"run worker {run_worker} has no step process")


def _status(home: Path, run_id: str) -> dg.DagsterRunStatus:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_run_by_id(run_id).status


@pytest.mark.parametrize(
    ("step", "pool", "how"),
    [
        ("seeds", "sha256", "SIGKILL group"),
        ("checkpoints", "asic", "SIGKILL group"),
        ("checkpoints", "asic", "SIGKILL run worker"),
        ("checkpoints", "asic", "SIGKILL step process"),
        ("deployment", "asic", "SIGKILL group"),
        ("deployment", "asic", "SIGTERM run worker"),
    ],
)
def test_a_run_killed_in_a_pool_step_does_not_block_the_next(pipeline, step, pool, how):
    home, env = pipeline["home"], pipeline["env"]
    killed_key, next_key = ("hills.txt", "river.txt") if step != "deployment" else (None, None)
    first = _materialize(env, step, killed_key, SLOW_SEEDS if step == "seeds" else {})
    try:
        run_id = _wait_for_holder(home, pool, first)
        sig = signal.SIGTERM if how.startswith("SIGTERM") else signal.SIGKILL
        if how.endswith("group"):
            os.killpg(first.pid, sig)
        elif how.endswith("step process"):
            os.kill(_step_process(first.pid), sig)
        else:
            os.kill(first.pid, sig)
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=60)
        first.stdout.close()
    start = time.monotonic()
    second = _materialize(env, step, next_key, QUICK if step == "seeds" else {})
    try:
        out, _ = second.communicate(timeout=NEXT_RUN_S)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait(timeout=60)
    assert second.returncode == 0, f"the next {step} run did not finish ({how}):\n{out[-4000:]}"
    assert time.monotonic() - start < NEXT_RUN_S
    # Not STARTED forever: failed by hasher (or cancelled by Dagster's own SIGTERM handling).
    assert _status(home, run_id) in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.event_log_storage.get_concurrency_info(pool).claimed_slots == []


@pytest.mark.postgres
@pytest.mark.parametrize("pool", ["sha256", "asic"])
def test_two_claims_of_the_one_free_slot_give_it_to_one_run_on_postgres(tmp_path, monkeypatch, pool):
    home = dagster_home(tmp_path / "dagster_home", (ROOT / "deploy" / "dagster-postgres.yaml").read_text())
    pools.install()
    with postgres_cluster() as cluster:
        for name, value in cluster.env().items():
            monkeypatch.setenv(name, value)
        with (
            dg.DagsterInstance.from_config(str(home)) as one,
            dg.DagsterInstance.from_config(str(home)) as two,
        ):
            assert claim_race(one, two, pool) == [False, True]
