"""Where ``--max-distance`` belongs (DESIGN §6.1): distances to the nearest deployed frame of the
contexts a recitation of the bundled sample texts meets, against those of unrelated prompts.

The deployment is every sample text (``sample_data/``: the miner's four texts and the inbox's Zen of
Python, 2,544 window frames) with the default recipe: real slots from the offline embedder, seeds
that give back every target (a stand-in for the 17-bit search, which only decides whether an answer
is right, not where a context lies). Distances are Euclidean over the 24 dequantised features,
exactly as :class:`~hasher_core.inference.Model` measures them. Three groups:

- **recitation**: greedy generation from each text's first words through every chunk; the steps no
  deployed frame matches exactly (crossing from one chunk into the next) are answered by the nearest
  frame, and must stay answered;
- **one token past**: each chunk's last window moved one token on, to the chunk's end (the context
  after its last trained one), matched as a whole window (no suffix);
- **unrelated**: prompts about other things, which must abstain under the default;
- **mid-text** (for the README, not for the default): six tokens from inside a chunk, every 40
  tokens; neither a chunk's start nor a recitation, so answered by a guess or an abstention.

:func:`longest_coincidental_chunk_start` measures the same texts for ``MIN_SUFFIX_TOKENS``: how
many of a chunk's first tokens also occur at a word start elsewhere (not in the overlap with the
chunk before it), where a context ending there would match that chunk's first frame by chance.

``python -m hasher_tests.end_to_end.max_distance`` prints the table the README's model section
quotes; ``test_max_distance.py`` checks that the defaults lie between the groups.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hasher_core.bundle import build_bundle
from hasher_core.design import PROJECTION_SEED, WINDOW_SIZE
from hasher_core.frames.gorand import projection_matrix
from hasher_core.frames.tokens import encode_ordinary, load_cl100k
from hasher_core.frames.windows import window_slots
from hasher_core.inference import DEFAULT_MAX_DISTANCE, Model
from hasher_core.knowledge.inbox import chunk_words
from hasher_resources.embedder import HashingEmbedder
from hasher_tests.core.inference.test_model import checkpoints_from, golden_from_seed

SAMPLE_DATA = Path(__file__).resolve().parents[2] / "sample_data"

#: Ordinary prompts about nothing the samples hold (the first is the one from issue 18).
UNRELATED_PROMPTS = (
    "The weather in Paris is lovely in the spring",
    "Quantum chromodynamics",
    "How do I bake sourdough bread at home?",
    "The stock market fell sharply on Tuesday after the announcement.",
    "My favourite football team won the championship last night",
    "Photosynthesis converts sunlight into chemical energy in plants.",
    "Please translate this sentence into German for me",
    "Once upon a time there was a little dragon who lived in a cave",
    "What is the capital of Australia?",
    "Dear customer, your order has been shipped and will arrive soon.",
    "The mitochondria is the powerhouse of the cell",
    "I think we should take the train instead of driving to the coast.",
    "SELECT name, email FROM users WHERE active = 1 ORDER BY name;",
    "Breaking news: a magnitude 6.1 earthquake struck off the coast",
    "Add two cups of flour and a pinch of salt, then stir slowly.",
    "The cat sat on the mat",
    "Hello, how are you today?",
    "Machine learning models need large amounts of labelled data",
    "Das Wetter in Berlin ist heute schön",
    "The patient was admitted with a fever and a persistent cough.",
)


@dataclass(frozen=True)
class Distances:
    """Distances (float, the model's rounding) of each group of contexts; see the module docstring."""

    recitation: tuple[float, ...]
    recitation_right: bool
    one_token_past: tuple[float, ...]
    unrelated: dict[str, float]
    mid_text: tuple[float, ...]

    def table(self) -> str:
        """The measurement as a plain-text table (one line per group: count, min, median, max)."""

        def row(name: str, values) -> str:
            v = np.asarray(values, float)
            return f"{name:<16} {v.size:>5} {v.min():>8.4f} {np.median(v):>8.4f} {v.max():>8.4f}"

        lines = [
            f"{'group':<16} {'n':>5} {'min':>8} {'median':>8} {'max':>8}",
            row("recitation", self.recitation),
            row("one token past", self.one_token_past),
            row("unrelated", list(self.unrelated.values())),
            row("mid-text", self.mid_text),
            f"recitations verbatim: {self.recitation_right}; default max_distance {DEFAULT_MAX_DISTANCE}",
        ]
        return "\n".join(lines)


def sample_chunks() -> dict[str, list[str]]:
    """Every sample text's chunks as stage 1 gives them: the miner file's records (by chunk id) and
    the inbox's Zen of Python through the inbox chunker."""
    table = pq.read_table(
        SAMPLE_DATA / "miner" / "ai_knowledge_base.parquet", columns=["file_name", "chunk_id", "content"]
    )
    chunks: dict[str, list[str]] = {}
    for name, _, content in sorted(
        zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)
    ):
        chunks.setdefault(name, []).append(content)
    for path in sorted((SAMPLE_DATA / "inbox").glob("*.txt")):
        chunks[path.name] = chunk_words(path.read_text(encoding="utf-8"))
    return chunks


