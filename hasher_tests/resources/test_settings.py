"""Every HASHER_* variable is validated once, in hasher_resources.settings, and a bad one is named."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hasher_resources.settings import HasherSettings, SettingsError, known_variables, load_settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ["hasher_core", "hasher_resources", "hasher_assets", "hasher_cli", "benchmarks"]
ENV_READ = re.compile(r"""(?:environ(?:\.get)?\(|environ\[|getenv\()\s*["'](HASHER_\w+)""")
SHELL_READ = re.compile(r"\$\{?(HASHER_[A-Z0-9_]+)")


def python_files() -> list[Path]:
    return [p for package in PRODUCT for p in sorted((ROOT / package).rglob("*.py"))]


def test_no_module_but_settings_reads_a_hasher_variable_from_the_environment() -> None:
    readers = {
        str(p.relative_to(ROOT)): ENV_READ.findall(p.read_text())
        for p in python_files()
        if p.name != "settings.py" and ENV_READ.search(p.read_text())
    }
    assert readers == {}


def test_every_variable_the_scripts_read_is_in_the_registry() -> None:
    scripts = [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run"]
    used = {name for p in scripts if p.exists() for name in SHELL_READ.findall(p.read_text())}
    assert used and used <= set(known_variables()), used - set(known_variables())


def test_the_registry_holds_the_variables_other_stages_plug_in() -> None:
    assert {"HASHER_CPU_KERNEL", "HASHER_EXECUTOR", "HASHER_PROGRESS_DIR"} <= set(known_variables())
    assert all(known_variables().values())  # each has a description


def test_defaults_when_nothing_is_set_and_empty_means_unset() -> None:
    assert load_settings({}) == HasherSettings.model_validate({})
    settings = load_settings({"HASHER_ASIC_URL": "", "HASHER_DATA_DIR": "  ", "PATH": "/bin"})
    assert settings.asic_url is None and settings.data_dir is None
    assert (settings.embedder, settings.kernel_backend, settings.sensor_max_files) == ("hashing", "auto", 8)


def test_the_settings_model_reads_the_process_environment_as_load_settings_does(
    monkeypatch, tmp_path
) -> None:
    for name in [n for n in os.environ if n.startswith("HASHER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HASHER_EMBEDDER", " Ollama ")
    monkeypatch.setenv("HASHER_ASIC_URL", " ")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("HASHER_KERNEL_BACKEND=reference\n")  # never read: the environment only
    assert HasherSettings() == load_settings()
    assert (HasherSettings().embedder, HasherSettings().asic_url, HasherSettings().kernel_backend) == (
        "ollama",
        None,
        "auto",
    )


def test_good_values_are_taken_and_choices_ignore_case() -> None:
    settings = load_settings(
        {
            "HASHER_EMBEDDER": "Ollama",
            "HASHER_OLLAMA_URL": "https://gpu-box:11434",
            "HASHER_KERNEL_BACKEND": " CPU ",
            "HASHER_CPU_KERNEL": "shani",
            "HASHER_EXECUTOR": "ray",
            "HASHER_SENSOR_MAX_FILES": "3",
            "HASHER_SENSOR_DIFFICULTY_BITS": "14",
            "HASHER_PROGRESS_DIR": "/tmp/progress",
        }
    )
    assert (settings.embedder, settings.kernel_backend, settings.cpu_kernel, settings.executor) == (
        "ollama",
        "cpu",
        "shani",
        "ray",
    )
    assert (settings.sensor_max_files, settings.sensor_difficulty_bits) == (3, 14)
    assert load_settings({"HASHER_PARTITIONS_PER_RUN": " ALL "}).partitions_per_run == "all"
    assert load_settings({"HASHER_PARTITIONS_PER_RUN": "25"}).partitions_per_run == 25
    assert load_settings({}).partitions_per_run == 100


BAD = [
    ("HASHER_EMBEDDER", "olama", "HASHER_EMBEDDER='olama' is invalid: allowed values: hashing, ollama"),
    (
        "HASHER_KERNEL_BACKEND",
        "gpu",
        "HASHER_KERNEL_BACKEND='gpu' is invalid: allowed values: auto, cpu, cuda, reference",
    ),
    ("HASHER_CPU_KERNEL", "avx", "HASHER_CPU_KERNEL='avx' is invalid: allowed values: auto, shani, simd"),
    (
        "HASHER_EXECUTOR",
        "celery",
        "HASHER_EXECUTOR='celery' is invalid: allowed values: multiprocess, ray, k8s",
    ),
    (
        "HASHER_SENSOR_MAX_FILES",
        "eight",
        "HASHER_SENSOR_MAX_FILES='eight' is invalid: Input should be a valid",
    ),
    ("HASHER_SENSOR_MAX_FILES", "0", "HASHER_SENSOR_MAX_FILES='0' is invalid: Input should be greater than"),
    ("HASHER_SENSOR_DIFFICULTY_BITS", "40", "HASHER_SENSOR_DIFFICULTY_BITS='40' is invalid: Input should be"),
    ("HASHER_DIFFICULTY_BITS", "x", "HASHER_DIFFICULTY_BITS='x' is invalid: Input should be a valid integer"),
    (
        "HASHER_OLLAMA_URL",
        "127.0.0.1:11434",
        "HASHER_OLLAMA_URL='127.0.0.1:11434' is invalid: must be an http",
    ),
    ("HASHER_EMBEDER", "ollama", "HASHER_EMBEDER is not a hasher setting (did you mean HASHER_EMBEDDER?)"),
    (
        "HASHER_PARTITIONS_PER_RUN",
        "0",
        "HASHER_PARTITIONS_PER_RUN='0' is invalid: must be a number of partitions >= 1, or all",
    ),
    ("HASHER_PARTITIONS_PER_RUN", "some", "HASHER_PARTITIONS_PER_RUN='some' is invalid: must be a number"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD, ids=[f"{n}={v}" for n, v, _ in BAD])
def test_a_bad_variable_is_one_line_naming_it_its_value_and_what_is_allowed(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_several_bad_variables_are_all_named_in_one_line() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"HASHER_EMBEDDER": "olama", "HASHER_KERNEL_BACKEND": "gpu"})
    assert "HASHER_EMBEDDER=" in str(caught.value) and "HASHER_KERNEL_BACKEND=" in str(caught.value)
    assert "\n" not in str(caught.value)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHER_")}
    return {**env, **extra}


def test_a_typo_fails_dagster_definitions_validate_naming_the_variable(tmp_path: Path) -> None:
    env = clean_env(HASHER_EMBEDDER="olama", DAGSTER_HOME=str(tmp_path))
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run(
        [str(dagster), "definitions", "validate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "SettingsError: HASHER_EMBEDDER='olama' is invalid: allowed values: hashing, ollama\n" in (
        done.stdout + done.stderr
    )


def test_the_cli_reports_a_bad_variable_in_one_line_with_exit_status_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hasher_cli.main", "status"],
        cwd=ROOT,
        env=clean_env(HASHER_DATA_DIR=str(tmp_path), HASHER_EMBEDER="x"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "hasher status: error: SettingsError: HASHER_EMBEDER is not a hasher setting "
        "(did you mean HASHER_EMBEDDER?)"
    ]


def test_one_setting_is_validated_like_all_of_them_and_follows_the_environment(monkeypatch) -> None:
    from hasher_resources.settings import setting

    monkeypatch.delenv("HASHER_CPU_KERNEL", raising=False)
    assert setting("HASHER_CPU_KERNEL") == "auto"
    monkeypatch.setenv("HASHER_CPU_KERNEL", " SIMD ")
    assert setting("HASHER_CPU_KERNEL") == "simd"
    monkeypatch.setenv("HASHER_CPU_KERNEL", "sse4")
    with pytest.raises(SettingsError) as info:
        setting("HASHER_CPU_KERNEL")
    with pytest.raises(SettingsError) as whole:
        load_settings()
    assert (
        str(info.value)
        == str(whole.value)
        == ("HASHER_CPU_KERNEL='sse4' is invalid: allowed values: auto, shani, simd")
    )


@pytest.mark.parametrize(
    "name", ["HASHER_DATA_DIR", "HASHER_INBOX_DIR", "HASHER_MINER_DIR", "HASHER_OLLAMA_URL"]
)
def test_a_value_whose_bytes_are_not_utf8_is_named_with_its_byte(name: str) -> None:
    value = os.fsdecode(b"/srv/caf\xe9/data")  # how Python holds a Latin-1 byte of the environment
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    assert str(caught.value).startswith(f"{name} is not valid UTF-8 (byte 0xe9 at offset 8): ")
    assert load_settings({name: "/srv/café/data" if name != "HASHER_OLLAMA_URL" else "http://café:1"})
