"""Stages 1–4 on Ray: a local Ray head on 127.0.0.1, two partitions materialised with
``HASHER_EXECUTOR=ray`` through ``dagster asset materialize``, checked against Ray's own job records
and byte for byte against a multiprocess run of the same partitions."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from hasher_assets.executors import RAY_STEP_TAG, step_op_tags
from hasher_core.names import PARTITION_STAGES

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
STAGES = PARTITION_STAGES
KEYS = ["gettysburg_address.txt", "zen_of_python.txt"]
FAST_SEEDS = {"difficulty_bits": 6, "population": 32, "max_generations": 64}
BIN = Path(sys.executable).parent
HEAD_START_S = 120
RUN_S = 480
STOP_S = 30
# The module fixture starts a head and runs two pairs of runs, each pair bounded by RUN_S: on a
# loaded 2-core machine (load 12) that takes more than pytest's default 600 s, so it gets its own.
pytestmark.append(pytest.mark.timeout(HEAD_START_S + 2 * RUN_S + 2 * STOP_S + 120))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen, wait_s: float) -> None:
    """SIGTERM to the process group, SIGKILL after ``wait_s`` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)
    # Ray's daemons may outlive `ray start --block`: the group goes, whatever is left of it
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=wait_s)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A single-node Ray cluster on 127.0.0.1 in its own process group; yields the job API address.

    Ray replaces ``--node-ip-address 127.0.0.1`` by the machine's routable address and then binds
    its GCS and raylet there and on every interface; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is Ray's
    single-machine mode, which keeps every socket on loopback. The head's PATH starts with this
    venv's bin: each step's Ray job runs ``dagster api execute_step`` through a shell.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="hasher-ray-", dir="/tmp"))  # Ray's socket paths must be short
    dashboard = _free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    log = (temp_dir / "head.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(_free_port()), "--ray-client-server-port", str(_free_port()),
         "--dashboard-agent-listen-port", str(_free_port()), "--include-dashboard", "true",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--temp-dir", str(temp_dir), "--num-cpus", "2", "--num-gpus", "0",
         "--object-store-memory", str(100 * 2**20), "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + HEAD_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"ray start exited {proc.returncode}:\n{(temp_dir / 'head.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Ray's job API did not answer within {HEAD_START_S} s")
            time.sleep(1)
        yield address
    finally:
        _stop_group(proc, STOP_S)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def runs(ray_head: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both partitions through stages 1–4 on Ray and on the multiprocess executor (the two
    partitions' runs concurrently, so the pools have something to serialise)."""
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_actors

    root = tmp_path_factory.mktemp("ray_pipeline")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    inbox = root / "inbox"
    inbox.mkdir()
    shutil.copy(ROOT / "sample_data" / "corpus" / KEYS[0], inbox / KEYS[0])
    shutil.copy(ROOT / "sample_data" / "inbox" / KEYS[1], inbox / KEYS[1])
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HASHER_", "RAY_", "DAGSTER_"))}
    base.update(
        DAGSTER_HOME=str(home),
        HASHER_MINER_DIR=str(root / "miner"),  # none: both sources are inbox files
        HASHER_INBOX_DIR=str(inbox),
        HASHER_KERNEL_BACKEND="cpu",
        HASHER_SENSOR_MAX_FILES="8",
    )
    sync = subprocess.run(
        [str(BIN / "hasher"), "partitions", "sync"], env=base, capture_output=True, text=True, timeout=120
    )
    assert sync.returncode == 0, sync.stderr
    assert sync.stdout.split() == KEYS

    def materialize(key: str, env: dict, execution: dict | None) -> subprocess.Popen:
        config = {"ops": {"seeds": {"config": FAST_SEEDS}}}
        if execution:
            config["execution"] = {"config": execution}
        return subprocess.Popen(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "hasher_assets.definitions",
             "--select", ",".join(STAGES), "--partition", key, "--config-json", json.dumps(config)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def finish(procs: list[subprocess.Popen]) -> None:
        try:
            outputs = [p.communicate(timeout=RUN_S)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=STOP_S)
        for p, out in zip(procs, outputs, strict=True):
            assert p.returncode == 0, out[-4000:]

    ray_env = {**base, "HASHER_EXECUTOR": "ray", "HASHER_DATA_DIR": str(root / "data_ray")}
    mark = json.dumps({"env_vars": {"RAY_RUNTIME_MARK_OF_THE_TEST": "env"}})
    finish([
        # the cluster from Ray's own variable, the runtime environment from hasher's
        materialize(KEYS[0], {**ray_env, "RAY_ADDRESS": ray_head, "HASHER_RAY_RUNTIME_ENV": mark}, None),
        # the cluster from run config: without RAY_ADDRESS, Ray's client would find no cluster
        materialize(KEYS[1], ray_env, {"ray": {"address": ray_head}}),
    ])  # fmt: skip
    jobs = JobSubmissionClient(ray_head).list_jobs()  # the cluster is this module's: every job is ours
    # Ray runs each job's entrypoint under a JobSupervisor actor holding the resources it asked for
    supervisors = {
        a.name.removeprefix("_ray_internal_job_actor_"): a.required_resources
        for a in list_actors(address=ray_head, detail=True, limit=10_000)
        if a.class_name == "JobSupervisor"
    }
    # When each step ran, by the events its process wrote (a Ray job's end time also counts the
    # job's own teardown, after the step has released its pool slot)
    steps: dict[tuple[str, str], list[float]] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs():
            for entry in instance.all_logs(
                run.run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
            ):
                steps.setdefault((run.run_id, entry.step_key), []).append(entry.timestamp)
    mp_env = {**base, "HASHER_DATA_DIR": str(root / "data_multiprocess")}
    finish([materialize(k, mp_env, None) for k in KEYS])
    return {
        "root": root,
        "jobs": jobs,
        "supervisors": supervisors,
        "steps": steps,
        "client": JobSubmissionClient(ray_head),
    }


def _job_logs(runs: dict, job) -> str:
    return runs["client"].get_job_logs(job.submission_id)[-3000:]


def test_every_step_of_both_partitions_ran_as_a_ray_job(runs):
    by_run: dict[str, set[str]] = {}
    for job in runs["jobs"]:
        assert job.status == "SUCCEEDED", f"{job.submission_id}: {job.status}\n{_job_logs(runs, job)}"
        assert job.entrypoint.startswith("dagster api execute_step")
        by_run.setdefault(job.metadata["dagster/run-id"], set()).add(job.metadata["dagster/op"])
    assert len(by_run) == 2, by_run
    for ops in by_run.values():
        assert set(STAGES) <= ops


def test_each_stage_job_held_the_resources_its_op_tags_ask_for(runs):
    for job in runs["jobs"]:
        step = job.metadata["dagster/op"]
        if step not in STAGES:
            continue  # asset-check steps carry no tags
        wanted = step_op_tags(step)[RAY_STEP_TAG]
        held = runs["supervisors"][job.submission_id]
        assert held.get("CPU") == wanted["num_cpus"], (step, held)
        assert "GPU" not in held  # the CPU kernel asks for no GPU


def test_the_ray_jobs_got_the_instance_and_the_runtime_environment(runs):
    for job in runs["jobs"]:
        env_vars = job.runtime_env["env_vars"]
        assert env_vars["DAGSTER_HOME"] == str(runs["root"] / "dagster_home")
        assert env_vars["HASHER_DATA_DIR"] == str(runs["root"] / "data_ray")
    marked = {
        j.metadata["dagster/run-id"]
        for j in runs["jobs"]
        if "RAY_RUNTIME_MARK_OF_THE_TEST" in j.runtime_env["env_vars"]
    }
    assert len(marked) == 1  # the run launched with HASHER_RAY_RUNTIME_ENV, and only that one


@pytest.mark.parametrize("pool_step", ["seeds", "checkpoints"])
def test_pools_serialise_the_device_steps_across_the_ray_runs(runs, pool_step):
    # seeds is in pool "sha256", checkpoints in "asic"; dagster.yaml limits every pool to 1, and the
    # two runs were launched together, so these steps of the two runs must not overlap in time.
    spans = sorted(times for (_, step), times in runs["steps"].items() if step == pool_step)
    assert len(spans) == 2 and all(len(span) == 2 for span in spans), runs["steps"]
    assert spans[0][1] <= spans[1][0], spans


def test_ray_outputs_are_byte_identical_to_the_multiprocess_run(runs):
    root = runs["root"]
    for stage in STAGES:
        for key in KEYS:
            on_ray = (root / "data_ray" / stage / f"{key}.parquet").read_bytes()
            local = (root / "data_multiprocess" / stage / f"{key}.parquet").read_bytes()
            assert on_ray == local, f"{stage}/{key} differs between the Ray and the multiprocess run"
