"""The inference worker: one thread runs every job, in order; and why it must (Numba's workqueue
threading layer aborts the process when two threads launch parallel kernels at once)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import CancelledError

import pytest

from hasher_resources.serve.worker import InferenceWorker


@pytest.fixture
def worker():
    w = InferenceWorker()
    yield w
    w.close()


def test_every_job_runs_on_the_one_worker_thread_in_submission_order(worker):
    seen: list[tuple[int, int]] = []

    def job(k: int) -> int:
        seen.append((threading.get_ident(), k))
        return k * k

    results = [worker.submit(job, k) for k in range(50)]
    assert [f.result(10) for f in results] == [k * k for k in range(50)]
    assert {ident for ident, _ in seen} == {worker.thread.ident}
    assert [k for _, k in seen] == list(range(50))


def test_sixteen_threads_submitting_at_once_never_run_two_jobs_at_the_same_time(worker):
    inside, overlaps, lock = [0], [0], threading.Lock()

    def job() -> None:
        with lock:
            inside[0] += 1
            overlaps[0] += inside[0] > 1
        threading.Event().wait(0.001)
        with lock:
            inside[0] -= 1

    def client() -> None:
        for _ in range(20):
            worker.call(job, timeout=30)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert overlaps[0] == 0 and worker.queued == 0


def test_an_exception_reaches_the_caller_and_the_worker_goes_on(worker):
    with pytest.raises(ZeroDivisionError):
        worker.call(lambda: 1 / 0, timeout=10)
    assert worker.call(lambda: "still here", timeout=10) == "still here"


def test_a_job_cancelled_before_its_turn_never_runs(worker):
    gate, ran = threading.Event(), []
    worker.submit(gate.wait, 10)
    cancelled = worker.submit(ran.append, "cancelled job")
    assert cancelled.cancel()
    gate.set()
    assert worker.call(lambda: "after", timeout=10) == "after"
    assert ran == [] and cancelled.cancelled()
    with pytest.raises(CancelledError):
        cancelled.result()


def test_close_finishes_queued_jobs_then_refuses_new_ones():
    worker, done = InferenceWorker(), []
    for k in range(5):
        worker.submit(done.append, k)
    worker.close()
    assert done == [0, 1, 2, 3, 4] and not worker.thread.is_alive()
    with pytest.raises(RuntimeError, match="stopped"):
        worker.submit(done.append, 5)


def test_the_initializer_runs_on_the_worker_thread():
    where = []
    worker = InferenceWorker(initializer=lambda: where.append(threading.current_thread().name))
    try:
        assert where == ["hasher-inference"]
    finally:
        worker.close()


HAZARD = textwrap.dedent(
    """
    import sys, threading
    import numba
    import numpy as np
    from hasher_resources.serve.worker import InferenceWorker
    from hasher_resources.sha256.resource import Sha256Kernel

    # hasher's kernels hold the GIL today, so Python threads cannot launch them at once; a parallel
    # kernel that releases it (as any kernel may, e.g. a future nogil=True one) can. The worker must
    # make that safe whatever the kernel does: it runs both, from four client threads.
    @numba.njit(parallel=True, nogil=True)
    def spread(values):
        total = 0.0
        for i in numba.prange(values.size):
            total += np.sqrt(values[i])
        return total

    kernel = Sha256Kernel(backend="cpu")
    rng = np.random.default_rng(0)
    slots = rng.integers(0, 2**32, (20000, 12), dtype=np.uint64).astype(np.uint32)
    seeds = rng.integers(0, 256, (20000, 32), dtype=np.uint8)
    times = np.zeros(len(slots), np.int64)
    values = rng.random(2_000_000)
    worker = InferenceWorker()
    call = worker.call if sys.argv[1] == "worker" else (lambda fn, *a: fn(*a))
    expected = kernel.evaluate_rows(slots, seeds, times)
    call(spread, values)

    def client():
        for _ in range(15):
            call(spread, values)
            assert (call(kernel.evaluate_rows, slots, seeds, times) == expected).all()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("survived")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("through", ["threads", "worker"])
def test_parallel_kernels_from_four_threads_abort_a_workqueue_process_unless_they_go_through_the_worker(
    through,
):
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    done = subprocess.run(
        [sys.executable, "-c", HAZARD, through], env=env, capture_output=True, text=True, timeout=600
    )
    if through == "worker":
        assert done.returncode == 0 and done.stdout.strip() == "survived", done.stderr[-2000:]
    else:  # the hazard the worker exists for is real on this machine
        assert done.returncode != 0 and "Concurrent access has been detected" in done.stderr
