"""Where the steps of a run execute: the executor chosen by ``HASHER_EXECUTOR``, and what each step
asks of the cluster.

- ``multiprocess`` (the default): Dagster's ``multi_or_in_process_executor``, left unconfigured so a
  run's config can still pick ``in_process`` or a ``multiprocess`` start method.
- ``ray``: ``dagster_ray.ray_executor`` (the ``hasher[ray]`` extra): every step is a Ray job. The
  cluster is Ray's own ``RAY_ADDRESS`` (or ``execution.config.ray.address`` in run config), the
  runtime environment ``HASHER_RAY_RUNTIME_ENV`` (JSON, or ``execution.config.ray.runtime_env``).
  ``DAGSTER_HOME`` and every ``HASHER_*`` variable of the launching process are passed to the jobs,
  so a step on a Ray node reads the same instance and directories.
- ``k8s``: ``dagster_k8s.k8s_job_executor`` (the ``hasher[k8s]`` extra): every step is a Kubernetes
  Job. Its image is the code location's (``DAGSTER_CURRENT_IMAGE``, set by Dagster's Helm chart) or
  ``execution.config.job_image`` in run config.

Engine packages are imported only when selected; a missing one is an
:class:`~hasher_core.errors.ExecutorUnavailableError` naming the extra to install.

What a step asks for (:func:`step_op_tags`), read by whichever executor runs it: the ``seeds``
step one GPU when the kernel backend is ``cuda`` (``num_gpus`` on Ray, an ``nvidia.com/gpu``
limit on Kubernetes), ``HASHER_SEEDS_CPUS`` cores otherwise (default 1); every other step one
core, and one GPU too on ``cuda`` when it verifies on the kernel (:data:`KERNEL_STEPS`). Device
contention is Dagster's concurrency pools (``pool="sha256"``, ``pool="asic"``), which live in the
instance and therefore hold across every node of a cluster, under the Ray and k8s executors too.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from hasher_core.errors import ExecutorUnavailableError
from hasher_resources.settings import load_settings

#: ``HASHER_EXECUTOR`` values → the extra that provides the engine (None: Dagster itself).
EXECUTOR_EXTRAS: dict[str, str | None] = {"multiprocess": None, "ray": "ray", "k8s": "k8s"}
#: Op tag keys the engines read per step.
RAY_STEP_TAG = "dagster-ray/config"
K8S_STEP_TAG = "dagster-k8s/config"
#: Kubernetes' extended resource name of an NVIDIA GPU (the device plugin's).
K8S_GPU_RESOURCE = "nvidia.com/gpu"
#: Steps that hash on the kernel resource: on ``cuda`` each needs a GPU where it runs (the kernel
#: refuses to start without one rather than fall back), seeds for the search, the others to verify.
KERNEL_STEPS = frozenset({"seeds", "checkpoints", "deployment", "deployment_recall"})
#: Environment variables forwarded to every Ray job, besides each ``HASHER_*`` one.
FORWARDED_VARIABLES = ("DAGSTER_HOME", "NUMBA_CACHE_DIR")


@dataclass(frozen=True)
class ScaleOutSettings:
    """The environment's scale-out settings, validated (see :func:`scale_out_settings`)."""

    executor: str = "multiprocess"
    kernel_backend: str = "auto"
    seeds_cpus: int | None = None
    ray_runtime_env: dict[str, Any] | None = None

    @property
    def kernel_on_gpu(self) -> bool:
        """The kernel is asked to run on CUDA: the steps that hash on it need a GPU where they run."""
        return self.kernel_backend == "cuda"


