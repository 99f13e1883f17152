"""safe_partition_key: safe names pass through, anything else maps to a stable, distinct, safe key."""

from __future__ import annotations

import hashlib
import unicodedata

import pytest
from dagster._cli.job import gen_partition_names_from_args
from dagster._core.definitions.partitions.utils.base import INVALID_PARTITION_SUBSTRINGS
from hypothesis import given
from hypothesis import strategies as st

from hasher_core.knowledge import safe_partition_key


def assert_safe(key: str) -> None:
    assert 0 < len(key) <= 100
    assert "/" not in key and "\\" not in key and ".." not in key
    assert not key.startswith(".")
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in key)
    assert not any(s in key for s in INVALID_PARTITION_SUBSTRINGS)
    assert not any(c in key for c in ",[]|")


@pytest.mark.parametrize("name", ["a.txt", "report 2024.pdf", "hf:stallone-goat-17", "Ünïcode.md"])
def test_safe_names_are_their_own_key(name: str) -> None:
    assert safe_partition_key(name) == name


def test_miner_path_keeps_the_basename_and_hashes_the_full_name() -> None:
    name = "/data/docs/a.pdf"
    digest = hashlib.blake2b(name.encode(), digest_size=5).hexdigest()
    assert safe_partition_key(name) == f"a.pdf~{digest}"


UNSAFE = [
    "",
    "../etc/passwd",
    "a/b",
    "a\\b",
    "x..y",
    "line\nbreak",
    "tab\there",
    "nul\0",
    ".hidden",
    " a",
    "a" * 101,
]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_mapped_to_a_safe_key(name: str) -> None:
    key = safe_partition_key(name)
    assert key != name
    assert_safe(key)


def test_a_name_shaped_like_a_sanitized_key_is_hashed_too() -> None:
    # Otherwise the raw name "a.pdf~<hash>" could collide with the key of "/data/docs/a.pdf".
    sanitized = safe_partition_key("/data/docs/a.pdf")
    assert safe_partition_key(sanitized) != sanitized


@given(st.text(max_size=300))
def test_every_key_is_safe_and_stable(name: str) -> None:
    key = safe_partition_key(name)
    assert_safe(key)
    assert safe_partition_key(name) == key


@given(st.text(max_size=60), st.text(max_size=60))
def test_names_distinct_in_nfc_get_distinct_keys(a: str, b: str) -> None:
    if unicodedata.normalize("NFC", a) != unicodedata.normalize("NFC", b):
        assert safe_partition_key(a) != safe_partition_key(b)


@given(st.text(max_size=60))
def test_every_spelling_of_a_name_gets_the_key_of_its_nfc_form(name: str) -> None:
    keys = {safe_partition_key(unicodedata.normalize(form, name)) for form in ("NFC", "NFD")}
    assert keys == {safe_partition_key(unicodedata.normalize("NFC", name))}


#: Canonically equivalent spellings (UAX #15): what macOS, a keyboard and an old file system write.
EQUIVALENT = {
    "macOS NFD accents": ("re\u0301sume\u0301 notes.txt", "résumé notes.txt"),
    "Hangul jamo": ("\u1112\u1161\u11ab\u1100\u1173\u11af.md", "한글.md"),
    "Angstrom sign": ("\u212b.txt", "\u00c5.txt"),
    "Vietnamese mark order": ("vie\u0323\u0302t.txt", "việt.txt"),
    "Ohm sign": ("\u2126 law.txt", "\u03a9 law.txt"),
}


@pytest.mark.parametrize("case", list(EQUIVALENT))
def test_canonically_equivalent_names_are_one_key_the_typed_nfc_name(case: str) -> None:
    decomposed, typed = EQUIVALENT[case]
    assert decomposed != typed
    assert safe_partition_key(decomposed) == safe_partition_key(typed) == typed


#: Names that print like another name: an invisible or space-like character inside.
LOOK_ALIKES = {
    "zero-width space": "notes\u200b.txt",
    "zero-width joiner": "no\u200dtes.txt",
    "soft hyphen": "no\u00adtes.txt",
    "right-to-left override": "notes\u202etxt.exe",
    "byte-order mark": "\ufeffnotes.txt",
    "no-break space": "my\u00a0notes.txt",
    "narrow no-break space": "my\u202fnotes.txt",
    "figure space": "my\u2007notes.txt",
    "undecodable byte (PEP 383)": "caf\udce9.txt",
    "private use": "notes\ue000.txt",
}


@pytest.mark.parametrize("case", list(LOOK_ALIKES))
def test_a_name_with_an_invisible_or_space_like_character_gets_a_visibly_distinct_key(case: str) -> None:
    name = LOOK_ALIKES[case]
    key = safe_partition_key(name)
    assert key != name and "~" in key
    assert_safe(key)
    assert key.isprintable() and all(ch == " " or not ch.isspace() for ch in key)


def test_a_japanese_name_with_an_ideographic_space_stays_its_own_key() -> None:
    # U+3000 is as wide as a character: it does not print like a plain space.
    assert safe_partition_key("議事録\u30002024.txt") == "議事録\u30002024.txt"


@pytest.mark.parametrize(
    "name",
    ["Quarterly report, Q3 [draft].txt", "a,b.txt", "notes [v2].md", "left]right[.txt", "x|y.txt"],
)
def test_names_with_dagster_selection_syntax_get_a_key_the_cli_selects(name: str) -> None:
    key = safe_partition_key(name)
    assert key != name
    assert_safe(key)
    # Dagster's own parser of `dagster job backfill --partitions KEY`: it splits on commas.
    assert list(gen_partition_names_from_args([key, "other.txt"], False, key, None, None)) == [key]
