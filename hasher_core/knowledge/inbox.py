"""The raw-text inbox: text in, canonical knowledge-base records out (DESIGN §2).

Users without a Data Miner drop ``.txt``/``.md`` files into the inbox; each file is one partition,
chunked into 150-word windows with a 25-word overlap and embedded by whatever embedder resource is
configured. Finding the inbox files is the storage resource's job.

**What a word is.** In text written with spaces, a word is a run of characters between whitespace
(``str.split``), exactly as DESIGN §2 has it, so chunks of such text are what they always were. Scripts
written without spaces between words (Chinese, Japanese kana and kanji, Thai, Lao, Khmer, Myanmar,
Tibetan, Yi, Javanese, Balinese and the Tai scripts: :data:`NO_SPACE_SCRIPTS`) have no such runs; there
each character with its combining marks counts as one word, as word counts of CJK text usually do.
A run longer than :data:`MAX_WORD_CHARS` characters (a URL, base64, minified code) counts as one
word per started 100 characters. Chunks therefore hold at most 150 words of at most 100 characters
in every script, and a chunk is a slice of the text's words: words that touched in the text still
touch in the chunk (Chinese gets no spaces inserted), words that had whitespace between them get one
space, as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import regex

from hasher_core.design import EMBEDDING_DIMS
from hasher_core.embedding import TextEmbedder, check_embeddings
from hasher_core.errors import KnowledgeBaseError, KnowledgeBaseFormatError, TextEncodingError
from hasher_core.schemas import canonical_batch

from .report import ReadReport
from .text import decode_text
from .validate import nfc

#: Chunking of raw text (DESIGN §2): 150-word chunks with a 25-word overlap. A window shorter than
#: 10 words is dropped unless it is the text's only one (a short file gives one chunk).
CHUNK_WORDS = 150
CHUNK_OVERLAP = 25
MIN_CHUNK_WORDS = 10
#: Characters of the longest word; a longer run without whitespace counts as several words.
MAX_WORD_CHARS = 100
#: Scripts written without spaces between words (Unicode script names, matched by Script_Extensions
#: so the marks and punctuation these scripts share, such as ー and 。, count with them).
NO_SPACE_SCRIPTS = (
    "Han",
    "Hiragana",
    "Katakana",
    "Bopomofo",
    "Thai",
    "Lao",
    "Khmer",
    "Myanmar",
    "Tibetan",
    "Yi",
    "Javanese",
    "Balinese",
    "Buginese",
    "Tai_Le",
    "New_Tai_Lue",
    "Tai_Tham",
    "Tai_Viet",
)
_NO_SPACE = "".join(rf"\p{{scx={name}}}" for name in NO_SPACE_SCRIPTS)
# One word of a whitespace-free run: a no-space-script character with its marks, or up to
# MAX_WORD_CHARS other characters.
_WORD = regex.compile(rf"[{_NO_SPACE}]\p{{M}}*|[^{_NO_SPACE}]{{1,{MAX_WORD_CHARS}}}")
# Whether a text needs more than str.split(): a no-space-script character or an over-long run.
_NEEDS_SPLITTING = regex.compile(rf"[{_NO_SPACE}]|[^{_NO_SPACE}\s]{{{MAX_WORD_CHARS + 1}}}")


def split_words(text: str) -> tuple[list[str], list[str]]:
    """``(words, separators)``: the text's words (see the module docstring) and, for each, what stood
    before it in a chunk: ``" "`` after whitespace, ``""`` when it touched the previous word.

    Whitespace is what ``str.split`` splits on, so text with spaces splits exactly as before.
    """
    runs = text.split()
    if not _NEEDS_SPLITTING.search(text):
        return runs, [" "] * len(runs)
    words: list[str] = []
    separators: list[str] = []
    for run in runs:
        pieces = _WORD.findall(run)
        words.extend(pieces)
        separators.append(" ")
        separators.extend([""] * (len(pieces) - 1))
    return words, separators


def chunk_words(
    text: str, size: int = CHUNK_WORDS, overlap: int = CHUNK_OVERLAP, min_words: int = MIN_CHUNK_WORDS
) -> list[str]:
    """Windows of ``size`` words advancing by ``size - overlap`` (words: :func:`split_words`).

    The last window is the one that reaches the end of the text, so no chunk is made only of the
    previous chunk's overlap. A window under ``min_words`` words is dropped unless it is the first:
    a text with any word gives at least one chunk. A chunk joins its words as they stood (one space
    where there was whitespace, nothing where they touched).
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need size > 0 and 0 <= overlap < size, got size={size}, overlap={overlap}")
    words, separators = split_words(text)
    chunks = []
    for start in range(0, len(words), size - overlap):
        end = min(start + size, len(words))
        if end - start >= min_words or start == 0:
            pieces = [words[start]]
            for i in range(start + 1, end):
                pieces += (separators[i], words[i])
            chunks.append("".join(pieces))
        if start + size >= len(words):
            break
    return chunks


def read_inbox_file(
    path: Path,
    embedder: TextEmbedder,
    *,
    dims: int = EMBEDDING_DIMS,
    report: ReadReport | None = None,
    batch_rows: int = 256,
) -> Iterator[pa.RecordBatch]:
    """Canonical batches for one inbox file: its chunks, ``chunk_id`` = chunk index, embedded in batches.

    ``source_file`` is the file's name in NFC (:func:`~hasher_core.knowledge.validate.nfc`; invalid
    bytes in a name become U+FFFD). The text may be UTF-8, UTF-16 or UTF-32
    (:func:`~hasher_core.knowledge.text.decode_text`); anything else raises
    :class:`KnowledgeBaseFormatError` naming the file, the byte and its offset, because guessing a legacy
    code page would silently change the text every later stage trains on. A file with no words (empty,
    only whitespace or a BOM) yields no batch, and ``report.problems`` says why.
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    report.path_used, report.format = path, "text"
    raw = path.read_bytes()
    try:
        text, report.encoding = decode_text(raw)
    except TextEncodingError as exc:
        raise KnowledgeBaseFormatError(path, None, str(exc)) from exc
    chunks = chunk_words(text)
    if not chunks:
        report.problems.append(f"{path}: {'empty file' if not raw else 'no words (only whitespace)'}")
        return
    source_file = nfc(path.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    report.records_seen += len(chunks)
    for start in range(0, len(chunks), batch_rows):
        texts = chunks[start : start + batch_rows]
        try:
            vectors = embedder.embed(texts)
        except Exception as exc:  # the embedder is outside code (a server, a library): say what it had
            which = f"{path}: embedding chunks {start}..{start + len(texts) - 1}"
            raise KnowledgeBaseError(f"{which} failed: {type(exc).__name__}: {exc}") from exc
        embeddings = check_embeddings(vectors, len(texts), dims, where=str(path), error=KnowledgeBaseError)
        ids = np.arange(start, start + len(texts), dtype=np.int32)
        batch = canonical_batch([source_file] * len(texts), ids, texts, embeddings, dims)
        report.records_kept += batch.num_rows
        report.batches += 1
        yield batch
