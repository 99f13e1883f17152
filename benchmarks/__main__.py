"""Run every benchmark at its quick size: ``python -m benchmarks`` (each appends to RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = [
    "bench_kernel",
    "bench_frames",
    "bench_seeds",
    "bench_search",
    "bench_model",
    "bench_asic",
    "bench_deploy",
    "bench_partitions",
    "bench_scale",
    "bench_serve",
]


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        print(f"==> benchmarks.{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *sys.argv[1:]]).returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
