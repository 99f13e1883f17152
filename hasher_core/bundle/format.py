"""The deployment bundle (DESIGN §6): one seed table from the validated checkpoints of all partitions,
its frame fingerprints and a manifest, serialised to three files with SHA-256 checksums.

A bundle is built in memory with its file payloads already serialised, so the checksums in the
manifest are the checksums of the exact bytes the deployment store writes; :func:`parse_bundle` is
the way back from those bytes. Nothing here touches a disk (``hasher_resources.deploy.bundle_files`` does).

The bundle's **version is content-addressed**: the first 16 hex digits of a SHA-256 over a
canonical encoding of the seed table plus the pipeline version and header constants (never the
creation time, never the Parquet writer's bytes). The same seeds always give the same version, so
re-deploying an unchanged bundle is detected as a no-op and a directory name says what is in it.

Files of a bundle directory:

- ``seeds.parquet`` — one row per frame, in a deterministic order (partition, source file, chunk,
  window end, target, fingerprint);
- ``fingerprints.txt`` — the distinct frame fingerprints, sorted, one per line (what a device or
  a diff needs without opening Parquet);
- ``manifest.json`` — versions, header constants, counts per partition, checksums of the two files,
  and ``manifest_sha256``, the SHA-256 of the manifest's own canonical bytes without that field, so a
  flipped bit anywhere in the manifest (its creation time included) is caught too.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hasher_core import design
from hasher_core.errors import (
    BundleChecksumError,
    BundleError,
    BundleFormatError,
    BundleInputError,
    NoCheckpointsError,
)
from hasher_core.frames.recipe import recipe_from_metadata, recipe_problems
from hasher_core.schemas import SEED_TABLE_SCHEMA

from .rows import partition_rows

#: v2: token-aligned objective (DESIGN §4.3) and the frame recipe in the manifest (§6).
BUNDLE_FORMAT = "hasher-bundle-v2"
SEEDS_FILE = "seeds.parquet"
FINGERPRINTS_FILE = "fingerprints.txt"
MANIFEST_FILE = "manifest.json"
#: Files whose checksums the manifest carries (the manifest cannot carry its own).
PAYLOAD_FILES = (SEEDS_FILE, FINGERPRINTS_FILE)
VERSION_HEX_DIGITS = 16
#: The manifest's field holding the SHA-256 of its canonical bytes without that field.
MANIFEST_DIGEST = "manifest_sha256"
#: Every field a manifest has (older bundles lack ``MANIFEST_DIGEST``); any other is damage.
MANIFEST_FIELDS = frozenset(
    {
        "format",
        "version",
        "content_digest",
        "pipeline_version",
        "algorithm_version",
        "header_constants",
        "recipe",
        "only_solved",
        "partitions",
        "total_rows",
        "solved_rows",
        "distinct_frames",
        "created_at",
        "files",
        MANIFEST_DIGEST,
    }
)

SORT_KEYS = ("partition", "source_file", "chunk_id", "window_end", "target_token_id", "fingerprint")


@dataclass(frozen=True)
class Bundle:
    """A seed table, its manifest and the exact bytes of its files."""

    seeds: pa.Table
    manifest: dict[str, Any]
    files: Mapping[str, bytes] = field(repr=False)

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def content_digest(self) -> str:
        return str(self.manifest["content_digest"])

    @property
    def num_rows(self) -> int:
        return self.seeds.num_rows

    def slots(self) -> np.ndarray:
        """The frames' slots as uint32[N, 12]."""
        return slots_array(self.seeds)

    def best_seeds(self) -> np.ndarray:
        """The seeds as uint8[N, 32]."""
        return seeds_array(self.seeds)


def header_constants() -> dict[str, Any]:
    """The constants that fix a seed's golden; a device or a later release checks them before use."""
    return {
        "algorithm_version": design.ALGORITHM_VERSION,
        "header_version": design.HEADER_VERSION,
        "header_bits": design.HEADER_BITS,
        "passes": design.PASSES,
        "slot_count": design.SLOT_COUNT,
        "seed_bytes": design.SEED_BYTES,
        "jitter_phase2_start": design.JITTER_PHASE2_START,
        "jitter_phase3_start": design.JITTER_PHASE3_START,
        "jitter_clz_threshold": design.JITTER_CLZ_THRESHOLD,
        "jitter_low_clz_xor": design.JITTER_LOW_CLZ_XOR,
        "jitter_high_clz_xor": design.JITTER_HIGH_CLZ_XOR,
    }


