"""``hasher partitions sync`` and ``hasher status`` say what was found, skipped and why: never "exit 0
with nothing" (a miner file nobody could read, an empty inbox)."""

from __future__ import annotations

import codecs
import json
import unicodedata
from pathlib import Path

import pytest

from hasher_cli.main import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dh"
    home.mkdir()
    for name, value in {
        "DAGSTER_HOME": home,
        "HASHER_MINER_DIR": tmp_path / "miner",
        "HASHER_INBOX_DIR": tmp_path / "inbox",
        "HASHER_DATA_DIR": tmp_path / "data",
    }.items():
        monkeypatch.setenv(name, str(value))
    return tmp_path


def go_records(name: str, contents: list[str]) -> list[dict]:
    return [
        {"FileName": name, "ChunkID": i, "Content": text, "Embedding": [0.036] * 768}
        for i, text in enumerate(contents)
    ]


def write_miner_json(root: Path, data: bytes) -> Path:
    path = root / "miner" / "json" / "ai_knowledge_base.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def test_nothing_to_find_is_exit_1_saying_where_it_looked(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (env / "inbox").mkdir()
    assert main(["partitions", "sync"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"hasher partitions sync: no source files found: HASHER_MINER_DIR {env / 'miner'} does not exist; "
        f"HASHER_INBOX_DIR {env / 'inbox'} holds no .txt or .md file\n"
    )


def test_a_powershell_utf16_miner_json_registers_its_source_files(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = json.dumps(go_records("notes.txt", ["one two three", "four five six"]), indent=2)
    write_miner_json(env, codecs.BOM_UTF16_LE + text.replace("\n", "\r\n").encode("utf-16-le"))
    assert main(["partitions", "sync"]) == 0
    assert capsys.readouterr() == ("notes.txt\n", "")


def test_an_unreadable_miner_file_is_exit_1_naming_it_while_the_inbox_is_registered(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    miner = write_miner_json(
        env, json.dumps(go_records("café.txt", ["crème brûlée"]), ensure_ascii=False).encode("latin-1")
    )
    (env / "inbox").mkdir()
    (env / "inbox" / "notes.txt").write_text("some words")
    assert main(["partitions", "sync"]) == 1
    out, err = capsys.readouterr()
    assert out == "notes.txt\n"
    assert err.startswith(f"hasher partitions sync: skipped {miner}: no source files read: ")
    assert "not valid UTF-8 text (byte 0xe9" in err
    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert "inputs the last scan (hasher partitions sync or the sensor) skipped:" in status
    assert f"  {miner}: no source files read: " in status


def test_two_spellings_of_one_inbox_name_register_one_key_and_say_which_was_skipped(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inbox = env / "inbox"
    inbox.mkdir()
    nfc = "résumé notes.txt"
    nfd = unicodedata.normalize("NFD", nfc)
    (inbox / nfd).write_text("from a Mac")
    (inbox / nfc).write_text("from Linux")
    assert main(["partitions", "sync"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{nfc}\n" and out.encode() == nfc.encode() + b"\n"  # the typed (NFC) bytes
    assert err.startswith(
        f"hasher partitions sync: skipped {inbox / nfd}: the same name as {nfc!r} in Unicode NFC"
    )
    assert main(["partitions", "list"]) == 0
    assert capsys.readouterr().out == f"{nfc}\n"
