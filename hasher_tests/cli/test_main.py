"""The ``hasher`` command: predict, deployments and errors, on a deployed bundle (exit 0/1/2)."""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from hasher_cli.main import main
from hasher_core.bundle import SEEDS_FILE, Bundle, build_bundle
from hasher_core.design import PROJECTION_SEED, SEED_BYTES, SLOT_COUNT, WINDOW_SIZE
from hasher_core.frames.gorand import projection_matrix
from hasher_core.frames.tokens import encode_ordinary, load_cl100k
from hasher_core.frames.windows import window_slots
from hasher_core.header import golden_token, leading_equal_bits, target_word
from hasher_resources.deploy.store import REDEPLOY_COMMAND, ROLLBACK_COMMAND, DeploymentStore
from hasher_resources.embedder import HashingEmbedder
from hasher_resources.sha256 import evaluate
from hasher_tests.core.bundle.test_bundle import make_checkpoints
from hasher_tests.core.inference.test_readback import row_of
from hasher_tests.resources.deploy.test_store import DAMAGES


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    # 8 rows, pairs share slots; even rows solved (target = golden >> 15), odd rows not.
    return build_bundle({"a.txt": make_checkpoints(8, seed=3)}, pipeline_version="0.1.0")


@pytest.fixture
def store(tmp_path, bundle) -> DeploymentStore:
    s = DeploymentStore(tmp_path / "data")
    s.deploy(bundle, kernel_backend="reference", retry_delay_s=0)
    return s


def test_cli_predicts_a_solved_frame_with_exit_0(store, bundle, capsys):
    row = row_of(bundle, True)
    words = [f"0x{w:08x}" for w in bundle.slots()[row]]
    code = main(
        ["predict", "--deployment-root", str(store.root), "--backend", "reference", "--slots", *words]
    )
    out = capsys.readouterr().out
    assert code == 0
    token = bundle.seeds.column("golden")[row].as_py() >> 15
    assert out.startswith(f"solved: token {token} ") and f"-> token {token} (solves)" in out


def test_cli_not_solved_exits_1(store, bundle, capsys):
    code = main(
        ["predict", "--deployment-root", str(store.root), "--backend", "reference", "--slots", *["7"] * 12]
    )
    assert code == 1 and "not solved" in capsys.readouterr().out


