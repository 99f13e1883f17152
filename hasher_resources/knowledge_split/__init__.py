"""The miner's knowledge base split by source file (DESIGN §2): ``build`` streams the file once and
publishes one Parquet directory per partition, ``read`` reads one partition of a published split."""

from .build import CACHE_FORMAT_VERSION, ensure_split
from .read import KnowledgeSplit

__all__ = ["CACHE_FORMAT_VERSION", "KnowledgeSplit", "ensure_split"]
