"""The ``hasher`` command: predict, deployments and errors, on a deployed bundle (exit 0/1/2)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hasher_cli.main import main
from hasher_core.bundle import SEEDS_FILE, Bundle, build_bundle
from hasher_resources.deploy.store import DeploymentStore
from hasher_tests.core.bundle.test_bundle import make_checkpoints
from hasher_tests.core.inference.test_readback import row_of


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
