"""hasher_resources.files: atomic writes, the digest memo, locks and the environment's directories."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hasher_core.errors import FileChangedError
from hasher_resources import files


def test_an_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path):
    target = tmp_path / "sub" / "out.bin"
    files.atomic_write_bytes(target, b"first")
    files.atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths os.fsync is called on, in order."""
    seen: list[Path] = []
    real = os.fsync

    def spy(fd: int) -> None:
        seen.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(files.os, "fsync", spy)
    return seen


def test_a_published_directory_appears_whole_with_every_file_and_its_parent_synced(tmp_path, synced):
    staged = tmp_path / ".tmp-build"
    (staged / "data").mkdir(parents=True)
    (staged / "data" / "part-0.parquet").write_bytes(b"rows")
    (staged / "report.json").write_text("{}")
    final = files.publish(staged, tmp_path / "abc123")
    assert not staged.exists() and (final / "data" / "part-0.parquet").read_bytes() == b"rows"
    tree = {staged / "data" / "part-0.parquet", staged / "report.json", staged / "data", staged}
    assert tree <= set(synced)
    assert synced[-1] == tmp_path  # the rename itself made durable last


def test_publishing_over_a_symlink_swaps_it_and_over_a_full_directory_fails_leaving_both(tmp_path, synced):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    os.symlink("v1", tmp_path / "current")
    os.symlink("v2", tmp_path / ".current.tmp")
    files.publish(tmp_path / ".current.tmp", tmp_path / "current")
    assert os.readlink(tmp_path / "current") == "v2" and not (tmp_path / ".current.tmp").exists()
    (tmp_path / "v1" / "seeds.parquet").write_bytes(b"old")
    (tmp_path / ".tmp-v1").mkdir()
    with pytest.raises(OSError):
        files.publish(tmp_path / ".tmp-v1", tmp_path / "v1")
    assert (tmp_path / ".tmp-v1").is_dir() and (tmp_path / "v1" / "seeds.parquet").read_bytes() == b"old"


def test_a_failed_atomic_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path):
    target = tmp_path / "out.txt"
    files.atomic_write_text(target, "kept")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        files.atomic_write(target, half_then_fail)
    assert target.read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_move_into_place_moves_a_staged_file(tmp_path: Path):
    staged = tmp_path / "staged.parquet"
    staged.write_bytes(b"PAR1")
    files.move_into_place(staged, tmp_path / "final" / "x.parquet")
    assert not staged.exists() and (tmp_path / "final" / "x.parquet").read_bytes() == b"PAR1"


def test_fsync_dir_strictness(tmp_path: Path):
    files.fsync_dir(tmp_path)
    files.fsync_dir(tmp_path / "missing", strict=False)
    with pytest.raises(OSError):
        files.fsync_dir(tmp_path / "missing", strict=True)


def test_the_memo_reads_a_file_once_it_is_older_than_its_record(tmp_path: Path, monkeypatch):
    path = tmp_path / "kb.json"
    path.write_text("[]")
    reads: list[Path] = []
    real = files.file_digest
    monkeypatch.setattr(files, "file_digest", lambda p, **kw: reads.append(p) or real(p, **kw))
    memo = files.DigestMemo()
    first = memo.digest(path)
    later = time.time_ns() + 10**10  # the clock moves on: the file is now well older than a record
    monkeypatch.setattr(files, "_now_ns", lambda: later)
    assert memo.digest(path) == first and len(reads) == 2  # recorded again, now trustworthy
    assert memo.digest(path) == first and len(reads) == 2 and memo.cached(path) == first
    path.write_text("[1]")  # a new stat: read again, a new digest
    assert memo.digest(path) != first and len(reads) == 3


def test_a_file_written_too_recently_is_read_again_without_changing_the_memo(tmp_path: Path):
    path = tmp_path / "fresh.txt"
    path.write_text("x")
    memo = files.DigestMemo()
    digest = memo.digest(path)
    entries = {k: dict(v) for k, v in memo.entries.items()}
    assert memo.cached(path) is None  # mtime is within the clock's resolution of the record
    memo.changed = False
    assert memo.digest(path) == digest and memo.entries == entries and not memo.changed


def test_a_file_that_changes_while_it_is_read_is_an_error(tmp_path: Path, monkeypatch):
    path = tmp_path / "moving.txt"
    path.write_text("before")
    real = files.file_digest

    def digest_then_append(p: Path, **kw) -> str:
        out = real(p, **kw)
        with open(p, "a") as f:
            f.write("more")
        return out

    monkeypatch.setattr(files, "file_digest", digest_then_append)
    with pytest.raises(FileChangedError, match=r"moving\.txt: changed while it was being fingerprinted"):
        files.DigestMemo().digest(path)


class Busy(Exception):
    pass


def test_a_held_lock_raises_the_callers_error_naming_the_holder(tmp_path: Path):
    lock = tmp_path / ".lock"
    with (
        files.locked(lock, wait_s=0, busy=lambda w, h: Busy(h), note="partition a"),
        pytest.raises(Busy, match=rf"pid {os.getpid()} since .*; partition a"),
    ):
        files.acquire_lock(lock, wait_s=0.1, busy=lambda w, h: Busy(h))
    fd = files.acquire_lock(lock, wait_s=0, busy=lambda w, h: Busy(h))
    files.release_lock(fd)


def test_the_directories_come_from_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HASHER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HASHER_INBOX_DIR", str(tmp_path / "in"))
    assert files.default_data_dir() == tmp_path / "data"
    assert files.default_inbox_dir() == tmp_path / "in"
    monkeypatch.delenv("HASHER_DATA_DIR")
    assert files.default_data_dir() == Path.home() / ".local/share/hasher"