def test_cli_frame_index_and_json_and_env_default(store, bundle, capsys, monkeypatch):
    monkeypatch.setenv("HASHER_DATA_DIR", str(store.root))
    row = row_of(bundle, True)
    code = main(
        [
            "predict",
            "--backend",
            "reference",
            "--frame-index",
            str(row),
            "--version",
            bundle.version,
            "--json",
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["solved"] and doc["bundle_version"] == bundle.version
    assert len(doc["candidates"]) == 2


def test_cli_errors_exit_2_with_one_clear_line(tmp_path, store, bundle, capsys):
    code = main(["predict", "--deployment-root", str(tmp_path / "empty"), "--slots", *["0"] * 12])
    err = capsys.readouterr().err
    assert code == 2 and "nothing is deployed under" in err and err.count("\n") == 1
    assert "--deployment-root or HASHER_DATA_DIR" in err  # the way out, in the same line
    path = store.version_dir(bundle.version) / SEEDS_FILE
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    code = main(["predict", "--deployment-root", str(store.root), "--frame-index", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "BundleChecksumError" in err and str(path) in err
    with pytest.raises(SystemExit) as e:
        main(["predict", "--deployment-root", str(store.root), "--slots", "1", "2"])
    assert e.value.code == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "gpu"], "argument --backend: invalid choice: 'gpu'"),
        (["--max-distance", "-1"], "argument --max-distance: -1 is not a distance (a finite number >= 0)"),
        (["--max-distance", "nan"], "argument --max-distance: nan is not a distance"),
        (["--max-distance", "far"], "argument --max-distance: 'far' is not a number"),
        (["--max-tokens", "0"], "argument --max-tokens: 0 is not a token count (an integer >= 1)"),
        (["--threads", "0"], "argument --threads: 0 is not a thread count (an integer >= 1)"),
        (["--threads", "two"], "argument --threads: 'two' is not an integer"),
    ],
)
def test_generate_refuses_a_bad_option_value_naming_the_option(args, message, store, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--deployment-root", str(store.root), "--prompt", "Hello", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_the_cli_backends_are_the_kernel_resources():
    from hasher_cli.main import BACKENDS
    from hasher_resources.sha256 import api
    from hasher_resources.sha256.resource import Sha256Kernel

    assert ("auto", *api.BACKENDS) == BACKENDS
    assert set(Sha256Kernel.model_fields["backend"].annotation.__args__) == set(BACKENDS)


def test_cli_lists_deployments(store, bundle, capsys):
    assert main(["deployments", "--deployment-root", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert f"current: {bundle.version}" in out and f"* {bundle.version}" in out


@pytest.mark.slow
def test_console_script_runs(store, bundle):
    row = row_of(bundle, False)
    result = subprocess.run(
        [sys.executable, "-m", "hasher_cli.main", "predict", "--deployment-root", str(store.root),
         "--backend", "reference", "--frame-index", str(row)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # The odd row's partner (same slots) is solved, so the frame predicts a token.
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("solved: token")


def test_generate_answers_without_dagster_and_on_the_threads_asked_for(store, tmp_path):
    """The command is a small process: the model opens mapped and runs the plain kernel."""
    import subprocess
    import sys

    script = (
        "import sys, numba\n"
        "from hasher_cli.main import main\n"
        f"code = main(['generate', '--deployment-root', {str(store.root)!r}, '--prompt', 'Hello', "
        "'--max-tokens', '2', '--threads', '1', '--backend', 'cpu'])\n"
        "assert 'dagster' not in sys.modules, 'dagster was imported'\n"
        "assert numba.get_num_threads() == 1\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr[-2000:]


LATIN1_PROMPT = b"caf\xe9 The river"  # what --prompt "$(cat latin1.txt)" passes


def test_a_prompt_that_is_not_utf8_is_refused_naming_the_byte_before_the_model_loads(tmp_path, capsys):
    prompt = os.fsdecode(LATIN1_PROMPT)  # how Python hands the argument over (PEP 383)
    code = main(["generate", "--deployment-root", str(tmp_path / "nothing"), "--prompt", prompt, "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(
        "hasher generate: error: TextEncodingError: --prompt is not valid UTF-8: byte 0xe9 at offset 3 "
        "(invalid continuation byte, in b'caf\\xe9 The river')"
    )
    assert "pass UTF-8, e.g. iconv -f WINDOWS-1252 -t UTF-8 FILE | hasher generate --prompt -" in err


def test_predict_text_follows_the_same_rule(tmp_path, capsys):
    code = main(["predict", "--deployment-root", str(tmp_path), "--text", os.fsdecode(b"\xff\xfe")])
    assert code == 2 and "--text is not valid UTF-8: byte 0xff at offset 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("naïve café".encode("cp1252"), "not valid UTF-8: byte 0xef at offset 2"),
        ("日本語".encode("shift_jis"), "not valid UTF-8: byte 0x93 at offset 0"),
        (codecs.BOM_UTF16_LE + b"\x00\xd8", "not valid UTF-16LE (detected from its BOM)"),
    ],
)
def test_a_prompt_file_that_is_not_unicode_is_refused_naming_the_file(tmp_path, capsys, data, message):
    path = tmp_path / "prompt.txt"
    path.write_bytes(data)
    code = main(["generate", "--deployment-root", str(tmp_path / "nothing"), "--prompt-file", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and f"TextEncodingError: --prompt-file {path}: {message}" in err


def test_prompt_and_prompt_file_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--prompt", "a", "--prompt-file", str(tmp_path / "p.txt")])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.slow
def test_real_argv_bytes_are_refused_by_the_console_script(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hasher_cli.main", "generate", "--deployment-root", str(tmp_path), "--prompt",
         LATIN1_PROMPT],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == b""
    assert b"--prompt is not valid UTF-8: byte 0xe9 at offset 3" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("locale_encoding", ["ascii", "latin-1", "utf-8"])
def test_json_output_is_utf8_whatever_the_locale(locale_encoding):
    value = {"text": "中文 café 😀", "lone": "caf\udce9"}
    script = f"from hasher_cli.text_io import print_json; print_json({value!r})"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, timeout=60, check=False, env={**os.environ, "PYTHONIOENCODING": locale_encoding},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.decode("utf-8")) == value  # strict UTF-8; the surrogate as \udce9
    assert b"\\udce9" in result.stdout


@pytest.mark.parametrize(
    "damage",
    [
        "flipped bit in seeds.parquet",
        "missing manifest.json",
        "pointer is a file",
        "pointer points outside deployments/",
    ],
)
def test_a_damaged_deployment_is_named_with_the_commands_that_recover_it(store, bundle, damage, capsys):
    DAMAGES[damage](store, bundle.version)
    root = ["--deployment-root", str(store.root)]
    assert main(["deployments", *root]) == 1
    out = capsys.readouterr().out
    assert "  DAMAGED: " in out and REDEPLOY_COMMAND in out and ROLLBACK_COMMAND in out
    assert main(["status", *root]) == 0
    out = capsys.readouterr().out
    assert " — DAMAGED: " in out and REDEPLOY_COMMAND in out
    assert main(["generate", *root, "--prompt", "Hello", "--backend", "reference"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged" in err and REDEPLOY_COMMAND in err
    if damage.startswith("flipped"):  # the checksum error names the file, as before
        assert "BundleChecksumError" in err and str(store.version_dir(bundle.version) / SEEDS_FILE) in err
    store.deploy(bundle, kernel_backend="reference", retry_delay_s=0)  # what REDEPLOY_COMMAND does
    assert main(["deployments", *root]) == 0 and "DAMAGED" not in capsys.readouterr().out


def test_hasher_deployments_rollback_restores_a_damaged_earlier_version_from_its_backup(
    store, bundle, capsys
):
    newer = build_bundle({"a.txt": make_checkpoints(8, seed=4)}, pipeline_version="0.1.0")
    store.deploy(newer, kernel_backend="reference", retry_delay_s=0)
    (store.version_dir(bundle.version) / SEEDS_FILE).write_bytes(b"rot")
    root = ["--deployment-root", str(store.root)]
    assert main(["deployments", *root]) == 0
    assert f"  {bundle.version}  BundleChecksumError" in capsys.readouterr().out
    assert main(["deployments", "rollback", *root, "--backend", "reference"]) == 0
    out, err = capsys.readouterr()
    assert out == f"current: {bundle.version} (deployed; was {newer.version})\n" and "verified" in err
    assert store.open_bundle().content_digest == bundle.content_digest


def test_hasher_deployments_rollback_with_nothing_to_go_back_to_names_the_redeploy(store, capsys):
    assert main(["deployments", "rollback", "--deployment-root", str(store.root)]) == 2
    err = capsys.readouterr().err
    assert "no earlier deployment to roll back to" in err and REDEPLOY_COMMAND in err


RIVER = "The river carries fine sand from the hills down to the wide valley floor."


def trained_at(bits: int, text: str = RIVER) -> Bundle:
    """A bundle of ``text``'s window frames (the real recipe: offline embedder, default projection) whose
    seeds were searched at ``bits`` on the reference kernel: each golden's top ``bits`` bits are its
    target's and its token is not the target (at 8 bits that is what 511 searches in 512 give)."""
    encoding = load_cl100k()
    tokens = encode_ordinary(encoding, text).astype(np.int64)
    ends = np.arange(1, tokens.size)
    slots = window_slots(
        tokens,
        np.maximum(ends - WINDOW_SIZE, 0),
        ends,
        encoding=encoding,
        projection=projection_matrix(PROJECTION_SEED),
        embedder=HashingEmbedder(),
    )
    targets = tokens[ends].astype(np.uint32)
    rng = np.random.default_rng(bits)
    seeds = np.zeros((ends.size, SEED_BYTES), np.uint8)
    goldens = np.zeros(ends.size, np.uint32)
    for row in range(ends.size):
        while True:
            batch = rng.integers(0, 256, (256, SEED_BYTES), dtype=np.uint8)
            found = evaluate(np.repeat(slots[row : row + 1], 256, axis=0), batch, backend="reference")
            ok = (leading_equal_bits(found, target_word(np.full(256, targets[row]))) >= bits) & (
                golden_token(found) != targets[row]
            )
            if ok.any():
                k = int(np.argmax(ok))
                seeds[row], goldens[row] = batch[k], found[k]
                break
    table = make_checkpoints(ends.size, partition="river.txt", solved_every=1)
    columns = {
        **{f"asic_slot_{i}": pa.array(slots[:, i].view(np.int32)) for i in range(SLOT_COUNT)},
        "chunk_id": pa.array(np.zeros(ends.size, np.int32)),
        "window_start": pa.array(np.maximum(ends - WINDOW_SIZE, 0).astype(np.int32)),
        "window_end": pa.array(ends.astype(np.int32)),
        "context_length": pa.array((ends - np.maximum(ends - WINDOW_SIZE, 0)).astype(np.int32)),
        "target_token_id": pa.array(targets.view(np.int32)),
        "best_seed": pa.array([s.tobytes() for s in seeds], pa.binary()),
        "golden": pa.array(goldens.astype(np.int64)),
        "matched_bits": pa.array(leading_equal_bits(goldens, target_word(targets)).astype(np.int32)),
        "difficulty_bits": pa.array(np.full(ends.size, bits, np.int32)),
        "fingerprint": pa.array([f"river{i:04d}" for i in range(ends.size)]),
    }
    for name, values in columns.items():
        table = table.set_column(table.column_names.index(name), name, values)
    return build_bundle({"river.txt": table}, pipeline_version="0.1.0")


@pytest.mark.parametrize("bits", [1, 8])
def test_generate_and_predict_text_never_answer_from_a_seed_below_17_bits(tmp_path, bits, capsys):
    store = DeploymentStore(tmp_path / "data")
    store.deploy(trained_at(bits), kernel_backend="reference", retry_delay_s=0)
    root = ["--deployment-root", str(store.root), "--backend", "reference"]
    why = f"its seed was searched at {bits} bits, which fix only the top {bits} of the token's 17 bits"
    assert main(["generate", *root, "--prompt", "The river carries"]) == 1
    out, err = capsys.readouterr()
    assert out == "\n" and err.startswith(
        "hasher generate: abstained: the deployed frame that answers (river.txt"
    )
    assert why in err
    assert main(["generate", *root, "--prompt", "The river carries", "--max-tokens", "3", "--json"]) == 1
    (step,) = json.loads(capsys.readouterr().out)["steps"]
    assert step["token_id"] is None and step["text"] == "" and step["exact"] and why in step["reason"]
    assert main(["predict", *root, "--text", "The river carries"]) == 1
    assert capsys.readouterr().out.startswith("abstained: the deployed frame that answers")
    assert main(["predict", *root, "--text", "The river carries", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["token_id"] is None
