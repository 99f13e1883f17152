"""The design documents live in the repository (``docs/``), every citation of them resolves, and the
test vectors ``docs/design.md`` quotes are what the code computes.

Citations: ``DESIGN §x.y`` anywhere means a section of ``docs/design.md``; ``docs/<name>.md §x.y``
(or ``<name>.md §x.y``, or a Markdown link to it followed by ``§x.y``) a section of that file; inside
``docs/*.md`` a bare ``§x.y`` a section of the same file. Lists and ranges (``§2, §3.3``,
``§4.1–4.2``) cite every number named; a trailing period (``§4.5.``) is punctuation. A section exists
when a Markdown heading starts with its number (``### 4.2 The 21-pass recursion``). Every
``docs/<name>.md`` path and every relative ``.md`` link in ``docs/`` must name a file that exists,
and nothing may point at notes a clone does not have (the ``shared`` directory beside a checkout).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DESIGN = DOCS / "design.md"
THIS_FILE = Path(__file__).resolve()

#: Files whose text may cite the design (everything a reader of the repository reads).
TEXT_SUFFIXES = {".py", ".cu", ".sh", ".md", ".toml", ".yaml", ".yml", ".cfg", ".txt", ".ini"}
#: Directories never part of the repository's text (environments, caches, run data).
SKIPPED_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache",
                ".hypothesis", ".dagster_home", ".hasher_data", "build", ".whl", ".gl"}  # fmt: skip
#: What a clone lacks: the notes beside the checkout, and their former names.
FORBIDDEN = (
    "../shared/",
    "shared/reference",
    "performance-anchors",
    "sha-ni-numba",
    "go-reference-analysis",
    "ARCHITECTURE.md",
    "STYLE.md",
)

NUMBER = r"\d+(?:\.\d+)*"
#: ``§2``, ``§2, §3.3``, ``§4.1–4.2``, ``§3.2–§3.3``, ``§5 and §7``: one citation of several numbers.
SECTIONS = rf"§\s*{NUMBER}(?:\s*[–-]\s*§?\s*{NUMBER}|\s*(?:,|/|and|or)\s*§\s*{NUMBER})*"
#: What a section list cites: DESIGN (through comment markers and line breaks), a docs file, or
#: nothing (inside docs/*.md: the file itself).
CITATION = re.compile(
    rf"(?:(?P<design>\bDESIGN(?:\s|#|//|\*)*)|(?:docs/)?(?P<doc>[\w-]+\.md)(?:#[\w-]*)?\)?\s+)?"
    rf"(?P<sections>{SECTIONS})"
)
HEADING = re.compile(rf"^#{{1,6}}\s+(?P<number>{NUMBER})\.?\s", re.M)
DOCS_PATH = re.compile(r"\bdocs/(?P<name>[\w.-]+\.md)\b")
RELATIVE_LINK = re.compile(r"\]\((?P<target>[\w.-]+\.md)(?:#[^)]*)?\)")


def repository_files() -> list[Path]:
    """The repository's text files: git's tracked and not-ignored files, else a walk of the tree."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        paths = [ROOT / p for p in listed.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.startswith(".tmp_")]
            paths.extend(Path(folder) / f for f in files)
    return sorted(p for p in paths if p.suffix in TEXT_SUFFIXES and p.is_file())


def sections_of(path: Path) -> set[str]:
    """Section numbers of a Markdown file: every heading that starts with a number."""
    return {m["number"] for m in HEADING.finditer(path.read_text(encoding="utf-8"))}


