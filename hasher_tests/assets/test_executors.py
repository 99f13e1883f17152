"""Where steps run: the executor ``HASHER_EXECUTOR`` selects, its errors, and what each step asks for."""

from __future__ import annotations

import json
import sys

import dagster as dg
import pytest

from hasher_assets.executors import (
    K8S_GPU_RESOURCE,
    K8S_STEP_TAG,
    RAY_STEP_TAG,
    ScaleOutSettings,
    executor_from_env,
    ray_executor_config,
    scale_out_settings,
    step_op_tags,
)
from hasher_core.errors import ExecutorUnavailableError
from hasher_resources.settings import SettingsError


def test_the_default_is_dagsters_unconfigured_multi_or_in_process_executor():
    executor = executor_from_env(scale_out_settings({}))
    assert executor is dg.multi_or_in_process_executor  # unconfigured: run config still picks the mode


def test_run_config_still_switches_the_default_executor_to_in_process(tmp_path):
    @dg.asset
    def pid() -> int:
        import os

        return os.getpid()

    import os

    defs = dg.Definitions(assets=[pid], executor=executor_from_env(scale_out_settings({})))
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, run_config={"execution": {"config": {"in_process": {}}}}
        )
        assert result.success and result.output_for_node("pid") == os.getpid()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("HASHER_EXECUTOR", "dask", "allowed values: multiprocess, ray, k8s"),
        ("HASHER_KERNEL_BACKEND", "gpu", "allowed values: auto, cpu, cuda, reference"),
        ("HASHER_SEEDS_CPUS", "0", "Input should be greater than or equal to 1"),
        ("HASHER_SEEDS_CPUS", "two", "Input should be a valid integer"),
        ("HASHER_RAY_RUNTIME_ENV", "{pip: [numpy]}", "must be a JSON object (Expecting property name"),
        ("HASHER_RAY_RUNTIME_ENV", '["numpy"]', "must be a JSON object, e.g."),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable_and_value(variable, value, expected):
    with pytest.raises(SettingsError) as info:
        scale_out_settings({variable: value})
    assert str(info.value).startswith(f"{variable}={value!r} is invalid: {expected}")


def test_settings_are_case_and_space_tolerant_and_empty_means_default():
    settings = scale_out_settings(
        {"HASHER_EXECUTOR": " Ray ", "HASHER_KERNEL_BACKEND": "", "HASHER_SEEDS_CPUS": "4"}
    )
    assert settings == ScaleOutSettings(executor="ray", kernel_backend="auto", seeds_cpus=4)


@pytest.mark.parametrize(
    ("executor", "module", "extra"), [("ray", "dagster_ray", "ray"), ("k8s", "dagster_k8s", "k8s")]
)
def test_a_missing_engine_names_the_extra_to_install(monkeypatch, executor, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # what an uninstalled package looks like to import
    with pytest.raises(ExecutorUnavailableError) as info:
        executor_from_env(ScaleOutSettings(executor=executor))
    assert f"HASHER_EXECUTOR={executor} needs the '{extra}' extra" in str(info.value)
    assert f"pip install 'hasher[{extra}]'" in str(info.value)


def test_the_engines_are_imported_only_when_selected():
    code = (
        "import sys, hasher_assets.definitions; "
        "print(sorted(m for m in ('dagster_ray', 'dagster_k8s', 'ray') if m in sys.modules))"
    )
    import subprocess

    env = {"HASHER_EXECUTOR": "multiprocess", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_seeds_asks_for_cores_on_cpu_and_for_a_gpu_on_cuda():
    cpu = step_op_tags("seeds", ScaleOutSettings(kernel_backend="cpu", seeds_cpus=6))
    assert cpu[RAY_STEP_TAG] == {"num_cpus": 6}
    assert cpu[K8S_STEP_TAG]["container_config"]["resources"] == {"requests": {"cpu": "6"}}
    gpu = step_op_tags("seeds", ScaleOutSettings(kernel_backend="cuda", seeds_cpus=6))
    assert gpu[RAY_STEP_TAG] == {"num_cpus": 1, "num_gpus": 1}
    assert gpu[K8S_STEP_TAG]["container_config"]["resources"]["limits"] == {K8S_GPU_RESOURCE: "1"}


def test_on_cuda_every_step_that_verifies_on_the_kernel_gets_a_gpu_and_the_others_none():
    cuda = ScaleOutSettings(kernel_backend="cuda")
    for step in ("checkpoints", "deployment", "deployment_recall"):
        assert step_op_tags(step, cuda)[RAY_STEP_TAG]["num_gpus"] == 1
    for step in ("knowledge_base", "training_frames"):
        assert step_op_tags(step, cuda)[RAY_STEP_TAG] == {"num_cpus": 1}


def test_the_stage_assets_carry_the_step_tags():
    from hasher_assets.definitions import defs

    seeds = defs.resolve_assets_def("seeds").op.tags
    assert json.loads(seeds[RAY_STEP_TAG]) == step_op_tags("seeds")[RAY_STEP_TAG]
    assert json.loads(seeds[K8S_STEP_TAG]) == step_op_tags("seeds")[K8S_STEP_TAG]


def test_ray_config_takes_run_config_first_then_the_environment(monkeypatch):
    monkeypatch.setenv("HASHER_DATA_DIR", "/shared/hasher")
    monkeypatch.setenv("DAGSTER_HOME", "/shared/dagster")
    settings = ScaleOutSettings(executor="ray", ray_runtime_env={"pip": ["numpy"]})
    from_env = ray_executor_config({"ray": {"address": "http://head:8265"}}, settings)
    assert from_env["ray"]["runtime_env"] == {"pip": ["numpy"]}
    assert from_env["ray"]["address"] == "http://head:8265"
    assert {"DAGSTER_HOME", "HASHER_DATA_DIR"} <= set(from_env["ray"]["env_vars"])
    own = ray_executor_config({"ray": {"runtime_env": {"conda": "env"}, "env_vars": ["X=1"]}}, settings)
    assert own["ray"]["runtime_env"] == {"conda": "env"}
    assert "X=1" in own["ray"]["env_vars"]


def test_the_ray_executor_accepts_its_own_run_config_schema():
    executor = executor_from_env(ScaleOutSettings(executor="ray"))
    schema = executor.config_schema.as_field().config_type
    from dagster._config import process_config

    ok = process_config(schema, {"ray": {"address": "http://127.0.0.1:8265", "num_cpus": 2}})
    assert ok.success, ok.errors
    assert not process_config(schema, {"ray": {"adress": "typo"}}).success
