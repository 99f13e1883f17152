"""Rebuild ``sample_data/miner/`` from ``sample_data/corpus/``: what a Data Miner would have written.

Writes ``ai_knowledge_base.parquet`` (snake_case columns) and ``json/ai_knowledge_base.json`` (a
JSON array with Go field names), 150-word chunks with 25-word overlap, embedded offline with the
hashing embedder. Deterministic: running it twice gives the same files.
"""

from __future__ import annotations

from pathlib import Path

from hasher_resources.embedder import HashingEmbedder
from hasher_resources.sample_writer import write_sample_knowledge_base

ROOT = Path(__file__).resolve().parents[1] / "sample_data"


def main() -> None:
    documents = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "corpus").glob("*.txt"))}
    written = write_sample_knowledge_base(ROOT / "miner", documents, HashingEmbedder())
    for kind, path in written.items():
        print(f"{kind}: {path.relative_to(ROOT.parent)} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
