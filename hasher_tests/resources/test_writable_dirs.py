"""Directories hasher cannot write are found before any work starts (issue 18, kind 11).

Each directory a run writes — ``HASHER_DATA_DIR`` and what is in it (stage outputs, deployments,
backups, the split cache), ``HASHER_PROGRESS_DIR``, ``NUMBA_CACHE_DIR`` — and the instance the CLI
writes (``DAGSTER_HOME``) is checked first; a read-only one (a real read-only mount as root, see
``hasher_tests.readonly``), one without write permission, or a file in its place is a
``DirectoryNotWritableError`` naming the variable and the directory. The miner directory and the
inbox are only read: read-only is fine there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from hasher_assets.knowledge_base import knowledge_base
from hasher_assets.partitions import source_files
from hasher_assets.seeds import seeds
from hasher_assets.training_frames import training_frames
from hasher_core.errors import DirectoryNotWritableError, ProgressStoreError
from hasher_resources.files import check_writable_dir
from hasher_resources.progress_store import SqliteProgressStore
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage
from hasher_tests.assets.local import local_resources
from hasher_tests.readonly import IS_ROOT, read_only, without_write_override

READ_ONLY = "Read-only file system" if IS_ROOT else "Permission denied"
TEXT = "The river carries fine sand from the hills down to the wide valley floor, where farmers plant rice."


def test_a_read_only_directory_is_named_with_its_variable(tmp_path):
    with read_only(tmp_path / "progress") as ro, pytest.raises(DirectoryNotWritableError) as caught:
        check_writable_dir(ro, "HASHER_PROGRESS_DIR", "the seeds progress stores")
    message = str(caught.value)
    assert message.startswith(f"HASHER_PROGRESS_DIR={str(ro)!r}: hasher cannot write there ({READ_ONLY})")
    assert "the seeds progress stores need a writable directory: point HASHER_PROGRESS_DIR at one" in message


def test_a_missing_directory_below_a_read_only_one_cannot_be_created(tmp_path):
    with read_only(tmp_path / "mnt") as ro, pytest.raises(DirectoryNotWritableError, match=READ_ONLY):
        check_writable_dir(ro / "hasher" / "data", "HASHER_DATA_DIR", "every stage's outputs")


def test_a_directory_without_write_permission_is_refused_even_for_root(tmp_path):
    # As root, chmod alone is no test: the check runs without the capabilities that override it.
    target = tmp_path / "locked"
    target.mkdir(mode=0o555)
    target.chmod(0o555)
    code = (
        "import sys; from pathlib import Path; from hasher_resources.files import check_writable_dir\n"
        "check_writable_dir(Path(sys.argv[1]), 'HASHER_DATA_DIR', 'every stage')"
    )
    done = subprocess.run(
        without_write_override([sys.executable, "-c", code, str(target)]), capture_output=True, text=True
    )
    assert done.returncode == 1
    assert f"DirectoryNotWritableError: HASHER_DATA_DIR={str(target)!r}" in done.stderr
    assert "(Permission denied)" in done.stderr
    assert list(target.iterdir()) == []


def test_a_file_in_place_of_the_directory_is_named(tmp_path):
    (tmp_path / "data").write_text("not a directory")
    with pytest.raises(DirectoryNotWritableError, match="a file is in the way, not a directory"):
        check_writable_dir(tmp_path / "data", "HASHER_DATA_DIR", "every stage's outputs")
    with pytest.raises(DirectoryNotWritableError, match="a parent is a file, not a directory"):
        check_writable_dir(tmp_path / "data" / "deep", "HASHER_DATA_DIR", "every stage's outputs")


def test_a_writable_directory_passes_and_keeps_no_probe(tmp_path):
    assert check_writable_dir(tmp_path / "new" / "data", "HASHER_DATA_DIR", "x") == tmp_path / "new" / "data"
    assert list((tmp_path / "new" / "data").iterdir()) == []


def _storage(tmp_path: Path, **dirs: str) -> HasherStorage:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    settings = {
        "miner_dir": str(tmp_path / "miner"),
        "inbox_dir": str(tmp_path / "inbox"),
        "data_dir": str(tmp_path / "data"),
        "progress_dir": str(tmp_path / "progress"),
    }
    return HasherStorage(**{**settings, **dirs})


@pytest.mark.parametrize(
    ("where", "variable"),
    [
        ("data", "HASHER_DATA_DIR"),
        ("data/deployments", "HASHER_DATA_DIR"),
        ("data/knowledge_split", "HASHER_DATA_DIR"),
        ("progress", "HASHER_PROGRESS_DIR"),
        ("numba", "NUMBA_CACHE_DIR"),
    ],
)
def test_every_directory_a_run_writes_is_checked(tmp_path, monkeypatch, where, variable):
    monkeypatch.setenv("HASHER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HASHER_PROGRESS_DIR", str(tmp_path / "progress"))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    for sub in ("data/deployments", "data/knowledge_split", "progress", "numba"):
        (tmp_path / sub).mkdir(parents=True)
    storage = _storage(tmp_path)
    storage.check_writable()  # all writable
    with read_only(tmp_path / where, keep_content=True), pytest.raises(DirectoryNotWritableError) as caught:
        storage.check_writable()
    assert caught.value.variable == variable and caught.value.path == tmp_path / where


def test_a_directory_set_in_the_launchpad_is_named_as_the_resource_field(tmp_path):
    storage = _storage(tmp_path)
    with read_only(tmp_path / "data"), pytest.raises(DirectoryNotWritableError, match=r"^storage\.data_dir="):
        storage.check_writable()


def _river(tmp_path: Path) -> tuple[HasherStorage, dg.DagsterInstance]:
    """Storage with one inbox text, and an instance where its partition is registered."""
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "river.txt").write_text(TEXT)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(source_files.name, ["river.txt"])
    return _storage(tmp_path), instance


def test_a_read_only_miner_directory_and_inbox_are_fine(tmp_path):
    storage, instance = _river(tmp_path)
    with read_only(tmp_path / "inbox", keep_content=True), read_only(tmp_path / "miner"):
        storage.check_writable()
        result = dg.materialize(
            [knowledge_base], instance=instance, partition_key="river.txt", resources=local_resources(storage)
        )
    assert result.success and (tmp_path / "data" / "knowledge_base" / "river.txt.parquet").is_file()


def test_a_read_only_progress_dir_stops_the_run_before_its_first_step(tmp_path):
    # Case 09: stages 1-2 ran, then seeds died in the lock code with a raw OSError.
    storage, instance = _river(tmp_path)
    resources = local_resources(storage) | {"kernel": Sha256Kernel(backend="cpu")}
    with read_only(tmp_path / "progress"):
        result = dg.materialize(
            [knowledge_base, training_frames, seeds],
            instance=instance,
            partition_key="river.txt",
            resources=resources,
            run_config={"ops": {"seeds": {"config": {"difficulty_bits": 4}}}},
            raise_on_error=False,
        )
    assert not result.success
    assert not [e for e in result.all_events if e.is_step_start]  # no stage started
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RESOURCE_INIT_FAILURE)
    error = failure.engine_event_data.error.to_string()
    assert f"DirectoryNotWritableError: storage.progress_dir={str(tmp_path / 'progress')!r}" in error
    assert not (tmp_path / "data" / "knowledge_base").exists()  # nothing was written


def test_a_sensor_tick_does_not_need_a_writable_data_dir(tmp_path):
    from hasher_assets.sensors import miner_output_sensor

    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "river.txt").write_text(TEXT)
    storage = _storage(tmp_path)
    with read_only(tmp_path / "data"), dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"storage": storage})
        result = miner_output_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["river.txt"]


def test_the_progress_store_names_its_directory_and_variable(tmp_path):
    with read_only(tmp_path / "progress") as ro, pytest.raises(ProgressStoreError) as caught:
        SqliteProgressStore.open(ro / "notes.txt.sqlite", partition="notes.txt")
    message = str(caught.value)
    assert f"cannot write its directory {ro} ({READ_ONLY})" in message and "HASHER_PROGRESS_DIR" in message


def test_hasher_names_a_read_only_dagster_home_before_opening_the_instance(tmp_path, monkeypatch, capsys):
    from hasher_cli.main import main

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("HASHER_INBOX_DIR", str(tmp_path / "inbox"))
    monkeypatch.setenv("HASHER_MINER_DIR", str(tmp_path / "miner"))
    with read_only(home, keep_content=True):
        code = main(["partitions", "sync"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"hasher partitions: error: DirectoryNotWritableError: DAGSTER_HOME={str(home)!r}")
    assert sorted(p.name for p in home.iterdir()) == ["dagster.yaml"]  # no database was started