def cited_numbers(text: str) -> list[str]:
    """The section numbers one section list names (range endpoints included)."""
    return re.findall(NUMBER, text)


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def unresolved_citations(files: list[Path], docs: Path, root: Path = ROOT) -> list[str]:
    """``path:line: problem`` (path relative to ``root``) for every citation whose document or
    section does not exist."""
    known: dict[str, set[str] | None] = {}

    def sections(name: str) -> set[str] | None:
        if name not in known:
            path = docs / name
            known[name] = sections_of(path) if path.is_file() else None
        return known[name]

    problems = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        in_docs = path.parent == docs and path.suffix == ".md"
        for match in CITATION.finditer(text):
            if match["design"] is not None:
                name = "design.md"
            elif match["doc"] is not None:
                name = match["doc"]
            elif in_docs:
                name = path.name
            else:
                continue  # a bare § outside docs/ cites someone else's document (FIPS 180-4 §6.2.2)
            where = f"{path.relative_to(root)}:{line_of(text, match.start())}"
            have = sections(name)
            if have is None:
                problems.append(f"{where}: cites docs/{name}, which does not exist")
                continue
            for number in cited_numbers(match["sections"]):
                if number not in have:
                    problems.append(f"{where}: cites §{number} of docs/{name}, which has no such section")
    return problems


def missing_documents(files: list[Path], docs: Path, root: Path = ROOT) -> list[str]:
    """``path:line: problem`` for every ``docs/<name>.md`` path or relative link in docs/ that names
    no file."""
    problems = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        targets = [(m.start(), m["name"]) for m in DOCS_PATH.finditer(text)]
        if path.parent == docs:
            targets += [(m.start(), m["target"]) for m in RELATIVE_LINK.finditer(text)]
        for offset, name in targets:
            if not (docs / name).is_file():
                problems.append(
                    f"{path.relative_to(root)}:{line_of(text, offset)}: docs/{name} does not exist"
                )
    return problems


def forbidden_references(files: list[Path], root: Path = ROOT) -> list[str]:
    """``path:line: text`` for every mention of notes a clone does not carry."""
    problems = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for needle in FORBIDDEN:
            for match in re.finditer(re.escape(needle), text):
                problems.append(f"{path.relative_to(root)}:{line_of(text, match.start())}: {needle}")
    return problems


@pytest.fixture(scope="module")
def files() -> list[Path]:
    """The repository's text files, this one aside: its examples plant bad citations on purpose."""
    return [p for p in repository_files() if p.resolve() != THIS_FILE]


def test_the_design_document_keeps_every_section_the_code_cites() -> None:
    have = sections_of(DESIGN)
    wanted = {"1", "2", "3", "3.1", "3.2", "3.3", "3.4", "3.5", "4", "4.1", "4.2", "4.3", "4.4", "4.5"}
    wanted |= {"4.6", "4.7", "5", "6", "6.1", "7", "8"}
    assert wanted <= have, sorted(wanted - have)


def test_the_repository_files_include_the_code_and_the_docs(files: list[Path]) -> None:
    names = {p.relative_to(ROOT).as_posix() for p in files}
    assert {
        "README.md",
        "docs/design.md",
        "hasher_core/header.py",
        "hasher_resources/sha256/recursion.cu",
    } <= names


def test_every_citation_names_a_section_its_document_has(files: list[Path]) -> None:
    assert unresolved_citations(files, DOCS) == []


def test_every_cited_docs_file_exists(files: list[Path]) -> None:
    assert missing_documents(files, DOCS) == []


def test_nothing_points_at_notes_outside_the_repository(files: list[Path]) -> None:
    assert forbidden_references(files) == []


def test_the_readme_points_at_the_design_document() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/design.md" in readme.split("## Quickstart")[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# DESIGN §4.9: no such section", ["§4.9 of docs/design.md"]),
        ("see DESIGN §4.5. Then", []),
        ("(DESIGN §2, §3.9)", ["§3.9 of docs/design.md"]),
        ("(DESIGN §4.1–4.9, §7)", ["§4.9 of docs/design.md"]),
        ("greedy, DESIGN\n# §6.2.1); more", ["§6.2.1 of docs/design.md"]),
        ("(docs/performance.md §1.9)", ["§1.9 of docs/performance.md"]),
        ("(docs/nowhere.md §1)", ["docs/nowhere.md, which does not exist"]),
        ("FIPS 180-4 §6.2.2 is someone else's", []),
    ],
)
def test_a_bad_citation_is_reported_with_its_line(tmp_path: Path, text: str, expected: list[str]) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(f"x = 1\n{text}\n", encoding="utf-8")
    problems = unresolved_citations([planted], DOCS, root=tmp_path)
    assert len(problems) == len(expected), problems
    for problem, want in zip(problems, expected, strict=True):
        assert problem.startswith("planted.py:2: ") and want in problem


