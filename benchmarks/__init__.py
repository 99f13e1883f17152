"""Benchmarks: one module per capability, run by ``python -m benchmarks`` (see README)."""
