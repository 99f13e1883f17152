"""Benchmark of scale: a million deployed frames and ten thousand partitions (issue 19).

One command: ``python -m benchmarks.bench_scale`` (about 30 minutes on the standard 2-core machine).
Every figure is measured in this run, beside the reference it is judged against:

- **Deployments of 1 k, 100 k and 1 M frames, made at 1 bit through the store.** A text drawn from a
  word-bigram model of CPython's Language Reference (``pydoc_data.topics``, seed 0) goes through
  stage 1 (``read_inbox_file``: 150-word chunks) and stage 2 (``write_frames``: window frames of the
  offline embedder, the default recipe); each frame gets a 1-bit seed (random seeds run on the CPU
  kernel until the golden's top bit is the target's: what a 1-bit search finds, without its
  population) and the checkpoint rows go through ``build_bundle`` and ``DeploymentStore.deploy``.
  Sizes are whole chunks, so a size is the first chunks holding at least that many frames.
- **The model** of each deployment, in a fresh process as ``hasher generate`` opens it: time from
  mapping the bundle to a ready model (imports done before), its RSS, the exact step (a training
  context, answered from its window) on 1 and 2 Numba threads, the nearest step (a short prompt of
  words the text never has: no window or suffix is deployed, so the step ends in the nearest-frame
  search; suffix search included), and ``Model.recall`` over every context of the deployed chunks.
  At 1 bit the seeds give back only the top bit of a token: recall is near 0 and most goldens are no
  token id, which is what recall must survive. The whole ``hasher generate --max-tokens 64`` command
  on the same prompt is timed and its peak RSS read from the kernel (``wait4``).
- **build_bundle** of the 1 M rows cut into 1, 1,000 and 10,000 partitions, ÷ one pyarrow
  ``group_by`` count of the same rows (after a warm-up build that loads the compiled kernels), and
  an **unchanged redeploy** of the 1 M bundle ÷ reading its files once.
- **Many small partitions through the assets**: stages 1–4 (``dg.materialize``, in process, SQLite
  instance, CPU kernel, the emulated ASIC, checks included) at 1 bit, default search otherwise, of
  1,000 inbox files of ~50 frames run as a backfill runs them (``partition_ranges`` of
  ``HASHER_PARTITIONS_PER_RUN``), ÷ one inbox file of the same number of frames in one run.

``--json PATH`` writes the figures (``model_open_s_1m``, ``model_rss_mb_1m``,
``exact_step_ms_1m_2threads``, ``nearest_step_ms_1m``, ``build_bundle_s_1m_10000_partitions``,
``unchanged_redeploy_s_1m``, ``recall_s_1m``, ``many_partitions_ratio`` and more); ``--no-record``
prints without appending to RESULTS.md. Smaller runs: ``--sizes``, ``--partitions``, ``--many``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.results import record, table

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGETS = {
    "model_open_s": 2.0,
    "model_rss_mb": 400.0,
    "nearest_step_ms": 5.0,
    "build_bundle_s": 5.0,
    "unchanged_redeploy_s": 1.0,
    "recall_s": 60.0,
    "many_partitions_ratio": 3.0,
}
#: Words of the short prompt the nearest step answers: none is a word of the text, so neither the
#: window nor any suffix of it is a deployed frame.
NOVEL_PROMPTS = ["zorvex plimquat dravinsk", "quolbrine vesh tarnukel", "mirthwax oblenzy crauth"]
WORDS_PER_FRAME = 0.6  # words of the bigram text per frame, a little over (measured: 0.58)


def label(n: int) -> str:
    """``1000`` → ``1k``, ``1000000`` → ``1m``: the size in a figure's name."""
    for unit, size in (("m", 1_000_000), ("k", 1000)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def bigram_text(words: int, seed: int = 0) -> str:
    """``words`` words drawn from a word-bigram model of the Language Reference shipped with Python."""
    import pydoc_data.topics as topics

    corpus = " ".join(topics.topics[k] for k in sorted(topics.topics)).split()
    follows: dict[tuple[str, str], list[str]] = {}
    for a, b, c in zip(corpus, corpus[1:], corpus[2:], strict=False):
        follows.setdefault((a, b), []).append(c)
    starts = list(follows)
    rng = np.random.default_rng(seed)
    out = list(starts[rng.integers(len(starts))])
    while len(out) < words:
        nxt = follows.get((out[-2], out[-1]))
        if nxt:
            out.append(nxt[rng.integers(len(nxt))])
        else:
            out.extend(starts[rng.integers(len(starts))])
    return " ".join(out[:words])


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


# --- data: frames of a text, 1-bit seeds, checkpoint tables --------------------------------------


def frames_of_text(text_path: Path):
    """Stage 1 and 2 of one text: ``(frames table, token arrays of its chunks)``."""
    import pyarrow.parquet as pq

    from hasher_core.frames.tokens import load_cl100k
    from hasher_core.frames.windows import tokenize
    from hasher_core.knowledge import read_inbox_file
    from hasher_core.knowledge.inbox import chunk_words
    from hasher_resources.embedder import HashingEmbedder
    from hasher_resources.frames_writer import write_frames

    out = text_path.with_suffix(".frames.parquet")
    write_frames(read_inbox_file(text_path, HashingEmbedder()), out, embedder=HashingEmbedder())
    chunks = tokenize(chunk_words(text_path.read_text()), load_cl100k(), failures=[])
    return pq.read_table(out), chunks


def one_bit_checkpoints(frames):
    """The checkpoint table of the frames, each row with a seed solving it at 1 bit: random seeds,
    evaluated on the CPU kernel, drawn again until the golden's top bit is the target's."""
    import pyarrow as pa

    from hasher_core import design
    from hasher_core.frames.recipe import frame_recipe, recipe_to_metadata
    from hasher_core.header import leading_equal_bits, target_word
    from hasher_core.search import SearchConfig, frame_fingerprints, validate_frames_table
    from hasher_resources.embedder import HashingEmbedder
    from hasher_resources.sha256 import evaluate

    slots, targets = validate_frames_table(frames)
    n = len(targets)
    rng = np.random.default_rng(1)
    seeds = np.zeros((n, design.SEED_BYTES), np.uint8)
    golden = np.zeros(n, np.uint32)
    todo = np.arange(n)
    while todo.size:
        seeds[todo] = rng.integers(0, 256, (todo.size, design.SEED_BYTES), dtype=np.uint8)
        golden[todo] = evaluate(slots[todo], seeds[todo], backend="cpu")
        matched = leading_equal_bits(golden[todo], target_word(targets[todo]))
        todo = todo[matched < 1]
    matched = leading_equal_bits(golden, target_word(targets))
    fingerprints = frame_fingerprints(slots, targets, SearchConfig(difficulty_bits=1))
    table = frames.append_column("golden", pa.array(golden, pa.uint32()))
    seed_column = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(design.SEED_BYTES), n, [None, pa.py_buffer(seeds.tobytes())]
    )
    table = table.set_column(table.column_names.index("best_seed"), "best_seed", seed_column)
    table = table.append_column("solved", pa.array(np.ones(n, bool)))
    table = table.append_column("matched_bits", pa.array(matched.astype(np.int32)))
    table = table.append_column("difficulty_bits", pa.array(np.ones(n, np.int32)))
    table = table.append_column("header_time", pa.array(np.zeros(n, np.int64)))
    table = table.append_column("fingerprint", pa.array(fingerprints, pa.string()))
    return table.replace_schema_metadata(
        recipe_to_metadata(frame_recipe(embedder=HashingEmbedder().recipe()))
    )


