"""The knowledge split: one pass over the miner file, partitions identical to direct reads."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hasher_core.errors import (
    KnowledgeBaseNotFoundError,
    KnowledgeSplitError,
    KnowledgeSplitLockTimeoutError,
    PartitionNotFoundError,
)
from hasher_core.knowledge import ReadReport, read_knowledge_base, safe_partition_key
from hasher_core.schemas import KNOWLEDGE_BASE_SCHEMA, knowledge_base_schema
from hasher_resources import files
from hasher_resources.knowledge_split import build as knowledge_split
from hasher_resources.knowledge_split import ensure_split
from hasher_resources.knowledge_split import read as split_read
from hasher_resources.knowledge_split.read import KnowledgeSplit, ordered_tables

PARQUET = "ai_knowledge_base.parquet"
GO_JSON = "json/ai_knowledge_base.json"
SMALL_DIMS = 8


def direct(miner_dir: Path, key: str, **kwargs: Any) -> pa.Table:
    batches = list(read_knowledge_base(miner_dir, partition_key=key, **kwargs))
    return pa.Table.from_batches(batches, schema=batches[0].schema)


def cached(cache: KnowledgeSplit, key: str, batch_rows: int = 8192) -> pa.Table:
    batches = list(cache.read_partition(key, batch_rows))
    assert all(b.schema.equals(knowledge_base_schema(cache.dims)) for b in batches)
    assert all(b.num_rows == batch_rows for b in batches[:-1])
    return pa.Table.from_batches(batches)


def fingerprints(cache_root: Path) -> set[str]:
    return {p.name for p in cache_root.iterdir() if knowledge_split._FINGERPRINT.fullmatch(p.name)}


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def go_json(path: Path, names: list[str], dims: int = SMALL_DIMS, extra: list[Any] | None = None) -> Path:
    """A Go-style JSON array, one record per entry of ``names``; chunk ids count down per name."""
    rng = np.random.default_rng(len(names))
    counts = {n: names.count(n) for n in names}
    records: list[Any] = []
    for i, name in enumerate(names):
        counts[name] -= 1
        records.append(
            {
                "FileName": name,
                "ChunkID": counts[name],
                "Content": f"record {i} of {name}",
                "Embedding": rng.standard_normal(dims).astype(np.float32).tolist(),
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records + (extra or [])))
    return path


@pytest.fixture
def json_only(miner_dir: Path, tmp_path: Path) -> Path:
    """The sample miner copy with the Parquet file moved out, so discovery reads the Go JSON array."""
    (miner_dir / PARQUET).rename(tmp_path / "moved.parquet")
    return miner_dir


@pytest.mark.parametrize("source", ["parquet", "go_json"])
def test_each_partition_equals_a_direct_partition_read(
    source: str, miner_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if source == "go_json":
        miner_dir = request.getfixturevalue("json_only")
    cache = ensure_split(miner_dir, tmp_path / "cache")
    assert cache.built and cache.format == ("parquet" if source == "parquet" else "json_array")
    assert cache.source_path == miner_dir / (PARQUET if source == "parquet" else GO_JSON)
    report = ReadReport()
    whole = pa.Table.from_batches(list(read_knowledge_base(miner_dir, report=report)))
    expected_keys = sorted({safe_partition_key(n) for n in whole.column("source_file").to_pylist()})
    assert sorted(cache.partitions()) == expected_keys
    assert sum(cache.partitions().values()) == whole.num_rows == cache.report["records_kept"]
    for key, rows in cache.partitions().items():
        for batch_rows in (2, 8192):
            got = cached(cache, key, batch_rows)
            assert got.equals(direct(miner_dir, key)), key
            assert got.num_rows == rows


def test_the_split_never_writes_in_the_miner_directory(miner_dir: Path, tmp_path: Path) -> None:
    before = tree_digest(miner_dir)
    ensure_split(miner_dir, tmp_path / "cache")
    assert tree_digest(miner_dir) == before
    with pytest.raises(KnowledgeSplitError, match="must not live inside the miner directory"):
        ensure_split(miner_dir, miner_dir / "cache")
    assert tree_digest(miner_dir) == before and not (miner_dir / "cache").exists()


def test_an_unchanged_file_is_not_split_again(
    miner_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ensure_split(miner_dir, tmp_path / "cache")
    report_mtime = (first.path / "report.json").stat().st_mtime_ns
    writes = []
    real = knowledge_split.ds.write_dataset
    monkeypatch.setattr(
        knowledge_split.ds, "write_dataset", lambda *a, **k: writes.append(1) or real(*a, **k)
    )
    again = ensure_split(miner_dir, tmp_path / "cache")
    assert not again.built and again.path == first.path and again.report == first.report
    assert writes == [] and (again.path / "report.json").stat().st_mtime_ns == report_mtime


def test_a_file_unchanged_since_it_was_hashed_is_not_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    miner_dir, cache_root = tmp_path / "miner", tmp_path / "cache"
    path = go_json(miner_dir / GO_JSON, ["a.txt", "b.txt"] * 3)
    hashed: list[Path] = []
    real = files.file_digest
    monkeypatch.setattr(files, "file_digest", lambda p, **kw: hashed.append(p) or real(p, **kw))
    first = ensure_split(miner_dir, cache_root, dims=SMALL_DIMS)
    assert hashed == [path]
    # File times tick coarsely, so a digest is trusted only once the file is older than the record.
    hashed.clear()
    assert ensure_split(miner_dir, cache_root, dims=SMALL_DIMS).path == first.path and hashed == [path]
    later = files._now_ns() + 10**10
    monkeypatch.setattr(files, "_now_ns", lambda: later)
    ensure_split(miner_dir, cache_root, dims=SMALL_DIMS)  # records the digest at the later time
    monkeypatch.setattr(files, "_now_ns", lambda: later + 10**10)
    hashed.clear()
    assert ensure_split(miner_dir, cache_root, dims=SMALL_DIMS).path == first.path and hashed == []
    # Same size, mtime put back: the inode change time still gives the rewrite away.
    st = path.stat()
    text = path.read_text()
    path.write_text(text.replace("record 0 of", "RECORD 0 of"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    changed = ensure_split(miner_dir, cache_root, dims=SMALL_DIMS)
    assert hashed == [path] and changed.built and changed.fingerprint != first.fingerprint
    assert next(changed.read_partition("a.txt")).column("content")[0].as_py() == "RECORD 0 of a.txt"


def test_a_changed_file_gets_a_fresh_split_and_old_ones_are_pruned(miner_dir: Path, tmp_path: Path) -> None:
    cache_root = tmp_path / "cache"
    (cache_root / "keep-me").mkdir(parents=True)
    half_built = cache_root / ("f" * 32)
    half_built.mkdir()  # looks like a fingerprint but holds no report: not a split, never deleted
    table = pq.read_table(miner_dir / PARQUET)
    seen = []
    for rows in (table.num_rows, 10, 7, 5):
        pq.write_table(table.slice(0, rows), miner_dir / PARQUET)
        cache = ensure_split(miner_dir, cache_root, keep=2)
        assert cache.built and sum(cache.partitions().values()) == rows
        seen.append(cache.fingerprint)
    assert len(set(seen)) == 4
    assert fingerprints(cache_root) == {seen[-2], seen[-1], half_built.name}
    assert (cache_root / "keep-me").is_dir() and (cache_root / ".lock").is_file()


@pytest.mark.parametrize("where", ["while_reading", "after_writing"])
def test_a_crash_mid_split_leaves_no_complete_looking_cache(
    where: str, miner_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_root = tmp_path / "cache"

    class Crash(RuntimeError):
        pass

    if where == "while_reading":
        real_read = knowledge_split.read_knowledge_base

        def crashing_read(*args: Any, **kwargs: Any):
            for i, batch in enumerate(real_read(*args, **kwargs)):
                yield batch
                if i == 0:
                    raise Crash("disk vanished")

        monkeypatch.setattr(knowledge_split, "read_knowledge_base", crashing_read)
    else:
        real_write = knowledge_split.ds.write_dataset

        def crashing_write(*args: Any, **kwargs: Any) -> None:
            real_write(*args, **kwargs)
            raise Crash("power cut")

        monkeypatch.setattr(knowledge_split.ds, "write_dataset", crashing_write)
    with pytest.raises(Crash):
        ensure_split(miner_dir, cache_root, batch_rows=4)
    assert fingerprints(cache_root) == set()
    assert not [p for p in cache_root.iterdir() if p.name.startswith(".tmp-") and p.is_dir()]
    monkeypatch.undo()
    cache = ensure_split(miner_dir, cache_root, batch_rows=4)
    assert cache.built and sum(cache.partitions().values()) == 14


def test_a_killed_builds_temp_directory_is_ignored_then_removed(miner_dir: Path, tmp_path: Path) -> None:
    cache_root = tmp_path / "cache"
    leftover = cache_root / ".tmp-killed"
    (leftover / "data" / "pdeadbeef").mkdir(parents=True)
    (leftover / "data" / "pdeadbeef" / "part-0.parquet").write_bytes(b"PAR1 half")
    cache = ensure_split(miner_dir, cache_root)
    assert cache.built and not leftover.exists()


ODD_NAMES = [
    "/home/user/docs/report.pdf",
    "../../etc/passwd",
    "tab\there\x00nul",
    "日本語の文書" * 16,
    "key=value.txt",
    "percent%41%2F.txt",
    "spaces in name .txt",
    "tilde~0123456789",
    "émoji 📚.md",
    "C:\\Users\\x\\notes.txt",
]


@pytest.mark.parametrize("slice_bytes", [4096, knowledge_split.WRITE_SLICE_BYTES])
def test_odd_source_names_round_trip_in_order_with_many_files_per_partition(
    slice_bytes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    miner_dir = tmp_path / "miner"
    # Interleaved sources, small batches and two open files force several files and row groups per
    # partition; chunk ids count down, so file order (not chunk id order) is what must survive.
    names = [ODD_NAMES[(i * 7 + i // 10) % len(ODD_NAMES)] for i in range(300)]
    go_json(miner_dir / GO_JSON, names)
    cache = ensure_split(
        miner_dir,
        tmp_path / "cache",
        dims=SMALL_DIMS,
        batch_rows=16,
        max_open_files=2,
        slice_bytes=slice_bytes,
    )
    data_files = list((cache.path / "data").rglob("*.parquet"))
    assert len(data_files) > len(ODD_NAMES)
    # Several write_dataset calls (slices), or one call whose file names do not sort in sequence order.
    calls = {f.name.split("-")[1] for f in data_files}
    assert len(calls) > 3 if slice_bytes == 4096 else any(f.name.endswith("-10.parquet") for f in data_files)
    assert sorted(cache.partitions()) == sorted(safe_partition_key(n) for n in ODD_NAMES)
    # Row groups are streamed in sequence order; the read-whole-and-sort fallback must not be needed.
    monkeypatch.setattr(split_read.pq, "read_table", None)
    for name in ODD_NAMES:
        key = safe_partition_key(name)
        got = cached(cache, key, batch_rows=7)
        assert got.column("source_file").to_pylist() == [name] * names.count(name)
        assert got.column("chunk_id").to_pylist() == list(range(names.count(name) - 1, -1, -1))
        assert got.equals(direct(miner_dir, key, dims=SMALL_DIMS)), name
        assert cache.report["partition_sources"][key] == [name]


def test_overlapping_row_groups_are_read_whole_and_sorted(tmp_path: Path) -> None:
    # Not what the writer produces, but a cache written by another writer version must still read right.
    table = pa.table(
        {"chunk_id": pa.array(range(6), pa.int32()), "_seq": pa.array([0, 2, 4, 1, 3, 5], pa.int64())}
    )
    pq.write_table(table.slice(0, 3), tmp_path / "part-0.parquet")
    pq.write_table(table.slice(3), tmp_path / "part-1.parquet")
    tables = list(ordered_tables(sorted(tmp_path.glob("*.parquet"))))
    assert pa.concat_tables(tables).column("_seq").to_pylist() == list(range(6))
    assert pa.concat_tables(tables).column("chunk_id").to_pylist() == [0, 3, 1, 4, 2, 5]


def test_skipped_records_are_counted_in_the_report(tmp_path: Path) -> None:
    miner_dir = tmp_path / "miner"
    bad = [
        {"FileName": "a.txt", "ChunkID": 9, "Content": "", "Embedding": [0.0] * SMALL_DIMS},
        {"FileName": "a.txt", "ChunkID": 8, "Content": "short", "Embedding": [0.0] * 3},
        {"FileName": "b.txt", "ChunkID": 0, "Content": "again", "Embedding": [0.0] * SMALL_DIMS},
        "not an object",
    ]
    go_json(miner_dir / GO_JSON, ["a.txt", "b.txt", "a.txt"], extra=bad)
    cache = ensure_split(miner_dir, tmp_path / "cache", dims=SMALL_DIMS)
    report = ReadReport()
    list(read_knowledge_base(miner_dir, dims=SMALL_DIMS, report=report))
    assert report.records_skipped == 4
    assert cache.report["skipped"] == dict(sorted(report.skipped.items()))
    assert cache.report["records_skipped"] == 4 and cache.report["duplicates"] == 1
    assert cache.report["problems"] == report.problems
    assert cache.partitions() == {"a.txt": 2, "b.txt": 1}
    reread = json.loads((cache.path / "report.json").read_text())
    assert reread["skipped"] == cache.report["skipped"]


def test_a_fallback_is_reported_and_part_of_the_fingerprint(miner_dir: Path, tmp_path: Path) -> None:
    cache_root = tmp_path / "cache"
    good = (miner_dir / PARQUET).read_bytes()
    (miner_dir / PARQUET).write_bytes(b"PAR1" + b"\0" * 64)
    fallen = ensure_split(miner_dir, cache_root)
    assert fallen.source_path == miner_dir / GO_JSON and fallen.format == "json_array"
    assert fallen.report["fallbacks"] and str(miner_dir / PARQUET) in fallen.report["fallbacks"][0]
    assert not ensure_split(miner_dir, cache_root).built
    (miner_dir / PARQUET).write_bytes(good)
    repaired = ensure_split(miner_dir, cache_root)
    assert repaired.built and repaired.format == "parquet" and repaired.fingerprint != fallen.fingerprint


def test_an_unknown_partition_key_is_a_partition_not_found_error(miner_dir: Path, tmp_path: Path) -> None:
    cache = ensure_split(miner_dir, tmp_path / "cache")
    with pytest.raises(PartitionNotFoundError, match=r"no record belongs to partition 'nope\.txt'") as info:
        next(cache.read_partition("nope.txt"))
    assert info.value.path == miner_dir / PARQUET and info.value.partition_key == "nope.txt"


def test_no_knowledge_base_is_not_found_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(KnowledgeBaseNotFoundError, match=r"ai_knowledge_base\.parquet"):
        ensure_split(tmp_path / "empty", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_concurrent_callers_share_one_build(miner_dir: Path, tmp_path: Path) -> None:
    cache_root = tmp_path / "cache"
    start = threading.Barrier(3)
    results: list[KnowledgeSplit | BaseException] = []

    def call() -> None:
        start.wait()
        try:
            results.append(ensure_split(miner_dir, cache_root))
        except BaseException as exc:  # reported below, not swallowed
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(isinstance(r, KnowledgeSplit) for r in results), results
    assert len({r.path for r in results}) == 1  # type: ignore[union-attr]
    assert sum(r.built for r in results) == 1  # type: ignore[union-attr]
    assert len(fingerprints(cache_root)) == 1


def test_a_held_lock_times_out_with_a_clear_error(miner_dir: Path, tmp_path: Path) -> None:
    cache_root = tmp_path / "cache"
    cache_root.mkdir()
    with (
        files.locked(cache_root / ".lock", wait_s=1.0, busy=lambda waited, holder: RuntimeError(holder)),
        pytest.raises(KnowledgeSplitLockTimeoutError, match=r"\.lock: still locked after .* by .*pid"),
    ):
        ensure_split(miner_dir, cache_root, lock_timeout_s=0.2)
    assert fingerprints(cache_root) == set()
    assert ensure_split(miner_dir, cache_root).built


def test_read_partition_yields_the_canonical_schema(miner_dir: Path, tmp_path: Path) -> None:
    cache = ensure_split(miner_dir, tmp_path / "cache")
    batch = next(cache.read_partition(next(iter(cache.partitions()))))
    assert batch.schema.equals(KNOWLEDGE_BASE_SCHEMA)
    with pytest.raises(ValueError, match="batch_rows"):
        cache.read_partition("gettysburg_address.txt", 0)


def test_the_same_content_at_another_path_gets_its_own_split(miner_dir: Path, tmp_path: Path) -> None:
    # A second miner directory with the same content at another path is a different input: the
    # report names the path it was read from, so it gets its own split.
    other = tmp_path / "other"
    shutil.copytree(miner_dir, other)
    first = ensure_split(miner_dir, tmp_path / "cache")
    second = ensure_split(other, tmp_path / "cache")
    assert second.built and second.fingerprint != first.fingerprint
    assert second.report["path_used"] == str(other / PARQUET)
