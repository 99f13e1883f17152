"""A bundle on disk (DESIGN §6): its files written into a directory, and read back and verified.

The bytes and their checks are ``hasher_core.bundle``; this module only moves them to and from a
directory. Payloads are written before the manifest, so a directory with a manifest is complete.

Two ways back: :func:`read_bundle` reads every file and (with ``verify``) checks it to the bottom —
checksums, the seed table's content digest, that the index is its seed table's (what a deploy does
after writing); :func:`map_bundle` is how a model opens: every file's checksum is verified by
streaming it (nothing stays in memory), the index arrays are memory-mapped and the seed table is read
only if something asks for it, so opening a million-frame model costs seconds of hashing, not a
rebuild.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from hasher_core.bundle import INDEX_FILES, MANIFEST_FILE, Bundle, InferenceIndex, parse_bundle
from hasher_core.bundle.format import (
    BUNDLE_FORMAT,
    SEEDS_FILE,
    check_release,
    parse_manifest,
    parse_seeds,
    payload_files,
)
from hasher_core.bundle.index import PARAMS_FILE
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


def verify_checksums(directory: Path | str, manifest: Mapping) -> None:
    """Check that every payload file of ``directory`` has the SHA-256 its manifest records, streaming
    each file (8 MiB at a time). Raises :class:`BundleChecksumError` naming the file and both digests,
    :class:`BundleFormatError` for a missing file."""
    directory = Path(directory)
    for name in payload_files(manifest):
        path = directory / name
        try:
            actual = file_sha256(path)
        except FileNotFoundError:
            raise BundleFormatError(path, "missing") from None
        expected = manifest["files"][name]["sha256"]
        if actual != expected:
            raise BundleChecksumError(path, expected, actual)


def map_bundle(directory: Path | str) -> Bundle:
    """Open a bundle directory for answering: checksums verified, the index memory-mapped, the seed
    table read on first use. A bundle of format v2 (no index) opens too; its model then builds the
    index in memory. Raises like :func:`read_bundle` for a missing, damaged or foreign bundle."""
    directory = Path(directory)
    manifest = parse_manifest(_read(directory / MANIFEST_FILE), directory)
    verify_checksums(directory, manifest)
    check_release(manifest, directory)
    index = None
    if manifest["format"] == BUNDLE_FORMAT:
        arrays: dict[str, bytes | np.ndarray] = {PARAMS_FILE: (directory / PARAMS_FILE).read_bytes()}
        for name in INDEX_FILES:
            if name != PARAMS_FILE:
                try:
                    arrays[name] = np.asarray(np.load(directory / name, mmap_mode="r", allow_pickle=False))
                except ValueError as e:
                    raise BundleFormatError(directory / name, f"not a readable .npy array ({e})") from None
        index = InferenceIndex.from_files(arrays, str(directory))

    def load_seeds():
        return parse_seeds((directory / SEEDS_FILE).read_bytes(), directory)

    return Bundle(
        manifest=manifest, files=_FilesOnDisk(directory, manifest), index=index, load_seeds=load_seeds
    )


class _FilesOnDisk(Mapping[str, bytes]):
    """A mapped bundle's files, read from its directory when asked for (payloads and the manifest)."""

    def __init__(self, directory: Path, manifest: Mapping) -> None:
        self._directory = directory
        self._names = (*payload_files(manifest), MANIFEST_FILE)

    def __getitem__(self, name: str) -> bytes:
        if name not in self._names:
            raise KeyError(name)
        return (self._directory / name).read_bytes()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
