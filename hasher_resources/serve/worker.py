"""The one thread that runs the model: every call into a :class:`~hasher_core.inference.Model`, the
kernel and the embedder made by ``hasher serve`` goes through :class:`InferenceWorker`.

**Why one thread.** The model's hot paths are Numba ``parallel=True`` kernels (the embedder, the
window features, the SHA-256 recursion). Numba's default ``workqueue`` threading layer is not
thread-safe: two server threads launching parallel kernels at once abort the whole process
("Concurrent access has been detected"). Rather than depend on which layer Numba picked (``tbb``
and ``omp`` are safe, ``workqueue`` is not, and which one loads depends on what is installed),
the server never lets two threads into the model: requests queue their steps here and one thread
runs them in arrival order. Each streaming request submits its next step only when its previous
one is done, so concurrent streams take turns token by token (round robin).

``hasher serve`` also gives this thread one Numba thread (``numba.set_num_threads`` is per
thread): a step is one context, and a parallel region per step costs more in waking worker threads
than it saves (on the loaded 2-core development machine 0.65 ms per step with one thread against
~90 ms with two).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_STOP = object()


class InferenceWorker:
    """A single daemon thread running submitted callables one at a time, first come first served."""

    def __init__(self, name: str = "hasher-inference", initializer: Callable[[], None] | None = None) -> None:
        """``initializer`` runs first on the thread (e.g. Numba's thread-local thread count); what it
        raises is raised here."""
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        if initializer is not None:
            self.call(initializer)

    @property
    def thread(self) -> threading.Thread:
        """The thread every job runs on."""
        return self._thread

    @property
    def queued(self) -> int:
        """Jobs submitted and not finished yet (the one running included)."""
        return self._pending

    def submit[T](self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(*args)``; its result (or exception) arrives in the returned future. A future
        cancelled before its turn never runs. Raises RuntimeError after :meth:`close`."""
        if not self._thread.is_alive():
            raise RuntimeError("the inference worker is stopped")
        future: Future[T] = Future()
        with self._lock:
            self._pending += 1
        self._jobs.put((future, fn, args))
        return future

    def call[T](self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """``fn(*args)`` on the worker, waited for from a plain thread (raises what ``fn`` raised)."""
        return self.submit(fn, *args).result(timeout)

    async def run[T](self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the worker, awaited from the event loop (cancelling the await cancels a
        job that has not started; one already running finishes and its result is dropped)."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def close(self, timeout: float = 10.0) -> None:
        """Finish the jobs already queued, then stop the thread (waits up to ``timeout`` seconds)."""
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            future, fn, args = job
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        result = fn(*args)
                    except BaseException as exc:  # handed to the caller, never lost on this thread
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
            finally:
                with self._lock:
                    self._pending -= 1
