"""The one partitioning scheme of the pipeline: a dynamic partition per source file.

Also owns finding those source files (shared by the sensor and ``hasher partitions sync``): the
miner directory's knowledge base, one partition per ``file_name`` in it, and one per inbox file.
"""

import hashlib
from pathlib import Path

import dagster as dg

from hasher_core.knowledge import discovery_candidates, inbox_files, list_source_files
from hasher_resources.storage import HasherStorage

#: One partition per source file (a Data Miner ``file_name`` or an inbox file); keys are made safe
#: by ``hasher_core.knowledge.safe_partition_key`` and the original name stays in the data.
source_files = dg.DynamicPartitionsDefinition(name="source_files")


CURSOR_VERSION = 1


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def scan_sources(
    storage: HasherStorage, cursor: dict, max_files: int
) -> tuple[dict[str, str], dict, list[str]]:
    """Compare the miner directory and inbox with the cursor.

    Returns ``(changed partitions → fingerprint, new cursor, log lines)``. Plain function so the
    quickstart and tests can call it without a sensor context.
    """
    files: dict[str, dict] = dict(cursor.get("files", {}))
    partitions: dict[str, str] = dict(cursor.get("partitions", {}))
    changed: dict[str, str] = {}
    notes: list[str] = []
    candidates: list[tuple[str, Path]] = []
    miner = storage.miner_path
    if miner.is_dir():
        existing = [p for p in discovery_candidates(miner) if p.is_file()]
        if existing:  # only the file discovery would use; later candidates are fallbacks
            candidates.append(("miner", existing[0]))
    if storage.inbox_path.is_dir():
        candidates += [("inbox", p) for p in inbox_files(storage.inbox_path).values()]
    handled = 0
    for kind, path in candidates:
        stat = _stat_key(path)
        previous = files.get(str(path))
        if previous is not None and previous.get("stat") == stat:
            continue
        if handled >= max_files:
            notes.append(f"deferred {path} to the next tick (limit {max_files} changed files per tick)")
            continue
        handled += 1
        digest = _file_digest(path)
        if previous is not None and previous.get("digest") == digest:
            files[str(path)] = {"stat": stat, "digest": digest, "keys": previous.get("keys", [])}
            notes.append(f"{path}: touched but content unchanged")
            continue
        if kind == "inbox":
            per_key = {k: digest for k, p in inbox_files(storage.inbox_path).items() if p == path}
        else:
            per_key = {k: info.fingerprint for k, info in list_source_files(miner).items()}
        for key, fingerprint in per_key.items():
            if partitions.get(key) != fingerprint:
                changed[key] = fingerprint
                partitions[key] = fingerprint
        files[str(path)] = {"stat": stat, "digest": digest, "keys": sorted(per_key)}
        notes.append(
            f"{path}: {len(per_key)} source file(s), {sum(k in changed for k in per_key)} new or changed"
        )
    return changed, {"version": CURSOR_VERSION, "files": files, "partitions": partitions}, notes


def register_partitions(instance: dg.DagsterInstance, storage: HasherStorage) -> list[str]:
    """Add a partition for every source file found now; returns all keys, sorted."""
    _, cursor, _ = scan_sources(storage, {}, max_files=1_000_000)
    keys = sorted(cursor["partitions"])
    existing = set(instance.get_dynamic_partitions(source_files.name))
    new = [k for k in keys if k not in existing]
    if new:
        instance.add_dynamic_partitions(source_files.name, new)
    return keys
