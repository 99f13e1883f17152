"""The offline cl100k_base tokenizer: hash check, equivalence with tiktoken's encoding (DESIGN §3.1)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
import tiktoken

from hasher_core.design import CL100K_SHA256, VOCABULARY_SIZE
from hasher_core.errors import TokenizerDataError
from hasher_core.frames.tokens import bundled_cl100k_path, load_cl100k, load_cl100k_from


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