def slots_array(seeds: pa.Table) -> np.ndarray:
    """uint32[N, 12] from a seed table's ``slots`` column."""
    col = seeds.column("slots").combine_chunks()
    return np.asarray(col.flatten().to_numpy(), dtype=np.uint32).reshape(-1, design.SLOT_COUNT)


def seeds_array(seeds: pa.Table) -> np.ndarray:
    """uint8[N, 32] from a seed table's ``best_seed`` column."""
    return _fixed_binary_bytes(seeds.column("best_seed").combine_chunks()).reshape(-1, design.SEED_BYTES)


def _fixed_binary_bytes(arr: pa.FixedSizeBinaryArray) -> np.ndarray:
    width = arr.type.byte_width
    data = arr.buffers()[1]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
    return raw[arr.offset * width : (arr.offset + len(arr)) * width].copy()


def _canonical_column_bytes(col: pa.ChunkedArray) -> bytes:
    """Bytes that depend only on the values (not on chunking, offsets or the Parquet writer)."""
    arr = col.combine_chunks()
    t = arr.type
    if pa.types.is_string(t):
        # Offsets rebased to zero plus the character data: the values, whatever the slicing.
        offsets = np.frombuffer(arr.buffers()[1], dtype="<i4")[arr.offset : arr.offset + len(arr) + 1]
        data = arr.buffers()[2]
        chars = data.to_pybytes()[offsets[0] : offsets[-1]] if data is not None and len(arr) else b""
        return (offsets - offsets[0]).astype("<i4").tobytes() + chars
    if pa.types.is_fixed_size_binary(t):
        return _fixed_binary_bytes(arr).tobytes()
    if pa.types.is_fixed_size_list(t):
        values = arr.flatten().to_numpy()
        return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
    if pa.types.is_boolean(t):
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.uint8).tobytes()
    values = arr.to_numpy()
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()


