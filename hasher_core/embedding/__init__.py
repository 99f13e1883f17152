"""Text embeddings for stages 1 and 2 (DESIGN §2, §3.3): ``protocol`` is what the pipeline asks of an
embedder and the check every answer goes through; ``lexical`` is the offline embedder's arithmetic
(signed feature hashing of a text's pieces). The embedder resources are ``hasher_resources.embedder``."""

from .protocol import TextEmbedder, check_embeddings

__all__ = ["TextEmbedder", "check_embeddings"]
