"""Numba's cache follows every file a kernel depends on (hasher_core.jit)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from hasher_core import jit

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("hasher_core", "hasher_resources", "hasher_assets", "hasher_cli")

HELPER = """
from numba import njit

STEP = {step}


@njit(cache=True)
def advance(x):
    return x + STEP
"""

KERNEL = """
import json
import sys

from {jit_module} import njit
from hasher_probe.constants import advance


@njit(cache=True)
def run(x):
    return advance(x) * 2


print(json.dumps({{"result": run(1), "hits": sum(run.stats.cache_hits.values()),
                  "misses": sum(run.stats.cache_misses.values())}}))
"""


def _probe(tmp_path: Path, jit_module: str) -> tuple[Path, dict[str, str]]:
    """A package ``hasher_probe`` whose cached kernel calls a jitted helper from another file."""
    package = tmp_path / "src" / "hasher_probe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "kernel.py").write_text(textwrap.dedent(KERNEL.format(jit_module=jit_module)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "src"), str(ROOT)]),
        "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return package, env


def _run(env: dict[str, str]) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-m", "hasher_probe.kernel"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_changed_constant_in_an_imported_file_recompiles_the_cached_kernel(tmp_path):
    package, env = _probe(tmp_path, "hasher_core.jit")
    (package / "constants.py").write_text(HELPER.format(step=1))
    first = _run(env)
    assert first == {"result": 4, "hits": 0, "misses": 1}
    assert _run(env) == {"result": 4, "hits": 1, "misses": 0}  # unchanged: served from the cache
    (package / "constants.py").write_text(HELPER.format(step=20))
    assert _run(env)["result"] == 42  # (1 + 20) * 2: recompiled, not the cached (1 + 1) * 2


def test_plain_numba_would_serve_the_stale_kernel(tmp_path):
    """Why hasher_core.jit exists: with numba.njit the same edit is not noticed."""
    package, env = _probe(tmp_path, "numba")
    (package / "constants.py").write_text(HELPER.format(step=1))
    assert _run(env)["result"] == 4
    (package / "constants.py").write_text(HELPER.format(step=20))
    assert _run(env)["result"] == 4


def test_the_stamp_of_a_kernel_covers_the_design_constants_and_its_helpers():
    files = {str(p.relative_to(ROOT)) for p in jit.dependencies(ROOT / "hasher_core/search/fused.py")}
    assert {
        "hasher_core/search/fused.py",
        "hasher_core/search/fused_math.py",
        "hasher_core/design.py",
    } <= files
    assert jit.dependencies(Path(jit.__file__).parents[1] / "README.md") == ()


def test_every_cached_kernel_of_the_product_code_is_declared_through_hasher_core_jit():
    """``cache=True`` on a decorator or call that is not hasher_core.jit's njit would be stamped by
    its own file only."""
    offenders = []
    for path in sorted(p for package in PRODUCT for p in (ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        ours = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "hasher_core.jit"
            for alias in node.names
            if alias.name == "njit"
        }
        for node in ast.walk(tree):
            cached = isinstance(node, ast.Call) and any(
                k.arg == "cache" and isinstance(k.value, ast.Constant) and k.value.value
                for k in node.keywords
            )
            if cached and not (isinstance(node.func, ast.Name) and node.func.id in ours):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
