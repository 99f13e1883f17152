"""Writing documents in the Data Miner's own layout (DESIGN §2), for the bundled sample data and tests.

``write_sample_knowledge_base`` chunks and embeds documents and writes ``ai_knowledge_base.parquet``
and ``json/ai_knowledge_base.json`` exactly as the Go miner lays them out, so the sample data goes
through the same readers as real miner output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hasher_core.design import EMBEDDING_DIMS
from hasher_core.embedding import TextEmbedder, check_embeddings
from hasher_core.errors import KnowledgeBaseError
from hasher_core.knowledge.inbox import MIN_CHUNK_WORDS, chunk_words

from .files import atomic_write

# Readers hold about one row group in memory, so sample files keep them modest.
SAMPLE_ROW_GROUP_ROWS = 8192


def write_sample_knowledge_base(
    out_dir: Path, documents: dict[str, str], embedder: TextEmbedder
) -> dict[str, Path]:
    """Chunk and embed ``documents`` (name → text) and write them in the Data Miner's layout.

    Writes ``ai_knowledge_base.parquet`` (snake_case columns, ``embedding`` as list<float32> like the
    miner) and ``json/ai_knowledge_base.json`` (a JSON array with Go field names ``FileName``,
    ``ChunkID``, ``Content``, ``Embedding``). Floats are written as the exact decimal of each float32,
    so both files read back to identical records. Each file is written to a temporary name and
    renamed, so a reader never sees half a file.
    """
    out_dir = Path(out_dir)
    dims = int(getattr(embedder, "dims", EMBEDDING_DIMS))
    names: list[str] = []
    ids: list[int] = []
    contents: list[str] = []
    blocks: list[np.ndarray] = []
    for name, text in documents.items():
        chunks = chunk_words(text)
        if not chunks:
            raise KnowledgeBaseError(
                f"sample document {name!r} has no chunk of at least {MIN_CHUNK_WORDS} words"
            )
        blocks.append(
            check_embeddings(
                embedder.embed(chunks),
                len(chunks),
                dims,
                where=f"sample document {name!r}",
                error=KnowledgeBaseError,
            )
        )
        names += [name] * len(chunks)
        ids += range(len(chunks))
        contents += chunks
    embeddings = np.concatenate(blocks) if blocks else np.zeros((0, dims), np.float32)
    table = pa.table(
        {
            "file_name": pa.array(names, pa.string()),
            "chunk_id": pa.array(ids, pa.int32()),
            "content": pa.array(contents, pa.string()),
            "embedding": pa.ListArray.from_arrays(
                pa.array(np.arange(0, len(names) * dims + 1, dims, dtype=np.int32)),
                pa.array(embeddings.reshape(-1), pa.float32()),
            ),
        }
    )
    parquet_path = out_dir / "ai_knowledge_base.parquet"
    json_path = out_dir / "json" / "ai_knowledge_base.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        parquet_path,
        lambda tmp: pq.write_table(
            table, tmp, compression="zstd", write_page_checksum=True, row_group_size=SAMPLE_ROW_GROUP_ROWS
        ),
    )
    exact = embeddings.astype(np.float64).tolist()
    records = (
        json.dumps(
            {"FileName": n, "ChunkID": i, "Content": c, "Embedding": e},
            ensure_ascii=False,
        )
        for n, i, c, e in zip(names, ids, contents, exact, strict=True)
    )

    def write_json(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("[\n")
            for k, record in enumerate(records):
                f.write((",\n  " if k else "  ") + record)
            f.write("\n]\n")

    atomic_write(json_path, write_json)
    return {"parquet": parquet_path, "json": json_path}
