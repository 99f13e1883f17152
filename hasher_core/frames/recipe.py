"""The frame recipe (DESIGN §6): everything inference needs to rebuild a frame from text bit for bit.

Stage 2 writes it into the frames file, the seeds and checkpoints carry it along, and the deployment
puts it in the bundle's manifest (with the seeds' difficulty). A bundle whose recipe this release
cannot reproduce — another tokenizer, token shift, embedding or embedder version — is refused by
:func:`recipe_problems`, which names the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hasher_core.design import (
    CL100K_SHA256,
    EMBEDDING_SOURCES,
    HASHING_VERSION,
    PROJECTION_SEED,
    STRIDE,
    TOKEN_SHIFT,
    TOKENIZER,
    WINDOW_SIZE,
)

#: Parquet key-value metadata key under which the frames, seeds and checkpoint files carry the recipe.
RECIPE_METADATA_KEY = b"hasher_recipe"
EMBEDDERS = ("hashing", "ollama")


def frame_recipe(
    *,
    embedder: Mapping[str, Any],
    window_size: int = WINDOW_SIZE,
    stride: int = STRIDE,
    embedding_source: str = "window",
    projection_seed: int = PROJECTION_SEED,
) -> dict[str, Any]:
    """The recipe of frames made with these settings; ``embedder`` is the embedder's own
    ``recipe()`` (name, version or model, dims)."""
    return {
        "tokenizer": TOKENIZER,
        "tokenizer_sha256": CL100K_SHA256,
        "window_size": int(window_size),
        "stride": int(stride),
        "embedding_source": embedding_source,
        "embedder": dict(embedder),
        "projection_seed": int(projection_seed),
        "token_shift": TOKEN_SHIFT,
    }


def recipe_problems(recipe: Mapping[str, Any] | None) -> list[str]:
    """What in ``recipe`` this release cannot reproduce, one line per field (empty when it can)."""
    if not isinstance(recipe, Mapping):
        return ["recipe: missing (made before frame recipes existed; retrain)"]
    problems = []
    expected = {"tokenizer": TOKENIZER, "tokenizer_sha256": CL100K_SHA256, "token_shift": TOKEN_SHIFT}
    for field, want in expected.items():
        if recipe.get(field) != want:
            problems.append(f"recipe field {field!r} is {recipe.get(field)!r}; this release uses {want!r}")
    for field in ("window_size", "stride", "projection_seed"):
        value = recipe.get(field)
        positive = field != "projection_seed"
        if not isinstance(value, int) or isinstance(value, bool) or (positive and value < 1):
            problems.append(f"recipe field {field!r} is {value!r}; expected a positive integer")
    if recipe.get("embedding_source") not in EMBEDDING_SOURCES:
        problems.append(
            f"recipe field 'embedding_source' is {recipe.get('embedding_source')!r}; "
            f"expected one of {EMBEDDING_SOURCES}"
        )
    embedder = recipe.get("embedder")
    if not isinstance(embedder, Mapping) or embedder.get("name") not in EMBEDDERS:
        name = embedder.get("name") if isinstance(embedder, Mapping) else embedder
        problems.append(f"recipe field 'embedder.name' is {name!r}; this release knows {EMBEDDERS}")
    else:
        if embedder["name"] == "hashing" and embedder.get("version") != HASHING_VERSION:
            problems.append(
                f"recipe field 'embedder.version' is {embedder.get('version')!r}; "
                f"this release hashes with {HASHING_VERSION!r}"
            )
        dims = embedder.get("dims")
        if not isinstance(dims, int) or dims < 1:
            problems.append(f"recipe field 'embedder.dims' is {dims!r}; expected a positive integer")
    return problems


def recipe_to_metadata(recipe: Mapping[str, Any]) -> dict[bytes, bytes]:
    """The recipe as Parquet key-value metadata."""
    return {RECIPE_METADATA_KEY: json.dumps(dict(recipe), sort_keys=True).encode()}


def recipe_from_metadata(metadata: Mapping[bytes, bytes] | None) -> dict[str, Any] | None:
    """The recipe a Parquet file's key-value metadata carries, or None."""
    raw = (metadata or {}).get(RECIPE_METADATA_KEY)
    return json.loads(raw) if raw else None
