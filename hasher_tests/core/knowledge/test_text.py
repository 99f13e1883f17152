"""Bytes that become text (hasher_core.knowledge.text): every Unicode encoding form is read, with or
without a byte-order mark; legacy code pages and binary data are refused naming the byte and offset."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hasher_core.errors import TextEncodingError
from hasher_core.knowledge.text import INVALID_MARK, decode_text, incremental_decoder, sniff_json_encoding

BOMS = {
    "utf-8": codecs.BOM_UTF8,
    "utf-16-le": codecs.BOM_UTF16_LE,
    "utf-16-be": codecs.BOM_UTF16_BE,
    "utf-32-le": codecs.BOM_UTF32_LE,
    "utf-32-be": codecs.BOM_UTF32_BE,
}
NAMES = {
    "utf-8": "UTF-8",
    "utf-16-le": "UTF-16LE",
    "utf-16-be": "UTF-16BE",
    "utf-32-le": "UTF-32LE",
    "utf-32-be": "UTF-32BE",
}
TEXTS = {
    "english": "The river carries fine sand from the hills.\nA second line.\n",
    "chinese": "河流把细沙从山上带到宽阔的山谷。\n一二三四五六七八九十\n",
    "mixed": "Python 是一种语言 — café, ελληνικά, 😀 and 𝄞\r\n",
}


@pytest.mark.parametrize("text", list(TEXTS))
@pytest.mark.parametrize("codec", list(BOMS))
@pytest.mark.parametrize("with_bom", [False, True], ids=["no-bom", "bom"])
def test_every_unicode_form_decodes_to_its_text(codec: str, with_bom: bool, text: str) -> None:
    raw = (BOMS[codec] if with_bom else b"") + TEXTS[text].encode(codec)
    assert decode_text(raw) == (TEXTS[text], NAMES[codec] + (" with BOM" if with_bom else ""))


ASSIGNED = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Cn", "Co"))


@given(st.text(ASSIGNED, min_size=1, max_size=300))
def test_any_text_one_eighth_ascii_decodes_in_every_form_without_a_bom(body: str) -> None:
    text = body + " \n"
    assume(not text.startswith("\ufeff"))  # that would be a byte-order mark
    assume(8 * sum(ch < "\x80" for ch in text) >= len(text))  # NUL bytes enough to show the width
    for codec in BOMS:
        assert decode_text(text.encode(codec))[0] == text


LEGACY = [
    ("cp1252", "naïve “quotes” café"),
    ("latin-1", "café crème brûlée"),
    ("cp1251", "Привет мир"),
    ("koi8_r", "Привет мир"),
    ("shift_jis", "日本語のテキスト"),
    ("euc_jp", "日本語のテキスト"),
    ("gbk", "中文文本"),
    ("big5", "中文文本"),
    ("euc_kr", "한국어 텍스트"),
    ("mac_roman", "café"),
]


@pytest.mark.parametrize(("codec", "text"), LEGACY, ids=[c for c, _ in LEGACY])
def test_a_legacy_code_page_is_refused_naming_the_first_bad_byte_and_its_offset(
    codec: str, text: str
) -> None:
    raw = ("ascii first: " + text).encode(codec)
    with pytest.raises(TextEncodingError) as caught:
        decode_text(raw)
    start = len("ascii first: ")
    message = str(caught.value)
    assert message.startswith("not valid UTF-8: byte 0x")
    bad = int(message.split("byte 0x")[1][:2], 16)
    offset = int(message.split(" at offset ")[1].split()[0])
    assert offset >= start and raw[offset] == bad
    assert "refuses legacy code pages such as Windows-1252, Latin-1 or Shift-JIS" in message


def test_a_utf8_bom_does_not_move_the_offset_of_a_bad_byte() -> None:
    with pytest.raises(TextEncodingError, match="byte 0xe9 at offset 6 "):
        decode_text(codecs.BOM_UTF8 + b"caf\xe9")


def test_an_unpaired_surrogate_in_utf16_names_its_offset() -> None:
    raw = codecs.BOM_UTF16_LE + "ab".encode("utf-16-le") + b"\x00\xd8" + "cd".encode("utf-16-le")
    with pytest.raises(
        TextEncodingError, match=r"not valid UTF-16LE \(detected from its BOM\): .* at byte offset 6"
    ):
        decode_text(raw)


def test_a_utf16_file_cut_in_its_last_unit_names_the_offset() -> None:
    raw = codecs.BOM_UTF16_BE + "abc".encode("utf-16-be")[:-1]
    with pytest.raises(TextEncodingError, match=r"not valid UTF-16BE .* at byte offset 6"):
        decode_text(raw)


def test_binary_data_is_refused_naming_the_nul_byte() -> None:
    with pytest.raises(TextEncodingError, match=r"holds a NUL byte at offset 0 .* binary data"):
        decode_text(bytes(range(256)) * 4)


def test_a_stray_nul_in_utf8_text_keeps_it_utf8() -> None:
    assert decode_text(b"hello\x00 world, caf\xc3\xa9") == ("hello\x00 world, café", "UTF-8")


@pytest.mark.parametrize(
    ("head", "codec"),
    [
        (b'[\x00{\x00"\x00', "utf-16-le"),
        (b'\x00[\x00{\x00"', "utf-16-be"),
        (b"[\x00\x00\x00{\x00\x00\x00", "utf-32-le"),
        (b"\x00\x00\x00[\x00\x00\x00{", "utf-32-be"),
        (b'[{"a', "utf-8"),
        (b'[{"a' + bytes(4096), "utf-8"),  # a NUL tail after a crash does not make a JSON file UTF-16
    ],
)
def test_json_encoding_follows_rfc_4627_from_the_first_four_bytes(head: bytes, codec: str) -> None:
    assert sniff_json_encoding(head) == (codec, 0)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-32-be"])
def test_streamed_bad_units_become_the_invalid_mark(codec: str) -> None:
    decoder = incremental_decoder(codec)
    good = "ok".encode(codec)
    bad = b"\x00\xd8" if codec == "utf-16-le" else b"\x00\x11\x00\x00"  # a lone surrogate / beyond U+10FFFF
    assert decoder.decode(good + bad + good, final=True) == "ok" + INVALID_MARK + "ok"
