"""Benchmark of many partitions: registering, watching and browsing thousands of source files.

One command: ``python -m benchmarks.bench_partitions`` (1,000 and 10,000 source files, about two
minutes); ``--files N [N ...]`` for other sizes. Each size gets a fresh scratch directory: half the
source files are small inbox ``.txt`` files, half are documents of one Data Miner Parquet file (one
chunk each), and a SQLite Dagster instance. Timed, each against a reference of the same run:

1. ``hasher partitions sync`` as a user runs it (a new process) ÷ listing the inbox and reading
   every input byte once (the floor of any first scan);
2. a sensor tick (``miner_output_sensor`` evaluated on the instance) with nothing changed, and one
   after 100 inbox files changed (``HASHER_SENSOR_MAX_FILES=100``) ÷ listing and stating every file;
3. the GraphQL query of the ``seeds`` partitions page (keys, stats, statuses) on a running
   ``dagster-webserver`` ÷ the same server's ``{ version }``.

Targets at 10,000 files: sync under 10 s, unchanged tick under 2 s, partitions query under 2 s.
It prints and appends the table to benchmarks/RESULTS.md (``--no-record``: print only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.results import record
from hasher_core.design import EMBEDDING_DIMS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHANGED = 100
TARGETS_S = {"sync": 10.0, "unchanged tick": 2.0, "partitions query": 2.0}
SERVER_START_S = 120
STOP_S = 20
#: The UI's partitions page of an asset asks for its keys, its counts and each key's status.
PARTITIONS_QUERY = """
query SeedsPartitions {
  assetNodeOrError(assetKey: {path: ["seeds"]}) {
    ... on AssetNode {
      partitionKeysByDimension { name partitionKeys }
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses {
          materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions
        }
      }
    }
  }
}
"""


def make_sources(root: Path, files: int) -> dict[str, str]:
    """Half the ``files`` as inbox texts, half as one-chunk documents of a miner Parquet file; returns
    the environment that points hasher at them."""
    inbox, miner = root / "inbox", root / "miner"
    inbox.mkdir(parents=True)
    miner.mkdir()
    in_inbox = files // 2
    for i in range(in_inbox):
        (inbox / f"note_{i:05d}.txt").write_text(
            f"Inbox note number {i}: a few words of plain text to chunk.\n"
        )
    documents = files - in_inbox
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((documents, EMBEDDING_DIMS), dtype=np.float32)
    table = pa.table({
        "file_name": [f"doc_{i:05d}.pdf" for i in range(documents)],
        "chunk_id": pa.array(np.zeros(documents, np.int32)),
        "content": [f"Document {i}: what the miner extracted from it." for i in range(documents)],
        "embedding": pa.FixedSizeListArray.from_arrays(embedding.reshape(-1), EMBEDDING_DIMS).cast(
            pa.list_(pa.float32())
        ),
    })  # fmt: skip
    pq.write_table(table, miner / "ai_knowledge_base.parquet")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    # A file is trusted by its stat only once it is older than the clock's granularity (files.py).
    time.sleep(2.1)
    return {
        "DAGSTER_HOME": str(home),
        "HASHER_MINER_DIR": str(miner),
        "HASHER_INBOX_DIR": str(inbox),
        "HASHER_DATA_DIR": str(root / "data"),
    }


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def read_everything(env: dict[str, str]) -> int:
    """The reference of a first scan: list the inbox, read every inbox file and the miner file."""
    total = 0
    for directory in (env["HASHER_INBOX_DIR"], env["HASHER_MINER_DIR"]):
        with os.scandir(directory) as listing:
            for entry in listing:
                with open(entry.path, "rb") as f:
                    total += len(f.read())
    return total


def stat_everything(env: dict[str, str]) -> int:
    """The reference of a tick: list the directories and stat every file."""
    count = 0
    for directory in (env["HASHER_INBOX_DIR"], env["HASHER_MINER_DIR"]):
        with os.scandir(directory) as listing:
            for entry in listing:
                os.stat(entry.path)
                count += 1
    return count


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def sensor_ticks(env: dict[str, str], files: int) -> dict[str, object]:
    """Cursor from a first full tick, then an unchanged tick and a tick after 100 changed files."""
    import dagster as dg

    from hasher_assets.sensors import miner_output_sensor
    from hasher_resources.storage import HasherStorage

    storage = HasherStorage(
        miner_dir=env["HASHER_MINER_DIR"], inbox_dir=env["HASHER_INBOX_DIR"], data_dir=env["HASHER_DATA_DIR"]
    )
    out: dict[str, object] = {}
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:

        def tick(cursor: str | None):
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"storage": storage}
            )
            return miner_output_sensor(context)

        with environment({"HASHER_SENSOR_MAX_FILES": str(files + 1)}):
            first, out["first tick s"] = timed(lambda: tick(None))
        cursor = first.cursor
        with environment({"HASHER_SENSOR_MAX_FILES": "8"}):
            unchanged, out["unchanged tick s"] = timed(lambda: tick(cursor))
        if isinstance(unchanged, dg.SensorResult) and unchanged.run_requests:
            raise SystemExit(f"an unchanged tick requested {len(unchanged.run_requests)} runs")
        _, out["reference stat s"] = timed(lambda: stat_everything(env))
        inbox = sorted(Path(env["HASHER_INBOX_DIR"]).iterdir())[:CHANGED]
        for path in inbox:
            path.write_text(path.read_text() + "An edit.\n")
        with environment({"HASHER_SENSOR_MAX_FILES": str(CHANGED)}):
            changed, out["changed tick s"] = timed(lambda: tick(cursor))
        # Consecutive partitions share a run (HASHER_PARTITIONS_PER_RUN): count what the runs name.
        kb = [r.run_config["ops"]["knowledge_base"]["config"] for r in changed.run_requests]
        named = sum(len(c["requested_sources"]) if "requested_sources" in c else 1 for c in kb)
        if named != len(inbox):
            raise SystemExit(
                f"{len(inbox)} changed files requested {named} partitions in {len(changed.run_requests)} runs"
            )
        out["changed files"] = len(inbox)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> tuple[dict, float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as answer:
        body = json.loads(answer.read())
    seconds = time.perf_counter() - t0
    if "errors" in body:
        raise SystemExit(f"GraphQL errors: {body['errors']}")
    return body["data"], seconds


def partitions_query(env: dict[str, str], files: int) -> dict[str, object]:
    """Median of three queries of the seeds partitions page on a dagster-webserver of the instance."""
    port = _free_port()
    log = Path(env["DAGSTER_HOME"]) / "webserver.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(BIN / "dagster-webserver"), "-m", "hasher_assets.definitions",
             "-h", "127.0.0.1", "-p", str(port)],
            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                raise SystemExit(f"dagster-webserver exited {server.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"dagster-webserver did not answer within {SERVER_START_S} s") from None
                time.sleep(0.5)
        graphql(port, PARTITIONS_QUERY)  # the first query loads the code location's snapshot
        versions = [graphql(port, "{ version }")[1] for _ in range(3)]
        answers = [graphql(port, PARTITIONS_QUERY) for _ in range(3)]
        node = answers[0][0]["assetNodeOrError"]
        keys = node["partitionKeysByDimension"][0]["partitionKeys"]
        if len(keys) != files or node["partitionStats"]["numPartitions"] != files:
            raise SystemExit(f"the partitions page shows {len(keys)} keys, expected {files}")
        return {
            "query s": statistics.median(s for _, s in answers),
            "version s": statistics.median(versions),
        }
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=STOP_S)


def run(files: int) -> list[list[object]]:
    with tempfile.TemporaryDirectory(prefix="bench-partitions-") as tmp:
        env = make_sources(Path(tmp), files)
        _, read_s = timed(lambda: read_everything(env))
        sync_command = [str(BIN / "hasher"), "partitions", "sync"]
        sync_env = {**os.environ, **env}
        sync, sync_s = timed(
            lambda: subprocess.run(sync_command, env=sync_env, capture_output=True, text=True, timeout=1800)
        )
        if sync.returncode != 0 or len(sync.stdout.split()) != files:
            raise SystemExit(f"hasher partitions sync failed or listed the wrong keys: {sync.stderr[-2000:]}")
        ticks = sensor_ticks(env, files)
        query = partitions_query(env, files)
    stat_s, version_s = float(ticks["reference stat s"]), float(query["version s"])

    def row(what: str, seconds: float, reference: float, reference_name: str, target: str = "") -> list:
        limit = TARGETS_S.get(target) if files == 10_000 else None
        verdict = "-" if limit is None else ("pass" if seconds < limit else "FAIL") + f" (< {limit:g} s)"
        ratio = f"{seconds / reference:,.1f}" if reference > 0 else "-"
        return [f"{files:,}", what, f"{seconds:.3f}", f"{ratio} × {reference_name}", verdict]

    reading = f"reading every input ({read_s:.3f} s)"
    listing = f"listing + stat of every file ({stat_s:.3f} s)"
    version = f"`{{ version }}` ({version_s * 1000:.0f} ms)"
    changed = f"sensor tick, {ticks['changed files']} files changed"
    return [
        row("`hasher partitions sync` (new process)", sync_s, read_s, reading, "sync"),
        row("first sensor tick (every file new)", float(ticks["first tick s"]), read_s, reading),
        row(
            "sensor tick, nothing changed",
            float(ticks["unchanged tick s"]),
            stat_s,
            listing,
            "unchanged tick",
        ),
        row(changed, float(ticks["changed tick s"]), stat_s, listing),
        row(
            "GraphQL: seeds partitions page", float(query["query s"]), version_s, version, "partitions query"
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1_000, 10_000], help="source files per size")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)
    if any(n < 2 for n in args.files):
        parser.error("--files: every size must be at least 2 (half inbox, half miner documents)")
    rows = [r for n in args.files for r in run(n)]
    headers = ["source files", "what", "seconds", "÷ reference of the same run", "target at 10,000"]
    if args.no_record:
        from benchmarks.results import table as markdown

        print(markdown(headers, rows))
        return
    sizes = ", ".join(f"{n:,}" for n in args.files)
    record(
        f"Many partitions: sync, sensor ticks and the partitions page ({sizes} source files)",
        headers,
        rows,
        notes="Half the source files are inbox .txt files, half one-chunk documents of one miner Parquet "
        "file; "
        "SQLite instance. Ticks evaluate `miner_output_sensor` on the instance (the daemon adds its own "
        "bookkeeping); the partitions query is the median of three after one warm-up query. "
        "`python -m benchmarks.bench_partitions --files N ...` for other sizes.",
    )


if __name__ == "__main__":
    main()
