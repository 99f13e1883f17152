"""The kernel's error types, shared by the public API and the backends."""

from __future__ import annotations


class KernelInputError(ValueError):
    """An input array has the wrong shape, dtype or layout."""


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here (no GPU, CuPy missing, ...)."""
