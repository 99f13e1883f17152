"""Text entering hasher as bytes (DESIGN §2): which Unicode encoding form a file is in, and decoding it.

One rule for every place bytes become text: Data Miner JSON and JSON lines, inbox files, and the
prompt files and standard input of the ``hasher`` command line. Read are the Unicode encoding forms,
which the bytes themselves identify:

- a byte-order mark: UTF-8 (EF BB BF), UTF-16 LE/BE (FF FE / FE FF), UTF-32 LE/BE (FF FE 00 00 /
  00 00 FE FF); the mark is not part of the text;
- without a mark and without NUL bytes in the first :data:`SNIFF_BYTES` bytes, UTF-8;
- with NULs there (text holds no U+0000, but UTF-16/32 of ASCII characters do), the form in which those
  bytes read most like text: the most printable ASCII, the fewest control characters and unassigned
  code points (read in the wrong width or byte order, a newline becomes U+0A00 or two NULs). JSON,
  whose first two characters are ASCII, uses RFC 4627 §3's rule on its first four bytes instead.

Refused, with the first bad byte and its offset: legacy code pages (Windows-1252, Latin-1, Shift-JIS,
GBK, KOI8-R …). Any byte string decodes in most of them, so the bytes cannot say which one was meant,
and a wrong guess silently changes the text every later stage trains on; the message asks for UTF-8.
UTF-16/32 without a BOM is told by its ASCII characters (spaces, newlines, digits): a text with
almost none of them needs a BOM, and the UTF-8 error message says so.

The streaming JSON readers decode incrementally with :func:`incremental_decoder`; there a bad sequence
becomes :data:`INVALID_MARK` (a lone surrogate, which no valid text holds), so the record holding it
is skipped and counted and the rest of the file is kept.
"""

from __future__ import annotations

import codecs
import unicodedata
from typing import Final

from hasher_core.errors import TextEncodingError

__all__ = [
    "INVALID_MARK",
    "INVALID_TEXT_ERRORS",
    "SAVE_AS_UTF8",
    "SNIFF_BYTES",
    "decode_text",
    "describe_encoding",
    "incremental_decoder",
    "invalid_utf8_message",
    "sniff_encoding",
    "sniff_json_encoding",
]

#: Bytes looked at to tell UTF-16/32 without a BOM from UTF-8.
SNIFF_BYTES: Final = 4096
#: What an undecodable sequence becomes in incrementally decoded text (a lone surrogate).
INVALID_MARK: Final = "\udcff"
#: The error handler (registered here) that turns each undecodable unit into :data:`INVALID_MARK`.
INVALID_TEXT_ERRORS: Final = "hasher.invalid-text"

# Longest marks first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_NAMES: Final = {
    "utf-8": "UTF-8",
    "utf-16-le": "UTF-16LE",
    "utf-16-be": "UTF-16BE",
    "utf-32-le": "UTF-32LE",
    "utf-32-be": "UTF-32BE",
}