def scale_out_settings(env: Mapping[str, str] | None = None) -> ScaleOutSettings:
    """Read and check ``HASHER_EXECUTOR``, ``HASHER_KERNEL_BACKEND``, ``HASHER_SEEDS_CPUS`` and
    ``HASHER_RAY_RUNTIME_ENV`` from ``env`` (default: ``os.environ``); unset or empty means default.

    Raises :class:`hasher_resources.settings.SettingsError` naming the variable, its value and what
    it accepts (``load_settings`` checks every ``HASHER_*`` variable).
    """
    settings = load_settings(env)  # the one place HASHER_* variables are validated
    runtime_env = json.loads(settings.ray_runtime_env) if settings.ray_runtime_env else None
    return ScaleOutSettings(settings.executor, settings.kernel_backend, settings.seeds_cpus, runtime_env)


def _engine(settings: ScaleOutSettings, module: str) -> Any:
    """Import an engine package, or say which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExecutorUnavailableError(settings.executor, EXECUTOR_EXTRAS[settings.executor], exc) from exc


def step_op_tags(step: str, settings: ScaleOutSettings | None = None) -> dict[str, Any]:
    """Op tags of one stage's step: what it asks of Ray (``num_cpus``/``num_gpus``) and of
    Kubernetes (container resource requests/limits). Both engines read only their own tag, and the
    local executors neither, so the tags are the same whatever ``HASHER_EXECUTOR`` says.
    """
    settings = settings or scale_out_settings()
    cpus = (settings.seeds_cpus or 1) if step == "seeds" else 1
    ray: dict[str, Any] = {"num_cpus": cpus}
    requests: dict[str, Any] = {"cpu": str(cpus)}
    limits: dict[str, Any] = {}
    if step in KERNEL_STEPS and settings.kernel_on_gpu:
        ray = {"num_cpus": 1, "num_gpus": 1}
        requests = {"cpu": "1"}
        limits = {K8S_GPU_RESOURCE: "1"}  # Kubernetes quantities are strings
    resources: dict[str, Any] = {"requests": requests}
    if limits:
        resources["limits"] = limits
    return {RAY_STEP_TAG: ray, K8S_STEP_TAG: {"container_config": {"resources": resources}}}


def forwarded_env_vars(env: Mapping[str, str] | None = None) -> list[str]:
    """Names of the variables a Ray job inherits from the launching process: ``DAGSTER_HOME``
    (the instance), ``NUMBA_CACHE_DIR`` and every ``HASHER_*`` that is set."""
    env = os.environ if env is None else env
    return sorted(k for k in env if k.startswith("HASHER_") or k in FORWARDED_VARIABLES)


def ray_executor_config(config: Mapping[str, Any], settings: ScaleOutSettings) -> dict[str, Any]:
    """The ``ray_executor`` config of a run: its own run config, with what it leaves out taken from
    the environment (``HASHER_RAY_RUNTIME_ENV``; the address falls back to Ray's ``RAY_ADDRESS``
    inside Ray's job client), and the launching process's hasher variables forwarded."""
    merged = {k: v for k, v in dict(config).items() if v is not None}
    ray = dict(merged.get("ray") or {})
    if ray.get("runtime_env") is None and settings.ray_runtime_env is not None:
        ray["runtime_env"] = settings.ray_runtime_env
    ray["env_vars"] = sorted({*(ray.get("env_vars") or []), *forwarded_env_vars()})
    merged["ray"] = ray
    return merged


def executor_from_env(settings: ScaleOutSettings | None = None) -> dg.ExecutorDefinition:
    """The code location's executor for ``HASHER_EXECUTOR`` (see the module docstring).

    Raises :class:`ExecutorUnavailableError` when the engine's extra is not installed.
    """
    settings = settings or scale_out_settings()
    if settings.executor == "ray":
        ray_executor = _engine(settings, "dagster_ray").ray_executor
        _engine(settings, "ray.job_submission")
        # Same schema as ray_executor, so run config still sets any of its fields; the function
        # fills in what the environment says at launch.
        return ray_executor.configured(
            lambda config: ray_executor_config(config, settings),
            name="ray",
            config_schema=ray_executor.config_schema.as_field().config_type,
        )
    if settings.executor == "k8s":
        return _engine(settings, "dagster_k8s").k8s_job_executor
    return dg.multi_or_in_process_executor
