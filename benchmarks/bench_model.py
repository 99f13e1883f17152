"""The model benchmark (DESIGN §4.3, §6.1): frames solved per hour at the default difficulty with GRPO
and with scan in one run, and the recall of the deployment each one produces.

``python -m benchmarks.bench_model`` trains ``sample_data/inbox/zen_of_python.txt`` (179 window
frames; about 40 s per strategy on 2 cores with the CPU kernel) through the real pipeline:
``dg.materialize`` of knowledge_base → training_frames → seeds → checkpoints, then deployment with its
``deployment_recall`` check, once per strategy in its own temporary data directory and Dagster
instance. ``--text FILE`` trains another text, ``--full`` the Gettysburg Address as well.

The reference, measured in the same run: the kernel's own evaluations/s inside that search (its
calls timed one by one, the seeds asset's ``kernel_evaluations_per_s``). A random-oracle search
should solve ``kernel rate × 3600 / 2^D`` frames per hour; the ratio of measured to that is the
search's whole efficiency (host work, evaluations spent past a solve in the last generation, the
tail of the last frames) times the luck of the draw (±1/√frames).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.bench_seeds import POPULATION, pick_backend
from benchmarks.results import record
from hasher_cli import scratch
from hasher_core.design import DIFFICULTY_BITS

ROOT = Path(__file__).resolve().parents[1]
QUICK_TEXTS = [ROOT / "sample_data" / "inbox" / "zen_of_python.txt"]
FULL_TEXTS = [*QUICK_TEXTS, ROOT / "sample_data" / "corpus" / "gettysburg_address.txt"]


def train_and_deploy(text: Path, strategy: str, difficulty: int, backend: str) -> dict[str, object]:
    """Run the five stages on ``text`` in a fresh temporary data directory; return the seeds' and the
    recall check's metadata and the wall seconds of the whole run."""
    with tempfile.TemporaryDirectory(prefix="bench_model_") as tmp:
        started = time.perf_counter()
        run = scratch.train_and_deploy(
            text, Path(tmp), difficulty_bits=difficulty, strategy=strategy, backend=backend
        )
        wall = time.perf_counter() - started
        check, recall = run.recall_check()
        return {"seeds": run.seeds_metadata(), "recall": recall, "passed": check.passed, "wall": wall}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, action="append", help="text file(s) to train (default: Zen)")
    parser.add_argument("--full", action="store_true", help="also train the Gettysburg Address")
    parser.add_argument("--difficulty", type=int, default=DIFFICULTY_BITS, help="difficulty_bits (17)")
    parser.add_argument("--backend", default="auto", help="reference | cpu | cuda | auto")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)
    backend = pick_backend(args.backend)
    texts = args.text or (FULL_TEXTS if args.full else QUICK_TEXTS)
    rows = []
    for text in texts:
        for strategy in ("grpo", "scan"):
            run = train_and_deploy(text, strategy, args.difficulty, backend)
            seeds, recall = run["seeds"], run["recall"]
            seconds = float(seeds["seconds"])
            per_hour = 3600 * int(seeds["solved"]) / seconds
            expected = 3600 * float(seeds["kernel_evaluations_per_s"]) / 2**args.difficulty
            rows.append(
                [
                    text.name,
                    strategy,
                    f"{seeds['solved']}/{seeds['dagster/row_count']}",
                    f"{int(seeds['evaluations_this_run']) / max(int(seeds['solved']), 1):,.0f}",
                    f"{seeds['evaluations_per_s']:,.0f}",
                    f"{seconds:.1f}",
                    f"{per_hour:,.0f}",
                    f"{expected:,.0f}",
                    f"{per_hour / expected:.2f}",
                    f"{recall['recall']:.4f} ({recall['correct']}/{recall['contexts']})",
                    recall["ambiguous_contexts"],
                    f"{recall['mean_tokens_recited_verbatim']:.1f}",
                    "pass" if run["passed"] else "FAIL",
                    f"{run['wall']:.1f}",
                ]
            )
            print(f"{text.name} {strategy}: {rows[-1]}", flush=True)
    headers = [
        "text",
        "strategy",
        "solved",
        "evals per solve",
        "search evals/s",
        "seeds s",
        "solved/hour",
        "expected/hour (in-run kernel rate)",
        "measured ÷ expected",
        "recall",
        "ambiguous",
        "verbatim tokens",
        "deployment_recall",
        "pipeline s",
    ]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    notes = (
        f"D = {args.difficulty} bits, backend `{backend}`, population {POPULATION}, window frames with the "
        "offline hashing embedder; each row is a full dg.materialize of the five stages and the deployment "
        "checks in a fresh data directory. Expected/hour = the kernel's evals/s inside the same search × "
        "3600 / 2^D. Evals per solve = evaluations of the run ÷ solved frames "
        f"(2^D = {2**args.difficulty:,} for an ideal random-oracle search). Recall = one-step answers "
        "equal to the training text's next token over every deployed context (deployment_recall); verbatim "
        "tokens = mean tokens recited from each chunk's first window."
        " Pipeline s includes Dagster, stages 1–2, "
        f"the ASIC emulator's checks and the deployment. Load average at the end: {load}."
    )
    title = f"The model: frames solved per hour at D = {args.difficulty} and deployment recall ({backend})"
    if args.no_record:
        from benchmarks.results import table

        print(f"\n{title}\n{table(headers, rows)}\n{notes}")
        return
    record(title, headers, rows, notes)


if __name__ == "__main__":
    main()