def split_partitions(table, partitions: int, name: str = "scale.txt"):
    """``{partition: checkpoint table}``: the rows cut into ``partitions`` runs of whole chunks, each
    its own source file."""
    import pyarrow as pa

    if partitions == 1:
        return {name: table}
    n = table.num_rows
    chunk = table.column("chunk_id").to_numpy()
    starts = np.flatnonzero(np.diff(chunk, prepend=-1))  # each chunk's first row
    cuts = starts[np.linspace(0, len(starts), partitions + 1).astype(int)[1:-1]]
    bounds = [0, *cuts.tolist(), n]
    out = {}
    for p in range(partitions):
        key = f"part-{p:05d}.txt"
        part = table.slice(bounds[p], bounds[p + 1] - bounds[p])
        names = pa.DictionaryArray.from_arrays(pa.array(np.zeros(part.num_rows, np.int32)), pa.array([key]))
        out[key] = part.set_column(part.column_names.index("source_file"), "source_file", names)
    return out


def first_chunks(frames, chunks, size: int):
    """The first whole chunks holding at least ``size`` frames: ``(their frames, their tokens)``."""
    chunk = frames.column("chunk_id").to_numpy()
    ends = np.flatnonzero(np.diff(chunk, append=chunk[-1] + 1))  # last row of each chunk
    covering = int(np.searchsorted(ends + 1, size))
    last_chunk = min(covering, len(ends) - 1)
    rows = int(ends[last_chunk]) + 1
    return frames.slice(0, rows), chunks[: last_chunk + 1]


