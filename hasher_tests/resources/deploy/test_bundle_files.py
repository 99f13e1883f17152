"""A bundle on disk as a model opens it: checksums of what it maps, the index memory-mapped, the answer
records read a few at a time, the seed table only on demand; and a bundle of the older format."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from hasher_core.bundle import MANIFEST_FILE, SEEDS_FILE, V2_FORMAT, build_bundle
from hasher_core.bundle.format import FINGERPRINTS_FILE, MANIFEST_DIGEST, content_digest
from hasher_core.bundle.format import _manifest_bytes as manifest_bytes
from hasher_core.bundle.index import ANSWER_DTYPE, ARRAY_FILES
from hasher_core.errors import BundleChecksumError, BundleFormatError
from hasher_core.frames.tokens import load_cl100k
from hasher_core.inference import Model
from hasher_resources.deploy.bundle_files import RecordsOnDisk, map_bundle, map_npy, read_bundle, write_bundle
from hasher_tests.core.bundle.test_bundle import make_checkpoints
from hasher_tests.core.inference.test_model import golden_from_seed, slots_of_last_token


@pytest.fixture(scope="module")
def bundle():
    return build_bundle(
        {"a.txt": make_checkpoints(24, seed=3), "b.txt": make_checkpoints(10, partition="b.txt", seed=4)},
        pipeline_version="0.1.0",
    )


@pytest.fixture
def directory(tmp_path, bundle):
    write_bundle(bundle, tmp_path / "b")
    return tmp_path / "b"


def model(bundle) -> Model:
    return Model(
        bundle,
        encoding=load_cl100k(),
        window_size=8,
        window_slots=slots_of_last_token,
        evaluate_rows=golden_from_seed,
    )


def test_a_mapped_bundle_answers_as_the_bundle_read_whole(directory, bundle):
    mapped = map_bundle(directory)
    assert mapped.version == bundle.version and mapped.num_rows == bundle.num_rows
    contexts = np.arange(0, 60_000, 997).reshape(-1, 1)
    whole, opened = model(read_bundle(directory)), model(mapped)
    assert [opened.step(c.tolist()) for c in contexts] == [whole.step(c.tolist()) for c in contexts]


def test_opening_reads_neither_the_seed_table_nor_the_fingerprints(directory, monkeypatch):
    import hasher_resources.deploy.bundle_files as bundle_files

    monkeypatch.setattr(bundle_files, "parse_seeds", lambda *a: pytest.fail("the seed table was parsed"))
    model(map_bundle(directory)).step([123])


def test_a_damaged_index_file_is_refused_at_open_naming_it(directory):
    path = directory / ARRAY_FILES["codes"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleChecksumError, match=r"index-codes\.npy: sha256 mismatch"):
        map_bundle(directory)


def test_a_damaged_seed_table_is_refused_on_open_and_when_it_is_read(directory):
    mapped = map_bundle(directory)  # intact: it opens
    path = directory / SEEDS_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    # A model needs no seed table, yet a damaged one keeps the deployment from answering.
    with pytest.raises(BundleChecksumError, match=r"seeds\.parquet: sha256 mismatch"):
        map_bundle(directory)
    # Damaged after it was opened: refused when it is read.
    with pytest.raises(BundleChecksumError, match=r"seeds\.parquet: sha256 mismatch"):
        mapped.seeds  # noqa: B018
    with pytest.raises(BundleChecksumError, match=r"seeds\.parquet"):
        mapped.files[SEEDS_FILE]


def test_a_bundle_of_the_previous_format_opens_and_answers_the_same(tmp_path, directory, bundle):
    """A v2 bundle has no index: it opens, and its model builds the index in memory."""
    old = tmp_path / "v2"
    old.mkdir()
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    digest = content_digest(
        bundle.seeds,
        manifest["pipeline_version"],
        manifest["header_constants"],
        manifest["recipe"],
        V2_FORMAT,
    )
    manifest |= {"format": V2_FORMAT, "content_digest": digest, "version": digest[:16]}
    manifest["files"] = {name: manifest["files"][name] for name in (SEEDS_FILE, FINGERPRINTS_FILE)}
    del manifest["inference_frames"], manifest[MANIFEST_DIGEST]  # as a v2 writer wrote it
    manifest[MANIFEST_DIGEST] = hashlib.sha256(manifest_bytes(manifest)).hexdigest()
    for name in (SEEDS_FILE, FINGERPRINTS_FILE):
        (old / name).write_bytes((directory / name).read_bytes())
    (old / MANIFEST_FILE).write_bytes(manifest_bytes(manifest))
    assert read_bundle(old).version == digest[:16]  # the deep check passes under v2's rules
    mapped = map_bundle(old)
    assert mapped.index is None
    contexts = np.arange(0, 60_000, 1499).reshape(-1, 1)
    assert [model(mapped).step(c.tolist()) for c in contexts] == [
        model(bundle).step(c.tolist()) for c in contexts
    ]


def test_answer_records_read_from_disk_are_the_array_s(directory, bundle):
    records = RecordsOnDisk(directory / ARRAY_FILES["answer"])
    expected = bundle.index.answer
    assert records.dtype == ANSWER_DTYPE and records.shape == expected.shape
    assert records[3] == expected[3] and records[-1] == expected[-1]
    picks = np.array([5, 0, 5, len(expected) - 1, 2])
    assert np.array_equal(records[picks], expected[picks])
    assert records[np.array([], np.int64)].shape == (0,)
    RecordsOnDisk.GAP_BYTES = 0  # every record its own read: the same answer
    try:
        assert np.array_equal(records[picks], expected[picks])
    finally:
        RecordsOnDisk.GAP_BYTES = 1 << 16
    with pytest.raises(IndexError, match="outside"):
        records[len(expected)]


def test_a_truncated_array_file_is_refused_naming_it(directory):
    path = directory / ARRAY_FILES["slots"]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BundleFormatError, match=r"index-slots\.npy: not a readable \.npy array .*shorter"):
        map_npy(path)


def test_checksums_cover_every_index_file(bundle):
    for name in ARRAY_FILES.values():
        assert bundle.manifest["files"][name]["sha256"] == hashlib.sha256(bundle.files[name]).hexdigest()
