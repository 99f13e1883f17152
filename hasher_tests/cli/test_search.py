"""Resume after ``kill -9`` (DESIGN §4.6): a real search process is killed mid-run and started again.

The rerun must skip every frame the killed run committed (their rows are not rewritten), leave no
partial output behind at any point, and write exactly what an uninterrupted run writes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hasher_core.errors import ProgressStoreLockedError
from hasher_core.search.config import SearchConfig
from hasher_core.search.loop import search_frames
from hasher_core.search.results import attach_results
from hasher_resources.search_store import ProgressStore
from hasher_tests.core.search.test_search import frames_table, make_frames, reference_evaluate

FRAMES = 24
CONFIG = SearchConfig(difficulty_bits=8, population=16, max_generations=400, frames_per_call=4, rng_seed=5)
REPO = Path(__file__).resolve().parents[2]


def cli(frames: Path, store: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hasher_cli.search",
        *("--frames", str(frames), "--store", str(store), "--out", str(out)),
        *("--backend", "reference", "--difficulty-bits", str(CONFIG.difficulty_bits)),
        *("--population", str(CONFIG.population), "--max-generations", str(CONFIG.max_generations)),
        *("--frames-per-call", str(CONFIG.frames_per_call), "--rng-seed", str(CONFIG.rng_seed)),
        "--partition",
        "part-a",
        *extra,
    ]


def stored_rows(store: Path) -> dict[str, float]:
    if not store.exists():
        return {}
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT fingerprint, finished_at FROM frames"))
    except sqlite3.OperationalError:  # schema not created yet
        return {}
    finally:
        db.close()


@pytest.mark.slow
def test_a_search_killed_with_sigkill_resumes_to_the_uninterrupted_output(tmp_path):
    slots, targets = make_frames(FRAMES, seed=11)
    frames = tmp_path / "frames.parquet"
    pq.write_table(frames_table(slots, targets), frames)
    store, out = tmp_path / "progress.sqlite", tmp_path / "seeds.parquet"
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    victim = subprocess.Popen(cli(frames, store, out), cwd=REPO, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(stored_rows(store)) < 3 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    # While it runs, a second run of the same partition is refused, naming the partition.
    with pytest.raises(ProgressStoreLockedError, match="another run of partition 'part-a' holds"):
        ProgressStore.open(store, partition="part-a", wait_s=0)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert victim.returncode == -signal.SIGKILL, "the search finished before it could be killed"
    before = stored_rows(store)
    assert 3 <= len(before) < FRAMES
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]

    rerun = subprocess.run(cli(frames, store, out), cwd=REPO, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["frames_from_store"] == len(before)
    assert summary["frames_searched"] == FRAMES - len(before)
    after = stored_rows(store)
    assert len(after) == FRAMES
    assert all(after[fp] == t for fp, t in before.items()), "finished frames were recomputed"

    uninterrupted = search_frames(slots, targets, CONFIG, reference_evaluate)
    expected = attach_results(frames_table(slots, targets), uninterrupted, CONFIG, "reference")
    assert pq.read_table(out).to_pydict() == expected.to_pydict()


def test_the_cli_refuses_a_store_that_is_not_one_and_leaves_it_alone(tmp_path):
    slots, targets = make_frames(2)
    frames = tmp_path / "frames.parquet"
    pq.write_table(frames_table(slots, targets), frames)
    store, out = tmp_path / "progress.sqlite", tmp_path / "seeds.parquet"
    store.write_text("not a database\n")
    from hasher_cli.search import main

    assert main(cli(frames, store, out)[3:]) == 2
    assert store.read_text() == "not a database\n" and not out.exists()