def content_digest(
    seeds: pa.Table, pipeline_version: str, constants: Mapping[str, Any], recipe: Mapping[str, Any]
) -> str:
    """SHA-256 (hex) over the seed table's values and everything that gives them meaning: the header
    constants and the frame recipe (the same seeds under another recipe are another model)."""
    h = hashlib.sha256()
    identity = {
        "format": BUNDLE_FORMAT,
        "pipeline_version": pipeline_version,
        "header_constants": constants,
        "recipe": recipe,
    }
    h.update(json.dumps(identity, sort_keys=True).encode())
    h.update(seeds.num_rows.to_bytes(8, "little"))
    for name in SEED_TABLE_SCHEMA.names:
        h.update(name.encode() + b"\0")
        h.update(hashlib.sha256(_canonical_column_bytes(seeds.column(name))).digest())
    return h.hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _serialise_seeds(seeds: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(seeds, buf, compression="zstd")
    return buf.getvalue()


def _fingerprints_text(seeds: pa.Table) -> bytes:
    distinct = sorted(set(seeds.column("fingerprint").to_pylist()))
    return "".join(f + "\n" for f in distinct).encode("utf-8")


def bundle_recipe(checkpoints: Mapping[str, pa.Table | None], seeds: pa.Table) -> dict[str, Any]:
    """The frame recipe every partition's checkpoints carry (they must agree), with the seeds'
    difficulty (``difficulty_bits``: the distinct difficulties of the rows). Raises
    :class:`BundleInputError` naming the partition whose recipe is missing or differs."""
    recipe: dict[str, Any] | None = None
    first = ""
    for key, table in sorted(checkpoints.items()):
        if table is None or not table.num_rows:
            continue
        found = recipe_from_metadata(table.schema.metadata)
        if found is None:
            raise BundleInputError(
                key, "recipe", "the checkpoints carry no frame recipe (made by an older release)"
            )
        if recipe is None:
            recipe, first = found, key
        elif found != recipe:
            field = next(k for k in sorted({*found, *recipe}) if found.get(k) != recipe.get(k))
            raise BundleInputError(
                key,
                "recipe",
                f"field {field!r} is {found.get(field)!r}, partition {first!r} has {recipe.get(field)!r}",
            )
    assert recipe is not None  # build_bundle only asks when a partition has rows
    difficulties = sorted(set(seeds.column("difficulty_bits").to_pylist()))
    return {**recipe, "difficulty_bits": difficulties}


def build_bundle(
    checkpoints: Mapping[str, pa.Table], *, pipeline_version: str, only_solved: bool = False
) -> Bundle:
    """One bundle from the checkpoints of every partition (``{partition_key: table}``).

    Rows are sorted deterministically, so the same checkpoints always give the same bundle version.
    Raises :class:`NoCheckpointsError` when no partition contributes a row and
    :class:`BundleInputError` naming the partition and column for a malformed checkpoint.
    """
    looked_at = {key: (t.num_rows if t is not None else 0) for key, t in sorted(checkpoints.items())}
    parts = [
        partition_rows(key, table, only_solved)
        for key, table in sorted(checkpoints.items())
        if table is not None
    ]
    parts = [p for p in parts if p.num_rows]
    if not parts:
        what = "solved checkpoint rows" if only_solved else "checkpoint rows"
        seen = ", ".join(f"{k!r} ({n} rows)" for k, n in looked_at.items()) or "none (no partitions)"
        raise NoCheckpointsError(f"nothing to deploy: no partition has {what}; partitions looked at: {seen}")
    seeds = pa.concat_tables(parts)
    seeds = seeds.take(pc.sort_indices(seeds, sort_keys=[(k, "ascending") for k in SORT_KEYS]))
    seeds = seeds.combine_chunks()

    constants = header_constants()
    recipe = bundle_recipe(checkpoints, seeds)
    digest = content_digest(seeds, pipeline_version, constants, recipe)
    files = {SEEDS_FILE: _serialise_seeds(seeds), FINGERPRINTS_FILE: _fingerprints_text(seeds)}
    per_partition: dict[str, dict[str, int]] = {}
    part_col = seeds.column("partition").to_numpy(zero_copy_only=False)
    solved_col = seeds.column("solved").to_numpy(zero_copy_only=False)
    for key in looked_at:
        mask = part_col == key
        per_partition[key] = {"rows": int(mask.sum()), "solved": int(solved_col[mask].sum())}
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "version": digest[:VERSION_HEX_DIGITS],
        "content_digest": digest,
        "pipeline_version": pipeline_version,
        "algorithm_version": design.ALGORITHM_VERSION,
        "header_constants": constants,
        "recipe": recipe,
        "only_solved": only_solved,
        "partitions": per_partition,
        "total_rows": seeds.num_rows,
        "solved_rows": int(solved_col.sum()),
        "distinct_frames": files[FINGERPRINTS_FILE].count(b"\n"),
        "created_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in files.items()},
    }
    manifest[MANIFEST_DIGEST] = _sha256(_manifest_bytes(manifest))
    files[MANIFEST_FILE] = _manifest_bytes(manifest)
    return Bundle(seeds=seeds, manifest=manifest, files=files)


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")


def bundle_version(bundle: Bundle) -> str:
    """The bundle's content-addressed version: 16 hex digits of its content digest (see module doc)."""
    return bundle.content_digest[:VERSION_HEX_DIGITS]


def parse_bundle(files: Mapping[str, bytes], where: Path | str, *, verify: bool = True) -> Bundle:
    """A bundle from the bytes of its files (``{file name: bytes}``; ``where`` names the directory
    in errors). With ``verify`` check every checksum, the content digest, the fingerprints list and
    that the header constants are this release's.

    Raises :class:`BundleChecksumError` naming the file and both digests on a mismatch and
    :class:`BundleFormatError` when a file is missing or does not parse.
    """
    try:
        return _parse_bundle(files, Path(where), verify=verify)
    except BundleError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        # A damaged manifest that still parses as JSON (a flipped bit in a key or a type).
        raise BundleFormatError(Path(where) / MANIFEST_FILE, f"not a valid bundle manifest ({e!r})") from None


