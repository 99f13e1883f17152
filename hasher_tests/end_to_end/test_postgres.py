"""A Dagster instance in PostgreSQL (``deploy/dagster-postgres.yaml``): a CLI run, read back.

The test makes its own cluster (Debian's initdb/postgres on 127.0.0.1, a free port, a temporary
directory), runs ``hasher partitions sync`` and ``dagster asset materialize`` against an instance
configured by the deploy file with the connection in environment variables, and then reads the
run, the asset materialisations and the asset check results straight from the database tables.
"""

import json
import subprocess
from pathlib import Path

import psycopg2
import pytest
import yaml

from hasher_core.names import PARTITION_STAGES
from hasher_tests.servers import BIN, ROOT, dagster_env, dagster_home, postgres_cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DEPLOY_YAML = ROOT / "deploy" / "dagster-postgres.yaml"
KEY = "lincoln.txt"
STAGES = PARTITION_STAGES
TEXT = "Four score and seven years ago our fathers brought forth on this continent a new nation."


def _asset(stored_key: str) -> str:
    """An ``asset_key`` column holds the key's path as a JSON list: ``["seeds"]``."""
    return "/".join(json.loads(stored_key))


def test_the_deploy_instance_differs_from_dagster_yaml_only_in_storage_and_has_no_secret():
    deploy = yaml.safe_load(DEPLOY_YAML.read_text())
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert {k: v for k, v in deploy.items() if k != "storage"} == local
    connection = deploy["storage"]["postgres"]["postgres_db"]
    assert all(set(value) == {"env"} for key, value in connection.items() if key != "scheme"), connection
    assert connection["scheme"] == "postgresql+psycopg2"


def test_a_partition_materialised_by_the_cli_is_recorded_in_postgres(tmp_path: Path):
    inbox, miner = tmp_path / "inbox", tmp_path / "miner"
    inbox.mkdir()
    miner.mkdir()
    (inbox / KEY).write_text(TEXT)
    home = dagster_home(tmp_path / "dagster_home", DEPLOY_YAML.read_text())
    with postgres_cluster() as cluster:
        env = dagster_env(home, tmp_path / "data", miner, inbox, **cluster.env())
        sync = subprocess.run(
            [str(BIN / "hasher"), "partitions", "sync"], env=env, capture_output=True, text=True, timeout=180
        )
        assert sync.returncode == 0 and sync.stdout.split() == [KEY], sync.stdout + sync.stderr
        config = {
            "ops": {"seeds": {"config": {"difficulty_bits": 6}}},
            "execution": {"config": {"in_process": {}}},
        }
        run = subprocess.run(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "hasher_assets.definitions",
             "--select", ",".join(STAGES), "--partition", KEY, "--config-json", json.dumps(config)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert not (home / "history").exists(), "the run went to SQLite under DAGSTER_HOME, not to PostgreSQL"

        connection = psycopg2.connect(
            host=cluster.host,
            port=cluster.port,
            user=cluster.user,
            password=cluster.password,
            dbname=cluster.database,
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'source_files'"
                )
                assert [row[0] for row in cursor.fetchall()] == [KEY]
                cursor.execute("SELECT run_id, status FROM runs")
                runs = cursor.fetchall()
                assert [status for _, status in runs] == ["SUCCESS"], runs
                run_id = runs[0][0]
                cursor.execute(
                    "SELECT asset_key, partition FROM event_logs"
                    " WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND run_id = %s",
                    (run_id,),
                )
                materialised = sorted((_asset(key), partition) for key, partition in cursor.fetchall())
                assert materialised == sorted((stage, KEY) for stage in STAGES)
                cursor.execute(
                    "SELECT asset_key, check_name, partition, execution_status FROM asset_check_executions"
                    " WHERE run_id = %s",
                    (run_id,),
                )
                checks = sorted((_asset(k), name, p, status) for k, name, p, status in cursor.fetchall())
                assert checks == [
                    ("checkpoints", "checkpoints_gate", KEY, "SUCCEEDED"),
                    ("knowledge_base", "knowledge_base_is_well_formed", KEY, "SUCCEEDED"),
                    ("training_frames", "training_frames_are_consistent", KEY, "SUCCEEDED"),
                ]
        finally:
            connection.close()
