"""The README's Layout lists every module of the four packages, and nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hasher_core", "hasher_resources", "hasher_assets", "hasher_cli")
#: Files of the packages a reader should find in the Layout: modules and the CUDA source.
LISTED_SUFFIXES = (".py", ".cu")
ENTRY = re.compile(r"^(?P<indent> *)(?P<name>\S+)(?:\s{2,}\S.*)?$")


def layout_block(readme: str) -> list[str]:
    """The lines of the first fenced block after the ``## Layout`` heading."""
    section = readme.split("\n## Layout\n", 1)[1]
    block = section.split("```text\n", 1)[1].split("\n```", 1)[0]
    return block.splitlines()


def listed_paths(lines: list[str]) -> set[str]:
    """Every path the tree names (directories end in ``/``), from its two-space indentation."""
    stack: list[str] = []
    paths = set()
    for number, line in enumerate(lines, 1):
        match = ENTRY.match(line)
        assert match, f"Layout line {number} is not 'name  description': {line!r}"
        depth, rest = divmod(len(match["indent"]), 2)
        assert rest == 0 and depth <= len(stack), f"Layout line {number} is indented oddly: {line!r}"
        del stack[depth:]
        path = "".join(stack) + match["name"]
        paths.add(path)
        if match["name"].endswith("/"):
            stack.append(match["name"])
    return paths


def tree_paths(root: Path = ROOT) -> set[str]:
    """What the Layout must list: every package directory and every module (``__init__.py`` aside)."""
    paths = set()
    for package in PACKAGES:
        for path in (root / package).rglob("*"):
            relative = path.relative_to(root).as_posix()
            if "__pycache__" in path.parts:
                continue
            if path.is_dir() and (path / "__init__.py").is_file():
                paths.add(relative + "/")
            elif path.suffix in LISTED_SUFFIXES and path.name != "__init__.py":
                paths.add(relative)
    return paths


def layout_differences(readme: str, root: Path = ROOT) -> tuple[list[str], list[str]]:
    """``(modules the Layout misses, entries it lists that do not exist)``."""
    listed = listed_paths(layout_block(readme))
    tree = tree_paths(root)
    missing = sorted(tree - listed)
    extra = sorted(p for p in listed - tree if not (root / p.rstrip("/")).exists())
    return missing, extra


def test_the_readme_layout_lists_every_module_and_nothing_that_is_missing():
    missing, extra = layout_differences((ROOT / "README.md").read_text(encoding="utf-8"))
    assert missing == [], f"README.md's Layout does not list {missing}"
    assert extra == [], f"README.md's Layout lists {extra}, which do not exist"


def test_a_module_left_out_and_one_that_is_gone_are_both_named(tmp_path):
    (tmp_path / "hasher_core" / "search").mkdir(parents=True)
    for name in ("hasher_core/__init__.py", "hasher_core/search/__init__.py", "hasher_core/design.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "hasher_core" / "search" / "loop.py").write_text("")
    for package in PACKAGES[1:]:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    readme = "\n".join(
        [
            "# x",
            "## Layout",
            "```text",
            "hasher_core/      core",
            "  design.py       numbers",
            "  search/         stage 3",
            "    fused.py      gone",
            "hasher_resources/  r",
            "hasher_assets/   a",
            "hasher_cli/      c",
            "```",
        ]
    )
    assert layout_differences(readme, tmp_path) == (
        ["hasher_core/search/loop.py"],
        ["hasher_core/search/fused.py"],
    )
