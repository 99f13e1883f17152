"""The sensor under the real ``dagster-daemon``: inbox files become partitions and successful runs.

The daemon runs as its own process on a temporary instance with ``miner_output_sensor`` switched
on (``dagster sensor start``), an empty miner directory and an inbox the test writes to; runs use
``HASHER_SENSOR_DIFFICULTY_BITS=6`` so each takes seconds. The test reads runs and partitions from
the instance the daemon writes.
"""

import subprocess
from pathlib import Path

import dagster as dg
import pytest

from hasher_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, source_files
from hasher_tests.servers import (
    BIN,
    ROOT,
    dagster_daemon_argv,
    dagster_env,
    dagster_home,
    log_tail,
    running,
    wait_for,
)

pytestmark = [pytest.mark.daemon, pytest.mark.slow, pytest.mark.timeout(900)]

FIRST = "Four score and seven years ago our fathers brought forth on this continent a new nation."
EDITED = FIRST + " Now we are engaged in a great civil war."
OTHER = "Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex."
RUN_WAIT_S = 300  # a tick every 30 s, then a run of a few dozen frames at 6 bits


def _runs(instance: dg.DagsterInstance, key: str) -> list[dg.DagsterRun]:
    """The runs that materialise ``key``: runs of that one partition, and the sensor's runs of a range
    of consecutive partitions (RANGE_START_TAG..RANGE_END_TAG in the partitions' order) holding it."""
    order = instance.get_dynamic_partitions(source_files.name)

    def covers(run: dg.DagsterRun) -> bool:
        if run.tags.get("dagster/partition") == key:
            return True
        start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
        if start not in order or end not in order or key not in order:
            return False
        return order.index(start) <= order.index(key) <= order.index(end)

    return [run for run in instance.get_runs() if covers(run)]


def _wait_for_successful_runs(instance, key: str, count: int, log: Path) -> list[dg.DagsterRun]:
    """Wait until ``key`` has ``count`` runs, all finished successfully; fail naming what is missing."""

    def done() -> list[dg.DagsterRun] | None:
        runs = _runs(instance, key)
        failed = [r for r in runs if r.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)]
        assert not failed, f"run {failed[0].run_id} of {key} ended {failed[0].status}"
        finished = [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]
        return runs if len(runs) == count and len(finished) == count else None

    try:
        return wait_for(done, RUN_WAIT_S, f"{count} successful sensor run(s) of partition {key}", 2.0)
    except AssertionError as exc:
        found = [(r.run_id[:8], r.status.value) for r in _runs(instance, key)]
        raise AssertionError(f"{exc}; runs found: {found}; daemon log ends:\n{log_tail(log)}") from None


def test_the_daemon_turns_new_and_edited_inbox_files_into_partitions_and_successful_runs(tmp_path: Path):
    inbox, miner = tmp_path / "inbox", tmp_path / "miner"
    inbox.mkdir()
    miner.mkdir()
    home = dagster_home(tmp_path / "dagster_home")
    env = dagster_env(home, tmp_path / "data", miner, inbox, HASHER_SENSOR_DIFFICULTY_BITS="6")
    start = subprocess.run(
        [str(BIN / "dagster"), "sensor", "start", "miner_output_sensor", "-w", "workspace.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert start.returncode == 0, start.stdout + start.stderr
    (inbox / "address.txt").write_text(FIRST)
    (inbox / "zen.txt").write_text(OTHER)
    log = tmp_path / "daemon.log"
    print(f"daemon log: {log}")
    with (
        running(dagster_daemon_argv(), env=env, log=log),
        dg.DagsterInstance.from_config(str(home)) as instance,
    ):
        first = _wait_for_successful_runs(instance, "address.txt", 1, log)
        _wait_for_successful_runs(instance, "zen.txt", 1, log)
        assert sorted(instance.get_dynamic_partitions("source_files")) == ["address.txt", "zen.txt"]
        assert first[0].run_config["ops"]["seeds"]["config"]["difficulty_bits"] == 6
        assert instance.get_latest_materialization_event(dg.AssetKey("checkpoints")) is not None

        (inbox / "address.txt").write_text(EDITED)
        edited = _wait_for_successful_runs(instance, "address.txt", 2, log)
        (inbox / "address.txt").write_text(FIRST)  # back to the first content: a change all the same
        reverted = _wait_for_successful_runs(instance, "address.txt", 3, log)
        assert len(_runs(instance, "zen.txt")) == 1, "an edit of address.txt re-ran zen.txt too"
        run_keys = [r.tags["dagster/run_key"] for r in reverted]
        assert len(set(run_keys)) == 3, run_keys
        assert {r.run_id for r in edited} < {r.run_id for r in reverted}