def _mark_invalid(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return INVALID_MARK, error.end


codecs.register_error(INVALID_TEXT_ERRORS, _mark_invalid)


def describe_encoding(codec: str, bom: int) -> str:
    """A user's name for what :func:`sniff_encoding` found, e.g. ``"UTF-16LE with BOM"``."""
    return _NAMES[codec] + (" with BOM" if bom else "")


def _is_control(ch: str) -> bool:
    return (ch < " " and ch not in "\t\n\v\f\r") or ch in "\x7f\ufffe\uffff"


def _decoded(head: bytes, codec: str, complete: bool) -> str | None:
    """``head`` decoded in ``codec``, else None; a cut-off last unit is allowed unless ``head`` is the
    whole file. UTF-16/32 readings holding control characters (what bytes read in the wrong width
    give: U+0000, U+0001 …) are not text."""
    try:
        text = codecs.getincrementaldecoder(codec)("strict").decode(head, final=complete)
    except UnicodeDecodeError:
        return None
    return text if codec == "utf-8" or not any(map(_is_control, text)) else None


def _score(text: str) -> int:
    # Read in the right form, the units holding NULs are ASCII (newlines, spaces, digits); read in a
    # wrong one they become U+0A00, U+2000, U+12000 …, unassigned code points, or (read as UTF-8) NULs.
    # A control character (a NUL above all) is the strongest sign of a wrong reading: it counts twice.
    plain = sum(" " <= ch <= "~" or ch in "\n\r" for ch in text)
    unassigned = sum(unicodedata.category(ch) in ("Cn", "Co") for ch in text)
    return plain - unassigned - 2 * sum(map(_is_control, text))


def sniff_encoding(head: bytes) -> tuple[str, int]:
    """``(codec, BOM length)`` of a text whose first bytes are ``head`` (pass :data:`SNIFF_BYTES`
    when there are that many): a byte-order mark; else UTF-8 when ``head`` holds no NUL; else the
    Unicode form (UTF-8, UTF-32 LE/BE, UTF-16 LE/BE, preferred in that order on a tie) in which it
    reads most like text: the most printable ASCII, the fewest controls and unassigned code points.
    Codecs are Python's names (``utf-8``, ``utf-16-le`` …).

    Raises :class:`TextEncodingError` when ``head`` holds NULs and decodes in no form (binary data).
    """
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec, len(bom)
    complete = len(head) < SNIFF_BYTES  # the whole file: its last unit must be complete too
    head = head[:SNIFF_BYTES]
    if b"\x00" not in head:
        return "utf-8", 0
    scored = []
    for codec in ("utf-8", "utf-32-le", "utf-32-be", "utf-16-le", "utf-16-be"):
        text = _decoded(head, codec, complete)
        if text is not None:
            scored.append((_score(text), codec))
    if scored:
        return max(scored, key=lambda item: item[0])[1], 0  # max() keeps the first of equals
    raise TextEncodingError(
        f"holds a NUL byte at offset {head.index(0)} and is neither UTF-8, UTF-16 nor UTF-32 text: "
        "binary data?"
    )


def sniff_json_encoding(head: bytes) -> tuple[str, int]:
    """``(codec, BOM length)`` of a JSON text: its byte-order mark, else RFC 4627 §3's rule (the first
    two characters of JSON are ASCII, so the NULs among the first four bytes give the form), else UTF-8.
    Never raises: a JSON file that is none of these fails as JSON."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec, len(bom)
    nul = tuple(b == 0 for b in head[:4])
    layouts = {
        (True, True, True, False): "utf-32-be",
        (False, True, True, True): "utf-32-le",
        (True, False, True, False): "utf-16-be",
        (False, True, False, True): "utf-16-le",
    }
    return layouts.get(nul, "utf-8"), 0


#: The way out that :func:`invalid_utf8_message` suggests for a file.
SAVE_AS_UTF8: Final = "save it as UTF-8 (e.g. iconv -f WINDOWS-1252 -t UTF-8 FILE)"


def invalid_utf8_message(
    raw: bytes, start: int, reason: str, offset: int = 0, remedy: str = SAVE_AS_UTF8
) -> str:
    """What is wrong with bytes that are not UTF-8: the first bad byte at ``start`` in ``raw`` (file
    offset ``offset + start``), with its neighbourhood, and the way out (``remedy``)."""
    context = raw[max(0, start - 12) : start + 12]
    return (
        f"not valid UTF-8: byte 0x{raw[start]:02x} at offset {offset + start} ({reason}, in {context!r}); "
        "hasher reads UTF-8, and UTF-16 or UTF-32 with a BOM (or with ASCII characters, whose NUL bytes "
        "show the width); it refuses legacy code pages such as Windows-1252, Latin-1 or Shift-JIS, "
        f"which the bytes cannot tell apart: {remedy}"
    )


def decode_text(raw: bytes) -> tuple[str, str]:
    """``(text, encoding description)`` of a whole file's bytes (:func:`sniff_encoding`); the
    byte-order mark is dropped.

    Raises :class:`TextEncodingError` naming the first undecodable byte and its offset (UTF-8), or the
    offset and problem of a bad UTF-16/32 unit (an unpaired surrogate, a cut-off last character).
    """
    codec, bom = sniff_encoding(raw[:SNIFF_BYTES])
    body = raw[bom:]
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        if codec == "utf-8":
            raise TextEncodingError(invalid_utf8_message(body, exc.start, exc.reason, bom)) from exc
        how = "its BOM" if bom else "the NUL bytes of its first characters"
        raise TextEncodingError(
            f"not valid {_NAMES[codec]} (detected from {how}): {exc.reason} at byte offset {bom + exc.start}"
        ) from exc
    return text, describe_encoding(codec, bom)


def incremental_decoder(codec: str) -> codecs.IncrementalDecoder:
    """A decoder for streamed bytes in ``codec``: UTF-8 keeps each bad byte as a lone surrogate
    (``surrogateescape``); UTF-16/32 turn each bad unit into :data:`INVALID_MARK`. Either way the text
    of a record holding one cannot be encoded back, which is how validation finds it."""
    errors = "surrogateescape" if codec == "utf-8" else INVALID_TEXT_ERRORS
    return codecs.getincrementaldecoder(codec)(errors)
