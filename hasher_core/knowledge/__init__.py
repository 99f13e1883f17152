"""Stage 1 (DESIGN §2): Data Miner output or raw text in, the canonical knowledge base out.

``read.read_knowledge_base`` is the entry point: discovery (``formats``), validation (``validate``)
with counted skips (``report``), partition keys (``keys``) and the raw-text inbox (``inbox``). The
schema is ``hasher_core.schemas.knowledge_base_schema``; the errors are ``hasher_core.errors``'
``KnowledgeBaseError`` family. Input files are only ever opened for reading.
"""

from .formats import DISCOVERY_ORDER, Format, detect_format, discovery_candidates
from .inbox import chunk_words, read_inbox_file
from .keys import safe_partition_key
from .read import SourceFileInfo, SourceFingerprint, list_source_files, read_knowledge_base
from .report import ReadReport

__all__ = [
    "DISCOVERY_ORDER",
    "Format",
    "ReadReport",
    "SourceFileInfo",
    "SourceFingerprint",
    "chunk_words",
    "detect_format",
    "discovery_candidates",
    "list_source_files",
    "read_inbox_file",
    "read_knowledge_base",
    "safe_partition_key",
]
