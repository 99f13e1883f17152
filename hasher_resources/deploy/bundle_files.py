"""A bundle on disk (DESIGN §6): its files written into a directory, and read back and verified.

The bytes and their checks are ``hasher_core.bundle``; this module only moves them to and from a
directory. Payloads are written before the manifest, so a directory with a manifest is complete.

Two ways back: :func:`read_bundle` reads every file and (with ``verify``) checks it to the bottom —
checksums, the seed table's content digest, that the index is its seed table's (what a deploy does
after writing); :func:`map_bundle` is how a model opens: the index files' checksums are verified by
streaming them (nothing stays in memory), the index arrays are memory-mapped (the answer records
read one at a time), and the seed table is read, and its checksum verified, only if something asks
for it: opening a million-frame model costs a read of its index, not a rebuild.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import weakref
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hasher_core.bundle import INDEX_FILES, MANIFEST_FILE, Bundle, InferenceIndex, parse_bundle
from hasher_core.bundle.format import (
    BUNDLE_FORMAT,
    SEEDS_FILE,
    check_manifest,
    check_release,
    parse_manifest,
    parse_seeds,
    payload_files,
)
from hasher_core.bundle.index import ARRAY_FILES, PARAMS_FILE
from hasher_core.errors import BundleChecksumError, BundleFormatError

from ..files import atomic_write_bytes, file_sha256


def write_bundle(bundle: Bundle, directory: Path | str) -> dict[str, str]:
    """Write the bundle's files into ``directory`` (created; must not hold a bundle already).

    Returns ``{file name: sha256}`` of what was written, manifest included. Raises
    :class:`BundleFormatError` rather than overwrite bundle files already there.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = (*payload_files(bundle.manifest), MANIFEST_FILE)
    existing = [n for n in names if (directory / n).exists()]
    if existing:
        raise BundleFormatError(directory, f"already holds bundle files {existing}; refusing to overwrite")
    written: dict[str, str] = {}
    for name in names:
        path = atomic_write_bytes(directory / name, bundle.files[name], strict_dir_sync=True)
        written[name] = file_sha256(path)
    return written


def read_bundle(directory: Path | str, *, verify: bool = True) -> Bundle:
    """Read a bundle directory; with ``verify`` check every checksum, the content digest and the index.

    Raises :class:`~hasher_core.errors.BundleChecksumError` naming the file and both digests on a
    mismatch and :class:`BundleFormatError` when a file is missing or does not parse.
    """
    directory = Path(directory)
    files: dict[str, bytes] = {}
    manifest_raw = _read(directory / MANIFEST_FILE)
    if manifest_raw is not None:
        files[MANIFEST_FILE] = manifest_raw
        manifest = parse_manifest(manifest_raw, directory)
        for name in payload_files(manifest):
            data = _read(directory / name)
            if data is not None:  # parse_bundle names what is missing
                files[name] = data
    return parse_bundle(files, directory, verify=verify)


def verify_checksums(directory: Path | str, manifest: Mapping, names: Iterable[str] | None = None) -> None:
    """Check that every payload file of ``directory`` (or those ``names``) has the SHA-256 its
    manifest records, streaming each file (8 MiB at a time, the files side by side: hashlib works
    outside the GIL). Raises :class:`BundleChecksumError` naming the file and both digests,
    :class:`BundleFormatError` for a missing file."""
    directory = Path(directory)
    names = list(payload_files(manifest) if names is None else names)

    def digest(name: str) -> str:
        try:
            return file_sha256(directory / name)
        except FileNotFoundError:
            raise BundleFormatError(directory / name, "missing") from None

    with ThreadPoolExecutor(max_workers=min(4, len(names) or 1)) as pool:
        actual = dict(zip(names, pool.map(digest, names), strict=True))
    for name in names:
        expected = manifest["files"][name]["sha256"]
        if actual[name] != expected:
            raise BundleChecksumError(directory / name, expected, actual[name])


def _checked(directory: Path, manifest: Mapping, name: str) -> bytes:
    """The bytes of one payload file, checked against the manifest's SHA-256."""
    data = _read(directory / name)
    if data is None:
        raise BundleFormatError(directory / name, "missing")
    expected = manifest["files"][name]["sha256"]
    if (actual := hashlib.sha256(data).hexdigest()) != expected:
        raise BundleChecksumError(directory / name, expected, actual)
    return data


def map_bundle(directory: Path | str) -> Bundle:
    """Open a bundle directory for answering: every file's checksum verified (streamed) and the index
    memory-mapped; the seed table and the fingerprints are read (and their checksums verified
    again) only when something asks for them. A bundle of format v2 (no index) opens too; its model
    then builds the index in memory. Raises like :func:`read_bundle` for a missing, damaged or
    foreign bundle."""
    directory = Path(directory)
    raw = _read(directory / MANIFEST_FILE)
    manifest = parse_manifest(raw, directory)
    v3 = manifest["format"] == BUNDLE_FORMAT
    # Every file, the seed table included: a damaged deployment is refused (with the commands that
    # recover it) before it answers, not when something first reads the seeds. Streamed: ~0.1 s for
    # a million rows, and nothing stays in memory.
    verify_checksums(directory, manifest)
    check_release(manifest, directory)
    check_manifest(manifest, raw, directory)
    index = None
    if v3:
        arrays: dict[str, bytes | np.ndarray | RecordsOnDisk] = {
            PARAMS_FILE: (directory / PARAMS_FILE).read_bytes()
        }
        for name in INDEX_FILES:
            if name in RECORD_FILES:
                arrays[name] = RecordsOnDisk(directory / name)
            elif name != PARAMS_FILE:
                arrays[name] = map_npy(directory / name, sequential=name in SEQUENTIAL_FILES)
        index = InferenceIndex.from_files(arrays, str(directory))

    def load_seeds():
        return parse_seeds(_checked(directory, manifest, SEEDS_FILE), directory)

    files = _FilesOnDisk(directory, manifest)
    return Bundle(manifest=manifest, files=files, index=index, load_seeds=load_seeds)


