"""The benchmarks still run against the code they measure: each one that takes a size runs at a tiny
size with ``--no-record`` (nothing is appended to RESULTS.md) and prints its table.

They measure nothing here; they fail when a change to the stages leaves a benchmark behind (the
deployment benchmark once built checkpoints without the frame recipe the bundle now requires).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(name: str, *args: str) -> str:
    results = (ROOT / "benchmarks" / "RESULTS.md").read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--no-record", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (ROOT / "benchmarks" / "RESULTS.md").read_bytes() == results  # --no-record records nothing
    return done.stdout


@pytest.mark.slow
def test_the_frames_benchmark_measures_window_and_chunk_frames():
    out = run_benchmark("bench_frames", "--chunks", "200")
    assert "window frames (default recipe" in out and "chunk embeddings (legacy recipe)" in out


@pytest.mark.slow
def test_the_deployment_benchmark_builds_and_deploys_a_bundle():
    out = run_benchmark("bench_deploy", "--seeds", "400")
    assert "| deploy into empty store |" in out and "| predict one frame |" in out


@pytest.mark.slow
def test_the_model_benchmark_trains_deploys_and_reports_recall(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("A tiny text of a dozen words or so, to train, deploy and recite in a test.")
    out = run_benchmark("bench_model", "--text", str(text), "--difficulty", "8")
    rows = [line for line in out.splitlines() if line.startswith("| tiny.txt |")]
    assert [row.split(" | ")[1] for row in rows] == ["grpo", "scan"]
    # At 8 bits a seed matches only the token's top 8 bits: the check must say the model fails.
    assert all(row.rstrip(" |").split(" | ")[-2] == "FAIL" for row in rows)


@pytest.mark.slow
def test_the_kernel_benchmark_compares_both_cpu_paths_with_hashlib():
    from hasher_resources.sha256 import cpu

    out = run_benchmark("bench_kernel", "--threads", "1", "--rows", "300")
    for path in cpu.runnable_paths():
        assert (
            f"| cpu {path}: 21-pass evaluate | 1 |" in out and f"| cpu {path}: header nonce scan | 1 |" in out
        )
    assert "| hashlib streaming SHA-256 | 1 |" in out and "frames solved/hour at D = 17" in out
    assert " per compression; " in out or "CUDA SASS not counted" in out


@pytest.mark.slow
def test_the_search_benchmark_compares_the_host_loop_with_the_device_search(tmp_path):
    out = run_benchmark(
        "bench_search", "--batch", "16", "--waves", "1", "--device-frames", "6", "--device-difficulty", "9",
        "--cpu-frames", "2", "--json", str(tmp_path / "search.json"),
    )  # fmt: skip
    for strategy in ("grpo", "scan"):
        assert f"| host loop ({strategy}) | 16 frames × 256 |" in out
        assert f"| device search driver ({strategy}), H100 launch sizes | " in out
        assert f"| device search on its host build ({strategy}) | 6 frames at D = 9" in out
        assert f"| cpu search ({strategy}, " in out
    assert "same seeds as the host loop: yes" in out and "same seeds as the host loop: NO" not in out
    figures = json.loads((tmp_path / "search.json").read_text())
    for key in ("host_ns_per_evaluation_grpo", "host_ns_per_evaluation_scan",
                "device_search_host_ns_per_evaluation", "device_search_host_ns_per_evaluation_host_build",
                "bus_bytes_per_evaluation"):  # fmt: skip
        assert figures[key] > 0
    assert figures["device_search_seeds_equal_host_loop"] == 1.0
    assert "device search kernel, sm_90 SASS (static)" in out or "CUDA SASS not counted" in out


def test_the_gpu_check_says_when_there_is_no_gpu(tmp_path):
    from hasher_resources import sha256

    if sha256.cuda_available():
        pytest.skip("a GPU is here: scripts/gpu_check.sh runs for real on it")
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1
    assert "gpu_check: CuPy cannot see a CUDA device" in done.stderr


@pytest.mark.slow
def test_the_partitions_benchmark_syncs_ticks_and_queries_the_partitions_page():
    out = run_benchmark("bench_partitions", "--files", "30")
    rows = [line for line in out.splitlines() if line.startswith("| 30 |")]
    assert [row.split(" | ")[1] for row in rows] == [
        "`hasher partitions sync` (new process)",
        "first sensor tick (every file new)",
        "sensor tick, nothing changed",
        "sensor tick, 15 files changed",
        "GraphQL: seeds partitions page",
    ]


@pytest.mark.slow
def test_the_scale_benchmark_deploys_probes_builds_and_runs_many_partitions(tmp_path):
    figures = tmp_path / "scale.json"
    out = run_benchmark(
        "bench_scale", "--sizes", "400", "--partitions", "1,20", "--many", "4x12", "--json", str(figures)
    )
    assert "| 400 | nearest step, 1 / 2 threads (suffix search + search) |" in out
    assert "| 400 | build_bundle, 20 partition(s) |" in out and "| 400 | unchanged redeploy |" in out
    assert "| 4 × ~12 | stages 1–4 through the assets" in out
    written = json.loads(figures.read_text())
    for key in ("model_open_s_400", "model_rss_mb_400", "exact_step_ms_400_2threads", "nearest_step_ms_400",
                "build_bundle_s_400_20_partitions", "unchanged_redeploy_s_400", "recall_s_400",
                "many_partitions_ratio", "many_event_writes_s", "suffix_search_ms_400",
                "prompt_nearest_search_ms_400"):  # fmt: skip
        assert written[key] > 0, key
    assert written["many_event_writes_s"] < written["many_s"]


def test_the_serving_benchmark_streams_from_hasher_serve_and_checks_against_model_generate(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("A tiny text of a dozen words or so, to train, deploy and serve in a test.")
    args = [
        "--text",
        str(text),
        "--difficulty",
        "17",  # below 17 bits a seed answers no token (docs/design.md §4.3): nothing to time
        "--frames",
        "2000",
        "--clients",
        "1,3",
        "--max-tokens",
        "6",
    ]
    out = run_benchmark("bench_serve", *args)
    rows = [
        line.split(" | ")
        for line in out.splitlines()
        if line.startswith(("| sample texts |", "| ~2,000 frames |"))
    ]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("| sample texts", "19", "1"),
        ("| sample texts", "19", "3"),
        ("| ~2,000 frames", "2,000", "1"),
        ("| ~2,000 frames", "2,000", "3"),
    ]
    # tokens/s and the server's peak RSS were measured
    assert all(float(row[4].replace(",", "")) > 0 and float(row[11].replace(",", "")) > 0 for row in rows)


def test_results_name_the_command_as_a_user_would_retype_it():
    from benchmarks.results import command

    script = str(ROOT / "benchmarks" / "bench_frames.py")
    assert command([script, "--chunks", "5"]) == "python -m benchmarks.bench_frames --chunks 5"
    assert command(["other.py", "-q"]) == "python other.py -q"