# --- the model, probed in a fresh process ------------------------------------------------------


def probe(root: Path, chunks_path: Path, out_path: Path) -> None:
    """Open the deployment under ``root`` as ``hasher generate`` does and measure it (a child process)."""
    import numba

    from hasher_cli import main as cli
    from hasher_core.frames.tokens import encode_ordinary

    def rss_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    args = argparse.Namespace(
        deployment_root=root, version=None, max_distance=None, backend="cpu", threads=None
    )
    cli._kernel(args)  # imports and the kernel choice, before the clock: the same at any size
    from hasher_resources.deploy.store import DeploymentStore
    from hasher_resources.model import load_model
    from hasher_resources.sha256.api import RowKernel

    kernel = RowKernel("cpu")
    opened_at = time.perf_counter()
    model = load_model(DeploymentStore(root).map_bundle(), kernel)
    open_s = time.perf_counter() - opened_at
    data = np.load(chunks_path)
    chunks = np.split(data["tokens"], data["ends"][:-1])
    rng = np.random.default_rng(7)
    long_chunks = [c for c in chunks if c.size > model.window_size + 2]
    exact_contexts = []
    for _ in range(40):
        c = long_chunks[rng.integers(len(long_chunks))]
        exact_contexts.append(c[: rng.integers(model.window_size, c.size)].tolist())
    prompts = [encode_ordinary(model.encoding, p).tolist() for p in NOVEL_PROMPTS]
    model.step(exact_contexts[0])  # compiled kernels loaded from Numba's cache: once per process
    model.step(prompts[0])
    result: dict[str, object] = {"open_s": open_s, "rss_open_mb": rss_mb(), "frames": model.index.frames}
    for threads in (1, 2):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        times, exact = [], []
        for context in exact_contexts:
            step, seconds = timed(lambda context=context: model.step(context))
            times.append(seconds)
            exact.append(step.exact)
        result[f"exact_step_ms_{threads}threads"] = 1000 * statistics.median(times)
        result["exact_share"] = float(np.mean(exact))
        times, nearest = [], []
        for _ in range(5):
            for context in prompts:
                step, seconds = timed(lambda context=context: model.step(context))
                times.append(seconds)
                nearest.append(not step.exact)
        result[f"nearest_step_ms_{threads}threads"] = 1000 * statistics.median(times)
        result["nearest_share"] = float(np.mean(nearest))
    search = [
        timed(lambda k=k: model.index.nearest(model.index.slots[k] ^ np.uint32(0x00FF00FF)))[1]
        for k in range(30)
    ]
    result["nearest_search_ms"] = 1000 * statistics.median(search)
    # The nearest step's two parts on its own prompts: the suffix search, and the nearest-frame
    # search of the prompt's window (far from every trained frame: the scan prunes least).
    windows = [np.asarray(p[-model.window_size :], np.int64) for p in prompts]
    suffix, far = [], []
    for _ in range(5):
        for window in windows:
            suffix.append(timed(lambda window=window: model._longest_deployed_suffix(window))[1])
            slots = model.window_slots(window, np.array([0]), np.array([window.size]))[0]
            far.append(timed(lambda slots=slots: model.index.nearest(slots))[1])
    result["suffix_search_ms"] = 1000 * statistics.median(suffix)
    result["prompt_nearest_search_ms"] = 1000 * statistics.median(far)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    recall, result["recall_s"] = timed(lambda: model.recall(chunks))
    result["recall"] = recall.recall
    result["contexts"] = recall.contexts
    result["rss_mb"] = rss_mb()
    result["max_rss_mb"] = peak_rss_mb()
    out_path.write_text(json.dumps(result))


