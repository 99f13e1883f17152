"""The deployment bundle: building from checkpoints, files and checksums, content-addressed versions."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hasher_core import design
from hasher_core.bundle import (
    FINGERPRINTS_FILE,
    INDEX_FILES,
    MANIFEST_FILE,
    SEEDS_FILE,
    build_bundle,
    bundle_version,
)
from hasher_core.errors import (
    BundleChecksumError,
    BundleFormatError,
    BundleInputError,
    NoCheckpointsError,
)
from hasher_core.frames.recipe import frame_recipe, recipe_to_metadata
from hasher_core.header import golden_token, leading_equal_bits, target_word
from hasher_resources.deploy.bundle_files import read_bundle, write_bundle
from hasher_resources.sha256 import evaluate

#: The recipe of the checkpoints below: window frames of the offline hashing embedder.
RECIPE = frame_recipe(
    embedder={"name": "hashing", "version": design.HASHING_VERSION, "dims": design.EMBEDDING_DIMS}
)


def make_checkpoints(
    rows: int, *, partition: str = "a.txt", seed: int = 0, solved_every: int = 2, header_time: int = 0
) -> pa.Table:
    """A checkpoint table with real goldens (hashlib reference backend) and a frame recipe.

    Every ``solved_every``-th row is made an exact-token solve (17 bits, DESIGN §4.3) by setting its
    target to the token its golden stands for (``golden >> 15``, re-drawing the seed until that is a
    real token id): searching a seed would cost ~2^17 hashes per row. Frames come in pairs sharing
    slots (one context seen with two next tokens).
    """
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, 2**32, size=((rows + 1) // 2, design.SLOT_COUNT), dtype=np.uint64)
    slots = np.repeat(slots, 2, axis=0)[:rows].astype(np.uint32)
    solved = np.zeros(rows, bool)
    if solved_every:
        solved[::solved_every] = True
    seeds = rng.integers(0, 256, size=(rows, design.SEED_BYTES), dtype=np.uint8)
    seeds[:, 16:28] = 0
    golden = evaluate(slots, seeds, header_time=header_time, backend="reference")
    while (redraw := solved & (golden_token(golden) >= design.VOCABULARY_SIZE)).any():
        seeds[redraw, 28:] = rng.integers(0, 256, size=(int(redraw.sum()), 4), dtype=np.uint8)
        golden[redraw] = evaluate(slots[redraw], seeds[redraw], header_time=header_time, backend="reference")
    target = rng.integers(0, design.VOCABULARY_SIZE, size=rows).astype(np.uint32)
    target[solved] = golden_token(golden[solved])
    matched = leading_equal_bits(golden, target_word(target))
    difficulty = np.full(rows, design.TOKEN_BITS, np.uint8)
    fingerprints = [
        hashlib.sha256(slots[i].astype(">u4").tobytes() + int(target[i]).to_bytes(4, "big")).hexdigest()[:32]
        for i in range(rows)
    ]
    cols = {
        "source_file": pa.array([partition] * rows).dictionary_encode(),
        "chunk_id": pa.array(np.arange(rows) // 2, pa.int32()),
        "window_start": pa.array(np.zeros(rows), pa.int32()),
        "window_end": pa.array(np.arange(rows) % 2 + 1, pa.int32()),
        "context_length": pa.array(np.arange(rows) % 2 + 1, pa.int32()),
    }
    for i in range(design.SLOT_COUNT):
        cols[f"asic_slot_{i}"] = pa.array(slots[:, i].view(np.int32))
    cols |= {
        "target_token_id": pa.array(target.view(np.int32)),
        "best_seed": pa.array([s.tobytes() for s in seeds], pa.binary()),
        "golden": pa.array(golden.astype(np.int64)),
        "solved": pa.array(solved),
        "matched_bits": pa.array(matched.astype(np.int32)),
        "difficulty_bits": pa.array(difficulty.astype(np.int32)),
        "header_time": pa.array(np.full(rows, header_time, np.int64)),
        "fingerprint": pa.array(fingerprints),
    }
    return pa.table(cols).replace_schema_metadata(recipe_to_metadata(RECIPE))


@pytest.fixture(scope="module")
def checkpoints() -> dict[str, pa.Table]:
    return {"b.txt": make_checkpoints(6, partition="b.txt", seed=2), "a.txt": make_checkpoints(8, seed=1)}


def test_seed_table_has_one_row_per_frame_in_deterministic_order(checkpoints):
    bundle = build_bundle(checkpoints, pipeline_version="0.1.0")
    assert bundle.num_rows == 14
    keys = list(
        zip(
            *(bundle.seeds.column(c).to_pylist() for c in ("partition", "chunk_id", "window_end")),
            strict=True,
        )
    )
    assert keys == sorted(keys)
    reversed_input = dict(reversed(list(checkpoints.items())))
    assert build_bundle(reversed_input, pipeline_version="0.1.0").seeds.equals(bundle.seeds)


def test_slots_and_seeds_round_trip_the_uint32_bit_cast(checkpoints):
    bundle = build_bundle(checkpoints, pipeline_version="0.1.0")
    a = checkpoints["a.txt"]
    first_a = np.array([a.column(f"asic_slot_{i}")[0].as_py() for i in range(12)], np.int32).view(np.uint32)
    row = bundle.seeds.column("partition").to_pylist().index("a.txt")
    assert np.array_equal(bundle.slots()[row], first_a)
    assert bundle.best_seeds()[row].tobytes() == a.column("best_seed")[0].as_py()
    assert np.array_equal(
        evaluate(bundle.slots(), bundle.best_seeds(), backend="reference"),
        bundle.seeds.column("golden").to_numpy(),
    )


def test_manifest_carries_versions_constants_counts_and_checksums(checkpoints):
    bundle = build_bundle(checkpoints, pipeline_version="0.1.0")
    m = bundle.manifest
    assert m["pipeline_version"] == "0.1.0"
    assert m["algorithm_version"] == design.ALGORITHM_VERSION
    assert m["header_constants"]["header_bits"] == design.HEADER_BITS
    assert m["header_constants"]["passes"] == 21
    assert m["partitions"] == {"a.txt": {"rows": 8, "solved": 4}, "b.txt": {"rows": 6, "solved": 3}}
    assert (m["total_rows"], m["solved_rows"]) == (14, 7)
    for name in (SEEDS_FILE, FINGERPRINTS_FILE):
        assert m["files"][name]["sha256"] == hashlib.sha256(bundle.files[name]).hexdigest()
    assert json.loads(bundle.files[MANIFEST_FILE]) == m


def test_only_solved_keeps_solved_rows(checkpoints):
    bundle = build_bundle(checkpoints, pipeline_version="0.1.0", only_solved=True)
    assert bundle.num_rows == 7
    assert all(bundle.seeds.column("solved").to_pylist())


def test_version_is_content_addressed(checkpoints):
    one = build_bundle(checkpoints, pipeline_version="0.1.0")
    two = build_bundle(checkpoints, pipeline_version="0.1.0")
    assert bundle_version(one) == bundle_version(two) == one.version
    assert re.fullmatch("[0-9a-f]{16}", one.version) and one.content_digest.startswith(one.version)
    assert build_bundle(checkpoints, pipeline_version="0.2.0").version != one.version
    fewer = {"a.txt": checkpoints["a.txt"].slice(0, 7), "b.txt": checkpoints["b.txt"]}
    assert build_bundle(fewer, pipeline_version="0.1.0").version != one.version


def test_files_with_their_own_metadata_extra_columns_or_wider_types_give_the_same_bundle(checkpoints):
    # Each checkpoint file carries its own gate record, some an extra column or int64 slots: the
    # partitions are grouped by schema, so neither changes a row of the bundle.
    plain = build_bundle(checkpoints, pipeline_version="0.1.0")
    a, b = checkpoints["a.txt"], checkpoints["b.txt"]
    gated = {**(a.schema.metadata or {}), b"hasher": b'{"passed": true}'}
    wide = b.set_column(
        b.column_names.index("asic_slot_0"), "asic_slot_0", b.column("asic_slot_0").cast(pa.int64())
    )
    mixed = {
        "a.txt": a.replace_schema_metadata(gated).append_column("note", pa.array(["x"] * a.num_rows)),
        "b.txt": wide,
        "c.txt": a.slice(0, 0),
    }
    again = build_bundle(mixed, pipeline_version="0.1.0")
    assert again.version == plain.version
    assert again.seeds.equals(plain.seeds)
    assert again.manifest["partitions"]["c.txt"] == {"rows": 0, "solved": 0}


def test_write_then_read_round_trips(tmp_path, checkpoints):
    bundle = build_bundle(checkpoints, pipeline_version="0.1.0")
    written = write_bundle(bundle, tmp_path / "b")
    assert set(written) == {SEEDS_FILE, FINGERPRINTS_FILE, MANIFEST_FILE, *INDEX_FILES}
    back = read_bundle(tmp_path / "b")
    assert back.seeds.equals(bundle.seeds)
    assert back.manifest == bundle.manifest
    lines = (tmp_path / "b" / FINGERPRINTS_FILE).read_text().splitlines()
    assert lines == sorted(set(bundle.seeds.column("fingerprint").to_pylist()))


def test_write_refuses_to_overwrite_a_bundle(tmp_path, checkpoints):
    bundle = build_bundle(checkpoints, pipeline_version="0.1.0")
    write_bundle(bundle, tmp_path)
    before = (tmp_path / SEEDS_FILE).read_bytes()
    other = build_bundle({"a.txt": checkpoints["a.txt"]}, pipeline_version="0.1.0")
    with pytest.raises(BundleFormatError, match="refusing to overwrite"):
        write_bundle(other, tmp_path)
    assert (tmp_path / SEEDS_FILE).read_bytes() == before


def test_checksum_mismatch_names_file_and_both_digests(tmp_path, checkpoints):
    bundle = build_bundle(checkpoints, pipeline_version="0.1.0")
    write_bundle(bundle, tmp_path)
    path = tmp_path / SEEDS_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    expected = bundle.manifest["files"][SEEDS_FILE]["sha256"]
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(BundleChecksumError) as e:
        read_bundle(tmp_path)
    assert str(path) in str(e.value) and expected in str(e.value) and actual in str(e.value)
    assert (e.value.expected, e.value.actual) == (expected, actual)


def test_tampered_seed_table_with_matching_manifest_checksum_is_caught(tmp_path, checkpoints):
    """Rewriting the file AND its manifest checksum still fails: the content digest is recomputed."""
    bundle = build_bundle(checkpoints, pipeline_version="0.1.0")
    write_bundle(bundle, tmp_path)
    other = build_bundle({"a.txt": checkpoints["a.txt"]}, pipeline_version="0.1.0")
    (tmp_path / SEEDS_FILE).write_bytes(other.files[SEEDS_FILE])
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    manifest["files"][SEEDS_FILE]["sha256"] = hashlib.sha256(other.files[SEEDS_FILE]).hexdigest()
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleChecksumError, match="content digest"):
        read_bundle(tmp_path)
    assert read_bundle(tmp_path, verify=False).num_rows == other.num_rows


def test_missing_manifest_is_a_format_error(tmp_path):
    with pytest.raises(BundleFormatError, match=r"manifest\.json: missing"):
        read_bundle(tmp_path)


def test_no_checkpoints_names_the_partitions_looked_at(checkpoints):
    with pytest.raises(NoCheckpointsError, match=r"partitions looked at: none"):
        build_bundle({}, pipeline_version="0.1.0")
    empty = {"x.txt": checkpoints["a.txt"].slice(0, 0), "y.txt": checkpoints["b.txt"].slice(0, 0)}
    with pytest.raises(NoCheckpointsError, match=r"'x\.txt' \(0 rows\), 'y\.txt' \(0 rows\)"):
        build_bundle(empty, pipeline_version="0.1.0")
    unsolved = {"a.txt": checkpoints["a.txt"].filter(pa.array([False] * 8))}
    with pytest.raises(NoCheckpointsError, match="no partition has solved checkpoint rows"):
        build_bundle(unsolved, pipeline_version="0.1.0", only_solved=True)


def test_missing_column_names_partition_and_column(checkpoints):
    broken = {"a.txt": checkpoints["a.txt"], "b.txt": checkpoints["b.txt"].drop_columns(["best_seed"])}
    with pytest.raises(BundleInputError, match=r"partition 'b\.txt', column 'best_seed': missing"):
        build_bundle(broken, pipeline_version="0.1.0")


def test_null_or_short_seed_names_the_row(checkpoints):
    t = checkpoints["a.txt"]
    seeds = t.column("best_seed").to_pylist()
    seeds[3] = None
    nulls = t.set_column(t.schema.get_field_index("best_seed"), "best_seed", pa.array(seeds, pa.binary()))
    with pytest.raises(BundleInputError, match="row 3 has no seed"):
        build_bundle({"a.txt": nulls}, pipeline_version="0.1.0")
    seeds[3] = b"\x00" * 31
    short = t.set_column(t.schema.get_field_index("best_seed"), "best_seed", pa.array(seeds, pa.binary()))
    with pytest.raises(BundleInputError, match="row 3 is 31 bytes"):
        build_bundle({"a.txt": short}, pipeline_version="0.1.0")


def test_golden_out_of_range_is_rejected(checkpoints):
    t = checkpoints["a.txt"]
    golden = t.column("golden").to_pylist()
    golden[5] = 2**32
    bad = t.set_column(t.schema.get_field_index("golden"), "golden", pa.array(golden, pa.int64()))
    with pytest.raises(BundleInputError, match=r"column 'golden': row 5: value 4294967296 outside"):
        build_bundle({"a.txt": bad}, pipeline_version="0.1.0")


@settings(max_examples=25, deadline=None)
@given(
    slot_words=st.lists(st.integers(0, 2**32 - 1), min_size=12, max_size=12),
    seed=st.binary(min_size=32, max_size=32),
    golden=st.integers(0, 2**32 - 1),
    header_time=st.integers(0, 2**32 - 1),
)
def test_any_row_round_trips_through_the_files(tmp_path_factory, slot_words, seed, golden, header_time):
    table = make_checkpoints(1, solved_every=0)
    for i, w in enumerate(slot_words):
        table = table.set_column(
            table.schema.get_field_index(f"asic_slot_{i}"),
            f"asic_slot_{i}",
            pa.array(np.array([w], np.uint32).view(np.int32)),
        )
    table = table.set_column(table.schema.get_field_index("best_seed"), "best_seed", pa.array([seed]))
    table = table.set_column(table.schema.get_field_index("golden"), "golden", pa.array([golden], pa.int64()))
    table = table.set_column(
        table.schema.get_field_index("header_time"), "header_time", pa.array([header_time], pa.int64())
    )
    bundle = build_bundle({"p": table}, pipeline_version="x")
    directory = tmp_path_factory.mktemp("rt")
    write_bundle(bundle, directory)
    back = read_bundle(directory)
    assert back.slots()[0].tolist() == slot_words
    assert back.best_seeds()[0].tobytes() == seed
    assert back.seeds.column("golden")[0].as_py() == golden
    assert back.seeds.column("header_time")[0].as_py() == header_time
    assert back.version == bundle.version
