"""``DAGSTER_HOME`` values Dagster's SQLite storage mishandles are refused by hasher's commands before
anything is opened, naming the character; every other value reaches Dagster and works."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dagster._core.storage.sqlite import create_db_conn_string
from sqlalchemy.engine import make_url

from hasher_cli.dagster_home import DagsterHomeError, check_dagster_home
from hasher_cli.main import main

#: Folder names whose path Dagster's sqlite:/// URL changes (the upstream behaviour hasher works around).
MISHANDLED = {"what?": "'?'", "My%20Files": "'%20'", "a%41b": "'%41'", "x?y=1&uri=true": "'?'"}
#: Folder names that reach SQLite intact.
FINE = ["a b", "a#b", "100% done", "a;b", "café", "日本", os.fsdecode(b"caf\xe9"), "a&b=c", "[x]"]


def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.parametrize("folder", list(MISHANDLED))
def test_dagsters_sqlite_url_changes_these_paths_upstream(folder: str) -> None:
    # If Dagster starts quoting the path (dagster/_core/storage/sqlite.py), this fails: drop the check.
    path = f"/srv/{folder}/dh"
    assert make_url(create_db_conn_string(path, "runs")).database != f"{path}/runs.db"


@pytest.mark.parametrize("folder", FINE)
def test_dagsters_sqlite_url_keeps_these_paths_upstream(folder: str) -> None:
    path = f"/srv/{folder}/dh"
    assert make_url(create_db_conn_string(path, "runs")).database == f"{path}/runs.db"


@pytest.mark.parametrize("folder", list(MISHANDLED))
def test_hasher_refuses_a_mishandled_dagster_home_naming_it_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], folder: str
) -> None:
    home = tmp_path / folder / "dh"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("HASHER_INBOX_DIR", str(tmp_path / "inbox"))
    monkeypatch.setenv("HASHER_MINER_DIR", str(tmp_path / "miner"))
    monkeypatch.setenv("HASHER_DATA_DIR", str(tmp_path / "data"))
    before = _tree(tmp_path)
    for command in (["partitions", "sync"], ["partitions", "list"]):
        assert main(command) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1
        assert err.startswith(
            f"hasher partitions: error: DagsterHomeError: DAGSTER_HOME={str(home)!r} holds "
        )
        assert MISHANDLED[folder] in err and "move or rename the folder" in err
    assert _tree(tmp_path) == before  # no SQLite file beside the folder, nothing inside it


def test_a_question_mark_names_the_file_sqlite_would_open_outside(tmp_path: Path) -> None:
    home = tmp_path / "what?" / "dh"
    home.mkdir(parents=True)
    with pytest.raises(DagsterHomeError, match=rf"SQLite would open '{tmp_path}/what', outside it"):
        check_dagster_home({"DAGSTER_HOME": str(home)})


@pytest.mark.parametrize("folder", FINE)
def test_every_other_dagster_home_passes_the_check_and_works(tmp_path: Path, folder: str) -> None:
    home = tmp_path / folder / "dh"
    home.mkdir(parents=True)
    assert check_dagster_home({"DAGSTER_HOME": str(home)}) == home


def test_an_instance_under_space_hash_percent_and_non_ascii_stores_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "My Data #1 100% données" / "dh"
    home.mkdir(parents=True)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "notes.txt").write_text("some words here")
    for name, value in {
        "DAGSTER_HOME": home,
        "HASHER_INBOX_DIR": tmp_path / "inbox",
        "HASHER_MINER_DIR": tmp_path / "miner",
        "HASHER_DATA_DIR": tmp_path / "data",
    }.items():
        monkeypatch.setenv(name, str(value))
    assert main(["partitions", "sync"]) == 0
    assert main(["partitions", "list"]) == 0
    assert capsys.readouterr().out == "notes.txt\nnotes.txt\n"
    assert (home / "history" / "runs.db").is_file()


def test_postgres_storage_takes_any_dagster_home(tmp_path: Path) -> None:
    home = tmp_path / "what?" / "dh"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("storage:\n  postgres:\n    postgres_url: postgresql://x/y\n")
    assert check_dagster_home({"DAGSTER_HOME": str(home)}) == home


def test_a_sqlite_base_dir_from_dagster_yaml_is_checked_too(tmp_path: Path) -> None:
    home = tmp_path / "dh"
    home.mkdir()
    (home / "dagster.yaml").write_text("storage:\n  sqlite:\n    base_dir:\n      env: STORE\n")
    with pytest.raises(DagsterHomeError, match=r"storage.sqlite.base_dir of .* holds '%2F'"):
        check_dagster_home({"DAGSTER_HOME": str(home), "STORE": str(tmp_path / "a%2Fb")})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "DAGSTER_HOME is not set"),
        ("relative/dh", "DAGSTER_HOME='relative/dh' is not an absolute path"),
        ("/nonexistent/dh", "DAGSTER_HOME='/nonexistent/dh' is not an existing directory"),
    ],
)
def test_an_unusable_dagster_home_is_one_line_naming_it(value: str, message: str) -> None:
    with pytest.raises(DagsterHomeError, match=message):
        check_dagster_home({"DAGSTER_HOME": value})
