"""Every error hasher raises: one root, :class:`HasherError`, and one family per stage or device.

Catch a family to handle one stage (``except KnowledgeBaseError``), the root to handle any of them.
Each error is raised at the boundary where bad input or a bad state enters, and its message names
the file, record, variable or device and the problem. Classes that were ``ValueError`` or
``RuntimeError`` before the root existed still are, so existing ``except ValueError`` keeps working.

Families: knowledge base (stage 1), frames (stage 2), search (stage 3), kernel, embedder, ASIC
device, bundle and inference, deployment (stage 5), executor (where steps run).
"""

from __future__ import annotations

import collections
from pathlib import Path


class HasherError(Exception):
    """The root of every error hasher raises."""


class FileChangedError(HasherError):
    """An input file changed while it was being read for its fingerprint; reading it again will do."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: changed while it was being fingerprinted; try again")


class DirectoryNotWritableError(HasherError):
    """A directory hasher must write cannot be written; names the variable that chose it, the
    directory, the reason (read-only filesystem, permission, a file in the way) and what needs it."""

    def __init__(self, variable: str, path: Path, reason: str, purpose: str) -> None:
        self.variable = variable
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"{variable}={str(path)!r}: hasher cannot write there ({reason}); {purpose} need a writable "
            f"directory: point {variable} at one"
        )


class TextEncodingError(HasherError, ValueError):
    """Bytes that should be text are in no Unicode encoding form hasher reads; the message says why
    (the first bad byte and its offset) and the caller names the file, record or argument."""


# --- stage 1: knowledge base --------------------------------------------------------------------


class KnowledgeBaseError(HasherError):
    """Family: reading a knowledge base, the inbox or the knowledge split failed."""


class KnowledgeBaseNotFoundError(KnowledgeBaseError):
    """No candidate file exists; the message names every path searched."""

    def __init__(self, searched: list[Path], detail: str = "") -> None:
        self.searched = list(searched)
        listing = "\n".join(f"  {p}" for p in self.searched)
        hint = f"\n{detail}" if detail else ""
        super().__init__(
            f"no Data Miner knowledge base found; searched, in order:\n{listing}{hint}\n"
            "Set HASHER_MINER_DIR, give an explicit input path, or drop .txt/.md files into the inbox."
        )


class NoReadableKnowledgeBaseError(KnowledgeBaseNotFoundError):
    """Candidate files exist but none could be read; the message says why for each."""

    def __init__(self, searched: list[Path], rejected: list[tuple[Path, str]]) -> None:
        self.rejected = list(rejected)
        detail = "files found but unreadable:\n" + "\n".join(f"  {p}: {why}" for p, why in rejected)
        super().__init__(searched, detail)


class KnowledgeBaseFormatError(KnowledgeBaseError):
    """A file (or one record of it, when ``record`` is not None) cannot be read as a knowledge base."""

    def __init__(self, path: Path, record: int | str | None, reason: str) -> None:
        self.path = Path(path)
        self.record = record
        self.reason = reason
        where = f"{self.path}" if record is None else f"{self.path}, record {record}"
        super().__init__(f"{where}: {reason}")


class AllRecordsInvalidError(KnowledgeBaseError):
    """Every record of the file (or of the requested partition) was skipped."""

    def __init__(
        self, path: Path, skipped_counts: collections.Counter[str], first_problems: list[str]
    ) -> None:
        self.path = Path(path)
        self.skipped_counts = collections.Counter(skipped_counts)
        self.first_problems = list(first_problems)
        counts = ", ".join(f"{reason}={n}" for reason, n in self.skipped_counts.most_common()) or "none"
        shown = "\n".join(f"  {p}" for p in self.first_problems[:5])
        super().__init__(f"{self.path}: no valid record (skipped: {counts}); first problems:\n{shown}")


class PartitionNotFoundError(KnowledgeBaseError):
    """The knowledge base was read but holds no record for the requested partition key."""

    def __init__(self, path: Path, partition_key: str) -> None:
        self.path = Path(path)
        self.partition_key = partition_key
        super().__init__(f"{path}: no record belongs to partition {partition_key!r}")


class KnowledgeSplitError(KnowledgeBaseError):
    """The knowledge split cannot be built, published or read; the message names the path."""


class KnowledgeSplitLockTimeoutError(KnowledgeSplitError):
    """Another process held the cache lock longer than the caller was willing to wait."""

    def __init__(self, lock_path: Path, waited_s: float, holder: str) -> None:
        self.lock_path = Path(lock_path)
        self.waited_s = waited_s
        super().__init__(
            f"{lock_path}: still locked after {waited_s:.1f} s by another split build ({holder}); "
            "wait for it to finish or raise the timeout"
        )


class FramesError(HasherError):
    """Family: turning chunks into frames failed (tokenizer, options, input)."""


class TokenizerDataError(FramesError, RuntimeError):
    """The BPE ranks file is missing, unreadable or not the cl100k_base file tiktoken expects."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cl100k_base ranks file {path}: {reason}")
        self.path = path
        self.reason = reason


