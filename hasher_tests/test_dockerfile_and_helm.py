"""Kubernetes without a cluster: the Dockerfile's variants and entry point, the Helm values and the
k8s run config, checked against the code location and dagster-k8s's own schemas (no docker, no
kubectl: the Dockerfile is parsed, its entry point's module loaded here with the image's env)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
HELM_VALUES = ROOT / "deploy" / "helm-values.yaml"
RUN_CONFIG = ROOT / "deploy" / "run-config-k8s.yaml"


def dockerfile_stages(text: str) -> tuple[dict[str, str], list[dict]]:
    """The global ``ARG`` defaults and the stages (``from``, ``name``, ``env``, ``copy``, ``cmd``)
    of a Dockerfile, continuation lines joined."""
    lines = re.sub(r"\\\n\s*", " ", text).splitlines()
    args: dict[str, str] = {}
    stages: list[dict] = []
    for line in (raw.strip() for raw in lines):
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif word == "FROM":
            image, _, name = rest.partition(" AS ")
            stages.append({"from": image.strip(), "name": name.strip(), "env": {}, "copy": [], "cmd": None})
        elif word == "ENV":
            for match in re.finditer(r"(\w+)=(\S+)", rest):
                stages[-1]["env"][match[1]] = match[2]
        elif word == "COPY":
            stages[-1]["copy"] += rest.split()[:-1]
        elif word == "CMD":
            stages[-1]["cmd"] = json.loads(rest)
    return args, stages


def render(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: variables[m[1]], value)


def image(variant: str) -> dict:
    """What ``docker build --build-arg VARIANT=<variant>`` makes: base image, env, copies, command."""
    args, stages = dockerfile_stages(DOCKERFILE.read_text())
    variables = {**args, "VARIANT": variant}
    by_name = {s["name"]: s for s in stages if s["name"]}
    final = stages[-1]
    base = by_name[render(final["from"], variables)]  # KeyError: no stage for this variant
    return {
        "base_image": render(base["from"], variables),
        "env": {
            **base["env"],
            **{k: render(v, {**base["env"], **variables}) for k, v in final["env"].items()},
        },
        "copy": final["copy"],
        "cmd": final["cmd"],
    }


def load_definitions(env: dict[str, str], run_config: dict | None = None) -> dict:
    """Load ``hasher_assets.definitions`` in a fresh interpreter with ``env`` (as the image's entry
    point does) and report its executor, the seeds step's tags and ``run_config``'s validation."""
    code = """
