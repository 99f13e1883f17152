# The hasher code location as an image for Kubernetes (Dagster's Helm chart, the k8s_job_executor).
#
#   docker build -t hasher:cpu .                                  # CPU kernel (Numba)
#   docker build -t hasher:cuda --build-arg VARIANT=cuda .        # CuPy/CUDA kernel; seeds asks for a GPU
#
# The same image serves the code location (gRPC, the default command), the run workers the
# K8sRunLauncher starts and the step pods of the k8s_job_executor: all of them run `dagster` from
# /opt/venv/bin, which is on PATH. hasher_tests/test_dockerfile_and_helm.py checks this file without docker.
ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

FROM ${PYTHON_IMAGE} AS base-cpu
ENV HASHER_EXTRAS=k8s \
    HASHER_KERNEL_BACKEND=cpu

FROM ${CUDA_IMAGE} AS base-cuda
# Ubuntu 24.04's own Python is 3.12, what hasher needs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV HASHER_EXTRAS=k8s,gpu \
    HASHER_KERNEL_BACKEND=cuda

FROM base-${VARIANT}
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    HASHER_DATA_DIR=/data/hasher \
    HASHER_PROGRESS_DIR=/var/lib/hasher/progress \
    NUMBA_CACHE_DIR=/var/cache/hasher/numba
WORKDIR /opt/hasher
COPY pyproject.toml README.md dagster.yaml workspace.yaml ./
COPY hasher_core/ hasher_core/
COPY hasher_resources/ hasher_resources/
COPY hasher_assets/ hasher_assets/
COPY hasher_cli/ hasher_cli/
RUN pip install --no-cache-dir ".[${HASHER_EXTRAS}]" \
    && mkdir -p "$DAGSTER_HOME" "$HASHER_DATA_DIR" "$HASHER_PROGRESS_DIR" "$NUMBA_CACHE_DIR" \
    && cp dagster.yaml "$DAGSTER_HOME/"
EXPOSE 3030
# The code location's gRPC server; the Helm chart passes the same arguments (deploy/helm-values.yaml).
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "hasher_assets.definitions"]
