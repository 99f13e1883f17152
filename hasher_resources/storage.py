"""Where hasher reads and writes: the miner directory, the raw-text inbox and the data directory.

One resource owns the three paths so every asset, the sensor and the CLI agree on them. Defaults
come from the environment (``HASHER_MINER_DIR``, ``HASHER_INBOX_DIR``, ``HASHER_DATA_DIR``) and
can be overridden per run in the launchpad.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

DEFAULT_MINER_DIR = "~/.local/share/dataminer"
DEFAULT_DATA_DIR = "~/.local/share/hasher"


def _env_path(name: str, default: str) -> str:
    return os.environ.get(name) or default


def default_miner_dir() -> str:
    """``HASHER_MINER_DIR`` or ``~/.local/share/dataminer``."""
    return _env_path("HASHER_MINER_DIR", DEFAULT_MINER_DIR)


def default_data_dir() -> str:
    """``HASHER_DATA_DIR`` or ``~/.local/share/hasher``."""
    return _env_path("HASHER_DATA_DIR", DEFAULT_DATA_DIR)


def default_inbox_dir() -> str:
    """``HASHER_INBOX_DIR`` or ``<miner dir>/inbox``."""
    return _env_path("HASHER_INBOX_DIR", str(Path(default_miner_dir()) / "inbox"))


class HasherStorage(dg.ConfigurableResource):
    """The pipeline's directories. Nothing under ``miner_dir`` or ``inbox_dir`` is ever written."""

    miner_dir: str = Field(default_factory=default_miner_dir, description="Data Miner output directory")
    inbox_dir: str = Field(default_factory=default_inbox_dir, description="Raw-text inbox (*.txt, *.md)")
    data_dir: str = Field(default_factory=default_data_dir, description="Every output of every asset")

    @property
    def miner_path(self) -> Path:
        return Path(self.miner_dir).expanduser()

    @property
    def inbox_path(self) -> Path:
        return Path(self.inbox_dir).expanduser()

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    def stage_dir(self, stage: str) -> Path:
        """``<data dir>/<stage>``, created on first use."""
        path = self.data_path / stage
        path.mkdir(parents=True, exist_ok=True)
        return path
