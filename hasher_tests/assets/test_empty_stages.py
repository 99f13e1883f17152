"""Empty at any stage (no chunks, no frames, no seeds, nothing solved): a note at the stage where it
happens, the later stages and every check pass on nothing, and no verification ever fails for it."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import dagster as dg
import pytest

from hasher_assets.definitions import ASSET_CHECKS, ASSETS
from hasher_cli.main import main
from hasher_core.errors import NoCheckpointsError
from hasher_resources.storage import HasherStorage
from hasher_tests.assets.local import local_resources

TRAINING = dg.AssetSelection.assets("knowledge_base", "training_frames", "seeds", "checkpoints")
DEPLOY = dg.AssetSelection.assets("deployment") | dg.AssetSelection.checks_for_assets("deployment")
FAST = {"ops": {"seeds": {"config": {"difficulty_bits": 4}}, "checkpoints": {"config": {"device_sample": 0}}}}


def train(instance: dg.DagsterInstance, storage: HasherStorage, key: str, config: dict = FAST):
    instance.add_dynamic_partitions("source_files", [key])
    return dg.materialize(
        [*ASSETS, *ASSET_CHECKS],
        selection=TRAINING,
        partition_key=key,
        instance=instance,
        resources=local_resources(storage, "cpu"),
        run_config=config,
    )


def notes(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Asset → its materialisation's ``note``, for the assets that have one."""
    out = {}
    for asset in ("knowledge_base", "training_frames", "seeds", "checkpoints"):
        (materialization,) = result.asset_materializations_for_node(asset)
        if "note" in materialization.metadata:
            out[asset] = materialization.metadata["note"].value
    return out


def assert_every_check_passed(result: dg.ExecuteInProcessResult) -> None:
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} >= {"checkpoints_gate", "training_frames_are_consistent"}
    assert all(e.passed for e in evaluations), [
        (e.check_name, e.metadata) for e in evaluations if not e.passed
    ]


#: Inbox files that are empty at stage 1 (no words) or at stage 2 (every chunk under 2 tokens).
INBOX_CASES = {
    "0 bytes": (b"", "knowledge_base", "no chunks: {path}: empty file"),
    "only whitespace": (b" \n\t\r\n", "knowledge_base", "no chunks: {path}: no words (only whitespace)"),
    "only a UTF-16 BOM": (
        codecs.BOM_UTF16_LE,
        "knowledge_base",
        "no chunks: {path}: no words (only whitespace)",
    ),
    "one word, one token": (
        b"Hello\n",
        "training_frames",
        "no frames: every chunk is too short (1 chunk(s) under",
    ),
    "one CJK character": (
        "中".encode(),
        "training_frames",
        "no frames: every chunk is too short (1 chunk(s) under",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(INBOX_CASES))
def test_an_empty_inbox_source_is_noted_where_it_empties_and_passes_every_check(instance, storage, case):
    data, stage, note = INBOX_CASES[case]
    path = storage.inbox_path / "greeting.txt"
    path.write_bytes(data)
    result = train(instance, storage, "greeting.txt")
    assert result.success
    assert_every_check_passed(result)
    found = notes(result)
    assert found[stage].startswith(note.format(path=path))
    assert found["seeds"].startswith("no seeds: the partition has no frames")
    assert found["checkpoints"].startswith("no seeds to check")
    (gate,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "checkpoints_gate"]
    assert gate.metadata["rows"].value == 0 and gate.metadata["independent"].value is True
    assert gate.metadata["note"].value == found["checkpoints"]


@pytest.mark.slow
def test_a_miner_source_of_one_token_chunks_is_noted_at_training_frames(instance, storage, capsys):
    # Case 04 of the third bug hunt: a Go-style record whose only chunk is "Hello", plus two more.
    records = [
        {"FileName": "greeting.txt", "ChunkID": i, "Content": text, "Embedding": [0.036] * 768}
        for i, text in enumerate(["Hello", "Contents", "1"])
    ]
    miner = storage.miner_path / "json" / "ai_knowledge_base.json"
    for other in storage.miner_path.glob("*.parquet"):
        other.unlink()
    miner.write_text(json.dumps(records))
    result = train(instance, storage, "greeting.txt")
    assert result.success
    assert_every_check_passed(result)
    assert notes(result)["training_frames"].startswith(
        "no frames: every chunk is too short (3 chunk(s) under 2"
    )
    with pytest.raises(NoCheckpointsError, match=r"nothing to deploy: .*'greeting.txt' \(0 rows\)"):
        dg.materialize(
            [*ASSETS, *ASSET_CHECKS],
            selection=DEPLOY,
            instance=instance,
            resources=local_resources(storage, "cpu"),
        )
    assert main(["status", "--deployment-root", storage.data_dir]) == 0
    status = capsys.readouterr().out
    assert "  note: greeting.txt: no frames (every chunk is under 2 tokens): nothing to train" in status


@pytest.mark.slow
def test_an_empty_partition_beside_a_trained_one_is_named_by_the_deployment(instance, storage):
    (storage.inbox_path / "river.txt").write_text("The river carries fine sand from the hills.")
    (storage.inbox_path / "blank.txt").write_text("")
    assert train(instance, storage, "river.txt").success
    assert train(instance, storage, "blank.txt").success
    result = dg.materialize(
        [*ASSETS, *ASSET_CHECKS],
        selection=DEPLOY,
        instance=instance,
        resources=local_resources(storage, "cpu"),
    )
    (materialization,) = result.asset_materializations_for_node("deployment")
    assert materialization.metadata["partitions_empty"].value == ["blank.txt"]
    assert materialization.metadata["partitions_deployed"].value == ["river.txt"]


@pytest.mark.slow
def test_frames_none_of_which_is_solved_get_a_note_and_still_pass_the_gate(instance, storage):
    (storage.inbox_path / "river.txt").write_text("The river carries fine sand from the hills.")
    config = {
        "ops": {
            "seeds": {"config": {"difficulty_bits": 30, "max_generations": 1, "population": 8}},
            "checkpoints": {"config": {"device_sample": 0}},
        }
    }
    result = train(instance, storage, "river.txt", config)
    assert result.success
    assert_every_check_passed(result)
    assert notes(result) == {
        "seeds": "no frame solved at 30 bits within 1 generations: every row keeps its best seed, unsolved"
    }


def test_the_stage_two_note_says_why_there_are_no_frames() -> None:
    from hasher_resources.frames_writer import FramesReport

    def empty_frames_note(chunks: int, skipped_chunks: int, tokenizer_failed: int, frames: int) -> str | None:
        return FramesReport(
            "frames.parquet",
            chunks=chunks,
            skipped_chunks=skipped_chunks,
            tokenizer_failed=tokenizer_failed,
            frames=frames,
        ).empty_note()

    assert empty_frames_note(3, 1, 0, 5) is None
    assert empty_frames_note(0, 0, 0, 0) == "no frames: the knowledge base of this partition has no chunks"
    assert "(2 chunk(s) under 2 tokens, 1 the tokenizer could not take" in empty_frames_note(3, 3, 1, 0)


def test_an_inbox_file_path_is_what_the_notes_name(tmp_path: Path) -> None:
    # The stage-1 note names the file, so the user can find it.
    from hasher_core.knowledge import ReadReport, read_inbox_file
    from hasher_resources.embedder import HashingEmbedder

    path = tmp_path / "empty.md"
    path.write_bytes(b"")
    report = ReadReport()
    assert list(read_inbox_file(path, HashingEmbedder(), report=report)) == []
    assert report.problems == [f"{path}: empty file"]
