"""What stages 1 and 2 need from an embedder, and the check every embedder answer goes through.

``TextEmbedder`` is the one embedder protocol of the pipeline (DESIGN §2, §3.3): the inbox reader
and the window frames call ``embed(texts) -> float32[len(texts), dims]``. The implementations, the
offline hashing embedder and the Ollama client, are resources (``hasher_resources.embedder``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from hasher_core.errors import HasherError


class TextEmbedder(Protocol):
    """Anything with ``embed(texts) -> float32[len(texts), dims]`` (row i embeds ``texts[i]``)."""

    def embed(self, texts: list[str]) -> np.ndarray: ...


def check_embeddings(
    vectors: object, count: int, dims: int | None, *, where: str, error: type[HasherError]
) -> np.ndarray:
    """An embedder's answer as float32[count, dims], or ``error`` naming ``where`` and the problem.

    ``dims=None`` accepts any width. Raises ``error`` when the shape is not ``(count, dims)`` or a
    value is NaN or infinite.
    """
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != count or (dims is not None and array.shape[1] != dims):
        raise error(
            f"{where}: the embedder returned shape {array.shape}, expected ({count}, {dims or 'dims'})"
        )
    if not np.isfinite(array).all():
        raise error(f"{where}: the embedder returned NaN or infinite values")
    return array
