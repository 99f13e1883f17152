"""Benchmark of stage 5 (deployment): how long it takes to bundle and deploy 10,000 seeds.

One command: ``python -m benchmarks.bench_deploy`` (quick: 10,000 seeds, a few seconds);
``--seeds N`` or ``--full`` (100,000) for more. Synthetic checkpoints (random slots and seeds over
ten partitions, goldens computed on the kernel so readback verification really passes) go
through, each timed on its own, in a temporary deployment store on local disk:

1. ``build_bundle`` — seed table, canonical content digest, Parquet and checksums in memory;
2. first deploy into an empty store (write, fsync, swap, read back with checksums, verify a sample);
3. a second, changed bundle over it (the same plus a backup of the first);
4. the unchanged bundle again (detected as a no-op by its content-addressed version);
5. a dry run (diff by fingerprint against the current deployment);
6. a deploy whose verification fails, rolled back (retries=0);
7. ``read_bundle`` with verification, and one ``predict`` (what ``hasher predict`` costs).

It prints and appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.results import record
from hasher_core import design
from hasher_core.bundle import Bundle, build_bundle
from hasher_core.errors import DeploymentFailedError
from hasher_core.frames.recipe import frame_recipe, recipe_to_metadata
from hasher_core.header import leading_equal_bits
from hasher_core.inference.readback import predict
from hasher_resources.deploy.bundle_files import read_bundle
from hasher_resources.deploy.store import DeploymentStore
from hasher_resources.deploy.verify import VerifyReport
from hasher_resources.embedder import HashingEmbedder
from hasher_resources.sha256 import evaluate, resolve_backend
from hasher_resources.sha256.resource import Sha256Kernel

PARTITIONS = 10


def synthetic_checkpoints(rows: int, *, seed: int, backend: str) -> dict[str, pa.Table]:
    """Checkpoint tables of ``rows`` frames in total with real goldens and the default frame recipe;
    half the rows are exact-token solves at 17 bits (target = golden >> 15, DESIGN §4.3)."""
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, 2**32, size=(rows, design.SLOT_COUNT), dtype=np.uint64).astype(np.uint32)
    seeds = rng.integers(0, 256, size=(rows, design.SEED_BYTES), dtype=np.uint8)
    seeds[:, 16:28] = 0
    golden = evaluate(slots, seeds, backend=backend)
    target = rng.integers(0, design.VOCABULARY_SIZE, size=rows).astype(np.uint32)
    # Half the rows get the token their golden stands for, as a 17-bit search would find (where that
    # token exists: golden >> 15 can exceed the vocabulary).
    token = golden >> design.TOKEN_SHIFT
    half = (np.arange(rows) % 2 == 0) & (token < design.VOCABULARY_SIZE)
    target[half] = token[half]
    matched = leading_equal_bits(golden, target << design.TOKEN_SHIFT)
    metadata = recipe_to_metadata(frame_recipe(embedder=HashingEmbedder().recipe()))
    fingerprints = np.array(
        [f"{w.tobytes().hex()[:24]}-{t:08x}" for w, t in zip(slots, target, strict=True)], dtype=object
    )
    out = {}
    for p, part in enumerate(np.array_split(np.arange(rows), PARTITIONS)):
        n = len(part)
        cols = {
            "source_file": pa.array([f"source-{p}.txt"] * n),
            "chunk_id": pa.array(part // 64, pa.int32()),
            "window_end": pa.array(part % 64 + 1, pa.int32()),
        }
        for i in range(design.SLOT_COUNT):
            cols[f"asic_slot_{i}"] = pa.array(slots[part, i].view(np.int32))
        cols |= {
            "target_token_id": pa.array(target[part].view(np.int32)),
            "best_seed": pa.array([s.tobytes() for s in seeds[part]], pa.binary()),
            "golden": pa.array(golden[part]),
            "solved": pa.array(matched[part] >= design.DIFFICULTY_BITS),
            "matched_bits": pa.array(matched[part].astype(np.int32)),
            "difficulty_bits": pa.array(np.full(n, design.DIFFICULTY_BITS, np.int32)),
            "header_time": pa.array(np.zeros(n, np.int64)),
            "fingerprint": pa.array(list(fingerprints[part]), pa.string()),
        }
        out[f"source-{p}.txt"] = pa.table(cols).replace_schema_metadata(metadata)
    return out


def write_files_synced(files: dict[str, bytes], directory: Path) -> None:
    """The I/O any deploy must do at least: each file written and fsynced, then the directory."""
    directory.mkdir(parents=True)
    for name, data in files.items():
        with open(directory / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def run(rows: int, backend: str, sample_size: int) -> list[list[object]]:
    # Goldens come from the hashlib oracle: independent of the backend under test, and no JIT warm-up.
    checkpoints, gen_s = timed(lambda: synthetic_checkpoints(rows, seed=1, backend="reference"))
    print(f"generated {rows} checkpoint rows with goldens on the reference backend in {gen_s:.2f} s")
    bundle, build_s = timed(lambda: build_bundle(checkpoints, pipeline_version="bench"))
    changed_parts = dict(checkpoints)
    changed_parts["source-0.txt"] = checkpoints["source-0.txt"].slice(1)  # one frame fewer
    changed = build_bundle(changed_parts, pipeline_version="bench")
    size = sum(len(b) for b in bundle.files.values())

    table: list[list[object]] = []
    raw_s = 0.0  # the reference of this run: writing the same files with fsync, nothing else

    def row(phase: str, seconds: float, note: str = "", per_seed: bool = True) -> None:
        rate = f"{rows / seconds:,.0f}" if per_seed and seconds else "-"
        ratio = f"{seconds / raw_s:.1f}" if raw_s and per_seed else "-"
        table.append([phase, f"{seconds * 1000:.1f}", rate, ratio, note])

    # Load the kernel (Numba's on-disk JIT cache, or CUDA context) before timing deploys with it.
    _, warm_s = timed(lambda: evaluate(bundle.slots()[:1], bundle.best_seeds()[:1], backend=backend))
    row(f"{backend} kernel warm-up", warm_s, "once per process; not part of a deploy", per_seed=False)
    row("build_bundle", build_s, f"{size / 2**20:.2f} MiB of files")
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        _, raw_s = timed(lambda: write_files_synced(bundle.files, Path(tmp) / "raw"))
        row("reference: write the bundle's files + fsync", raw_s, "plain I/O floor of this disk")
        store = DeploymentStore(Path(tmp) / "store")
        opts = {"kernel_backend": backend, "sample_size": sample_size, "retry_delay_s": 0.0}
        first, s = timed(lambda: store.deploy(bundle, **opts))
        steps = ", ".join(f"{k} {v * 1000:.0f}" for k, v in first.step_seconds.items())
        row("deploy into empty store", s, f"ms per step: {steps}")
        second, s = timed(lambda: store.deploy(changed, **opts))
        steps = ", ".join(f"{k} {v * 1000:.0f}" for k, v in second.step_seconds.items())
        row("deploy over it (with backup)", s, f"ms per step: {steps}")
        same, s = timed(lambda: store.deploy(changed, **opts))
        row("redeploy unchanged (no-op)", s, f"{same.status}: current bundle re-verified", per_seed=False)
        dry, s = timed(lambda: store.deploy(bundle, dry_run=True))
        d = dry.diff
        row("dry run (diff)", s, f"+{d.frames_added} -{d.frames_removed} ~{d.frames_changed} frames")

        def failing(b: Bundle) -> VerifyReport:
            raise RuntimeError("injected verification failure")

        t0 = time.perf_counter()
        try:
            store.deploy(bundle, verify=failing, retries=0, **opts)
        except DeploymentFailedError as e:
            note = f"rolled back to {e.rolled_back_to}"
        else:
            raise SystemExit("the injected failure did not fail the deploy")
        row("failed deploy + rollback", time.perf_counter() - t0, note)
        back, s = timed(lambda: read_bundle(store.pointer, verify=True))
        row("read_bundle (verified)", s, f"{back.num_rows} rows")
        kernel = Sha256Kernel(backend=backend)
        _, s = timed(lambda: predict(back, back.slots()[0], kernel.evaluate_rows, backend=backend))
        row("predict one frame", s, "lookup among all rows + one 21-pass evaluation", per_seed=False)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10_000, help="seeds in the bundle (default 10,000)")
    parser.add_argument("--full", action="store_true", help="100,000 seeds")
    parser.add_argument("--backend", default="auto", help="kernel backend for goldens and verification")
    parser.add_argument("--sample-size", type=int, default=64, help="rows re-verified after the swap")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)
    rows = 100_000 if args.full else args.seeds
    backend = resolve_backend(args.backend)
    table = run(rows, backend, args.sample_size)
    headers = ["phase", "ms", "seeds/s", "× reference write", "notes"]
    if args.no_record:
        from benchmarks.results import table as markdown

        print(markdown(headers, table))
        return
    record(
        f"Deployment of {rows:,} seeds ({backend} kernel, sample {args.sample_size})",
        headers,
        table,
        notes="Temporary store on local disk; every file fsynced, pointer swapped with rename(2). "
        "× reference write = phase time ÷ writing the same bundle files with fsync in the same run. "
        "`python -m benchmarks.bench_deploy --seeds N` for other sizes.",
    )


if __name__ == "__main__":
    main()
