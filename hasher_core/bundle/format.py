"""The deployment bundle (DESIGN §6): one seed table from the validated checkpoints of all partitions,
its frame fingerprints, its inference index and a manifest, serialised to files with SHA-256 checksums.

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
- ``index.json`` and ``index-*.npy`` — the inference index (``hasher_core.inference.index``): what
  a deployed model looks contexts up in, computed here once so that opening a model rebuilds
  nothing (format v3; a v2 bundle has none and a model builds it in memory when it opens);
- ``manifest.json`` — versions, header constants, counts per partition, checksums of the other files,
  and ``manifest_sha256``, the SHA-256 of the manifest's own canonical bytes without that field, so a
  flipped bit anywhere in the manifest (its creation time included) is caught too.

Building costs time proportional to the rows, whatever the number of partitions: the checkpoints
are validated as one table (``rows``), sorted once, and counted per partition with one group-by.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hasher_core import design
from hasher_core.errors import (
    BundleChecksumError,
    BundleError,
    BundleFormatError,
    BundleInputError,
    NoCheckpointsError,
)
from hasher_core.frames.recipe import RECIPE_METADATA_KEY, recipe_from_metadata, recipe_problems
from hasher_core.jit import njit
from hasher_core.schemas import SEED_TABLE_SCHEMA

from .index import INDEX_FILES, PARAMS_FILE, InferenceIndex, build_index
from .rows import _fixed_binary_bytes, seed_rows, seeds_array, slots_array

#: v2: token-aligned objective (DESIGN §4.3) and the frame recipe in the manifest (§6).
#: v3: the inference index beside the seed table (same seed table and digest rules as v2).
BUNDLE_FORMAT = "hasher-bundle-v3"
V2_FORMAT = "hasher-bundle-v2"
SEEDS_FILE = "seeds.parquet"
FINGERPRINTS_FILE = "fingerprints.txt"
MANIFEST_FILE = "manifest.json"
#: Files whose checksums the manifest carries (the manifest cannot carry its own).
PAYLOAD_FILES = (SEEDS_FILE, FINGERPRINTS_FILE, *INDEX_FILES)
V2_PAYLOAD_FILES = (SEEDS_FILE, FINGERPRINTS_FILE)
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
        "inference_frames",
        "created_at",
        "files",
        MANIFEST_DIGEST,
    }
)


def payload_files(manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """The files a bundle of this manifest's format holds besides the manifest."""
    return V2_PAYLOAD_FILES if manifest.get("format") == V2_FORMAT else PAYLOAD_FILES


SORT_KEYS = ("partition", "source_file", "chunk_id", "window_end", "target_token_id", "fingerprint")


