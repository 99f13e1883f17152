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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hasher_cli.search import _parser as search_parser
from hasher_cli.search import main as search_main
from hasher_cli.search import search_config_from
from hasher_core.bundle import build_bundle
from hasher_core.errors import ProgressStoreLockedError
from hasher_core.frames.recipe import recipe_from_metadata, recipe_to_metadata
from hasher_core.search.config import SearchConfig, knobs
from hasher_core.search.loop import frame_fingerprint, search_frames
from hasher_core.search.results import attach_results
from hasher_resources.progress_store import SqliteProgressStore
from hasher_tests.core.bundle.test_bundle import RECIPE
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
        SqliteProgressStore.open(store, partition="part-a", wait_s=0)
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
    assert summary["unique_frames_searched"] == FRAMES - len(before)
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


def test_seeds_written_by_the_cli_can_be_bundled(tmp_path):
    """Regression: only the asset added the fingerprint column, so CLI output could not be deployed."""
    slots, targets = make_frames(6)
    frames = frames_table(slots, targets)
    frames = frames.append_column("source_file", pa.array(["doc.txt"] * 6))
    frames = frames.append_column("chunk_id", pa.array(np.zeros(6, np.int32)))
    frames = frames.append_column("window_end", pa.array(np.arange(1, 7, dtype=np.int32)))
    frames = frames.replace_schema_metadata(recipe_to_metadata(RECIPE))  # as stage 2 writes them
    path, out = tmp_path / "frames.parquet", tmp_path / "seeds.parquet"
    pq.write_table(frames, path)
    args = cli(path, tmp_path / "store.sqlite", out)[3:]  # the flags, run in this process
    assert search_main(args) == 0
    seeds = pq.read_table(out)
    assert recipe_from_metadata(seeds.schema.metadata) == RECIPE  # the recipe travels with the seeds
    fingerprints = [frame_fingerprint(slots[i], int(targets[i]), CONFIG) for i in range(6)]
    assert seeds.column("fingerprint").to_pylist() == fingerprints
    bundle = build_bundle({"doc.txt": seeds}, pipeline_version="test")
    assert bundle.num_rows == 6 and bundle.manifest["distinct_frames"] == 6


def test_the_cli_has_one_flag_per_search_setting_with_its_default(capsys):
    parser = search_parser()
    for knob in knobs():
        action = next(a for a in parser._actions if a.dest == knob.name)
        assert action.default == knob.default and knob.description in action.help
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "--reward-weights" in capsys.readouterr().out
    args = parser.parse_args(
        [
            "--frames",
            "f",
            "--out",
            "o",
            "--store",
            "s",
            "--reward-weights",
            "0.5,0.5,0",
            "--difficulty-schedule",
            "4,6",
        ]
    )
    config = search_config_from(args)
    assert config.reward_weights == (0.5, 0.5, 0.0) and config.difficulty_schedule == (4, 6)
    assert (
        search_config_from(parser.parse_args(["--frames", "f", "--out", "o", "--store", "s"]))
        == SearchConfig()
    )
