"""HasherStorage and the source scan: work proportional to what changed, and the progress stores'
directory (HASHER_PROGRESS_DIR), which must be on a local disk."""

from __future__ import annotations

import json
import os
import time
import unicodedata
from pathlib import Path

import pytest

import hasher_resources.files as files
from hasher_core.errors import ProgressDirOnNetworkError
from hasher_resources.files import filesystem_type, network_filesystem
from hasher_resources.storage import HasherStorage, read_scan_report, record_scan, scan_sources

MOUNTS = """\
overlay / overlay rw,relatime 0 0
proc /proc proc rw 0 0
/dev/sda1 /var/lib ext4 rw 0 0
server:/export /var/lib/hasher nfs4 rw,vers=4.2 0 0
/dev/sdb1 /var/lib/hasher/local ext4 rw 0 0
//nas/share /mnt/my\\040share cifs rw 0 0
"""


def _inbox(tmp_path: Path, files_count: int) -> HasherStorage:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(files_count):
        (inbox / f"note_{i:03d}.txt").write_text(f"note {i}\n")
    return HasherStorage(
        miner_dir=str(tmp_path / "miner"), inbox_dir=str(inbox), data_dir=str(tmp_path / "data")
    )


def test_a_scan_lists_the_inbox_once_however_many_files_changed(tmp_path, monkeypatch):
    storage = _inbox(tmp_path, 50)
    listings = []
    original = HasherStorage.inbox_listing
    monkeypatch.setattr(HasherStorage, "inbox_listing", lambda self: listings.append(1) or original(self))
    changed, cursor, _ = scan_sources(storage, {}, max_files=1000)
    assert len(changed) == 50 and len(cursor["partitions"]) == 50
    assert len(listings) == 1


def test_an_unchanged_rescan_reads_no_file_and_a_changed_one_reads_only_it(tmp_path, monkeypatch):
    storage = _inbox(tmp_path, 30)
    # digests recorded "later" than the clock-granularity window after the files were written
    monkeypatch.setattr(files, "_now_ns", lambda: time.time_ns() + 10_000_000_000)
    _, cursor, _ = scan_sources(storage, {}, max_files=1000)
    reads: list[Path] = []
    original = files.file_digest
    monkeypatch.setattr(
        files, "file_digest", lambda path, **kw: reads.append(Path(path)) or original(path, **kw)
    )
    changed, again, _ = scan_sources(storage, cursor, max_files=1000)
    assert changed == {} and again == cursor and reads == []
    edited = storage.inbox_path / "note_007.txt"
    edited.write_text("note 7, edited\n")
    changed, _, _ = scan_sources(storage, cursor, max_files=1000)
    assert list(changed) == ["note_007.txt"] and reads == [edited]


def test_the_inbox_lists_text_files_only_in_name_order(tmp_path):
    storage = _inbox(tmp_path, 3)
    for name in (".hidden.txt", "image.png", "README.MD"):
        (storage.inbox_path / name).write_text("x")
    (storage.inbox_path / "folder.txt").mkdir()
    assert list(storage.inbox_files()) == ["README.MD", "note_000.txt", "note_001.txt", "note_002.txt"]


def test_an_nfd_inbox_name_is_keyed_by_its_nfc_spelling(tmp_path):
    storage = _inbox(tmp_path, 0)
    nfd = unicodedata.normalize("NFD", "résumé notes.txt")
    (storage.inbox_path / nfd).write_text("one two three")
    assert storage.inbox_files() == {"résumé notes.txt": storage.inbox_path / nfd}


def test_two_spellings_of_one_name_are_one_key_and_the_other_is_skipped_with_why(tmp_path):
    storage = _inbox(tmp_path, 0)
    nfc = "résumé notes.txt"
    nfd = unicodedata.normalize("NFD", nfc)
    (storage.inbox_path / nfd).write_text("saved on a Mac")
    (storage.inbox_path / nfc).write_text("saved on Linux")
    changed, cursor, _ = scan_sources(storage, {}, max_files=100)
    assert list(changed) == [nfc] and storage.inbox_files() == {nfc: storage.inbox_path / nfc}
    assert cursor["skipped"] == {
        str(storage.inbox_path / nfd): f"the same name as {nfc!r} in Unicode NFC (one spelled decomposed, "
        f"as macOS writes names): only {nfc!r} is read; rename or remove one"
    }