def _parse_bundle(files: Mapping[str, bytes], directory: Path, *, verify: bool) -> Bundle:
    manifest_path = directory / MANIFEST_FILE
    manifest_raw = files.get(MANIFEST_FILE)
    if manifest_raw is None:
        raise BundleFormatError(manifest_path, "missing: not a bundle directory")
    try:
        manifest = json.loads(manifest_raw)
        declared = manifest["files"]
        version, digest = manifest["version"], manifest["content_digest"]
    except (ValueError, KeyError, TypeError) as e:
        raise BundleFormatError(manifest_path, f"not a valid bundle manifest ({e!r})") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        old = " (a bundle of the old objective predicts no token: retrain and deploy)" * (
            manifest.get("format") == "hasher-bundle-v1"
        )
        raise BundleFormatError(
            manifest_path, f"format {manifest.get('format')!r}, expected {BUNDLE_FORMAT!r}{old}"
        )
    for name in PAYLOAD_FILES:
        path = directory / name
        if name not in declared:
            raise BundleFormatError(manifest_path, f"does not list {name}")
        if name not in files:
            raise BundleFormatError(path, "missing")
        if verify:
            actual = _sha256(files[name])
            if actual != declared[name]["sha256"]:
                raise BundleChecksumError(path, declared[name]["sha256"], actual)
    try:
        seeds = pq.read_table(io.BytesIO(files[SEEDS_FILE]))
    except (pa.ArrowInvalid, OSError) as e:
        raise BundleFormatError(directory / SEEDS_FILE, f"not readable Parquet ({e})") from None
    if seeds.schema.remove_metadata() != SEED_TABLE_SCHEMA:
        raise BundleFormatError(directory / SEEDS_FILE, f"unexpected schema {seeds.schema}")
    bundle = Bundle(seeds=seeds, manifest=manifest, files=dict(files))
    if verify:
        actual = content_digest(
            seeds, manifest["pipeline_version"], manifest["header_constants"], manifest.get("recipe")
        )
        if actual != digest:
            raise BundleChecksumError(
                directory / SEEDS_FILE, digest, actual, what="seed-table content digest"
            )
        if version != digest[:VERSION_HEX_DIGITS]:
            raise BundleFormatError(manifest_path, f"version {version!r} is not the content digest's prefix")
        if files[FINGERPRINTS_FILE] != _fingerprints_text(seeds):
            raise BundleFormatError(
                directory / FINGERPRINTS_FILE, "does not list the seed table's distinct fingerprints"
            )
        if problems := recipe_problems(manifest.get("recipe")):
            raise BundleFormatError(
                manifest_path, "this release cannot rebuild its frames from text: " + "; ".join(problems)
            )
        if manifest.get("header_constants") != header_constants():
            raise BundleFormatError(
                manifest_path,
                "header constants differ from this release's "
                f"({manifest.get('header_constants')} vs {header_constants()}); seeds would not reproduce",
            )
        # Last, so a manifest edited on purpose fails on the field that was edited.
        if unknown := sorted(set(manifest) - MANIFEST_FIELDS):
            raise BundleFormatError(manifest_path, f"unknown field(s) {unknown}: damaged")
        if MANIFEST_DIGEST in manifest:  # bundles written before it have none
            own = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST}
            actual = _sha256(_manifest_bytes(own))
            if manifest_raw != _manifest_bytes(manifest) or actual != manifest[MANIFEST_DIGEST]:
                raise BundleChecksumError(
                    manifest_path, str(manifest[MANIFEST_DIGEST]), actual, what="manifest sha256"
                )
    return bundle


__all__ = [
    "BUNDLE_FORMAT",
    "FINGERPRINTS_FILE",
    "MANIFEST_FILE",
    "SEEDS_FILE",
    "Bundle",
    "build_bundle",
    "bundle_version",
    "content_digest",
    "header_constants",
    "parse_bundle",
    "seeds_array",
    "slots_array",
]