#: Index files read a few records at a time (one step's answer, a frame's rows, a row's place).
RECORD_FILES = frozenset(
    ARRAY_FILES[name] for name in ("answer", "row_place", "frame_rows", "frame_row_start")
)
#: Index files a nearest-frame search reads cell by cell, front to back; the others are read a record
#: at a time, where the kernel's read-ahead would map pages nobody asked for (and count them in RSS).
SEQUENTIAL_FILES = frozenset({ARRAY_FILES["codes"], ARRAY_FILES["norm2"]})


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _npy_layout(f, path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of the open ``.npy`` file ``f``; :class:`BundleFormatError`
    naming ``path`` unless it is a C-order array without objects whose data is all there."""
    try:
        version = np.lib.format.read_magic(f)
        if version not in _NPY_HEADERS:
            raise ValueError(f"format version {version} (this reader knows 1.0 and 2.0)")
        shape, fortran, dtype = _NPY_HEADERS[version](f, max_header_size=1 << 20)
        offset = f.tell()
        if fortran or dtype.hasobject:
            raise ValueError("a Fortran-order or object array")
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if os.fstat(f.fileno()).st_size < offset + size:
            raise ValueError(f"{size} bytes of data announced, the file is shorter")
    except (OSError, ValueError) as e:
        raise BundleFormatError(path, f"not a readable .npy array ({e})") from None
    return shape, dtype, offset


def map_npy(path: Path, *, sequential: bool = False) -> np.ndarray:
    """A read-only memory map of the ``.npy`` file at ``path`` (any C-order dtype, no pickles), the
    kernel told to read ahead only when ``sequential``. Raises :class:`BundleFormatError` naming
    the file when it is not a readable ``.npy`` array."""
    with open(path, "rb") as f:
        shape, dtype, offset = _npy_layout(f, path)
        if not int(np.prod(shape, dtype=np.int64)):
            return np.empty(shape, dtype)
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    mapped.madvise(mmap.MADV_SEQUENTIAL if sequential else mmap.MADV_RANDOM)
    return np.ndarray(shape, dtype, buffer=mapped, offset=offset)


class RecordsOnDisk:
    """The records of a one-dimensional ``.npy`` file, read with ``pread`` when asked for.

    Indexed like the array (a position, or an array of positions) it returns what the array would,
    reading only those records: answering a step reads one record of the index's answer table.
    A memory map would do the same work but, on a file system with large folios, every record
    touched maps a 2 MiB folio into the process (its RSS), so a long generation would end up
    holding the whole table.
    """

    #: Records further apart than this many bytes are read with separate calls.
    GAP_BYTES = 1 << 16

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with open(path, "rb") as f:
            shape, self.dtype, self._offset = _npy_layout(f, self.path)
        if len(shape) != 1:
            raise BundleFormatError(path, f"expected one-dimensional records, got shape {list(shape)}")
        self.shape = shape
        self._fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | np.integer | np.ndarray) -> np.ndarray | np.void:
        if isinstance(key, int | np.integer):
            position = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= position < self.shape[0]:
                raise IndexError(f"record {key} outside {self.shape[0]} records of {self.path}")
            return self._read(position, 1)[0]
        positions = np.asarray(key, np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.shape[0]):
            raise IndexError(f"records outside the {self.shape[0]} records of {self.path}")
        wanted, inverse = np.unique(positions, return_inverse=True)
        out = np.empty(wanted.size, self.dtype)
        breaks = np.flatnonzero(np.diff(wanted) * self.dtype.itemsize > self.GAP_BYTES) + 1
        for run in np.split(np.arange(wanted.size), breaks):
            if run.size:
                first, last = int(wanted[run[0]]), int(wanted[run[-1]])
                out[run] = self._read(first, last - first + 1)[wanted[run] - first]
        return out[inverse.reshape(positions.shape)]

    def _read(self, first: int, count: int) -> np.ndarray:
        size = count * self.dtype.itemsize
        data = os.pread(self._fd, size, self._offset + first * self.dtype.itemsize)
        if len(data) != size:
            raise BundleFormatError(self.path, f"records {first}..{first + count - 1}: the file is shorter")
        return np.frombuffer(data, self.dtype)


class _FilesOnDisk(Mapping[str, bytes]):
    """A mapped bundle's files, read from its directory when asked for (payloads and the manifest)."""

    def __init__(self, directory: Path, manifest: Mapping) -> None:
        self._directory = directory
        self._manifest = manifest
        self._names = (*payload_files(manifest), MANIFEST_FILE)

    def __getitem__(self, name: str) -> bytes:
        if name not in self._names:
            raise KeyError(name)
        if name == MANIFEST_FILE:
            return (self._directory / name).read_bytes()
        return _checked(self._directory, self._manifest, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