import json, sys
from dagster._config import process_config
from hasher_assets.definitions import defs
job = defs.resolve_job_def("partition_pipeline")
executor = job.executor_def
run_config = json.loads(sys.argv[1])
checked = process_config(executor.config_schema.as_field().config_type, run_config) if run_config else None
print(json.dumps({
    "executor": executor.name,
    "seeds_tags": dict(defs.resolve_assets_def("seeds").op.tags),
    "valid": None if checked is None else checked.success,
    "errors": None if checked is None else [e.message for e in checked.errors or []],
}))
"""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
        **({"NUMBA_CACHE_DIR": os.environ["NUMBA_CACHE_DIR"]} if "NUMBA_CACHE_DIR" in os.environ else {}),
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(run_config or {})],
        env=environment, capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("variant", "backend", "extras"), [("cpu", "cpu", "k8s"), ("cuda", "cuda", "k8s,gpu")]
)
def test_each_build_variant_renders_to_a_base_image_extras_and_kernel_backend(variant, backend, extras):
    built = image(variant)
    assert built["env"]["HASHER_KERNEL_BACKEND"] == backend
    assert built["env"]["HASHER_EXTRAS"] == extras
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras.split(",")) <= set(optional)
    assert ("nvidia/cuda" in built["base_image"]) == (variant == "cuda")


def test_an_unknown_variant_has_no_base_stage():
    with pytest.raises(KeyError):
        image("rocm")


def test_the_image_copies_every_package_pyproject_installs():
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"
    ]
    copied = {c.rstrip("/") for c in image("cpu")["copy"]}
    assert {p.rstrip("*") for p in include} <= copied
    assert all((ROOT / c).exists() for c in copied)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_the_image_entry_point_loads_the_definitions_with_the_images_env(tmp_path, variant):
    built = image(variant)
    assert built["cmd"][:3] == ["dagster", "api", "grpc"]
    module = built["cmd"][built["cmd"].index("-m") + 1]
    assert module == "hasher_assets.definitions"
    # the image's environment, its directories moved under tmp_path, on the k8s executor
    env = {k: v for k, v in built["env"].items() if k.startswith("HASHER_") and k != "HASHER_EXTRAS"}
    env.update(
        HASHER_EXECUTOR="k8s",
        HASHER_DATA_DIR=str(tmp_path / "data"),
        HASHER_PROGRESS_DIR=str(tmp_path / "progress"),
        DAGSTER_HOME=str(tmp_path),
    )
    loaded = load_definitions(env)
    assert loaded["executor"] == "k8s"
    gpu = json.loads(loaded["seeds_tags"]["dagster-k8s/config"])["container_config"]["resources"].get(
        "limits"
    )
    assert (gpu == {"nvidia.com/gpu": "1"}) == (variant == "cuda")


def helm_deployment() -> dict:
    values = yaml.safe_load(HELM_VALUES.read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def test_the_helm_values_serve_this_code_location_with_postgres_and_the_k8s_run_launcher():
    values = yaml.safe_load(HELM_VALUES.read_text())
    deployment = helm_deployment()
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "hasher_assets.definitions"]
    cmd = image("cpu")["cmd"]
    assert deployment["port"] == int(cmd[cmd.index("-p") + 1])
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is True
    assert values["concurrency"] == {"enabled": True, "pools": {"defaultLimit": 1}}
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["HASHER_EXECUTOR"] == "k8s" and env["HASHER_KERNEL_BACKEND"] == "cuda"
    # the progress store's directory is a pod-local volume, the data directory the shared one
    mounts = {m["mountPath"]: m["name"] for m in deployment["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["volumes"]}
    assert "emptyDir" in volumes[mounts[env["HASHER_PROGRESS_DIR"]]]
    assert "persistentVolumeClaim" in volumes[mounts["/data"]] and env["HASHER_DATA_DIR"].startswith("/data/")


@pytest.mark.slow
def test_the_helm_environment_loads_the_k8s_executor_and_the_run_config_fits_its_schema(tmp_path):
    env = {e["name"]: e["value"] for e in helm_deployment()["env"]}
    env.update(HASHER_DATA_DIR=str(tmp_path / "data"), HASHER_PROGRESS_DIR=str(tmp_path / "progress"))
    execution = yaml.safe_load(RUN_CONFIG.read_text())["execution"]["config"]
    loaded = load_definitions(env, execution)
    assert loaded["executor"] == "k8s"
    assert loaded["valid"], loaded["errors"]
    # and a config dagster-k8s would refuse is refused: the check is the real schema
    wrong = load_definitions(env, {**execution, "max_concurrent": "eight", "job_nmespace": "x"})
    assert wrong["valid"] is False and len(wrong["errors"]) == 2

    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

    # the seeds step's tag, as dagster-k8s turns it into the step pod's container
    user_config = get_user_defined_k8s_config(loaded["seeds_tags"])
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="hasher:cuda", dagster_home="/opt/dagster/dagster_home"),
        ["dagster", "api", "execute_step"],
        "dagster-step-seeds",
        user_defined_k8s_config=user_config,
    )
    (container,) = job.spec.template.spec.containers
    assert container.resources.limits == {"nvidia.com/gpu": "1"}


def serve_manifests() -> tuple[dict, dict]:
    """The ``hasher serve`` Deployment and Service the Helm values add (``extraManifests``)."""
    manifests = yaml.safe_load(HELM_VALUES.read_text())["extraManifests"]
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    (service,) = [m for m in manifests if m["kind"] == "Service"]
    return deployment, service


def test_the_helm_values_serve_the_model_with_hashers_own_command_line():
    from hasher_cli.main import _parser
    from hasher_cli.serve import check_access

    deployment, service = serve_manifests()
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["command"][0] == "hasher"
    args = _parser().parse_args(container["command"][1:])  # exits on a flag hasher serve lacks
    assert args.command == "serve" and args.backend == "cpu"
    env = {e["name"]: e for e in container["env"]}
    # 0.0.0.0 in the pod: the token must come from a secret, and the server would start with it
    assert env["HASHER_SERVE_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"
    check_access(args.host, "a token from the secret")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == args.port
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(args.port)
    # the same image, data directory and volume as the code location, mounted read-only
    code_location = helm_deployment()
    assert container["image"].split(":")[0] == code_location["image"]["repository"]
    code_env = {e["name"]: e["value"] for e in code_location["env"]}
    assert env["HASHER_DATA_DIR"]["value"] == code_env["HASHER_DATA_DIR"]
    (volume,) = pod["spec"]["volumes"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in code_location["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert volume["persistentVolumeClaim"]["claimName"] in claims.values()
    (mount,) = container["volumeMounts"]
    assert mount["readOnly"] and code_env["HASHER_DATA_DIR"].startswith(mount["mountPath"] + "/")
    # the Service reaches exactly these pods on the named port
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": args.port, "targetPort": "http"}]