def peak_rss_mb(pid: int | str = "self") -> float:
    """The process's peak RSS (``VmHWM``), in MiB. Not ``getrusage``: a child of this large process
    inherits its parent's high-water mark across ``exec``, and would report it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def generate_command(root: Path) -> tuple[float, float]:
    """``hasher generate --max-tokens 64`` on a novel prompt: wall seconds and peak RSS (MiB, its
    ``VmHWM`` read every 5 ms until it exits)."""
    argv = [str(BIN / "hasher"), "generate", "--deployment-root", str(root), "--backend", "cpu"]
    argv += ["--prompt", NOVEL_PROMPTS[0], "--max-tokens", "64", "--max-distance", "10"]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    while proc.poll() is None:
        with contextlib.suppress(OSError, RuntimeError):  # exiting: its status is gone or empty
            peak = max(peak, peak_rss_mb(proc.pid))
        time.sleep(0.005)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"hasher generate failed: {proc.stderr.read().decode()[-2000:]}")
    return seconds, peak


def measure_deployment(size: int, checkpoints, chunks, work: Path) -> dict[str, float]:
    """Deploy the first chunks holding ``size`` frames and probe the model in a child process."""
    from hasher_core.bundle import build_bundle
    from hasher_resources.deploy.store import DeploymentStore

    table, chunks = first_chunks(checkpoints, chunks, size)
    checkpoints = split_partitions(table, 1)
    bundle, build_s = timed(lambda: build_bundle(checkpoints, pipeline_version="bench"))
    root = work / f"store-{label(size)}"
    store = DeploymentStore(root)
    report, deploy_s = timed(lambda: store.deploy(bundle, kernel_backend="cpu", retry_delay_s=0.0))
    assert report.status == "deployed", report.status
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    ends = np.cumsum([c.size for c in chunks])
    np.savez(work / "chunks.npz", tokens=tokens, ends=ends)
    out = work / f"probe-{label(size)}.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_scale",
            "--probe",
            str(root),
            str(work / "chunks.npz"),
            str(out),
        ],
        check=True,
        cwd=ROOT,
    )
    result = json.loads(out.read_text())
    result["command_s"], result["command_rss_mb"] = generate_command(root)
    result |= {"rows": bundle.num_rows, "build_s": build_s, "deploy_s": deploy_s, "bundle_mb": _size_mb(root)}
    return result


def _size_mb(root: Path) -> float:
    current = root / "current"
    return sum(p.stat().st_size for p in current.resolve().iterdir()) / 2**20


# --- build_bundle and redeploy at 1 M rows -----------------------------------------------------


def measure_build(checkpoints, partition_counts: list[int], work: Path) -> dict[str, float]:
    """build_bundle of the frames cut into each number of partitions, the group_by reference, and an
    unchanged redeploy ÷ reading the deployed files once."""
    import pyarrow as pa

    from hasher_core.bundle import build_bundle
    from hasher_resources.deploy.store import DeploymentStore

    result: dict[str, float] = {}
    warm = split_partitions(checkpoints.slice(0, 200), 1)
    build_bundle(warm, pipeline_version="warm-up")  # load the compiled kernels from Numba's cache
    bundle = None
    for count in partition_counts:
        parts = split_partitions(checkpoints, count)
        names = pa.chunked_array(
            [chunk for t in parts.values() for chunk in t.column("source_file").cast(pa.string()).chunks]
        )
        combined = pa.table({"source_file": names}).combine_chunks()
        _, reference = timed(
            lambda combined=combined: combined.group_by("source_file").aggregate([("source_file", "count")])
        )
        bundle, seconds = timed(lambda parts=parts: build_bundle(parts, pipeline_version="bench"))
        result[f"build_bundle_s_{count}"] = seconds
        result[f"group_by_s_{count}"] = reference
        del parts
    store = DeploymentStore(work / "store-redeploy")
    store.deploy(bundle, kernel_backend="cpu", retry_delay_s=0.0)
    report, seconds = timed(lambda: store.deploy(bundle, kernel_backend="cpu"))
    assert report.status == "unchanged", report.status
    directory = store.version_dir(bundle.version)
    _, read_s = timed(lambda: [p.read_bytes() for p in directory.iterdir()])
    result |= {"unchanged_redeploy_s": seconds, "read_files_s": read_s, "rows": bundle.num_rows}
    return result


# --- many small partitions through the assets ---------------------------------------------------


def measure_many(partitions: int, frames_each: int, work: Path) -> dict[str, float]:
    """Stages 1–4 of ``partitions`` inbox files of ~``frames_each`` frames each, run in ranges as a
    backfill runs them, ÷ one inbox file of about as many frames in one run."""
    import dagster as dg

    from hasher_assets.definitions import ASSET_CHECKS, ASSETS
    from hasher_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, partition_ranges, partitions_per_run
    from hasher_core.names import PARTITION_STAGES as TRAINING_STAGES
    from hasher_resources.asic.resource import EmulatedAsicDevice
    from hasher_resources.embedder import HashingEmbedder
    from hasher_resources.parquet_io import ParquetIOManager
    from hasher_resources.sha256.resource import Sha256Kernel
    from hasher_resources.storage import HasherStorage

    words_each = max(
        10, round(frames_each / 1.32)
    )  # ~1.32 tokens a word: a chunk of W words has ~1.32 W frames
    config = {"ops": {"seeds": {"config": {"difficulty_bits": 1}}}}

    def run(name: str, texts: dict[str, str]) -> tuple[float, int, int, int, float]:
        root = work / name
        for sub in ("inbox", "miner"):
            (root / sub).mkdir(parents=True)
        for file, text in texts.items():
            (root / "inbox" / file).write_text(text)
        storage = HasherStorage(
            miner_dir=str(root / "miner"),
            inbox_dir=str(root / "inbox"),
            data_dir=str(root / "data"),
            progress_dir=str(root / "data" / "seeds_progress"),
        )
        resources = {
            "storage": storage,
            "parquet_io_manager": ParquetIOManager(base_dir=storage.data_dir),
            "embedder": HashingEmbedder(),
            "kernel": Sha256Kernel(backend="cpu"),
            "asic": EmulatedAsicDevice(backend="cpu"),
        }
        keys = sorted(texts)
        runs, events = 0, 0
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("source_files", keys)
            # Every event of a run (planned, materialised, check evaluated, logs) is written through
            # handle_new_event: the seconds it takes are Dagster's bookkeeping, measured in the run.
            writes = [0.0]
            handle = instance.handle_new_event

            def timed_handle(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return handle(*args, **kwargs)
                finally:
                    writes[0] += time.perf_counter() - started

            instance.handle_new_event = timed_handle
            start = time.perf_counter()
            for chunk in partition_ranges(keys, keys, partitions_per_run()):
                tags = {RANGE_START_TAG: chunk[0], RANGE_END_TAG: chunk[-1]} if len(chunk) > 1 else {}
                result = dg.materialize(
                    [*ASSETS, *ASSET_CHECKS],
                    selection=dg.AssetSelection.assets(*TRAINING_STAGES),
                    partition_key=chunk[0] if len(chunk) == 1 else None,
                    tags=tags,
                    instance=instance,
                    resources=resources,
                    run_config=config,
                )
                runs += 1
                events += len(instance.all_logs(result.run_id))
            seconds = time.perf_counter() - start
        import pyarrow.parquet as pq

        frames = sum(
            pq.ParquetFile(p).metadata.num_rows for p in (root / "data" / "checkpoints").glob("*.parquet")
        )
        return seconds, frames, runs, events, writes[0]

    run("warm-up", {"warm.txt": bigram_text(words_each, seed=7)})  # compiled kernels loaded once
    small = {f"doc-{i:05d}.txt": bigram_text(words_each, seed=1000 + i) for i in range(partitions)}
    many_s, many_frames, runs, many_events, many_writes = run("many", small)
    # One file of as many frames: 150-word chunks overlapping by 25 words repeat 1/6 of the text.
    big_words = round(partitions * words_each * 125 / 150)
    one_s, one_frames, _, one_events, one_writes = run("one", {"one.txt": bigram_text(big_words, seed=99)})
    return {
        "event_ms": event_cost_ms(),
        "many_events": many_events,
        "one_events": one_events,
        "many_event_writes_s": many_writes,
        "one_event_writes_s": one_writes,
        "many_partitions_ratio_without_event_writes": (many_s - many_writes) / (one_s - one_writes),
        "many_s": many_s,
        "many_frames": many_frames,
        "many_runs": runs,
        "one_s": one_s,
        "one_frames": one_frames,
        "many_partitions_ratio": many_s / one_s,
        "many_partitions_ratio_per_frame": (many_s / many_frames) / (one_s / one_frames),
    }


def event_cost_ms(events: int = 200) -> float:
    """What Dagster's event log takes to store one asset event in a SQLite instance like the runs'
    (median of ``events`` runless materialisations): the per-partition bookkeeping of a run."""
    import dagster as dg

    times = []
    with dg.instance_for_test() as instance:
        for i in range(events):
            event = dg.AssetMaterialization(asset_key="bench_scale_probe", metadata={"i": i})
            times.append(timed(lambda event=event: instance.report_runless_asset_event(event))[1])
    return 1000 * statistics.median(times)


# --- the run -----------------------------------------------------------------------------------


def deployment_rows(name: str, r: dict) -> list[list[str]]:
    """The table rows of one deployment's probe."""
    t = TARGETS
    return [
        [name, "model open (map_bundle + load_model; imports before)", f"{r['open_s']:.2f} s",
         f"≤ {t['model_open_s']} s", f"{r['frames']:,} frames, bundle {r['bundle_mb']:.0f} MiB"],
        [name, "peak RSS of `hasher generate --max-tokens 64`", f"{r['command_rss_mb']:.0f} MiB",
         f"≤ {t['model_rss_mb']:.0f} MiB",
         f"whole command {r['command_s']:.1f} s; probe process peak {r['max_rss_mb']:.0f} MiB"],
        [name, "exact step, 1 / 2 Numba threads",
         f"{r['exact_step_ms_1threads']:.2f} / {r['exact_step_ms_2threads']:.2f} ms", "",
         f"{r['exact_share']:.0%} answered from the window"],
        [name, "nearest step, 1 / 2 threads (suffix search + search)",
         f"{r['nearest_step_ms_1threads']:.2f} / {r['nearest_step_ms_2threads']:.2f} ms",
         f"≤ {t['nearest_step_ms']} ms",
         f"{r['nearest_share']:.0%} nearest; of a prompt's step: suffix search "
         f"{r['suffix_search_ms']:.2f} ms, nearest-frame search {r['prompt_nearest_search_ms']:.2f} ms "
         f"(a query near a frame: {r['nearest_search_ms']:.2f} ms)"],
        [name, "recall over every context", f"{r['recall_s']:.1f} s", f"≤ {t['recall_s']:.0f} s",
         f"{r['contexts']:,} contexts, recall {r['recall']:.4f} (1-bit seeds)"],
    ]  # fmt: skip


