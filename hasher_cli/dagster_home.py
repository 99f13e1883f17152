"""The Dagster instance the ``hasher`` commands open: ``DAGSTER_HOME`` checked before Dagster touches it.

Dagster's SQLite storage (the default; ``dagster.yaml`` without a ``storage:`` key) builds its database
URLs as ``"sqlite:///" + path`` without quoting the path (``dagster/_core/storage/sqlite.py``,
``create_db_conn_string``, Dagster 1.13), and SQLAlchemy then parses that path as a URL:

- ``?`` starts the URL's query, so the file name ends there: under ``/data/what?/dh`` SQLite opens
  ``/data/what`` — a 128 KiB database written *outside* ``DAGSTER_HOME`` — and the run storage then
  fails with "no such table: event_logs";
- ``%`` followed by two hex digits is percent-decoded: ``/data/My%20Files/dh`` becomes
  ``/data/My Files/dh``, which does not exist ("unable to open database file").

A space, ``#``, ``;``, a lone ``%`` (``100% done``), non-ASCII and undecodable bytes all reach SQLite
intact (checked against Dagster 1.13.27 / SQLAlchemy 2.1 by ``hasher_tests/cli/test_dagster_home.py``).
:func:`check_dagster_home` refuses exactly the two, naming the variable, its value and the character,
before anything is opened, so nothing is written outside the instance directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from hasher_core.errors import HasherError

# What SQLAlchemy's URL parser takes out of a sqlite:/// path: the query mark and %XX escapes.
_URL_SPECIAL = re.compile(r"\?|%[0-9A-Fa-f]{2}")


class DagsterHomeError(HasherError, ValueError):
    """``DAGSTER_HOME`` is unset, not an existing absolute directory, or a path Dagster's SQLite storage
    would open somewhere else; the message names the value and the problem."""


def sqlite_path_problem(path: str) -> str | None:
    """Why Dagster's SQLite storage under the directory ``path`` would open another file, or None."""
    match = _URL_SPECIAL.search(os.path.abspath(path))
    if match is None:
        return None
    found = match.group()
    if found == "?":
        where = os.path.abspath(path)[: match.start()]
        return (
            f"holds '?', where the sqlite:/// URL Dagster builds from it ends the file name: SQLite would "
            f"open {where!r}, outside it"
        )
    return (
        f"holds {found!r}, which the sqlite:/// URL Dagster builds from it decodes to "
        f"{chr(int(found[1:], 16))!r}: SQLite would open another path"
    )


def _sqlite_dirs(home: Path, environ: Mapping[str, str]) -> list[Path]:
    """The directories Dagster's SQLite storages of this instance live in (none for PostgreSQL/MySQL)."""
    import yaml  # Dagster's own dependency; late, like every Dagster import of the CLI

    try:
        config = yaml.safe_load((home / "dagster.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return [home]  # Dagster reports the file itself; its default storage is SQLite in DAGSTER_HOME
    if not isinstance(config, dict):
        return [home]

    def base_dir(value: object) -> Path | None:
        if isinstance(value, dict) and "env" in value:
            value = environ.get(str(value["env"]))
        return Path(os.path.expanduser(value)) if isinstance(value, str) and value else None

    storage = config.get("storage")
    if isinstance(storage, dict):
        sqlite = storage.get("sqlite")
        if isinstance(sqlite, dict):
            return [base_dir(sqlite.get("base_dir")) or home]
        return []  # postgres / mysql: no SQLite file
    legacy = [config.get(k) for k in ("run_storage", "event_log_storage", "schedule_storage")]
    if any(legacy):
        dirs = []
        for entry in legacy:
            if isinstance(entry, dict) and "sqlite" in str(entry.get("class", "")).lower():
                dirs.append(base_dir((entry.get("config") or {}).get("base_dir")) or home)
        return dirs
    return [home]


def check_dagster_home(environ: Mapping[str, str] | None = None) -> Path:
    """The instance directory ``$DAGSTER_HOME``, checked: set, an existing absolute directory, and no
    SQLite storage of its instance under a path with ``?`` or ``%XX`` (see the module docstring).

    Raises :class:`DagsterHomeError` naming ``DAGSTER_HOME`` (or the ``base_dir`` of ``dagster.yaml``),
    the value and the problem.
    """
    environ = os.environ if environ is None else environ
    value = environ.get("DAGSTER_HOME", "")
    if not value:
        raise DagsterHomeError(
            "DAGSTER_HOME is not set: dynamic partitions live in a persistent instance "
            "(export DAGSTER_HOME=$PWD/.dagster_home && mkdir -p $DAGSTER_HOME)"
        )
    home = Path(os.path.expanduser(value))
    if not home.is_absolute():
        raise DagsterHomeError(f"DAGSTER_HOME={value!r} is not an absolute path")
    if not home.is_dir():
        raise DagsterHomeError(f"DAGSTER_HOME={value!r} is not an existing directory")
    for directory in _sqlite_dirs(home, environ):
        problem = sqlite_path_problem(str(directory))
        if problem:
            name = "DAGSTER_HOME" if directory == home else f"storage.sqlite.base_dir of {home}/dagster.yaml"
            raise DagsterHomeError(
                f"{name}={str(directory)!r} {problem}; move or rename the folder (Dagster's SQLite "
                "storage cannot take this character in its path)"
            )
    return home