class Bundle:
    """A seed table, its manifest, the exact bytes of its files and its inference index.

    ``seeds`` may be given as a loader (the deployment store maps a bundle's index and reads its
    seed table only when something asks for it: a model answering from the index never does).
    """

    def __init__(
        self,
        *,
        seeds: pa.Table | None = None,
        manifest: dict[str, Any],
        files: Mapping[str, bytes],
        index: InferenceIndex | None = None,
        load_seeds: Callable[[], pa.Table] | None = None,
    ) -> None:
        if seeds is None and load_seeds is None:
            raise ValueError("a Bundle needs its seed table or a loader for it")
        self.manifest = manifest
        self.files = files
        self.index = index
        self._seeds = seeds
        self._load_seeds = load_seeds

    def __repr__(self) -> str:
        return f"Bundle(version={self.version!r}, rows={self.num_rows})"

    @property
    def seeds(self) -> pa.Table:
        """The seed table (``SEED_TABLE_SCHEMA``), read on first use when the bundle was mapped."""
        if self._seeds is None:
            assert self._load_seeds is not None
            self._seeds = self._load_seeds()
        return self._seeds

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def content_digest(self) -> str:
        return str(self.manifest["content_digest"])

    @property
    def num_rows(self) -> int:
        if self._seeds is not None:
            return self._seeds.num_rows
        return int(self.manifest["total_rows"])

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
    seeds: pa.Table,
    pipeline_version: str,
    constants: Mapping[str, Any],
    recipe: Mapping[str, Any],
    bundle_format: str = BUNDLE_FORMAT,
) -> str:
    """SHA-256 (hex) over the seed table's values and everything that gives them meaning: the header
    constants and the frame recipe (the same seeds under another recipe are another model)."""
    h = hashlib.sha256()
    identity = {
        "format": bundle_format,
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
    import pyarrow.parquet as pq  # here, not at import: a model answering from its index never needs it

    buf = io.BytesIO()
    # Seeds are random bytes: compressing them costs time for nothing. Only the two columns of a
    # few distinct names are worth a dictionary.
    compression = {name: "none" if name == "best_seed" else "zstd" for name in seeds.column_names}
    pq.write_table(seeds, buf, compression=compression, use_dictionary=["partition", "source_file"])
    return buf.getvalue()


@njit(cache=True, nogil=True)
def _hex_words(chars, width):  # pragma: no cover - compiled
    """Fixed-width lowercase hex strings (``chars`` uint8[N * width]) as two big-endian 64-bit
    words each (right-padded with zero digits), or None when a byte is not a lowercase hex digit."""
    n = chars.shape[0] // width
    words = np.zeros((n, 2), np.uint64)
    for r in range(n):
        hi = np.uint64(0)
        lo = np.uint64(0)
        for k in range(32):
            v = 0
            if k < width:
                b = chars[r * width + k]
                if 48 <= b <= 57:
                    v = b - 48
                elif 97 <= b <= 102:
                    v = b - 87
                else:
                    return None
            if k < 16:
                hi = (hi << np.uint64(4)) | np.uint64(v)
            else:
                lo = (lo << np.uint64(4)) | np.uint64(v)
        words[r, 0] = hi
        words[r, 1] = lo
    return words


@njit(cache=True, nogil=True)
def _distinct_lines(chars, width, order, words):  # pragma: no cover - compiled
    """The strings in ``order`` (sorted by ``words``), each once, one per line."""
    out = np.empty(order.shape[0] * (width + 1), np.uint8)
    at = 0
    for i in range(order.shape[0]):
        r = order[i]
        if i and words[r, 0] == words[order[i - 1], 0] and words[r, 1] == words[order[i - 1], 1]:
            continue
        out[at : at + width] = chars[r * width : (r + 1) * width]
        out[at + width] = 10
        at += width + 1
    return out[:at]


def _fingerprints_text(seeds: pa.Table) -> bytes:
    """The distinct fingerprints, sorted (by code point, as Python sorts), one per line."""
    column = seeds.column("fingerprint").combine_chunks().cast(pa.large_string())
    if not len(column):
        return b""
    offsets = np.frombuffer(column.buffers()[1], np.int64)[column.offset : column.offset + len(column) + 1]
    chars = np.frombuffer(column.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    width = int(offsets[1] - offsets[0])
    if 0 < width <= 32 and np.all(np.diff(offsets) == width):
        # The search's fingerprints are lowercase hex of one length: their order as strings is their
        # order as numbers, and sorting two 64-bit words is far cheaper than sorting strings.
        words = _hex_words(chars, width)
        if words is not None:
            order = np.argsort(words[:, 0])
            first = words[order, 0]
            if np.any(first[1:] == first[:-1]):  # equal first halves: order by both
                order = np.lexsort((words[:, 1], words[:, 0]))
            return _distinct_lines(chars, width, order, words).tobytes()
    distinct = pc.unique(column)
    distinct = distinct.take(pc.sort_indices(distinct)).to_pylist()
    return "".join(f + "\n" for f in distinct).encode("utf-8")


def bundle_recipe(checkpoints: Mapping[str, pa.Table | None], seeds: pa.Table) -> dict[str, Any]:
    """The frame recipe every partition's checkpoints carry (they must agree), with the seeds'
    difficulty (``difficulty_bits``: the distinct difficulties of the rows). Raises
    :class:`BundleInputError` naming the partition whose recipe is missing or differs."""
    recipe: dict[str, Any] | None = None
    first = ""
    seen: set[bytes] = set()  # recipes already read (10,000 partitions usually share one)
    for key, table in sorted(checkpoints.items()):
        if table is None or not table.num_rows:
            continue
        raw = (table.schema.metadata or {}).get(RECIPE_METADATA_KEY)
        if raw is not None and raw in seen:
            continue
        found = recipe_from_metadata(table.schema.metadata)
        if found is None:
            raise BundleInputError(
                key, "recipe", "the checkpoints carry no frame recipe (made by an older release)"
            )
        seen.add(raw)
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
    Time is proportional to the rows, not to rows × partitions. Raises :class:`NoCheckpointsError`
    when no partition contributes a row and :class:`BundleInputError` naming the partition and
    column for a malformed checkpoint.
    """
    looked_at = {key: (t.num_rows if t is not None else 0) for key, t in sorted(checkpoints.items())}
    seeds = seed_rows(checkpoints, only_solved)
    if not seeds.num_rows:
        what = "solved checkpoint rows" if only_solved else "checkpoint rows"
        seen = ", ".join(f"{k!r} ({n} rows)" for k, n in looked_at.items()) or "none (no partitions)"
        raise NoCheckpointsError(f"nothing to deploy: no partition has {what}; partitions looked at: {seen}")
    order = pc.sort_indices(seeds, sort_keys=[(k, "ascending") for k in SORT_KEYS]).to_numpy()
    if np.any(order[1:] < order[:-1]):  # checkpoints usually arrive sorted already
        seeds = seeds.take(pa.array(order))
    seeds = seeds.combine_chunks()

    constants = header_constants()
    recipe = bundle_recipe(checkpoints, seeds)
    digest = content_digest(seeds, pipeline_version, constants, recipe)
    index = build_index(seeds)
    files = {
        SEEDS_FILE: _serialise_seeds(seeds),
        FINGERPRINTS_FILE: _fingerprints_text(seeds),
        **index.files(),
    }
    counts = (
        pa.table({"partition": seeds.column("partition"), "solved": seeds.column("solved").cast(pa.int64())})
        .group_by("partition")
        .aggregate([("solved", "count"), ("solved", "sum")])
        .to_pydict()
    )
    found = {
        key: {"rows": int(rows), "solved": int(solved)}
        for key, rows, solved in zip(
            counts["partition"], counts["solved_count"], counts["solved_sum"], strict=True
        )
    }
    per_partition = {key: found.get(key, {"rows": 0, "solved": 0}) for key in looked_at}
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
        "solved_rows": int(sum(c["solved"] for c in per_partition.values())),
        "distinct_frames": files[FINGERPRINTS_FILE].count(b"\n"),
        "inference_frames": index.frames,
        "created_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in files.items()},
    }
    manifest[MANIFEST_DIGEST] = _sha256(_manifest_bytes(manifest))
    files[MANIFEST_FILE] = _manifest_bytes(manifest)
    return Bundle(seeds=seeds, manifest=manifest, files=files, index=index)


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")


def bundle_version(bundle: Bundle) -> str:
    """The bundle's content-addressed version: 16 hex digits of its content digest (see module doc)."""
    return bundle.content_digest[:VERSION_HEX_DIGITS]


def parse_manifest(raw: bytes | None, directory: Path) -> dict[str, Any]:
    """The manifest of the bundle in ``directory`` from its bytes. Raises :class:`BundleFormatError`
    when it is missing, does not parse, or is of a format this release does not read, saying what
    to do about it."""
    manifest_path = directory / MANIFEST_FILE
    if raw is None:
        raise BundleFormatError(manifest_path, "missing: not a bundle directory")
    try:
        manifest = json.loads(raw)
        manifest["files"], manifest["version"], manifest["content_digest"]
    except (ValueError, KeyError, TypeError) as e:
        raise BundleFormatError(manifest_path, f"not a valid bundle manifest ({e!r})") from None
    if manifest.get("format") not in (V2_FORMAT, BUNDLE_FORMAT):
        old = " (a bundle of the old objective predicts no token: retrain and deploy)" * (
            manifest.get("format") == "hasher-bundle-v1"
        )
        raise BundleFormatError(
            manifest_path,
            f"format {manifest.get('format')!r}, expected {BUNDLE_FORMAT!r} (or {V2_FORMAT!r}){old}",
        )
    for name in payload_files(manifest):
        if name not in manifest["files"]:
            raise BundleFormatError(manifest_path, f"does not list {name}")
    return manifest


def check_release(manifest: Mapping[str, Any], directory: Path) -> None:
    """Raise :class:`BundleFormatError` unless this release can use the bundle: its frame recipe
    can be rebuilt from text and its header constants are this release's."""
    manifest_path = directory / MANIFEST_FILE
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


def check_manifest(manifest: Mapping[str, Any], raw: bytes, directory: Path) -> None:
    """Raise unless the manifest is as written: :class:`BundleFormatError` for a field no manifest
    has, :class:`BundleChecksumError` when its bytes are not the canonical bytes its
    ``manifest_sha256`` was taken of (bundles written before that field have none). Called last, so
    a manifest edited on purpose fails on the field that was edited."""
    manifest_path = directory / MANIFEST_FILE
    if unknown := sorted(set(manifest) - MANIFEST_FIELDS):
        raise BundleFormatError(manifest_path, f"unknown field(s) {unknown}: damaged")
    if MANIFEST_DIGEST in manifest:
        own = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST}
        actual = _sha256(_manifest_bytes(own))
        if raw != _manifest_bytes(manifest) or actual != manifest[MANIFEST_DIGEST]:
            raise BundleChecksumError(
                manifest_path, str(manifest[MANIFEST_DIGEST]), actual, what="manifest sha256"
            )


def parse_seeds(data: bytes, directory: Path) -> pa.Table:
    """The seed table from the bytes of ``seeds.parquet``; :class:`BundleFormatError` when it does
    not parse or has another schema."""
    import pyarrow.parquet as pq

    try:
        seeds = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as e:
        raise BundleFormatError(directory / SEEDS_FILE, f"not readable Parquet ({e})") from None
    if seeds.schema.remove_metadata() != SEED_TABLE_SCHEMA:
        raise BundleFormatError(directory / SEEDS_FILE, f"unexpected schema {seeds.schema}")
    return seeds


def verify_content(bundle: Bundle, directory: Path) -> None:
    """The deep check of a bundle whose file checksums passed: the seed table's content digest,
    the version, the fingerprints list and (v3) that its index is the index of its seed table."""
    manifest = bundle.manifest
    digest, version = manifest["content_digest"], manifest["version"]
    actual = content_digest(
        bundle.seeds,
        manifest["pipeline_version"],
        manifest["header_constants"],
        manifest.get("recipe"),
        manifest["format"],
    )
    if actual != digest:
        raise BundleChecksumError(directory / SEEDS_FILE, digest, actual, what="seed-table content digest")
    if version != digest[:VERSION_HEX_DIGITS]:
        raise BundleFormatError(
            directory / MANIFEST_FILE, f"version {version!r} is not the content digest's prefix"
        )
    if bundle.files[FINGERPRINTS_FILE] != _fingerprints_text(bundle.seeds):
        raise BundleFormatError(
            directory / FINGERPRINTS_FILE, "does not list the seed table's distinct fingerprints"
        )
    if bundle.index is not None:
        rebuilt = build_index(bundle.seeds).files()
        for name in INDEX_FILES:
            if name != PARAMS_FILE and bundle.files.get(name) != rebuilt[name]:
                raise BundleFormatError(directory / name, "is not the inference index of the seed table")


def parse_bundle(files: Mapping[str, bytes], where: Path | str, *, verify: bool = True) -> Bundle:
    """A bundle from the bytes of its files (``{file name: bytes}``; ``where`` names the directory
    in errors). With ``verify`` check every checksum, the content digest, the fingerprints list,
    the index, and that the header constants are this release's.

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
    manifest = parse_manifest(files.get(MANIFEST_FILE), directory)
    declared = manifest["files"]
    for name in payload_files(manifest):
        path = directory / name
        if name not in files:
            raise BundleFormatError(path, "missing")
        if verify:
            actual = _sha256(files[name])
            if actual != declared[name]["sha256"]:
                raise BundleChecksumError(path, declared[name]["sha256"], actual)
    seeds = parse_seeds(files[SEEDS_FILE], directory)
    index = None
    if manifest["format"] == BUNDLE_FORMAT:
        index = InferenceIndex.from_files({n: files[n] for n in INDEX_FILES}, str(directory))
    bundle = Bundle(seeds=seeds, manifest=manifest, files=dict(files), index=index)
    if verify:
        verify_content(bundle, directory)
        check_release(manifest, directory)
        check_manifest(manifest, files[MANIFEST_FILE], directory)
    return bundle


__all__ = [
    "BUNDLE_FORMAT",
    "FINGERPRINTS_FILE",
    "MANIFEST_FILE",
    "SEEDS_FILE",
    "V2_FORMAT",
    "Bundle",
    "build_bundle",
    "bundle_version",
    "check_release",
    "content_digest",
    "header_constants",
    "parse_bundle",
    "parse_manifest",
    "parse_seeds",
    "payload_files",
    "seeds_array",
    "slots_array",
    "verify_content",
]