def deployment_figures(name: str, r: dict) -> dict[str, float]:
    """The ``--json`` figures of one deployment's probe."""
    return {
        f"frames_{name}": r["frames"],
        f"model_open_s_{name}": r["open_s"],
        f"model_rss_mb_{name}": r["command_rss_mb"],
        f"probe_rss_mb_{name}": r["max_rss_mb"],
        f"exact_step_ms_{name}_1thread": r["exact_step_ms_1threads"],
        f"exact_step_ms_{name}_2threads": r["exact_step_ms_2threads"],
        f"nearest_step_ms_{name}": r["nearest_step_ms_2threads"],
        f"nearest_step_ms_{name}_1thread": r["nearest_step_ms_1threads"],
        f"nearest_search_ms_{name}": r["nearest_search_ms"],
        f"suffix_search_ms_{name}": r["suffix_search_ms"],
        f"prompt_nearest_search_ms_{name}": r["prompt_nearest_search_ms"],
        f"recall_s_{name}": r["recall_s"],
        f"generate_command_s_{name}": r["command_s"],
    }


def build_rows(name: str, b: dict, counts: list[int]) -> list[list[str]]:
    """The table rows of build_bundle and the unchanged redeploy."""
    rows = []
    for count in counts:
        seconds, reference = b[f"build_bundle_s_{count}"], b[f"group_by_s_{count}"]
        rows.append(
            [name, f"build_bundle, {count:,} partition(s)", f"{seconds:.2f} s",
             f"≤ {TARGETS['build_bundle_s']} s",
             f"{b['rows']:,} rows; pyarrow group_by of them {reference:.3f} s (÷ {seconds / reference:.0f})"]
        )  # fmt: skip
    rows.append(
        [name, "unchanged redeploy", f"{b['unchanged_redeploy_s']:.2f} s",
         f"≤ {TARGETS['unchanged_redeploy_s']} s", f"reading its files once {b['read_files_s']:.2f} s"]
    )  # fmt: skip
    return rows


