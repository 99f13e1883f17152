"""Text in and out of the ``hasher`` command line: prompts from argv, a file or standard input, and
JSON that is valid UTF-8 whatever the locale.

A prompt is held to the rules of every other text entering hasher
(``hasher_core.knowledge.text``): UTF-8, or UTF-16/UTF-32 that its bytes identify (files and standard
input only: an argument cannot hold NUL bytes); anything else is refused naming the first bad byte and
its offset. On the command line, Python hands over undecodable argument bytes as lone surrogates
(PEP 383, ``surrogateescape``); they are turned back into the bytes to name them. Refusing, rather than
reading U+FFFD as tiktoken would, keeps one rule for training text and prompts: the model never answers
a context that is not the text the user meant. A prompt read from a file or standard input loses its
trailing newlines, as ``--prompt "$(cat FILE)"`` would.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any, BinaryIO

from hasher_core.errors import TextEncodingError
from hasher_core.knowledge.text import decode_text, invalid_utf8_message

#: The way out for an argument that is not UTF-8.
PASS_AS_UTF8 = "pass UTF-8, e.g. iconv -f WINDOWS-1252 -t UTF-8 FILE | hasher generate --prompt -"

_SURROGATE = re.compile("[\ud800-\udfff]")
_TRAILING_NEWLINES = re.compile(r"(?:\r?\n)+\Z")


def argv_text(value: str, option: str) -> str:
    """``value`` as given for ``option`` on the command line, when its bytes were UTF-8.

    Raises :class:`TextEncodingError` naming the option, the first byte that is not UTF-8 and its
    offset (or a lone surrogate that stands for no byte, from a caller that built the string itself).
    """
    try:
        raw = os.fsencode(value)  # the argument's bytes back: PEP 383 surrogates -> the bytes they stand for
    except UnicodeEncodeError as exc:
        raise TextEncodingError(
            f"{option} holds a lone surrogate U+{ord(value[exc.start]):04X} at character {exc.start}, "
            "which is no text"
        ) from None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TextEncodingError(
            f"{option} is {invalid_utf8_message(raw, exc.start, exc.reason, remedy=PASS_AS_UTF8)}"
        ) from None
    return value


def _decoded(raw: bytes, where: str) -> str:
    try:
        text, _encoding = decode_text(raw)
    except TextEncodingError as exc:
        raise TextEncodingError(f"{where}: {exc}") from None
    return _TRAILING_NEWLINES.sub("", text)


def file_text(path: Path, option: str) -> str:
    """The text of ``path`` (UTF-8/16/32, BOM dropped, trailing newlines dropped) for ``option``.

    Raises :class:`TextEncodingError` naming the option and file when the bytes are not Unicode text,
    and ``OSError`` (with the path) when the file cannot be read.
    """
    return _decoded(Path(path).read_bytes(), f"{option} {path}")


def stdin_text(option: str, stdin: BinaryIO | None = None) -> str:
    """Standard input's text (the rules of :func:`file_text`) for ``option`` given as ``-``."""
    stream = stdin if stdin is not None else sys.stdin.buffer
    return _decoded(stream.read(), f"{option} - (standard input)")


def text_argument(value: str | None, path: Path | None, option: str) -> str:
    """The text of ``--X TEXT`` (``-`` reads standard input) or ``--X-file PATH``, whichever was given."""
    if path is not None:
        return file_text(path, f"{option}-file")
    assert value is not None  # argparse requires one of the two
    if value == "-":
        return stdin_text(option)
    return argv_text(value, option)


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON, encoded as UTF-8 whatever the locale's encoding (RFC 8259 §8.1:
    JSON exchanged between systems is UTF-8). A lone surrogate, which UTF-8 cannot hold, is written as
    its ``\\uXXXX`` escape, so the output is always valid UTF-8 and valid JSON."""
    text = _SURROGATE.sub(
        lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, indent=2, ensure_ascii=False)
    )
    data = (text + "\n").encode("utf-8")
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stream (an embedding program's): it takes str
        sys.stdout.write(data.decode("utf-8"))
        return
    buffer.write(data)
    buffer.flush()
