"""The CPU-path fixture: tests that use it run once on the SIMD path and once on the SHA-NI path."""

from __future__ import annotations

import pytest

from hasher_core.names import CPU_PATHS
from hasher_resources.sha256 import cpu, cpu_shani


@pytest.fixture(params=CPU_PATHS)
def cpu_path(request: pytest.FixtureRequest):
    """Force one CPU path for the test (both paths must give the same bits as the reference). The
    SHA-NI run is skipped, saying why, only on a CPU or Numba target without the SHA extensions."""
    if request.param == "shani":
        usable, why = cpu_shani.sha_ni_usable()
        if not usable:
            pytest.skip(f"SHA-NI path cannot run here: {why}")
    with cpu.kernel_choice(request.param) as path:
        assert path == request.param
        yield path
