"""A deployed model, ready to answer (DESIGN §6.1): the bundle, the recipe's tokenizer, embedder and
projection, and the kernel resource that runs the seeds.

Everything a context goes through at inference is what its frame went through in stage 2:
``hasher_core.frames.windows.window_slots`` with the recipe's embedder and projection, so an exact
context finds its frame's slots bit for bit.
"""

from __future__ import annotations

import functools
from typing import Protocol

import numpy as np

from hasher_core.bundle import Bundle
from hasher_core.design import HASHING_VERSION
from hasher_core.embedding.lexical import LexicalEmbedder
from hasher_core.errors import InferenceError
from hasher_core.frames.gorand import projection_matrix
from hasher_core.frames.tokens import load_cl100k
from hasher_core.frames.windows import window_slots
from hasher_core.inference import Model


class RowKernel(Protocol):
    """What runs a model's seeds: the kernel resource (``Sha256Kernel``) or ``sha256.api.RowKernel``."""

    def evaluate_rows(self, slots: np.ndarray, seeds: np.ndarray, header_times: object) -> np.ndarray: ...


def load_model(bundle: Bundle, kernel: RowKernel, *, ollama_url: str | None = None) -> Model:
    """The :class:`~hasher_core.inference.Model` of a (verified) bundle.

    A bundle of the offline hashing embedder answers without Dagster or a server (the ``hasher``
    command stays a small process); another embedder is the resource its recipe names.
    Raises :class:`InferenceError` for a bundle trained on chunk embeddings (a context cannot be
    turned into them) or with an embedder this release lacks.
    """
    recipe = bundle.manifest.get("recipe") or {}
    if recipe.get("embedding_source") != "window":
        raise InferenceError(
            f"bundle {bundle.version} was trained with embedding_source={recipe.get('embedding_source')!r}: "
            "only window frames can be rebuilt from a context; retrain with embedding_source='window'"
        )
    encoding = load_cl100k()
    slots_of = functools.partial(
        window_slots,
        encoding=encoding,
        projection=projection_matrix(int(recipe["projection_seed"])),
        embedder=_embedder(dict(recipe["embedder"]), ollama_url),
    )
    return Model(
        bundle,
        encoding=encoding,
        window_size=int(recipe["window_size"]),
        window_slots=slots_of,
        evaluate_rows=kernel.evaluate_rows,
    )


def _embedder(recipe: dict[str, object], ollama_url: str | None) -> object:
    if recipe.get("name") == "hashing" and recipe.get("version", HASHING_VERSION) == HASHING_VERSION:
        return LexicalEmbedder(dims=int(recipe.get("dims", LexicalEmbedder.dims)))  # type: ignore[arg-type]
    from .embedder import embedder_for_recipe  # Ollama: a resource (and Dagster) after all

    return embedder_for_recipe(recipe, ollama_url)
