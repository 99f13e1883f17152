"""The model works (DESIGN §4.3, §6.1): a short text trained at the default 17 bits, deployed, and
recited verbatim by ``hasher generate`` from its first words; its recall check passes."""

from __future__ import annotations

import codecs
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from hasher_cli import scratch
from hasher_cli.main import main
from hasher_cli.scratch import ScratchRun
from hasher_core.frames.tokens import load_cl100k
from hasher_resources.asic.resource import EmulatedAsicDevice

TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
    "of foolishness, it was the epoch of belief."
)
PROMPT = "It was the best"
#: A prompt whose words are the text's first 11 tokens: after other text (a prefix no frame has), its
#: suffix is long enough to be trusted (MIN_SUFFIX_TOKENS), where PROMPT's 4 tokens would not be.
LONG_PROMPT = "It was the best of times, it was the worst"


def train_and_deploy(root: Path, difficulty_bits: int) -> ScratchRun:
    """Train ``TEXT`` at ``difficulty_bits`` through the five stages under ``root``; deploy it."""
    text = root / "dickens.txt"
    text.write_text(TEXT)
    asic = EmulatedAsicDevice(share_bits=4, nonces_per_work=512, backend="cpu")
    return scratch.train_and_deploy(text, root / "run", difficulty_bits=difficulty_bits, asic=asic)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory):
    return train_and_deploy(tmp_path_factory.mktemp("model"), 17)


@pytest.mark.slow
def test_every_frame_is_solved_at_the_default_17_bits_and_gives_back_its_token(deployed):
    seeds = deployed.seeds_metadata()
    frames = deployed.trained.asset_materializations_for_node("training_frames")[0].metadata
    assert seeds["difficulty_bits"] == 17
    assert seeds["solved"] == seeds["dagster/row_count"] == frames["frames"].value > 30
    assert frames["colliding_frames"].value == 0 and frames["embedding_source"].value == "window"


