"""Shared fixtures: a scratch miner directory with the sample knowledge base, storage, instance.

Dagster is imported inside the fixtures that need it: ``scripts/gpu_check.sh`` runs the kernel tests
on GPU machines that have no Dagster.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from hasher_resources.storage import HasherStorage

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture
def miner_dir(tmp_path: Path) -> Path:
    """A copy of the bundled miner output (never the original: tests must not touch it)."""
    target = tmp_path / "miner"
    shutil.copytree(SAMPLE / "miner", target)
    return target


@pytest.fixture
def storage(tmp_path: Path, miner_dir: Path) -> HasherStorage:
    from hasher_resources.storage import HasherStorage

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = tmp_path / "data"  # the progress stores too: never a HASHER_PROGRESS_DIR shared by tests
    return HasherStorage(
        miner_dir=str(miner_dir),
        inbox_dir=str(inbox),
        data_dir=str(data),
        progress_dir=str(data / "seeds_progress"),
    )


@pytest.fixture
def instance():
    import dagster as dg

    with dg.instance_for_test() as inst:
        yield inst
