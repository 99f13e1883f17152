"""The serving benchmark: ``hasher serve`` under 1, 8 and 32 concurrent streaming clients, for a
deployment of the sample texts and one of ~100,000 frames, against ``Model.generate`` in-process.

``python -m benchmarks.bench_serve`` trains the Zen of Python at 17 bits (``--full`` adds the
Gettysburg Address; ``--data-dir DIR`` takes the checkpoints a run already made there instead, e.g.
the quickstart's ``.hasher_data``) and builds two bundles from them: the sample texts alone, and the
same rows plus synthetic frames up to ``--frames`` (random slots with real goldens, as in
``bench_deploy``) — the recitations are the same, the index, the nearest-frame search and the
memory are those of a 100,000-frame deployment. Each is deployed into a temporary store and served
by a real ``hasher serve`` process on 127.0.0.1; each client streams ``/v1/completions`` for the
first words of every sample text, one request after another, with ``--max-tokens`` tokens at most.

Reported per deployment and client count: tokens/s over the whole run (all clients), the latency
per token as a client sees it (time from one streamed token to the next, the first from sending
the request; p50/p99 over every token of every client) and the server's peak RSS (``VmHWM``). The
reference, measured in the same run on the same bundle and prompts: ``Model.generate`` in this
process with one Numba thread (what the server's inference thread runs) — its tokens/s and time per
step — and the ratio of the server's tokens/s to it. Every streamed answer is checked against the
reference's continuation. The clients run in this process (threads) on the same cores as the server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.bench_deploy import synthetic_checkpoints
from benchmarks.results import record
from hasher_cli import scratch
from hasher_core.bundle import Bundle, build_bundle
from hasher_core.design import DIFFICULTY_BITS
from hasher_resources.deploy.store import DeploymentStore
from hasher_resources.model import load_model
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_tests.serving import serving

ROOT = Path(__file__).resolve().parents[1]
ZEN = ROOT / "sample_data" / "inbox" / "zen_of_python.txt"
GETTYSBURG = ROOT / "sample_data" / "corpus" / "gettysburg_address.txt"
PROMPT_WORDS = 6


def sample_checkpoints(
    texts: list[Path], data_dir: Path | None, difficulty: int, work: Path
) -> dict[str, pa.Table]:
    """Checkpoint tables of the sample texts: read from ``data_dir``, or trained now under ``work``."""
    if data_dir is not None:
        found = {
            p.name.removesuffix(".parquet"): pq.read_table(p)
            for p in sorted((data_dir / "checkpoints").glob("*.parquet"))
        }
        if not found:
            raise SystemExit(
                f"no checkpoints under {data_dir / 'checkpoints'}: run the pipeline (or the quickstart) first"
            )
        return found
    tables = {}
    for text in texts:
        started = time.perf_counter()
        run = scratch.train_and_deploy(text, work / text.stem, difficulty_bits=difficulty, backend="cpu")
        key = text.name
        tables[key] = pq.read_table(Path(run.storage.data_dir) / "checkpoints" / f"{key}.parquet")
        seconds = time.perf_counter() - started
        print(
            f"trained {key}: {tables[key].num_rows} frames at {difficulty} bits in {seconds:.0f} s",
            flush=True,
        )
    return tables


def with_synthetic(checkpoints: dict[str, pa.Table], frames: int) -> dict[str, pa.Table]:
    """``checkpoints`` plus synthetic frames up to ``frames`` rows in all, under the samples' recipe."""
    extra = frames - sum(t.num_rows for t in checkpoints.values())
    if extra <= 0:
        return dict(checkpoints)
    metadata = next(iter(checkpoints.values())).schema.metadata  # the frame recipe must agree
    synthetic = synthetic_checkpoints(extra, seed=7, backend="cpu")
    return {**checkpoints, **{k: t.replace_schema_metadata(metadata) for k, t in synthetic.items()}}


def prompts_of(checkpoints: dict[str, pa.Table], texts: dict[str, str]) -> list[str]:
    """The first words of every sample text a deployment holds."""
    return [" ".join(texts[key].split()[:PROMPT_WORDS]) for key in sorted(checkpoints) if key in texts]


