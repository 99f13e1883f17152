#!/usr/bin/env bash
# The GPU check: run on a machine with a CUDA GPU and CuPy, Numba, numpy and pytest preinstalled (no
# network, no Dagster: nothing is installed; the checkout is put on PYTHONPATH).
#   bash scripts/gpu_check.sh [OUT_DIR]
# 1. the device and library versions;
# 2. the CUDA tests: the kernels bit for bit against hashlib and the CPU kernel, and the device-resident
#    seed search bit for bit against the CPU search on a few hundred frames (launch geometry, shared
#    memory barriers and atomics are only exercised on a real GPU);
# 3. the kernel benchmark's GPU rows (evaluations/s, header-scan nonces/s against an H100/H200's limit);
# 4. the search benchmark's GPU rows: the device search against the bare kernel (efficiency, target
#    >= 0.9), its host ns and bus bytes per evaluation, frames solved per hour at D = 17.
# Exit status: 1 when a test failed, none ran, a GPU test was skipped or a benchmark failed; 2 when
# all passed but a performance target was missed; 0 otherwise. Files: OUT_DIR/pytest.txt,
# OUT_DIR/kernel.json, OUT_DIR/search.json, OUT_DIR/bench*.txt. Under 5 minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-/tmp/hasher-gpu-check}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$OUT_DIR/numba-cache}"
start=$(date +%s)
failed=()

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
p = cupy.cuda.runtime.getDeviceProperties(0)
print("SMs", p.get("multiProcessorCount"), "| registers/SM", p.get("regsPerMultiprocessor"),
      "| threads/SM", p.get("maxThreadsPerMultiProcessor"), "| shared/SM", p.get("sharedMemPerMultiprocessor"))
PY
[ $? -eq 0 ] || { echo "gpu_check: CuPy cannot see a CUDA device" >&2; exit 1; }

echo "==> CUDA tests and the device search against the CPU search (pytest, no Dagster)"
tests=(hasher_tests/resources/sha256/test_cuda.py hasher_tests/resources/sha256/test_device_search.py)
if "$PY" -c "import hypothesis" 2>/dev/null; then
    tests+=(hasher_tests/resources/sha256/test_windows.py)  # its property tests need hypothesis
else
    echo "hypothesis is not installed: test_windows.py (the CUDA window scans) is left out"
fi
# -c /dev/null: pyproject's filterwarnings names dagster.PreviewWarning, which would import Dagster.
timeout 210 "$PY" -m pytest -c /dev/null --rootdir "$PWD" -p no:cacheprovider -q -rs -rf \
    "${tests[@]}" -k "cuda or gpu" 2>&1 | tee "$OUT_DIR/pytest.txt" | tail -30
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || failed+=("tests (pytest exit $status; 124 = ran past 210 s)")
if ! grep -qE "[0-9]+ passed" "$OUT_DIR/pytest.txt"; then
    failed+=("no test passed")
fi
if grep -q "needs CuPy and a CUDA device" "$OUT_DIR/pytest.txt"; then
    failed+=("GPU tests were skipped on a GPU machine")
fi

echo "==> kernel benchmark (GPU rows)"
timeout 40 "$PY" -m benchmarks.bench_kernel --gpu-only --no-record --json "$OUT_DIR/kernel.json" \
    2>&1 | tee "$OUT_DIR/bench.txt" | tail -8
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || failed+=("bench_kernel (exit $status)")

echo "==> search benchmark (GPU rows: device search vs bare kernel)"
timeout 45 "$PY" -m benchmarks.bench_search --gpu-only --no-static --no-record --json "$OUT_DIR/search.json" \
    2>&1 | tee "$OUT_DIR/bench_search.txt" | tail -10
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || failed+=("bench_search (exit $status)")

"$PY" - "$OUT_DIR/kernel.json" "$OUT_DIR/search.json" <<'PY'
import json, sys
def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return {}
k, s = load(sys.argv[1]), load(sys.argv[2])
def show(f, key, unit, limit_key=None):
    if key in f:
        extra = f" = {f[limit_key]:.1%} of the H100/H200 physical limit" if limit_key in f else ""
        print(f"{key}: {f[key]:,.0f} {unit}{extra}")
show(k, "gpu evaluations/s", "21-pass evaluations/s", "gpu evaluate fraction of limit")
show(k, "gpu header nonces/s", "midstate nonces/s", "gpu header scan fraction of limit")
missed = []
for key, target, better in (("gpu_search_efficiency", 0.9, "high"), ("gpu_search_efficiency_scan", 0.9, "high"),
                            ("gpu_device_search_host_ns_per_evaluation", 0.5, "low"),
                            ("gpu_bus_bytes_per_evaluation", 0.1, "low")):
    if key not in s:
        missed.append(f"{key} not measured")
        continue
    ok = s[key] >= target if better == "high" else s[key] <= target
    print(f"{key}: {s[key]:.4f} (target {'>=' if better == 'high' else '<='} {target}) {'ok' if ok else 'MISSED'}")
    if not ok:
        missed.append(key)
for key in ("gpu_kernel_evaluations_per_s", "gpu_search_evaluations_per_s", "gpu_frames_solved_per_hour_d17",
            "gpu_frames_solved_per_hour_d17_scan"):
    if key in s:
        print(f"{key}: {s[key]:,.0f}")
open(sys.argv[2] + ".missed", "w").write("\n".join(missed))
PY
missed=$(cat "$OUT_DIR/search.json.missed" 2>/dev/null)
elapsed=$(( $(date +%s) - start ))
if [ ${#failed[@]} -gt 0 ]; then
    printf 'gpu_check: FAILED after %s s:\n' "$elapsed" >&2
    printf '  - %s\n' "${failed[@]}" >&2
    echo "  (details: $OUT_DIR/pytest.txt, $OUT_DIR/bench.txt, $OUT_DIR/bench_search.txt)" >&2
    exit 1
fi
if [ -n "$missed" ]; then
    echo "gpu_check: tests passed, but performance targets missed after $elapsed s:" >&2
    echo "$missed" | sed 's/^/  - /' >&2
    exit 2
fi
echo "gpu_check: all passed in $elapsed s"