class FramesConfigError(FramesError, ValueError):
    """A stage-2 option (window, stride, compression, embedding source, batch size) is invalid."""


class FramesInputError(FramesError, ValueError):
    """Frames (or the chunks they come from) are malformed; the message names the column or row."""


class TokenizeError(FramesError):
    """tiktoken (or the exact fallback for its regex limit) failed on one text; the frames writer
    skips that chunk, counts it under ``tokenizer_failed`` and names it."""


class SearchError(HasherError):
    """Family: the seed search cannot run (configuration, progress store)."""


class SearchConfigError(SearchError, ValueError):
    """A search setting is out of range; the message names the setting and the allowed values."""


class ProgressStoreError(SearchError, RuntimeError):
    """The progress store cannot be used (not SQLite, wrong schema, unreadable); names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"progress store {path}: {reason} (the file was left untouched)")
        self.path = path
        self.reason = reason


class ProgressDirOnNetworkError(ProgressStoreError):
    """The progress stores' directory is on a network filesystem, where SQLite's WAL is unsafe."""

    def __init__(self, path: Path, filesystem: str) -> None:
        SearchError.__init__(
            self,
            f"HASHER_PROGRESS_DIR: {path} is on a network filesystem ({filesystem}), and the seeds "
            "progress stores (SQLite WAL) need a local disk: set HASHER_PROGRESS_DIR (or the storage "
            "resource's progress_dir) to a local directory; HASHER_DATA_DIR may stay shared",
        )
        self.path = path
        self.reason = f"on a network filesystem ({filesystem})"


class ProgressStoreLockedError(ProgressStoreError):
    """Another run of the same partition holds the store."""

    def __init__(self, path: Path, partition: str, wait_s: float, lock_path: Path) -> None:
        RuntimeError.__init__(
            self,
            f"another run of partition {partition!r} holds the progress store {path} "
            f"(lock {lock_path}); waited {wait_s:g} s",
        )
        self.path = path
        self.reason = "locked"
        self.partition = partition


class KernelError(HasherError):
    """Family: the SHA-256 kernel was given bad input or cannot run as configured."""


class KernelInputError(KernelError, ValueError):
    """An input array has the wrong shape, dtype or layout."""


class KernelConfigError(KernelError, ValueError):
    """A Sha256Kernel setting is out of range."""


class BackendUnavailableError(KernelError, RuntimeError):
    """The requested backend cannot run here (no GPU, CuPy missing, ...)."""


class ExecutorError(HasherError):
    """Family: the executor or a step's cluster resources cannot be set up as configured."""


class ExecutorUnavailableError(ExecutorError, RuntimeError):
    """``HASHER_EXECUTOR`` names an engine whose optional extra is not installed."""

    def __init__(self, executor: str, extra: str | None, cause: BaseException) -> None:
        self.executor, self.extra = executor, extra
        super().__init__(
            f"HASHER_EXECUTOR={executor} needs the {extra!r} extra, which is not installed ({cause}): "
            f"pip install 'hasher[{extra}]'"
        )


class EmbedderError(HasherError, RuntimeError):
    """The embedder cannot produce embeddings (server down, model missing, malformed answer)."""


class AsicError(HasherError, RuntimeError):
    """Family: anything that went wrong talking to an ASIC (or to the emulator)."""