def test_a_bare_section_inside_docs_cites_its_own_file(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n## 1. One\nsee §1 and §2, and [b](b.md) §3\n", encoding="utf-8")
    (docs / "b.md").write_text("# B\n## 3. Three\n", encoding="utf-8")
    problems = unresolved_citations([docs / "a.md"], docs, root=tmp_path)
    assert problems == ["docs/a.md:3: cites §2 of docs/a.md, which has no such section"]


def test_a_missing_docs_file_and_a_shared_note_are_reported(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text('"""See docs/absent.md and ../shared/reference/x.md."""\n', encoding="utf-8")
    missing = missing_documents([planted], DOCS, root=tmp_path)
    forbidden = forbidden_references([planted], root=tmp_path)
    assert missing == ["planted.py:1: docs/absent.md does not exist"]
    assert [f.split(": ", 1)[1] for f in forbidden] == ["../shared/", "shared/reference"]


def section_text(number: str) -> str:
    """The text of one section of docs/design.md, up to the next heading."""
    text = DESIGN.read_text(encoding="utf-8")
    start = re.search(rf"^#{{1,6}}\s+{re.escape(number)}\.?\s.*$", text, re.M)
    assert start is not None, number
    end = re.compile(r"^#{1,6}\s", re.M).search(text, start.end())
    return text[start.end() : end.start() if end else len(text)]


def hex_words(text: str) -> str:
    """Every run of 8-hex-digit words in ``text`` joined, spaces removed (for comparing dumps)."""
    return "".join(re.findall(r"\b[0-9a-f]{8}\b", text))


VECTOR_SLOTS = [((i + 1) * 0x11111111) & 0xFFFFFFFF for i in range(12)]
VECTOR_SEED = bytes(range(16)) + bytes(12) + bytes([0x1C, 0x1D, 0x1E, 0x1F])


def test_the_recursion_vector_in_the_design_is_what_the_reference_computes() -> None:
    from hasher_core.header import build_header, jitter, midstate, recursion

    header = build_header(VECTOR_SLOTS, VECTOR_SEED, 0)
    golden, keys = recursion(header, VECTOR_SLOTS)
    text = section_text("4.2")
    assert header.hex() in hex_words(text)
    for p, key in enumerate(keys):
        row = rf"\|\s*{p}\s*\|\s*{key:08x}\s*\|\s*{jitter(p, key, VECTOR_SLOTS):08x}\s*\|"
        assert re.search(row, text), f"pass {p}"
    assert f"golden = `{golden:08x}`" in text and f"= {golden >> 15}" in text
    assert " ".join(f"{w:08x}" for w in midstate(header)) in text


def test_the_reward_example_in_the_design_is_what_the_reward_computes() -> None:
    from hasher_core.header import build_header, recursion, target_word
    from hasher_core.search.reward import compute_reward

    golden, keys = recursion(build_header(VECTOR_SLOTS, VECTOR_SEED, 0), VECTOR_SLOTS)
    goldens, last_keys = np.array([golden], np.uint32), np.array([keys[18:21]], np.uint32)
    reward = compute_reward(goldens, last_keys, target_word(12556), 17, (0.6, 0.3, 0.1))
    assert f"float32 {reward[0]:.8f}" in section_text("4.3")


def test_the_fingerprint_and_stream_vectors_in_the_design_are_what_the_search_computes() -> None:
    import json

    from hasher_core.search.config import SearchConfig
    from hasher_core.search.loop import frame_fingerprint, frame_key
    from hasher_core.search.reward import STREAM_FRESH, fresh_seeds, random_words

    config = SearchConfig()
    fingerprint = frame_fingerprint(np.array(VECTOR_SLOTS, np.uint32), 12556, config)
    assert json.dumps(config.fingerprint_fields(), sort_keys=True) in section_text("4.6")
    assert f"fingerprint `{fingerprint}`" in section_text("4.6")
    key = frame_key(fingerprint, config.rng_seed)
    streams = section_text("4.7")
    assert f"`{key:016x}`" in streams
    keys, generation = np.array([key], np.uint64), np.array([0])
    for word in random_words(keys, generation, STREAM_FRESH, 3)[0]:
        assert f"`{int(word):016x}`" in streams
    seed = fresh_seeds(keys, generation, 1)[0, 0].tobytes().hex()
    assert f"`{seed[:32]} {seed[32:56]} {seed[56:]}`" in streams


def test_the_mapper_and_embedder_vectors_in_the_design_are_what_stage_2_computes() -> None:
    from hasher_core.embedding.lexical import embed_texts
    from hasher_core.frames.gorand import GoRand, projection_matrix
    from hasher_core.frames.windows import project_to_slots

    mapper = section_text("3.4")
    rng = GoRand(1337)
    assert ", ".join(str(rng.int63()) for _ in range(3)) in " ".join(mapper.split())
    go_vector = np.float32(np.sin(np.arange(768)) * 0.05)[None, :]
    assert " ".join(f"{s:08x}" for s in project_to_slots(go_vector, projection_matrix())[0]) in mapper
    hashing = section_text("3.3")
    for text in ("Four score and seven years ago", "Four score and seven years ago,"):
        slots = project_to_slots(embed_texts([text]), projection_matrix())[0]
        assert " ".join(f"{s:08x}" for s in slots) in hashing, text
    assert f"has {np.count_nonzero(embed_texts(['Four score and seven years ago']))} non-zero" in hashing


def test_the_packet_captures_in_the_design_parse_and_pass_the_crc() -> None:
    from hasher_core.asic_codec import Packet, crc16_modbus

    packets = re.findall(r"`((?:53|51|a2)00[0-9a-f]{20,})`", section_text("7.1"))
    assert len(packets) >= 3
    for packet in packets:
        assert Packet.unpack(bytes.fromhex(packet)).pack().hex() == packet
    assert crc16_modbus(b"123456789") == 0x4B37


def ui_texts() -> dict[str, str | None]:
    """What the web UI shows about the code location: ``{where: text}`` for every asset and asset
    check description, every asset's config field, and every resource and resource field."""
    from hasher_assets.definitions import defs

    texts: dict[str, str | None] = {}
    for asset in defs.assets:
        for spec in asset.specs:
            texts[f"asset {spec.key.to_user_string()}"] = spec.description
        if asset.op.config_field is not None:
            for name, field in asset.op.config_field.config_type.fields.items():
                texts[f"config {asset.op.name}.{name}"] = field.description
    for check in defs.asset_checks:
        for spec in check.check_specs:
            texts[f"check {spec.name}"] = spec.description
    for key, resource in (defs.resources or {}).items():
        texts[f"resource {key}"] = type(resource).__doc__
        for name, field in type(resource).model_fields.items():
            texts[f"resource {key}.{name}"] = field.description
    return texts


def test_the_web_ui_says_what_things_are_instead_of_citing_sections() -> None:
    texts = ui_texts()
    assert len([w for w in texts if w.startswith(("asset ", "check "))]) == 9
    assert {w: t for w, t in texts.items() if not t or "§" in t} == {}
    # An asset or check says what it holds or checks, what matters and what to do: a sentence or five.
    short = {w: t for w, t in texts.items() if w.startswith(("asset ", "check ")) and len(t or "") < 200}
    assert short == {}