def reference(
    bundle: Bundle, prompts: list[str], max_tokens: int
) -> tuple[dict[str, str], float, list[float]]:
    """``Model.generate``'s loop in-process with one Numba thread: continuations, tokens/s and the
    seconds of each step."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        model = load_model(bundle, Sha256Kernel(backend="cpu", threads=1))
        model.generate(prompts[0], 2)  # the kernels' first call loads them from Numba's cache
        continuations, steps, tokens = {}, [], 0
        started = time.perf_counter()
        for prompt in prompts:
            produced, last = [], time.perf_counter()
            for step in model.iter_steps(prompt, max_tokens):
                now = time.perf_counter()
                steps.append(now - last)
                last = now
                if step.token_id is not None:
                    produced.append(step.token_id)
            continuations[prompt] = model.encoding.decode(produced)
            tokens += len(produced)
        wall = time.perf_counter() - started
    finally:
        numba.set_num_threads(before)
    return continuations, tokens / wall, steps


def stream_once(client: httpx.Client, url: str, prompt: str, max_tokens: int) -> tuple[str, list[float], int]:
    """One streamed completion: its text, the gaps between tokens (the first from sending) and tokens."""
    body = {"model": "hasher", "prompt": prompt, "max_tokens": max_tokens, "stream": True}
    text, gaps, tokens, last = [], [], 0, time.perf_counter()
    with client.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            count = sum(1 for t in chunk["hasher"].get("tokens", []) if t["token_id"] is not None)
            if count:
                now = time.perf_counter()
                gaps.append(now - last)
                last, tokens = now, tokens + count
            text.append(chunk["choices"][0]["text"])
    return "".join(text), gaps, tokens


def load_clients(
    url: str, clients: int, prompts: list[str], max_tokens: int, expected: dict[str, str], rounds: int
):
    """``clients`` threads streaming every prompt ``rounds`` times; tokens/s, all gaps, mismatches."""
    gaps: list[float] = []
    totals, wrong, lock = [0], [], threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=600) as http:
            for _ in range(rounds):
                for prompt in prompts:
                    text, mine, tokens = stream_once(http, url, prompt, max_tokens)
                    with lock:
                        gaps.extend(mine)
                        totals[0] += tokens
                        if prompt in expected and text != expected[prompt]:
                            wrong.append(prompt)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return totals[0] / wall, gaps, wrong, totals[0]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--text", type=Path, action="append", help="text(s) to train (default: the Zen of Python)"
    )
    parser.add_argument("--full", action="store_true", help="also train the Gettysburg Address")
    parser.add_argument(
        "--data-dir", type=Path, help="use the checkpoints a run already made there (no training)"
    )
    parser.add_argument(
        "--difficulty", type=int, default=DIFFICULTY_BITS, help="difficulty_bits when training (17)"
    )
    parser.add_argument("--frames", type=int, default=100_000, help="rows of the large deployment (100000)")
    parser.add_argument("--clients", default="1,8,32", help="concurrent streaming clients (1,8,32)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per request at most (64)")
    parser.add_argument("--rounds", type=int, default=3, help="times each client streams every prompt (3)")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)
    texts = args.text or ([ZEN, GETTYSBURG] if args.full else [ZEN])
    clients = [int(c) for c in args.clients.split(",")]
    text_of = {p.name: p.read_text() for p in [*texts, ZEN, GETTYSBURG, *ROOT.glob("sample_data/*/*.txt")]}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        work = Path(tmp)
        samples = sample_checkpoints(texts, args.data_dir, args.difficulty, work / "train")
        prompts = prompts_of(samples, text_of)
        if not prompts:
            raise SystemExit(f"none of the checkpoints ({', '.join(samples)}) is a text this benchmark knows")
        for label, tables in (
            ("sample texts", samples),
            (f"~{args.frames:,} frames", with_synthetic(samples, args.frames)),
        ):
            bundle = build_bundle(tables, pipeline_version="bench")
            store = DeploymentStore(work / label.replace(" ", "_").replace(",", "").replace("~", ""))
            store.deploy(bundle, kernel_backend="cpu", retry_delay_s=0.0)
            expected, ref_rate, ref_steps = reference(bundle, prompts, args.max_tokens)
            started = time.perf_counter()
            extra = ["--max-concurrent", str(max(clients)), "--deadline-s", "600"]
            with serving(store.root, work / f"{store.root.name}.log", *extra) as server:
                ready_s = time.perf_counter() - started
                load_clients(server.url, 1, prompts, 2, {}, 1)  # not timed: the server's first requests
                for n in clients:
                    rate, gaps, wrong, tokens = load_clients(
                        server.url, n, prompts, args.max_tokens, expected, args.rounds
                    )
                    if wrong:
                        raise SystemExit(
                            f"{label}, {n} clients: answers differ from Model.generate for {wrong[:3]}"
                        )
                    if not tokens:
                        raise SystemExit(
                            f"{label}, {n} clients: the server streamed no token, so there is nothing to "
                            "time (a deployment trained below 17 bits answers no token: --difficulty 17)"
                        )
                    p50, p99 = percentile(gaps, 50) * 1000, percentile(gaps, 99) * 1000
                    mean = sum(gaps) / tokens * 1000
                    rss = peak_rss_mib(server.process.pid)
                    rows.append([
                        label, f"{bundle.num_rows:,}", n, tokens, f"{rate:,.0f}", f"{mean:.2f}", f"{p50:.2f}",
                        f"{p99:.2f}",
                        f"{ref_rate:,.0f}", f"{statistics.median(ref_steps) * 1000:.2f}",
                        f"{rate / ref_rate:.2f}", f"{rss:,.0f}", f"{ready_s:.1f}",
                    ])  # fmt: skip
                    print(" | ".join(str(c) for c in rows[-1]), flush=True)
    headers = [
        "deployment", "frames", "clients", "tokens", "server tokens/s", "client ms/token (mean)",
        "p50 ms/token", "p99 ms/token",
        "reference tokens/s", "reference ms/step (p50)", "server ÷ reference", "server peak RSS MiB",
        "start to healthy s",
    ]  # fmt: skip
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    notes = (
        f"Prompts: the first {PROMPT_WORDS} words of each sample text ({len(prompts)}), "
        f"max_tokens {args.max_tokens}, "
        f"{args.rounds} round(s) per client; every streamed answer equals Model.generate's. Reference = "
        "Model.generate in the benchmark's process with one Numba thread, as the server's inference thread "
        "runs it. Latency per token = gap between streamed tokens seen by a client (the first from sending "
        "the request); the mean is a client's whole wait per token, the percentiles show that tokens come "
        "in turns (a request runs up to 5 ms of steps per turn, so most gaps are ~0 and the p99 is the wait "
        "for the next turn). One inference thread serves every client in turn, so tokens/s is bounded by the "
        "reference and each client's latency grows with the clients. Clients (threads in the benchmark's "
        "process, parsing every event) and server share the machine's cores; a warm-up request precedes "
        "the timed ones. "
        f"Load average at the end: {load}."
    )
    title = "Serving: hasher serve under concurrent streaming clients vs Model.generate in-process"
    record(title, headers, rows, notes, append=not args.no_record)


if __name__ == "__main__":
    main()
