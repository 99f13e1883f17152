"""The model ``hasher serve`` answers with, and its hot swap when the deployment's ``current``
pointer moves (a deploy or a rollback, DESIGN §6).

:class:`ModelHolder` keeps one :class:`ServedModel` — a loaded, verified model and what it was
trained on. A watcher thread reads the pointer every ``poll_s`` seconds; when it names another
version, the new bundle is read with every checksum checked (on the watcher thread: file reads and
hashlib), turned into a model (numpy), re-verified on the kernel over a sample of its rows and
warmed up (on the inference worker, the only thread that runs Numba code), and only then swapped in
with one attribute assignment. A request takes the served model once, when it starts, and keeps it:
requests in flight finish on the bundle they started on, new ones get the new bundle. A new bundle
that fails any of this is refused and the old one keeps serving; :meth:`ModelHolder.health` says
which version was refused and why, and the same files are not tried again until they change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hasher_core.bundle import Bundle
from hasher_core.frames.tokens import encode_ordinary
from hasher_core.inference import Model

from ..deploy.store import DeploymentStore
from ..deploy.verify import VerifyReport, verify_sample_on_kernel
from ..model import load_model
from ..sha256.resource import Sha256Kernel
from .worker import InferenceWorker

log = logging.getLogger("hasher.serve")

#: A context every model can answer: the warm-up step that loads the JIT-compiled kernels.
WARM_UP_PROMPT = "The"


@dataclass(frozen=True)
class ModelLoader:
    """How a bundle becomes a served model, in two parts that run on different threads:
    ``build(bundle) -> Model`` is numpy and pyarrow only (the seed table into arrays and an index)
    and runs on the watcher thread, so a large bundle does not stall the requests being served;
    ``check(model, bundle) -> VerifyReport`` runs the kernel and the model (Numba) and so runs on the
    inference worker."""

    build: Callable[[Bundle], Model]
    check: Callable[[Model, Bundle], VerifyReport]


def kernel_loader(
    kernel: Sha256Kernel, *, sample_size: int = 64, ollama_url: str | None = None
) -> ModelLoader:
    """The :class:`ModelLoader` of ``hasher serve``: :func:`~hasher_resources.model.load_model` on
    ``kernel``; then the deployment's own read-back check (:func:`verify_sample_on_kernel`, DESIGN
    §6) over ``sample_size`` rows, and one warm-up step so the first request does not pay for loading
    the compiled kernels."""

    def check(model: Model, bundle: Bundle) -> VerifyReport:
        report = verify_sample_on_kernel(bundle, kernel, sample_size)
        model.step(encode_ordinary(model.encoding, WARM_UP_PROMPT).tolist(), max_distance=float("inf"))
        return report

    return ModelLoader(lambda bundle: load_model(bundle, kernel, ollama_url=ollama_url), check)


@dataclass(frozen=True)
class ServedModel:
    """A loaded model with what a client or an operator wants to know about it."""

    model: Model
    version: str
    manifest: dict[str, Any]
    verified: str
    loaded_at: float

    def describe(self) -> dict[str, Any]:
        """The bundle version and what it was trained on (sources, frames, difficulty, recipe)."""
        manifest, recipe = self.manifest, self.manifest.get("recipe") or {}
        return {
            "bundle": self.version,
            "created_at": manifest.get("created_at"),
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "frames": manifest.get("total_rows"),
            "solved_frames": manifest.get("solved_rows"),
            "trained_on": [
                {"partition": key, "frames": counts.get("rows"), "solved": counts.get("solved")}
                for key, counts in sorted((manifest.get("partitions") or {}).items())
            ],
            "difficulty_bits": recipe.get("difficulty_bits"),
            "window_size": recipe.get("window_size"),
            "embedder": (recipe.get("embedder") or {}).get("name"),
            "pipeline_version": manifest.get("pipeline_version"),
            "verified": self.verified,
        }


@dataclass(frozen=True)
class Refusal:
    """A version the pointer named that could not be served, why, and the files' state then."""

    version: str
    reason: str
    at: float
    signature: tuple = field(repr=False, default=())


