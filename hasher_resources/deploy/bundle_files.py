"""A bundle on disk (DESIGN §6): its three files written into a directory, and read back and verified.

The bytes and their checks are ``hasher_core.bundle``; this module only moves them to and from a
directory. Payloads are written before the manifest, so a directory with a manifest is complete.
"""

from __future__ import annotations

from pathlib import Path

from hasher_core.bundle import MANIFEST_FILE, PAYLOAD_FILES, Bundle, parse_bundle
from hasher_core.errors import BundleFormatError

from ..files import atomic_write_bytes, file_sha256


def write_bundle(bundle: Bundle, directory: Path | str) -> dict[str, str]:
    """Write the bundle's files into ``directory`` (created; must not hold a bundle already).

    Returns ``{file name: sha256}`` of what was written, manifest included. Raises
    :class:`BundleFormatError` rather than overwrite bundle files already there.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    existing = [n for n in (*PAYLOAD_FILES, MANIFEST_FILE) if (directory / n).exists()]
    if existing:
        raise BundleFormatError(directory, f"already holds bundle files {existing}; refusing to overwrite")
    written: dict[str, str] = {}
    for name in (*PAYLOAD_FILES, MANIFEST_FILE):
        path = atomic_write_bytes(directory / name, bundle.files[name], strict_dir_sync=True)
        written[name] = file_sha256(path)
    return written


def read_bundle(directory: Path | str, *, verify: bool = True) -> Bundle:
    """Read a bundle directory; with ``verify`` check every checksum and the content digest.

    Raises :class:`~hasher_core.errors.BundleChecksumError` naming the file and both digests on a
    mismatch and :class:`BundleFormatError` when a file is missing or does not parse.
    """
    directory = Path(directory)
    files: dict[str, bytes] = {}
    for name in (MANIFEST_FILE, *PAYLOAD_FILES):
        try:
            files[name] = (directory / name).read_bytes()
        except FileNotFoundError:
            continue  # parse_bundle names what is missing, in the order a reader cares about
    return parse_bundle(files, directory, verify=verify)
