"""The offline cl100k_base tokenizer: hash check, equivalence with tiktoken's encoding (DESIGN §3.1)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import tiktoken.core as tiktoken_core
from hypothesis import given, settings
from hypothesis import strategies as st

from hasher_core.design import CL100K_SHA256, VOCABULARY_SIZE
from hasher_core.errors import TokenizeError, TokenizerDataError
from hasher_core.frames.tokens import (
    _encode_by_pieces,
    bundled_cl100k_path,
    encode_ordinary,
    load_cl100k,
    load_cl100k_from,
    repair_surrogates,
)


def test_bundled_ranks_have_the_pinned_hash() -> None:
    raw = gzip.decompress(bundled_cl100k_path().read_bytes())
    assert hashlib.sha256(raw).hexdigest() == CL100K_SHA256


def test_encoding_is_cl100k_with_its_vocabulary_size() -> None:
    enc = load_cl100k()
    assert isinstance(enc, tiktoken.Encoding)
    assert enc.name == "cl100k_base"
    assert enc.n_vocab == VOCABULARY_SIZE == 100277
    assert enc.eot_token == 100257


def test_encoding_is_cached_per_process() -> None:
    assert load_cl100k() is load_cl100k()


def test_known_token_ids() -> None:
    # cl100k_base ids published with tiktoken's own examples.
    enc = load_cl100k()
    assert enc.encode_ordinary("hello world") == [15339, 1917]
    assert enc.encode_ordinary("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]


def test_special_token_text_is_ordinary_text() -> None:
    enc = load_cl100k()
    tokens = enc.encode_ordinary("a <|endoftext|> b")
    assert 100257 not in tokens
    assert enc.decode(tokens) == "a <|endoftext|> b"


def test_round_trip_of_unicode_text() -> None:
    enc = load_cl100k()
    text = "Grüße, 世界! naïve café — ∑ 12345 \n\tend"
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_plain_uncompressed_copy_loads(tmp_path: Path) -> None:
    plain = tmp_path / "cl100k_base.tiktoken"
    plain.write_bytes(gzip.decompress(bundled_cl100k_path().read_bytes()))
    assert load_cl100k_from(plain).encode_ordinary("hello world") == [15339, 1917]


def test_tampered_ranks_are_refused_naming_file_and_both_hashes(tmp_path: Path) -> None:
    raw = bytearray(gzip.decompress(bundled_cl100k_path().read_bytes()))
    raw[-3] ^= 1  # flip one bit of the last rank
    tampered = tmp_path / "cl100k_base.tiktoken.gz"
    tampered.write_bytes(gzip.compress(bytes(raw)))
    before = tampered.read_bytes()
    with pytest.raises(TokenizerDataError) as info:
        load_cl100k_from(tampered)
    message = str(info.value)
    assert str(tampered) in message
    assert CL100K_SHA256 in message
    assert hashlib.sha256(bytes(raw)).hexdigest() in message
    assert tampered.read_bytes() == before  # the input is never rewritten


def test_missing_file_is_a_tokenizer_data_error(tmp_path: Path) -> None:
    with pytest.raises(TokenizerDataError, match="cannot be read"):
        load_cl100k_from(tmp_path / "absent.tiktoken.gz")


def test_corrupt_gzip_is_a_tokenizer_data_error(tmp_path: Path) -> None:
    broken = tmp_path / "cl100k_base.tiktoken.gz"
    broken.write_bytes(bundled_cl100k_path().read_bytes()[:1000])
    with pytest.raises(TokenizerDataError, match="not a valid gzip file"):
        load_cl100k_from(broken)


# A padded OCR page: tiktoken's regex engine gives up on the whitespace run ("Max stack size exceeded
# for backtracking"), a known tiktoken limit.
PADDED_PAGE = " " * 1_000_000 + "text after the padding"


def _tiktoken_failure(call: str) -> BaseException:
    try:
        getattr(load_cl100k(), call)(PADDED_PAGE)
    except BaseException as exc:
        return exc
    raise AssertionError(f"tiktoken's {call} took the padded page: its limit was lifted")


def test_tiktoken_itself_fails_on_a_million_spaces_in_two_different_ways() -> None:
    # The premise of the fallback: encode_to_numpy raises ValueError, encode_ordinary panics in Rust
    # (pyo3's PanicException derives from BaseException, so `except Exception` would miss it).
    assert isinstance(_tiktoken_failure("encode_to_numpy"), ValueError)
    panic = _tiktoken_failure("encode_ordinary")
    assert type(panic).__name__ == "PanicException" and not isinstance(panic, Exception)


@pytest.mark.parametrize(
    "text",
    [PADDED_PAGE, "\u3000" * 600_000 + "x", " \t" * 500_000 + "y", "a" + "\n \n" * 400_000 + "b"],
    ids=["spaces", "ideographic spaces", "tabs and spaces", "blank lines"],
)
def test_long_whitespace_runs_tokenise_as_tiktoken_would_without_the_limit(text: str) -> None:
    enc = load_cl100k()
    ids = encode_ordinary(enc, text)
    assert ids.dtype == np.uint32
    # tiktoken's own reference path (regex split in Python, Rust BPE per piece) has no stack limit.
    assert ids.tolist() == enc._encode_only_native_bpe(text)
    assert enc.decode(ids.tolist()) == text


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=30),
            st.sampled_from([" ", "\n", "\t", "\r\n", "\u3000", "\xa0"]).map(lambda c: c * 3000),
        ),
        max_size=8,
    ).map("".join)
)
def test_the_piecewise_path_equals_tiktoken_wherever_tiktoken_works(text: str) -> None:
    enc = load_cl100k()
    expected = enc.encode_ordinary(text)
    assert _encode_by_pieces(enc, text).tolist() == expected
    assert encode_ordinary(enc, text).tolist() == expected


@pytest.mark.parametrize("first", ["ValueError", "PanicException"])
def test_a_text_no_tokenizer_path_takes_is_a_tokenize_error(
    monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    enc = load_cl100k()
    failure = ValueError("Regex error while tokenizing") if first == "ValueError" else None
    if failure is None:
        failure = type(_tiktoken_failure("encode_ordinary"))("called `Result::unwrap()` on an `Err`")

    def tiktoken_fails(*args: object, **kwargs: object) -> None:
        raise failure

    def pieces_fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("library bug")

    monkeypatch.setattr(tiktoken_core.Encoding, "encode_to_numpy", tiktoken_fails)
    monkeypatch.setattr(tiktoken_core.Encoding, "_encode_single_piece", pieces_fail)
    with pytest.raises(TokenizeError, match=f"{first}.*RuntimeError: library bug"):
        encode_ordinary(enc, "some text")


def test_a_rust_panic_in_tiktoken_falls_back_to_the_piecewise_path(monkeypatch: pytest.MonkeyPatch) -> None:
    enc = load_cl100k()
    panic = type(_tiktoken_failure("encode_ordinary"))

    def tiktoken_panics(*args: object, **kwargs: object) -> None:
        raise panic("called `Result::unwrap()` on an `Err` value")

    monkeypatch.setattr(tiktoken_core.Encoding, "encode_to_numpy", tiktoken_panics)
    assert encode_ordinary(enc, "hello world").tolist() == enc.encode_ordinary("hello world")


def test_an_undecodable_byte_tokenises_as_tiktoken_reads_it() -> None:
    # b"caf\xe9 The river" as Python hands over argv (PEP 383): tiktoken reads the lone surrogate as
    # U+FFFD (token 5809), never as the UTF-8 bytes of a surrogate (ED B3 A9, three byte tokens).
    enc = load_cl100k()
    text = b"caf\xe9 The river".decode("utf-8", "surrogateescape")
    assert encode_ordinary(enc, text).tolist() == enc.encode_ordinary(text) == [69896, 5809, 578, 15140]


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(categories=("L", "N", "P", "Z", "Cs")), max_size=40))
def test_text_with_lone_surrogates_tokenises_exactly_as_tiktoken_encode_ordinary(text: str) -> None:
    enc = load_cl100k()
    assert encode_ordinary(enc, text).tolist() == enc.encode_ordinary(text)


def test_a_surrogate_in_a_text_too_long_for_tiktokens_regex_is_repaired_then_split_by_pieces() -> None:
    enc = load_cl100k()
    text = "caf\udce9" + " " * 1_000_000 + "x"
    expected = enc._encode_only_native_bpe(repair_surrogates(text))
    assert encode_ordinary(enc, text).tolist() == expected and expected[1] == 5809
