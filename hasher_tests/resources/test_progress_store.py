"""The progress store (DESIGN §4.6): WAL, resume, locking, and refusing what it cannot trust."""

from __future__ import annotations

import sqlite3
import warnings

import numpy as np
import pytest

from hasher_core.errors import ProgressStoreError, ProgressStoreLockedError
from hasher_core.search.config import SearchConfig
from hasher_core.search.loop import search_frames
from hasher_core.search.records import FinishedFrame
from hasher_resources import progress_store
from hasher_resources.progress_store import ProgressStoreVersionWarning, SqliteProgressStore
from hasher_tests.core.search.test_search import fast_oracle, make_frames


def result(fp: str, solved: bool = True) -> FinishedFrame:
    return FinishedFrame(fp, bytes(range(32)), 0x1234, 20, 3, 0.75, 7, 1792, solved)


def test_results_survive_close_and_reopen_in_wal_mode(tmp_path):
    path = tmp_path / "seeds.sqlite"
    with SqliteProgressStore.open(path) as store:
        store.put_many([result("aa"), result("bb", solved=False)])
    with SqliteProgressStore.open(path) as store:
        got = store.get_many(["aa", "bb", "cc"])
        assert len(store) == 2
    assert got == {"aa": result("aa"), "bb": result("bb", solved=False)}
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_many_fingerprints_are_looked_up_in_chunks(tmp_path):
    fps = [f"{i:032x}" for i in range(1300)]
    with SqliteProgressStore.open(tmp_path / "s.sqlite") as store:
        store.put_many([result(f) for f in fps[::2]])
        assert set(store.get_many(fps)) == set(fps[::2])


def test_a_rerun_takes_finished_frames_from_the_store_and_gives_the_same_output(tmp_path):
    slots, targets = make_frames(12)
    config = SearchConfig(difficulty_bits=9, population=32, max_generations=64, frames_per_call=4)
    full = search_frames(slots, targets, config, fast_oracle)
    with SqliteProgressStore.open(tmp_path / "s.sqlite") as store:
        search_frames(slots[:5], targets[:5], config, fast_oracle, store=store)  # a run cut short
    calls = []

    def counting(s, seeds, t):
        calls.append(len(s))
        return fast_oracle(s, seeds, t)

    with SqliteProgressStore.open(tmp_path / "s.sqlite") as store:
        resumed = search_frames(slots, targets, config, counting, store=store)
        assert len(store) == 12
    assert resumed.from_store.tolist() == [True] * 5 + [False] * 7
    assert resumed.frames_searched == 7
    assert sum(calls) == resumed.run_evaluations == full.evaluations[5:].sum()
    for name in ("best_seed", "golden", "matched_bits", "hamming", "generations", "evaluations", "solved"):
        assert (getattr(resumed, name) == getattr(full, name)).all(), name
    assert np.allclose(resumed.reward, full.reward)


def test_a_second_run_of_the_partition_fails_clearly_and_the_first_keeps_working(tmp_path):
    path = tmp_path / "part-a.sqlite"
    with SqliteProgressStore.open(path, partition="part-a") as first:
        with pytest.raises(ProgressStoreLockedError, match="another run of partition 'part-a' holds"):
            SqliteProgressStore.open(path, partition="part-a", wait_s=0.1)
        first.put_many([result("aa")])
    with SqliteProgressStore.open(path, partition="part-a") as again:  # released on close
        assert set(again.get_many(["aa"])) == {"aa"}


def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "seeds.sqlite"
    path.write_bytes(b"PAR1 this is a parquet file, not a progress store")
    before = path.read_bytes()
    with pytest.raises(ProgressStoreError, match=f"progress store {path}: is not an SQLite database"):
        SqliteProgressStore.open(path)
    assert path.read_bytes() == before
    SqliteProgressStore.open(tmp_path / "other.sqlite").close()  # the lock was released


def test_a_corrupt_sqlite_file_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "seeds.sqlite"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 2000)
    before = path.read_bytes()
    with pytest.raises(ProgressStoreError, match=str(path)):
        SqliteProgressStore.open(path)
    assert path.read_bytes() == before


def test_an_unrelated_sqlite_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "seeds.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (name TEXT)")
    db.execute("INSERT INTO customers VALUES ('ada')")
    db.commit()
    db.close()
    with pytest.raises(
        ProgressStoreError, match=r"not a hasher progress store \(it has tables \['customers'\]\)"
    ):
        SqliteProgressStore.open(path)
    assert sqlite3.connect(path).execute("SELECT name FROM customers").fetchall() == [("ada",)]


def test_a_store_from_another_algorithm_version_warns_is_kept_and_is_not_reused(tmp_path, monkeypatch):
    path = tmp_path / "seeds.sqlite"
    slots, targets = make_frames(3)
    config = SearchConfig(difficulty_bits=6, population=16)
    monkeypatch.setattr(progress_store, "ALGORITHM_VERSION", "hasher-recursion-v0")
    from hasher_core.search import config as search_config

    monkeypatch.setattr(search_config, "ALGORITHM_VERSION", "hasher-recursion-v0")
    with SqliteProgressStore.open(path) as store:
        search_frames(slots, targets, config, fast_oracle, store=store)
    monkeypatch.undo()
    with pytest.warns(
        ProgressStoreVersionWarning, match="written by algorithm version 'hasher-recursion-v0'"
    ):
        store = SqliteProgressStore.open(path)
    with store:
        r = search_frames(slots, targets, config, fast_oracle, store=store)
        assert r.frames_searched == 3 and not r.from_store.any()
        assert len(store) == 6  # the old rows are still there


def test_the_current_version_opens_without_warning(tmp_path):
    path = tmp_path / "s.sqlite"
    SqliteProgressStore.open(path).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SqliteProgressStore.open(path).close()