@functools.cache
def sample_model() -> tuple[Model, dict[str, list[np.ndarray]]]:
    """The model of every sample text (module docstring) and each file's chunks as token arrays."""
    encoding = load_cl100k()
    slots_of = functools.partial(
        window_slots,
        encoding=encoding,
        projection=projection_matrix(PROJECTION_SEED),
        embedder=HashingEmbedder(),
    )
    tables: dict[str, pa.Table] = {}
    tokens_of: dict[str, list[np.ndarray]] = {}
    for name, texts in sample_chunks().items():
        chunks = [encode_ordinary(encoding, text).astype(np.int64) for text in texts]
        tokens_of[name] = chunks
        flat, begin, end, window_end, chunk_id, target = [], [], [], [], [], []
        offset = 0
        for c, tokens in enumerate(chunks):
            ends = np.arange(1, tokens.size)
            flat.append(tokens)
            begin.append(offset + np.maximum(ends - WINDOW_SIZE, 0))
            end.append(offset + ends)
            window_end.append(ends)
            chunk_id.append(np.full(ends.size, c))
            target.append(tokens[ends])
            offset += tokens.size
        slots = slots_of(np.concatenate(flat), np.concatenate(begin), np.concatenate(end))
        targets, ends = np.concatenate(target), np.concatenate(window_end)
        tables[name] = checkpoints_from(
            slots, targets, targets, np.concatenate(chunk_id), ends, partition=name
        )
    model = Model(
        build_bundle(tables, pipeline_version="max-distance"),
        encoding=encoding,
        window_size=WINDOW_SIZE,
        window_slots=slots_of,
        evaluate_rows=golden_from_seed,
    )
    return model, tokens_of


def _recitations(model: Model, tokens_of: dict[str, list[np.ndarray]]) -> Iterator[tuple[list[float], bool]]:
    """Per sample text: the distances of the steps of its recitation that no frame matched exactly,
    and whether the recitation gave back the whole text word for word."""
    encoding = model.encoding
    for chunks in tokens_of.values():
        prompt = encoding.decode(chunks[0][:6].tolist())
        words = " ".join(encoding.decode(c.tolist()) for c in chunks[:1]).split()
        for c in chunks[1:]:  # chunks overlap by 25 words (DESIGN §2)
            words += encoding.decode(c.tolist()).split()[25:]
        generation = model.generate(prompt, max_tokens=sum(c.size for c in chunks) + 10, max_distance=np.inf)
        recited = (prompt + generation.continuation).split()
        yield [s.distance for s in generation.steps if not s.exact], recited == words


def measure() -> Distances:
    """The three groups of distances (module docstring)."""
    model, tokens_of = sample_model()
    recitation, right = [], True
    for distances, verbatim in _recitations(model, tokens_of):
        recitation += distances
        right &= verbatim
    chunks = [chunk for file_chunks in tokens_of.values() for chunk in file_chunks]
    flat = np.concatenate(chunks)
    ends = np.cumsum([c.size for c in chunks])
    starts = ends - [c.size for c in chunks]
    past = [s.distance for s in model.answer(flat, np.maximum(ends - WINDOW_SIZE, starts), ends, np.inf)]
    mid_end = np.concatenate([np.arange(s + 46, e, 40) for s, e in zip(starts, ends, strict=True)])
    mid = [s.distance for s in model.answer(flat, mid_end - 6, mid_end, np.inf)]
    unrelated = {
        prompt: model.step(encode_ordinary(model.encoding, prompt).tolist(), max_distance=np.inf).distance
        for prompt in UNRELATED_PROMPTS
    }
    return Distances(tuple(recitation), right, tuple(past), unrelated, tuple(mid))


def longest_coincidental_chunk_start() -> tuple[int, str]:
    """The most tokens a sample chunk starts with that also occur at a word start in another chunk
    (not the chunk itself or the one before it, whose end it overlaps), and those tokens' text."""
    encoding = load_cl100k()
    chunks = [(name, c, text) for name, texts in sample_chunks().items() for c, text in enumerate(texts)]
    longest, example = 0, ""
    for name, c, text in chunks:
        tokens = encoding.encode_ordinary(text)
        for k in range(longest + 1, len(tokens)):
            start = re.compile(r"(?:^|(?<=\s))" + re.escape(encoding.decode(tokens[:k])))
            others = (t for n, d, t in chunks if not (n == name and d in (c - 1, c)))
            if not any(start.search(other) for other in others):
                break
            longest, example = k, encoding.decode(tokens[:k])
    return longest, example


if __name__ == "__main__":
    result = measure()
    print(result.table())
    longest, example = longest_coincidental_chunk_start()
    print(f"longest chunk start that also occurs elsewhere: {longest} tokens ({example!r})")
    for prompt, distance in sorted(result.unrelated.items(), key=lambda kv: kv[1]):
        print(f"  {distance:.4f}  {prompt}")
