"""When a compiled kernel runs on the calling thread instead of Numba's worker pool.

A parallel region starts only when every worker thread has been scheduled: on an idle machine that
costs tens of microseconds, on a busy 2-core one 17–24 ms, against a fraction of a millisecond for
one inference step's rows. Each kernel with a ``parallel=True`` compilation therefore has a serial
twin (the same Python function compiled without ``parallel``: ``prange`` runs as ``range``, so the
results are bit for bit the same) and calls it for inputs up to its own limit, or when one thread
is asked for (``numba.set_num_threads(1)``: the kernel resource's ``threads=1``, ``--threads 1``).
"""

from __future__ import annotations

import numba


def run_serial(items: int, limit: int) -> bool:
    """Whether a kernel over ``items`` work items (rows, windows, blocks) should run on the calling
    thread: at most ``limit`` of them, or a single Numba thread in force."""
    return items <= limit or numba.get_num_threads() == 1
