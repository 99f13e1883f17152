"""Dagster partition keys for source file names (DESIGN §2): the name itself when safe, else a stable key.

A key is also a file name (``<asset>/<key>.parquet``), so it must be safe there too. Names that look
the same must be one key: canonically equivalent spellings (a macOS NFD name and the NFC name a user
types, UAX #15) are normalised to NFC first, and a name holding a character that prints as nothing or
as a plain space (format and control characters, unpaired surrogates from undecodable bytes,
non-breaking and other typographic spaces) gets the visibly different hashed form.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata

import regex

_INVALID_SUBSTRINGS = ("..", "/", "\\")
# Controls, format characters (zero-width space/joiners, bidi overrides, soft hyphen, BOM), surrogates,
# private-use and unassigned code points, line/paragraph separators, and the spaces that print like
# U+0020 (U+3000, the wide ideographic space of Japanese names, is visibly different and stays).
_CONTROL = regex.compile(r"[\p{C}\u2028\u2029\u00a0\u1680\u2000-\u200a\u202f\u205f]")
# Characters Dagster parses in lists of keys: `dagster job backfill --partitions` splits on commas, the
# UI's partition selection writes ranges as [a...b], and multi-partition keys join dimensions with |.
_SELECTION_SYNTAX = re.compile(r"[,\[\]|]")
# A name that already looks like a sanitized key is hashed too, so no raw name can collide with one.
_SANITIZED_SHAPE = re.compile(r"~[0-9a-f]{10}$")
_MAX_KEY = 100
_READABLE_MAX = 80


def _is_safe_key(name: str) -> bool:
    return (
        0 < len(name) <= _MAX_KEY
        and not name.startswith(".")
        and name == name.strip()
        and not any(s in name for s in _INVALID_SUBSTRINGS)
        and not _CONTROL.search(name)
        and not _SELECTION_SYNTAX.search(name)
        and not _SANITIZED_SHAPE.search(name)
    )


@functools.lru_cache(maxsize=65536)
def safe_partition_key(name: str) -> str:
    """The Dagster partition key for a source file name: the name itself when safe, else a stable key.

    A safe name has no path separator, no ``..`` (Dagster also forbids ``...``), no control character,
    none of ``, [ ] |`` (Dagster's CLI and UI parse them in lists and ranges of keys), does not start
    with ``.``, has no surrounding spaces and is at most 100 characters. Anything else
    maps to ``<basename, cleaned>~<10 hex of blake2b(full name)>``: readable, stable across runs and
    machines, and distinct for distinct names (the hash covers the whole name). Names are compared in
    Unicode NFC: ``"re\u0301sume\u0301.txt"`` (NFD, as macOS writes it) and ``"résumé.txt"`` are one key,
    the NFC spelling; invisible characters and space look-alikes (see the module docstring) make a
    name unsafe.
    """
    name = unicodedata.normalize("NFC", name)
    if _is_safe_key(name):
        return name
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=5).hexdigest()
    base = re.split(r"[/\\]", name.rstrip("/\\"))[-1]
    readable = _SELECTION_SYNTAX.sub("_", _CONTROL.sub("_", base))
    readable = re.sub(r"\.{2,}", ".", readable).strip().lstrip(".")[:_READABLE_MAX].strip()
    return f"{readable or 'source'}~{digest}"