def many_row(partitions: int, frames_each: int, m: dict) -> list[str]:
    """The table row of the many-partitions run."""
    from hasher_assets.partitions import partitions_per_run

    per_run = partitions_per_run() or "all"
    per_event = 1000 * m["many_event_writes_s"] / max(m["many_events"], 1)
    notes = (
        f"{m['many_frames']:,} vs {m['one_frames']:,} frames ({m['many_partitions_ratio_per_frame']:.2f} "
        f"per frame); {m['many_runs']} run(s) of ≤ {per_run} partitions; Dagster's event writes in the "
        f"runs (handle_new_event, timed): {m['many_events']:,} events in {m['many_event_writes_s']:.0f} s "
        f"({per_event:.1f} ms each; a runless event alone {m['event_ms']:.1f} ms) vs {m['one_events']:,} "
        f"in {m['one_event_writes_s']:.1f} s; without them "
        f"{m['many_s'] - m['many_event_writes_s']:.0f} s ÷ {m['one_s'] - m['one_event_writes_s']:.0f} s = "
        f"{m['many_partitions_ratio_without_event_writes']:.2f}"
    )
    measured = f"{m['many_s']:.0f} s ÷ {m['one_s']:.0f} s = {m['many_partitions_ratio']:.2f}"
    what = "stages 1–4 through the assets, ÷ one partition of as many frames"
    return [
        f"{partitions:,} × ~{frames_each}",
        what,
        measured,
        f"≤ {TARGETS['many_partitions_ratio']}",
        notes,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000,1000000", help="deployed frames (comma-separated)")
    parser.add_argument("--partitions", default="1,1000,10000", help="build_bundle partition counts")
    parser.add_argument("--many", default="1000x50", help="PARTITIONSxFRAMES of the asset run, or 'skip'")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    parser.add_argument("--probe", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        probe(*args.probe)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(s) for s in args.partitions.split(",")]
    figures: dict[str, float] = {}
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        work = Path(tmp)
        text = work / "scale.txt"
        text.write_text(bigram_text(int(max(sizes) * WORDS_PER_FRAME) + 2000))
        (frames, chunks), data_s = timed(lambda: frames_of_text(text))
        print(
            f"stages 1-2: {frames.num_rows:,} frames of {len(chunks):,} chunks in {data_s:.1f} s", flush=True
        )
        checkpoints, seeds_s = timed(lambda: one_bit_checkpoints(first_chunks(frames, chunks, max(sizes))[0]))
        print(f"1-bit seeds of {checkpoints.num_rows:,} frames in {seeds_s:.1f} s", flush=True)
        for size in sizes:
            r = measure_deployment(size, checkpoints, chunks, work)
            print(f"{label(size)}: {json.dumps(r)}", flush=True)
            figures |= deployment_figures(label(size), r)
            rows += deployment_rows(label(size), r)
        b = measure_build(checkpoints, counts, work)
        name = label(max(sizes))
        for count in counts:
            figures[f"build_bundle_s_{name}_{count}_partitions"] = b[f"build_bundle_s_{count}"]
        figures[f"unchanged_redeploy_s_{name}"] = b["unchanged_redeploy_s"]
        rows += build_rows(name, b, counts)
        if args.many != "skip":
            partitions, frames_each = (int(x) for x in args.many.split("x"))
            m = measure_many(partitions, frames_each, work)
            names = (
                "many_partitions_ratio",
                "many_partitions_ratio_per_frame",
                "many_partitions_ratio_without_event_writes",
                "many_event_writes_s",
                "many_s",
                "one_s",
            )
            figures |= {k: m[k] for k in (*names, "many_events", "one_events", "event_ms")}
            rows.append(many_row(partitions, frames_each, m))
    figures["load_average"] = os.getloadavg()[0]
    headers = ["size", "what", "measured", "target", "reference in the same run / notes"]
    notes = (
        "Deployments made at 1 bit through the store: stages 1–2 of a bigram text of the Language "
        "Reference, 1-bit seeds on the CPU kernel, build_bundle, DeploymentStore.deploy (see the "
        "module docstring). The model is probed in a fresh process as `hasher generate` opens it; "
        "`model open` excludes imports (the whole command's seconds are in the RSS row). The asset run "
        "is dg.materialize in process with a SQLite instance, the emulated ASIC and the checks, at "
        f"1 bit. Load average at the end: {load()} (the machine is shared: wall times are the "
        "contended ones)."
    )
    title = "Scale: a million deployed frames and ten thousand partitions"
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    if args.no_record:
        print(f"\n{title}\n{table(headers, rows)}\n{notes}")
        return
    record(title, headers, rows, notes)


if __name__ == "__main__":
    main()
