"""The frame recipe (DESIGN §6): carried into the bundle, and a foreign one refused with its field named."""

from __future__ import annotations

import json

import pytest

from hasher_core import design
from hasher_core.bundle import MANIFEST_FILE, build_bundle
from hasher_core.errors import BundleFormatError, BundleInputError
from hasher_core.frames.recipe import frame_recipe, recipe_problems, recipe_to_metadata
from hasher_resources.deploy.bundle_files import read_bundle, write_bundle
from hasher_tests.core.bundle.test_bundle import RECIPE, make_checkpoints


def test_a_recipe_of_this_release_has_no_problem():
    assert recipe_problems(RECIPE) == []
    assert RECIPE["tokenizer_sha256"] == design.CL100K_SHA256 and RECIPE["token_shift"] == 15
    assert RECIPE["embedding_source"] == "window" and RECIPE["window_size"] == design.WINDOW_SIZE


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tokenizer_sha256": "0" * 64}, "'tokenizer_sha256'"),
        ({"tokenizer": "o200k_base"}, "'tokenizer'"),
        ({"token_shift": 0}, "'token_shift'"),
        ({"window_size": 0}, "'window_size'"),
        ({"embedding_source": "sentence"}, "'embedding_source'"),
        ({"embedder": {"name": "hashing", "version": "hashing-v1", "dims": 768}}, "'embedder.version'"),
        ({"embedder": {"name": "bert", "dims": 768}}, "'embedder.name'"),
        ({"embedder": {"name": "ollama", "model": "nomic-embed-text", "dims": 0}}, "'embedder.dims'"),
    ],
)
def test_each_foreign_field_is_named(change, field):
    problems = recipe_problems({**RECIPE, **change})
    assert len(problems) == 1 and field in problems[0]
    assert recipe_problems(None) == ["recipe: missing (made before frame recipes existed; retrain)"]


def test_the_bundle_manifest_holds_the_recipe_and_the_difficulty(tmp_path):
    bundle = build_bundle({"a.txt": make_checkpoints(4)}, pipeline_version="test")
    assert bundle.manifest["recipe"] == {**RECIPE, "difficulty_bits": [design.TOKEN_BITS]}
    write_bundle(bundle, tmp_path / "b")
    assert read_bundle(tmp_path / "b").manifest["recipe"] == bundle.manifest["recipe"]


def test_a_bundle_with_a_foreign_recipe_is_refused_naming_the_field(tmp_path):
    foreign = {**RECIPE, "embedder": {"name": "hashing", "version": "hashing-v1", "dims": 768}}
    table = make_checkpoints(4).replace_schema_metadata(recipe_to_metadata(foreign))
    write_bundle(build_bundle({"a.txt": table}, pipeline_version="test"), tmp_path / "b")
    with pytest.raises(
        BundleFormatError, match=r"cannot rebuild its frames.*'embedder\.version' is 'hashing-v1'"
    ):
        read_bundle(tmp_path / "b")
    assert read_bundle(tmp_path / "b", verify=False).manifest["recipe"]["embedder"]["version"] == "hashing-v1"


def test_a_bundle_of_the_old_format_is_refused_saying_why(tmp_path):
    write_bundle(build_bundle({"a.txt": make_checkpoints(2)}, pipeline_version="test"), tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / MANIFEST_FILE).read_text())
    (tmp_path / "b" / MANIFEST_FILE).write_text(json.dumps({**manifest, "format": "hasher-bundle-v1"}))
    with pytest.raises(BundleFormatError, match="old objective predicts no token"):
        read_bundle(tmp_path / "b")


def test_partitions_must_agree_on_the_recipe():
    other = frame_recipe(embedder=RECIPE["embedder"], window_size=64)
    tables = {
        "a.txt": make_checkpoints(2),
        "b.txt": make_checkpoints(2, partition="b.txt").replace_schema_metadata(recipe_to_metadata(other)),
    }
    with pytest.raises(
        BundleInputError, match=r"partition 'b\.txt'.*'window_size' is 64, partition 'a\.txt' has 128"
    ):
        build_bundle(tables, pipeline_version="test")
    missing = r"'a\.txt', column 'recipe': the checkpoints carry no frame recipe"
    with pytest.raises(BundleInputError, match=missing):
        build_bundle({"a.txt": make_checkpoints(2).replace_schema_metadata({})}, pipeline_version="test")