class ModelHolder:
    """The served model of a deployment store, swapped when ``current`` moves (see module doc)."""

    def __init__(
        self,
        store: DeploymentStore,
        worker: InferenceWorker,
        loader: ModelLoader,
        *,
        poll_s: float = 2.0,
        on_change: Callable[[str, str, str | None], None] | None = None,
    ) -> None:
        if poll_s <= 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s}")
        self.store = store
        self.worker = worker
        self._loader = loader
        self.poll_s = float(poll_s)
        self._listeners: list[Callable[[str, str, str | None], None]] = [on_change] if on_change else []
        self._served: ServedModel | None = None
        self._refused: Refusal | None = None
        self._loading: str | None = None
        self._pointer_problem: str | None = None
        self._pointer: str | None = None
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def add_listener(self, listener: Callable[[str, str, str | None], None]) -> None:
        """Call ``listener(event, version, reason)`` after each swap attempt: event ``loaded``
        (reason None) or ``refused`` (with the reason). Runs on the watcher thread."""
        self._listeners.append(listener)

    def _tell(self, event: str, version: str, reason: str | None) -> None:
        for listener in self._listeners:
            try:
                listener(event, version, reason)
            except Exception:
                log.exception("a listener of bundle %s %s failed", event, version)

    @property
    def served(self) -> ServedModel | None:
        """The model new requests get (one atomic read; keep the object for the whole request)."""
        return self._served

    def start(self) -> None:
        """Load what ``current`` names now (a failure is reported by :meth:`health`, not raised),
        then watch the pointer on a daemon thread."""
        self.check_now()
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="hasher-serve-watcher", daemon=True)
            self._watcher.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching (a load in progress finishes first, up to ``timeout`` seconds)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check_now()
            except Exception:  # the watcher must outlive any surprise; the next poll tries again
                log.exception("checking the deployment pointer failed")

    def check_now(self) -> str | None:
        """Read the pointer once and, when it names a version not served yet (and not refused with
        these very files), load, verify and swap it in. Returns the served version afterwards."""
        with self._check_lock:
            try:
                pointer = self.store.current_version()
                self._pointer_problem = None
            except Exception as exc:
                pointer, self._pointer_problem = None, f"{type(exc).__name__}: {exc}"
            self._pointer = pointer
            served = self._served
            if pointer is None or (served is not None and served.version == pointer):
                if served is not None and served.version == pointer:
                    self._refused = None  # rolled back to what is served: nothing is pending
                return None if served is None else served.version
            signature = self._signature(pointer)
            refused = self._refused
            if refused is not None and refused.version == pointer and refused.signature == signature:
                return None if served is None else served.version
            self._swap_to(pointer, signature)
            return None if self._served is None else self._served.version

    def _swap_to(self, version: str, signature: tuple) -> None:
        previous = self._served
        self._loading = version
        started = time.perf_counter()
        try:
            bundle = self.store.map_bundle(version)  # as hasher generate opens it: the index mapped
            if bundle.version != version:  # a directory renamed by hand: say what is in it
                raise ValueError(
                    f"{self.store.version_dir(version)} holds bundle {bundle.version}, not {version}"
                )
            model = self._loader.build(bundle)
            report = self.worker.call(self._loader.check, model, bundle)
            if not report.ok:
                raise ValueError(f"verification failed: {report.summary()}")
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self._refused = Refusal(version, reason, time.time(), signature)
            kept = f"still serving {previous.version}" if previous else "serving nothing"
            log.error("refused bundle %s (%s); %s", version, reason, kept)
            self._tell("refused", version, reason)
            return
        finally:
            self._loading = None
        self._served = ServedModel(model, version, dict(bundle.manifest), report.summary(), time.time())
        self._refused = None
        log.info(
            "serving bundle %s (was %s): %s rows, %s, in %.2f s",
            version,
            previous.version if previous else "nothing",
            bundle.num_rows,
            report.summary(),
            time.perf_counter() - started,
        )
        self._tell("loaded", version, None)

    def _signature(self, version: str) -> tuple:
        """The size and modification time of every file of a version's directory: a refused
        version is tried again once its files change (say, restored from a backup)."""
        directory = Path(self.store.version_dir(version))
        try:
            return tuple(
                (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.iterdir())
            )
        except OSError as exc:
            return (f"unreadable: {exc}",)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(serving, body)``: serving is True when a verified bundle is loaded. The body's status is
        ``ok`` (serving what ``current`` names), ``stale`` (serving an older bundle: the new one is
        loading or was refused) or ``unavailable``; it names the served bundle, what ``current``
        points to, a load in progress, a refused version with the reason, and in ``reason`` why the
        served bundle is not the current one (or why nothing is served)."""
        served, refused, pointer = self._served, self._refused, self._pointer
        status = "unavailable" if served is None else "ok" if served.version == pointer else "stale"
        body: dict[str, Any] = {"status": status, "current": pointer}
        if served is not None:
            body |= served.describe()
        if self._loading:
            body["loading"] = self._loading
        if refused is not None:
            body["refused"] = {
                "version": refused.version,
                "reason": refused.reason,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(refused.at)),
            }
        reason = self._reason(served, refused, pointer)
        if reason:
            body["reason"] = reason
        return served is not None, body

    def _reason(self, served: ServedModel | None, refused: Refusal | None, pointer: str | None) -> str | None:
        """Why the served bundle is not the one ``current`` names (or why nothing is served)."""
        if refused is not None:
            kept = f"; still serving {served.version}" if served else ""
            return f"bundle {refused.version} (current) was refused: {refused.reason}{kept}"
        if self._pointer_problem:
            return f"the deployment pointer cannot be read: {self._pointer_problem}"
        if pointer is None:
            where = self.store.root
            return f"nothing is deployed under {where} (no current pointer)" + (
                f"; still serving {served.version}" if served else ""
            )
        if self._loading:
            return f"loading bundle {self._loading}"
        return None
