"""The SHA-256 recursion kernel as a Dagster resource: backend choice, device, threads, batch size.

Assets, the deployment verification and inference call ``Sha256Kernel`` instead of the plain API
(``hasher_resources.sha256.api``) so one place decides where hashing runs (CPU by default, the GPU
when one is configured or, with ``auto``, visible) with which threads or device, and the run
metadata can say which backend actually ran. It works outside Dagster too:
``Sha256Kernel(backend="cpu").evaluate(slots, seeds)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import dagster as dg
import numpy as np
from pydantic import Field, PrivateAttr

from hasher_core.design import STABILITY_PASSES
from hasher_core.errors import BackendUnavailableError, KernelConfigError
from hasher_core.names import AUTO, KERNEL_BACKENDS

from ..pools import hold_lease, release_lease
from . import api, inputs
from . import cuda as cuda_backend
from .api import NonceScanResult

if TYPE_CHECKING:
    from hasher_core.search.driver import SearchDriver


class Sha256Kernel(dg.ConfigurableResource):
    """The SHA-256 kernel every stage hashes through: 21-pass recursion evaluations and Bitcoin nonce
    scans on the configured backend (reference, cpu or cuda; auto takes CUDA when a GPU is visible)."""

    backend: Literal[(AUTO, *KERNEL_BACKENDS)] = Field(  # type: ignore[valid-type]
        default="auto",
        description="'auto' uses CUDA when CuPy sees a GPU, else the CPU; 'reference' is hashlib (slow).",
    )
    device_id: int = Field(default=0, description="CUDA device index (backend 'cuda' or 'auto' on a GPU).")
    threads: int | None = Field(default=None, description="CPU worker threads; None uses every core.")
    cpu_kernel: str | None = Field(
        default=None,
        description="CPU path: 'shani' (x86 SHA extensions), 'simd' (any CPU) or 'auto' (SIMD where SHA-NI "
        "cannot run, else the faster of the two here, timed once per process); None reads "
        "HASHER_CPU_KERNEL (default auto).",
    )
    batch_size: int = Field(default=65536, description="Rows per backend call; larger inputs are chunked.")

    _resolved: str | None = PrivateAttr(default=None)
    _on_backends: dict = PrivateAttr(default_factory=dict)

    def _check_settings(self) -> None:
        if self.device_id < 0:
            raise KernelConfigError(f"Sha256Kernel.device_id must be >= 0, got {self.device_id}")
        if self.threads is not None and self.threads < 1:
            raise KernelConfigError(f"Sha256Kernel.threads must be >= 1 or None, got {self.threads}")
        if self.batch_size < 1:
            raise KernelConfigError(f"Sha256Kernel.batch_size must be >= 1, got {self.batch_size}")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Resolve at run start, so a run asking for an unavailable GPU fails before any work.
        context.log.info(f"Sha256Kernel runs on backend {self.backend_name()!r}")
        # The steps that hash hold the device pools (sha256, asic): while one works, its run's lease
        # says the run is alive, even if its run worker was killed (hasher_resources.pools).
        if context.run is not None:
            hold_lease(context.instance.root_directory, context.run.run_id)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if context.run is not None:
            release_lease(context.run.run_id)

    def backend_name(self) -> str:
        """The backend that actually runs ('reference', 'cpu' or 'cuda'), resolved once.

        Raises BackendUnavailableError when 'cuda' was asked for and cannot run: never a silent fallback.
        """
        if self._resolved is None:
            self._check_settings()
            name = api.resolve_backend(self.backend)
            if name == "cpu":
                from . import cpu as cpu_backend

                cpu_backend.check_request(self.cpu_kernel)  # an impossible choice fails here, at run start
            if name == "cuda":
                count = cuda_backend.device_count()
                if self.device_id >= count:
                    raise BackendUnavailableError(
                        f"Sha256Kernel.device_id={self.device_id} but CuPy sees {count} CUDA device(s)"
                    )
            self._resolved = name
        return self._resolved

    def on_backend(self, backend: str) -> Sha256Kernel:
        """The same kernel settings (threads, device, batch size) on another backend: how the
        checkpoints gate gets its independent second opinion. Made once per backend and kept: a
        run over many partitions asks once per partition."""
        if backend not in self._on_backends:
            self._on_backends[backend] = Sha256Kernel(
                backend=backend,
                device_id=self.device_id,
                threads=self.threads,
                cpu_kernel=self.cpu_kernel,
                batch_size=self.batch_size,
            )
        return self._on_backends[backend]

    def describe(self) -> dict[str, str | int]:
        """What runs, for materialization metadata: backend, and the device, or the thread count and
        CPU path ('shani' or 'simd')."""
        name = self.backend_name()
        info: dict[str, str | int] = {"kernel_backend": name}
        if name == "cuda":
            with self._running():
                info["kernel_device"] = cuda_backend.device_name()
        elif name == "cpu":
            import numba

            from . import cpu as cpu_backend

            info["kernel_threads"] = self.threads or numba.config.NUMBA_NUM_THREADS
            info["kernel_cpu_path"] = cpu_backend.select_kernel(self.cpu_kernel)
            info["kernel_cpu_path_reason"] = cpu_backend.explain_kernel(self.cpu_kernel)
        return info

    @contextlib.contextmanager
    def _running(self) -> Iterator[str]:
        """Select the device or thread count for the duration of one call, then restore it."""
        name = self.backend_name()
        if name == "cpu":
            import numba

            from . import cpu as cpu_backend

            before = numba.get_num_threads()
            cpu_backend.set_threads(self.threads)
            try:
                with cpu_backend.kernel_choice(self.cpu_kernel):
                    yield name
            finally:
                numba.set_num_threads(before)
        elif name == "cuda":
            import cupy

            with cupy.cuda.Device(self.device_id):
                yield name
        else:
            yield name

    def search_driver(self) -> SearchDriver | None:
        """What runs the seed search's generations on this backend: on ``cuda`` the device-resident
        search on ``device_id`` (``device_search.DeviceSearch``: many generations per launch, only
        finished frames come back); elsewhere None, the host loop that calls
        :meth:`evaluate_with_keys` once per generation. Same seeds either way (DESIGN §4.4)."""
        if self.backend_name() != "cuda":
            return None
        from .device_search import DeviceSearch

        return DeviceSearch(device_id=self.device_id)

    def evaluate_with_keys(
        self, slots: np.ndarray, seeds: np.ndarray, header_time: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Goldens uint32[N] and keys of passes 18–20 uint32[N, 3], in batches of ``batch_size`` rows."""
        slots, seeds = inputs.check_rows(slots, seeds, header_time)
        n = slots.shape[0]
        golden = np.empty(n, dtype=np.uint32)
        keys = np.empty((n, len(STABILITY_PASSES)), dtype=np.uint32)
        with self._running() as name:
            for start in range(0, n, self.batch_size):
                stop = min(n, start + self.batch_size)
                golden[start:stop], keys[start:stop] = api.evaluate_with_keys(
                    slots[start:stop], seeds[start:stop], header_time=header_time, backend=name
                )
        return golden, keys

    def evaluate(self, slots: np.ndarray, seeds: np.ndarray, header_time: int = 0) -> np.ndarray:
        """Goldens uint32[N] for ``slots`` uint32[N, 12] and ``seeds`` uint8[N, 32]."""
        return self.evaluate_with_keys(slots, seeds, header_time)[0]

    def evaluate_rows(self, slots: np.ndarray, seeds: np.ndarray, header_times: object) -> np.ndarray:
        """Goldens uint32[N] for rows that each carry their header time (int[N]), e.g. stored seeds
        re-checked by the gate, verified after a deploy or replayed by inference; batched like
        :meth:`evaluate`, one group per distinct header time."""
        with self._running() as name:
            return api.evaluate_rows(slots, seeds, header_times, backend=name, batch_size=self.batch_size)

    def scan_seed_nonces(
        self,
        slots: np.ndarray,
        extranonce: bytes,
        target_token_id: int,
        *,
        difficulty_bits: int,
        nonce_count: int,
        nonce_start: int = 0,
        header_time: int = 0,
    ) -> NonceScanResult:
        """Sweep the nonce of one frame; see :func:`hasher_resources.sha256.api.scan_seed_nonces`."""
        with self._running() as name:
            return api.scan_seed_nonces(
                slots,
                extranonce,
                target_token_id,
                difficulty_bits=difficulty_bits,
                nonce_count=nonce_count,
                nonce_start=nonce_start,
                header_time=header_time,
                backend=name,
            )

    def scan_header_nonces(
        self, header: bytes, *, share_bits: int, nonce_count: int, nonce_start: int = 0
    ) -> NonceScanResult:
        """Bitcoin nonce search; see :func:`hasher_resources.sha256.api.scan_header_nonces`."""
        with self._running() as name:
            return api.scan_header_nonces(
                header, share_bits=share_bits, nonce_count=nonce_count, nonce_start=nonce_start, backend=name
            )


__all__ = ["Sha256Kernel"]