def test_inbox_entries_that_are_not_taken_are_skipped_with_why_and_kept_for_hasher_status(tmp_path):
    storage = _inbox(tmp_path, 1)
    inbox = storage.inbox_path
    (inbox / "report.docx").write_bytes(b"PK")
    (inbox / "folder.md").mkdir()
    (inbox / ".DS_Store").write_bytes(b"\0")  # hidden: ignored silently
    _, cursor, _ = scan_sources(storage, {}, max_files=100)
    expected = {
        str(inbox / "folder.md"): "not a regular file (the inbox is not searched recursively)",
        str(inbox / "report.docx"): "not a .txt or .md file",
    }
    assert cursor["skipped"] == expected
    assert read_scan_report(storage.data_path)["skipped"] == expected
    (inbox / "report.docx").unlink()
    scan_sources(storage, cursor, max_files=100)
    assert list(read_scan_report(storage.data_path)["skipped"]) == [str(inbox / "folder.md")]


def test_an_unreadable_inbox_file_is_skipped_with_why_and_the_scan_goes_on(tmp_path, monkeypatch):
    storage = _inbox(tmp_path, 2)
    locked = storage.inbox_path / "note_000.txt"
    original = files.file_digest

    def digest(path, **kw):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return original(path, **kw)

    monkeypatch.setattr(files, "file_digest", digest)
    changed, cursor, notes = scan_sources(storage, {}, max_files=100)
    assert list(changed) == ["note_001.txt"]
    assert cursor["skipped"] == {str(locked): "cannot be read: Permission denied"}
    assert f"{locked}: cannot be read: Permission denied; skipped" in notes


def test_a_miner_file_with_skipped_records_is_reported_until_it_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_now_ns", lambda: time.time_ns() + 10_000_000_000)
    storage = _inbox(tmp_path, 0)
    miner = storage.miner_path / "json" / "ai_knowledge_base.json"
    miner.parent.mkdir(parents=True)
    good = {"file_name": "a.txt", "chunk_id": 0, "content": "text", "embedding": [0.5] * 768}
    bad = {**good, "chunk_id": 1, "embedding": [0.5] * 3}
    miner.write_text(json.dumps([good, bad]))
    _, cursor, _ = scan_sources(storage, {}, max_files=100)
    (why,) = cursor["skipped"].values()
    assert why.startswith("1 record(s) skipped (embedding_length 1); first: ") and "record 1" in why
    _, again, _ = scan_sources(storage, cursor, max_files=100)  # not read again, still reported
    assert again["skipped"] == cursor["skipped"]
    miner.write_text(json.dumps([good]))
    _, fixed, _ = scan_sources(storage, again, max_files=100)
    assert fixed["skipped"] == {} and read_scan_report(storage.data_path)["skipped"] == {}


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/var/lib/hasher/seeds_progress", "nfs4"),
        ("/var/lib/hasher", "nfs4"),
        ("/var/lib/hasher/local/progress", "ext4"),
        ("/var/lib/hasher2", "ext4"),  # a sibling of the NFS mount, not under it
        ("/mnt/my share/x", "cifs"),
        ("/tmp/x", "overlay"),
    ],
)
def test_the_filesystem_of_a_path_is_its_longest_mount_point(path, kind):
    assert filesystem_type(Path(path), MOUNTS) == kind
    assert (network_filesystem(Path(path), MOUNTS) is not None) == (kind in {"nfs4", "cifs"})


def test_progress_stores_default_to_the_data_dir_and_follow_hasher_progress_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("HASHER_PROGRESS_DIR", raising=False)
    default = HasherStorage(data_dir=str(tmp_path / "data")).progress_path()
    assert default == tmp_path / "data" / "seeds_progress"
    monkeypatch.setenv("HASHER_PROGRESS_DIR", str(tmp_path / "local"))
    path = HasherStorage(data_dir=str(tmp_path / "data")).progress_path()
    assert path == tmp_path / "local" and path.is_dir()


def test_a_progress_dir_on_a_network_filesystem_is_refused_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setattr("hasher_resources.storage.network_filesystem", lambda path: "nfs4")
    storage = HasherStorage(data_dir=str(tmp_path / "shared"))
    with pytest.raises(ProgressDirOnNetworkError) as info:
        storage.progress_path()
    assert "HASHER_PROGRESS_DIR" in str(info.value) and "(nfs4)" in str(info.value)
    assert not (tmp_path / "shared").exists()  # nothing created on the refused path


def test_the_scan_report_keeps_a_path_with_undecodable_bytes(tmp_path):
    storage = _inbox(tmp_path, 0)
    skipped = {os.fsdecode(b"/srv/caf\xe9/notes.rtf"): "not a .txt or .md file"}
    record_scan(storage, skipped)
    assert read_scan_report(storage.data_path)["skipped"] == skipped
