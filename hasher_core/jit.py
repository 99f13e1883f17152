"""Numba's on-disk cache, keyed on everything a compiled function depends on.

Numba stamps a cached function with the content of the one file that defines it. A compiled function
also carries, frozen into its machine code, every jitted helper it calls and every global constant it
reads, and those often live in other files (``hasher_core.design``, ``search/fused_math.py``, the
SHA-256 word helpers): after an edit there, Numba would keep serving the old code from its cache.

:func:`njit` is ``numba.njit`` with one change for functions defined in a hasher package: their cache
entry is stamped with the content of their file *and of every hasher module it imports, transitively*
(read from the import statements, lazy ones included). Any edit to one of those files recompiles the
function on its next use; nothing else is affected. Every ``cache=True`` kernel of the project is
declared through it (``hasher_tests/core/test_jit.py`` checks that, and that a changed constant in an
imported module recompiles).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path
from typing import Any

import numba
from numba.core import caching

#: Top-level packages whose imports are followed (the project's own).
PACKAGE_PREFIX = "hasher_"

# The cache machinery's names changed across Numba releases (0.68 made them public).
_CACHE_IMPL = getattr(caching, "CacheImpl", None) or caching._CacheImpl
_LOCATOR_BASE = caching._CacheLocator


def njit(*args: Any, **kwargs: Any) -> Any:
    """``numba.njit`` (same arguments, same result), with the dependency-covering cache stamp."""
    install()
    return numba.njit(*args, **kwargs)


def install() -> None:
    """Put the dependency-covering locator first in Numba's list (once per process)."""
    if _CACHE_IMPL._locator_classes[:1] != [DependencyStampLocator]:
        if DependencyStampLocator in _CACHE_IMPL._locator_classes:
            _CACHE_IMPL._locator_classes.remove(DependencyStampLocator)
        _CACHE_IMPL._locator_classes.insert(0, DependencyStampLocator)


def package_root(py_file: Path) -> Path | None:
    """The directory that holds ``py_file``'s top-level package, when that package is a hasher one."""
    directory = py_file.resolve().parent
    top = None
    while (directory / "__init__.py").is_file():
        top = directory
        directory = directory.parent
    return directory if top is not None and top.name.startswith(PACKAGE_PREFIX) else None


def _module_of(root: Path, py_file: Path) -> list[str]:
    parts = list(py_file.resolve().relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(py_file: Path, root: Path) -> set[Path]:
    """The files of the hasher modules ``py_file`` imports (every import statement, at any depth)."""
    package = _module_of(root, py_file)
    if py_file.name != "__init__.py":
        package = package[:-1]
    names: list[str] = []
    for node in ast.walk(ast.parse(py_file.read_bytes(), filename=str(py_file))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names if alias.name != "*"]
    found = set()
    for name in names:
        if not name.startswith(PACKAGE_PREFIX):
            continue
        parts = name.split(".")
        # ``from pkg.mod import function``: the longest prefix that is a module file.
        for end in range(len(parts), 0, -1):
            path = _module_file(root, ".".join(parts[:end]))
            if path is not None:
                found.add(path.resolve())
                break
    return found


def dependencies(py_file: Path) -> tuple[Path, ...]:
    """``py_file`` and every hasher module file it imports, transitively, sorted; ``()`` when
    ``py_file`` is not in a hasher package."""
    root = package_root(py_file)
    if root is None:
        return ()
    seen: set[Path] = set()
    todo = [py_file.resolve()]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += imported_files(path, root) - seen
    return tuple(sorted(seen))


@functools.cache
def source_stamp(py_file: str) -> str:
    """SHA-256 (hex) over the names and contents of :func:`dependencies`, computed once per process
    and file (the files of a running process do not change under it)."""
    path = Path(py_file)
    root = package_root(path)
    digest = hashlib.sha256()
    for dependency in dependencies(path):
        digest.update(str(dependency.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(dependency.read_bytes()).digest())
    return digest.hexdigest()


class DependencyStampLocator(_LOCATOR_BASE):
    """Numba's own locator for the cache directory and file names, with :func:`source_stamp` as the
    freshness stamp of functions defined in a hasher package (any other function: not this locator)."""

    def __init__(self, inner: Any, py_file: str) -> None:
        self._inner = inner
        self._py_file = py_file

    def ensure_cache_path(self) -> None:
        self._inner.ensure_cache_path()

    def get_cache_path(self) -> str:
        return self._inner.get_cache_path()

    def get_source_stamp(self) -> str:
        return source_stamp(self._py_file)

    def get_disambiguator(self) -> str:
        return self._inner.get_disambiguator()

    @classmethod
    def from_function(cls, py_func: Any, py_file: str) -> DependencyStampLocator | None:
        if not Path(py_file).is_file() or package_root(Path(py_file)) is None:
            return None
        for other in _CACHE_IMPL._locator_classes:
            if other is not cls:
                inner = other.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner, py_file)
        return None


install()