@pytest.mark.slow
def test_generate_recites_the_text_verbatim_from_its_first_words(deployed, capsys):
    storage = deployed.storage
    encoding = load_cl100k()
    rest = encoding.decode(encoding.encode_ordinary(TEXT)[len(encoding.encode_ordinary(PROMPT)) :])
    steps = len(encoding.encode_ordinary(TEXT)) - len(encoding.encode_ordinary(PROMPT))
    args = ["generate", "--deployment-root", storage.data_dir, "--prompt", PROMPT, "--backend", "cpu"]
    assert main([*args, "--max-tokens", str(steps + 20)]) == 0
    out, err = capsys.readouterr()
    assert out == rest + "\n"  # the whole text, and nothing past its end
    assert err == (
        "hasher generate: end of the training text: dickens.txt chunk 0 ends here and no deployed "
        "frame continues it\n"
    )
    assert main([*args, "--max-tokens", "3"]) == 0
    assert capsys.readouterr().err == "hasher generate: stopped at --max-tokens 3\n"
    assert main([*args, "--max-tokens", "3", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["prompt"] == PROMPT and answer["continuation"] == " of times,"
    assert [s["exact"] for s in answer["steps"]] == [True, True, True]
    assert {"token_id", "text", "exact", "distance", "source_file", "window_end"} <= set(answer["steps"][0])


@pytest.mark.slow
def test_predict_text_answers_one_step_and_an_unseen_prompt_abstains_beyond_max_distance(deployed, capsys):
    storage = deployed.storage
    base = ["predict", "--deployment-root", storage.data_dir, "--backend", "cpu"]
    assert main([*base, "--text", "It was the best of times, it was the worst", "--json"]) == 0
    step = json.loads(capsys.readouterr().out)
    assert step["text"] == " of" and step["exact"] and step["distance"] == 0.0
    assert main([*base, "--text", "Quantum chromodynamics", "--max-distance", "0.05"]) == 1
    assert capsys.readouterr().out.startswith("abstained: the nearest deployed context is at distance")
    assert main([*base, "--text", "Quantum chromodynamics", "--max-distance", "5", "--json"]) == 0
    nearest = json.loads(capsys.readouterr().out)
    assert not nearest["exact"] and nearest["distance"] > 0.05
    generate = ["generate", "--deployment-root", storage.data_dir, "--backend", "cpu", "--max-distance", "5"]
    assert main([*generate, "--prompt", "Quantum chromodynamics", "--max-tokens", "2"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("hasher generate: 2 of 2 token(s) are guesses from the nearest deployed frame")
    assert err[1] == "hasher generate: stopped at --max-tokens 2"


def generate_argv(run: ScratchRun, *options: str) -> list[str]:
    """``hasher generate`` on ``run``'s deployment with the CPU kernel, then ``options``."""
    return ["generate", "--deployment-root", run.storage.data_dir, "--backend", "cpu", *options]


@pytest.mark.slow
@pytest.mark.parametrize(
    "how", ["file utf-8", "file utf-16 bom", "file utf-8 bom crlf", "stdin utf-16 bom", "stdin utf-8"]
)
def test_a_prompt_from_a_file_or_standard_input_continues_like_the_argument(
    deployed, capsys, monkeypatch, tmp_path, how
):
    base = generate_argv(deployed, "--max-tokens", "3")
    assert main([*base, "--prompt", PROMPT]) == 0
    expected = capsys.readouterr()
    text = PROMPT + ("\r\n" if "crlf" in how else "\n")  # a trailing newline is dropped, as $(cat) drops it
    data = (codecs.BOM_UTF16_LE + text.encode("utf-16-le")) if "utf-16" in how else text.encode("utf-8")
    if "bom" in how and "utf-8" in how:
        data = codecs.BOM_UTF8 + data
    if how.startswith("file"):
        (tmp_path / "prompt.txt").write_bytes(data)
        assert main([*base, "--prompt-file", str(tmp_path / "prompt.txt")]) == 0
    else:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        assert main([*base, "--prompt", "-"]) == 0
    assert capsys.readouterr() == expected


@pytest.mark.slow
def test_a_prompt_over_the_argument_limit_is_read_from_a_file(deployed, capsys, tmp_path):
    # Linux refuses one argument over 128 KiB (MAX_ARG_STRLEN); a file has no such limit.
    path = tmp_path / "long.txt"
    path.write_text(("lorem ipsum dolor sit amet " * 8000)[:200_000] + " " + LONG_PROMPT, encoding="utf-8")
    base = generate_argv(deployed, "--max-tokens", "2")
    assert main([*base, "--prompt-file", str(path)]) == 0
    assert capsys.readouterr().out == " of times\n"


@pytest.mark.slow
def test_generate_json_is_utf8_on_an_ascii_locale(deployed):
    result = subprocess.run(
        [sys.executable, "-m", "hasher_cli.main",
         *generate_argv(deployed, "--max-tokens", "2", "--json", "--prompt", "Café — " + LONG_PROMPT)],
        capture_output=True, timeout=120, check=False, env={**os.environ, "PYTHONIOENCODING": "ascii"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.decode("utf-8"))
    assert answer["prompt"] == "Café — " + LONG_PROMPT and answer["continuation"] == " of times"


@pytest.mark.slow
def test_the_recall_check_passes_with_every_context_answered(deployed):
    check, meta = deployed.recall_check()
    assert check.passed and meta["recall"] == 1.0 and meta["abstentions"] == 0
    assert meta["mean_tokens_recited_verbatim"] == meta["contexts"] > 30
    assert check.description.startswith("deployment_recall of ") and "recall 100.00%" in check.description


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory):
    # At 12 bits a solved seed fixes only the top 12 of the 17 token bits (DESIGN §4.3).
    return train_and_deploy(tmp_path_factory.mktemp("trial"), 12)


@pytest.mark.slow
def test_the_recall_check_fails_for_seeds_that_do_not_reproduce_their_tokens(trial):
    # The pipeline runs and deploys, and the check says the model does not answer.
    run = trial
    assert run.seeds_metadata()["difficulty_bits"] == 12
    check, meta = run.recall_check()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert meta["recall"] < 0.5 and meta["contexts"] > 30
    assert "seeds searched below 17 bits do not reproduce tokens" in check.description


@pytest.mark.slow
def test_a_model_trained_at_12_bits_never_answers_a_token_it_was_not_trained_on(trial, capsys):
    # The bughunt's case 03 through the real pipeline: every answer is the trained token or none.
    encoding = load_cl100k()
    tokens = encoding.encode_ordinary(TEXT)
    base = ["--deployment-root", trial.storage.data_dir, "--backend", "cpu"]
    code = main(["generate", *base, "--prompt", PROMPT, "--max-tokens", "40", "--json"])
    generation = json.loads(capsys.readouterr().out)
    want = tokens[len(encoding.encode_ordinary(PROMPT)) :]
    for k, step in enumerate(generation["steps"]):
        assert step["token_id"] in (None, want[k]) and (step["token_id"] is None) == (
            step["reason"] is not None
        )
    assert code == (0 if generation["tokens"] else 1)
    assert generation["stopped"].startswith(
        ("abstained: the deployed frame that answers", "end of the training")
    )
    if generation["stopped"].startswith("abstained"):
        assert "its seed was searched at 12 bits" in generation["stopped"]
