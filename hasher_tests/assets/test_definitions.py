"""The code location loads, wires every stage and serves in ``dagster dev``."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from hasher_assets.definitions import defs

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["knowledge_base", "training_frames", "seeds", "checkpoints", "deployment"]


def test_definitions_load_with_five_stages_checks_sensor_and_jobs():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == sorted(STAGES)
    for stage in STAGES[:4]:
        partitions = graph.get(dg.AssetKey(stage)).partitions_def
        assert isinstance(partitions, dg.DynamicPartitionsDefinition) and partitions.name == "source_files"
    assert graph.get(dg.AssetKey("deployment")).partitions_def is None
    assert {c.name for c in graph.asset_check_keys} == {
        "knowledge_base_is_well_formed",
        "training_frames_are_consistent",
        "checkpoints_gate",
        "deployment_recall",
    }
    assert defs.resolve_sensor_def("miner_output_sensor")
    assert {defs.resolve_job_def(j).name for j in ("partition_pipeline", "deploy")} == {
        "partition_pipeline",
        "deploy",
    }


def test_pyproject_points_both_clis_at_the_definitions():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["dagster"]["module_name"] == "hasher_assets.definitions"
    assert config["tool"]["dg"]["project"]["code_location_target_module"] == "hasher_assets.definitions"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_dagster_dev_serves_the_location_with_partitioned_assets(tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "HASHER_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    dagster = str(Path(sys.executable).parent / "dagster")
    proc = subprocess.Popen(
        [dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # own process group: webserver, daemon and code server stop together
    )
    try:
        deadline = time.monotonic() + 120
        nodes = None
        while time.monotonic() < deadline and nodes is None:
            time.sleep(1)
            try:
                answer = _post(port, "{ assetNodes { assetKey { path } partitionDefinition { name } } }")
                nodes = answer["data"]["assetNodes"]
            except (OSError, KeyError, TypeError, ValueError):
                continue
        assert nodes is not None, "dagster dev did not answer GraphQL within 120 s"
        found = {n["assetKey"]["path"][0]: (n["partitionDefinition"] or {}).get("name") for n in nodes}
        assert found == {**{s: "source_files" for s in STAGES[:4]}, "deployment": None}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