class AsicNotFoundError(AsicError):
    """The device path, pty or TCP port cannot be opened."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"ASIC device {url!r} not found: {reason}")


class AsicDisconnectedError(AsicError):
    """The device was open and went away (pty closed, socket reset, USB unplugged)."""

    def __init__(self, url: str, during: str, reason: str) -> None:
        self.url = url
        self.during = during
        super().__init__(f"ASIC device {url!r} disconnected during {during}: {reason}")


class AsicTimeoutError(AsicError):
    """No complete answer within the read deadline, after the bounded retries."""

    def __init__(self, url: str, during: str, waited_s: float, attempts: int, detail: str = "") -> None:
        self.url = url
        self.during = during
        self.waited_s = waited_s
        self.attempts = attempts
        extra = f"; {detail}" if detail else ""
        super().__init__(
            f"ASIC device {url!r} went silent during {during}: no reply after {attempts} attempt(s), "
            f"{waited_s:.2f} s{extra}"
        )


class AsicProtocolError(AsicError):
    """Bytes that frame but do not make sense: impossible length, bad field, unknown variant."""

    def __init__(self, packet: bytes, reason: str, url: str | None = None) -> None:
        self.packet = bytes(packet)
        self.reason = reason
        self.url = url
        where = f"ASIC device {url!r}: " if url else ""
        shown = self.packet[:64].hex() + ("…" if len(self.packet) > 64 else "")
        super().__init__(f"{where}bad packet {shown} ({len(self.packet)} bytes): {reason}")


class AsicCrcError(AsicProtocolError):
    """A packet whose CRC-16/MODBUS does not match its bytes."""


class UnsupportedVariantError(AsicProtocolError):
    """A well-framed packet in a layout the codec does not decode (e.g. the Antminer-docs sizes)."""


class WrongDeviceError(AsicError):
    """Something answered, but it does not speak the Bitmain protocol."""

    def __init__(self, url: str, received: bytes, reason: str) -> None:
        self.url = url
        self.received = bytes(received)
        shown = self.received[:48].hex()
        super().__init__(
            f"ASIC device {url!r} is not an Antminer S3 (Bitmain protocol): {reason}; "
            f"first bytes received: {shown or '(none)'}"
        )


class BundleError(HasherError):
    """Family: building, writing or reading a bundle went wrong."""


class NoCheckpointsError(BundleError):
    """There is nothing to deploy: no partition has (solved) checkpoint rows."""


class BundleInputError(BundleError, ValueError):
    """A checkpoint table cannot go into a bundle (missing column, null seed, out-of-range value)."""

    def __init__(self, partition: str, column: str, problem: str):
        self.partition, self.column, self.problem = partition, column, problem
        super().__init__(f"checkpoints of partition {partition!r}, column {column!r}: {problem}")


class BundleFormatError(BundleError):
    """A bundle directory is missing a file or holds a file that does not parse."""

    def __init__(self, path: Path | str, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


class BundleChecksumError(BundleError):
    """A file's SHA-256 (or the seed table's content digest) is not what the manifest says."""

    def __init__(self, path: Path | str, expected: str, actual: str, what: str = "sha256"):
        self.path, self.expected, self.actual = Path(path), expected, actual
        super().__init__(f"{path}: {what} mismatch: manifest says {expected}, file has {actual}")


class InferenceError(HasherError):
    """Family: a deployed model cannot answer the question it was asked."""


class PredictInputError(InferenceError, ValueError):
    """The frame given for a prediction is not 12 words that fit in 32 bits, or the row is unknown."""


class DeploymentError(HasherError):
    """Family: the deployment store refused or failed a deploy."""


class DeploymentStoreError(DeploymentError):
    """The store itself is in a state hasher will not guess about (bad pointer, missing dir)."""


class DeploymentDamagedError(DeploymentStoreError):
    """The current (or a named) deployment cannot be read as it is; the message says what is damaged
    and which command recovers it."""

    def __init__(self, version: str | None, problem: str, recovery: str):
        self.version, self.problem, self.recovery = version, problem, recovery
        what = f"deployment {version}" if version else "the current deployment"
        super().__init__(f"{what} is damaged: {problem}; {recovery}")


class DeploymentLockedError(DeploymentError):
    """Another deploy holds the store's lock."""


class DeploymentFailedError(DeploymentError):
    """A deploy failed after its retries and was rolled back; says which step failed and why."""

    def __init__(
        self,
        version: str,
        step: str,
        reason: str,
        *,
        attempts: int,
        rolled_back_to: str | None,
        restored_from_backup: bool = False,
        attempt_errors: tuple[str, ...] = (),
        rollback_completed: bool = True,
        previous_damage: str | None = None,
    ):
        self.version, self.step, self.reason = version, step, reason
        self.rollback_completed = rollback_completed
        self.attempts, self.rolled_back_to = attempts, rolled_back_to
        self.restored_from_backup, self.attempt_errors = restored_from_backup, attempt_errors
        if not rollback_completed:
            previous = "the rollback did not complete: inspect the store before the next deploy"
        elif previous_damage:
            previous = (
                f"rolled back to {rolled_back_to or 'no deployment'}, as damaged as before this deploy "
                f"({previous_damage})"
            )
        elif rolled_back_to:
            how = ", restored from backup" if restored_from_backup else ""
            previous = f"rolled back to {rolled_back_to} (intact{how})"
        else:
            previous = "rolled back to no deployment (there was none before)"
        super().__init__(
            f"deployment of {version} failed at step {step!r} after {attempts} attempt(s): "
            f"{reason}; {previous}"
        )
