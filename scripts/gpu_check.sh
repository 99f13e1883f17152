#!/usr/bin/env bash
# The GPU check: run on a machine with a CUDA GPU and CuPy, Numba, numpy, pytest and hypothesis
# preinstalled (no network, no Dagster: nothing is installed; the checkout is put on PYTHONPATH).
#   bash scripts/gpu_check.sh [OUT_DIR]
# 1. the device and library versions; 2. the CUDA tests (bit for bit against hashlib and the CPU
# kernel); 3. the kernel benchmark's GPU rows: evaluations/s, header-scan nonces/s, and their ratio
# to an H100/H200's physical limit. Exit status: the tests' (non-zero when any failed, or when no
# GPU test ran). Files: OUT_DIR/pytest.txt, OUT_DIR/kernel.json, OUT_DIR/bench.txt. Under 5 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-/tmp/hasher-gpu-check}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$OUT_DIR/numba-cache}"
start=$(date +%s)

echo "==> device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | head -5
"$PY" - <<'PY'
import sys
import cupy, numba, numpy
print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, numba {numba.__version__}, "
      f"cupy {cupy.__version__} (CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
      f"driver {cupy.cuda.runtime.driverGetVersion()})")
from hasher_resources.sha256 import cuda
print("device:", cuda.device_name(), "| devices:", cuda.device_count())
PY
[ $? -eq 0 ] || { echo "gpu_check: CuPy cannot see a CUDA device" >&2; exit 1; }

echo "==> CUDA tests (pytest, no Dagster: project config and conftest.py are not loaded)"
# -c /dev/null: pyproject's filterwarnings names dagster.PreviewWarning, which would import Dagster.
timeout 210 "$PY" -m pytest -c /dev/null --rootdir "$PWD" -p no:cacheprovider -q -rs \
    hasher_tests/resources/sha256/test_cuda.py hasher_tests/resources/sha256/test_windows.py \
    -k "cuda" 2>&1 | tee "$OUT_DIR/pytest.txt" | tail -25
tests=${PIPESTATUS[0]}
if ! grep -qE "[0-9]+ passed" "$OUT_DIR/pytest.txt"; then
    echo "gpu_check: no test passed" >&2
    tests=1
fi
if grep -q "needs CuPy and a CUDA device" "$OUT_DIR/pytest.txt"; then
    echo "gpu_check: GPU tests were skipped on a GPU machine" >&2
    tests=1
fi

echo "==> kernel benchmark (GPU rows)"
timeout 150 "$PY" -m benchmarks.bench_kernel --gpu-only --no-record --json "$OUT_DIR/kernel.json" \
    2>&1 | tee "$OUT_DIR/bench.txt" | tail -15
bench=${PIPESTATUS[0]}
"$PY" - "$OUT_DIR/kernel.json" <<'PY'
import json, sys
f = json.load(open(sys.argv[1]))
def show(key, unit, limit_key=None):
    if key in f:
        extra = f" = {f[limit_key]:.1%} of the H100/H200 physical limit" if limit_key in f else ""
        print(f"{key}: {f[key]:,.0f} {unit}{extra}")
show("gpu evaluations/s", "21-pass evaluations/s", "gpu evaluate fraction of limit")
show("gpu seed scan evaluations/s", "evaluations/s")
show("gpu header nonces/s", "midstate nonces/s", "gpu header scan fraction of limit")
if "sass per compression" in f:
    print(f"sm_90 SASS per compression: {f['sass per compression']:,.0f}")
PY
echo "gpu_check: tests exit $tests, benchmark exit $bench, $(( $(date +%s) - start )) s"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
