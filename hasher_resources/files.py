"""Files, the one way: atomic writes, directory fsync, content digests with a stat memo, file locks,
the directories the environment names and the check that hasher can write them.

Every writer in hasher goes through :func:`atomic_write` (a temporary file beside the target,
fsynced, renamed over it, the directory fsynced), so a reader sees the old file or the complete
new one, never half of one, and a failed write leaves the old file untouched; every finished
directory (a knowledge split, a deployment, a backup) and the deployment pointer appear through
:func:`publish` (fsync, one rename, fsync of the parent). Every lock is an
exclusive ``flock`` on a sidecar file taken by :func:`acquire_lock`; every content fingerprint of an
input file is :func:`file_digest`, memoised by :class:`DigestMemo`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hasher_core.errors import DirectoryNotWritableError, FileChangedError

from .settings import load_settings

#: Defaults of the three directories (DESIGN §2): overridden by the environment variables below.
DEFAULT_MINER_DIR = "~/.local/share/dataminer"
DEFAULT_DATA_DIR = "~/.local/share/hasher"

_READ_BYTES = 8 << 20
_LOCK_POLL_S = 0.05
# A memo entry is trusted only for files last changed this long before it was recorded: file times
# tick coarsely, so a write in the same tick as the hashing would otherwise go unnoticed.
_RACY_NS = 2_000_000_000


def _now_ns() -> int:
    return time.time_ns()


def default_miner_dir() -> Path:
    """``$HASHER_MINER_DIR``, default ``~/.local/share/dataminer`` (the Data Miner's output)."""
    return Path(load_settings().miner_dir or DEFAULT_MINER_DIR).expanduser()


def default_inbox_dir() -> Path:
    """``$HASHER_INBOX_DIR``, default ``<miner dir>/inbox`` (raw ``.txt``/``.md`` files)."""
    env = load_settings().inbox_dir
    return Path(env).expanduser() if env else default_miner_dir() / "inbox"


def default_data_dir() -> Path:
    """``$HASHER_DATA_DIR``, default ``~/.local/share/hasher`` (every output of every stage)."""
    return Path(load_settings().data_dir or DEFAULT_DATA_DIR).expanduser()


def default_progress_dir() -> Path | None:
    """``$HASHER_PROGRESS_DIR``: where the seeds progress stores live; unset means
    ``<data dir>/seeds_progress``. SQLite's WAL needs a local disk (see :func:`network_filesystem`)."""
    env = load_settings().progress_dir
    return Path(env).expanduser() if env else None


def check_writable_dir(path: Path, variable: str, purpose: str) -> Path:
    """Make sure hasher can write in ``path`` before any work starts: create it (and its parents)
    if missing, then create and delete a file in it — the only test that sees read-only mounts,
    permissions without root's override, ACLs and full inode tables alike. Returns ``path``.

    Raises :class:`DirectoryNotWritableError` naming ``variable`` (the setting that chose the
    directory), the directory, why (``Read-only file system``, ``Permission denied``, ``a file is in
    the way``…) and ``purpose`` (what needs it, e.g. "the seeds progress stores").
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".hasher-write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if isinstance(exc, FileExistsError):
            reason = "a file is in the way, not a directory"
        elif isinstance(exc, NotADirectoryError):
            reason = "a parent is a file, not a directory"
        else:
            reason = exc.strerror or str(exc)
        raise DirectoryNotWritableError(variable, path, reason, purpose) from None
    return path


#: Filesystem types (``/proc/self/mounts``) on which SQLite's WAL mode is unsafe: its shared-memory
#: index needs every writer on one host (https://www.sqlite.org/wal.html, "WAL does not work over a
#: network filesystem").
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs", "beegfs",
     "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "afs"}
)  # fmt: skip


def filesystem_type(path: Path, mounts: str | None = None) -> str:
    """The type of the filesystem ``path`` lives on: the longest mount point above it in ``mounts``
    (the text of ``/proc/self/mounts``, read when None); ``"unknown"`` where there is no such file."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return "unknown"
    path = Path(os.path.abspath(Path(path).expanduser()))
    best, kind = -1, "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(fields[1].replace("\\040", " "))
        if (path == point or point in path.parents) and len(point.parts) > best:
            best, kind = len(point.parts), fields[2]
    return kind


def network_filesystem(path: Path, mounts: str | None = None) -> str | None:
    """The network filesystem type ``path`` is on (``nfs4``, ``cifs``, ...), or None on a local one."""
    kind = filesystem_type(path, mounts)
    return kind if kind in NETWORK_FILESYSTEMS else None


def fsync_dir(directory: Path, *, strict: bool = True) -> None:
    """Make the renames inside ``directory`` durable.

    ``strict=False`` ignores filesystems that refuse to fsync a directory (some network and FUSE
    filesystems); ``strict=True`` raises OSError, for stores whose promise is durability.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (before renaming a finished tree into place)."""
    for directory, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(directory))


def publish(staged: Path, final: Path) -> Path:
    """Make ``staged`` — a finished directory tree, file or symlink beside ``final`` — appear as
    ``final`` at once: everything in it fsynced, one rename over ``final`` (which may be a file or
    symlink; a directory there must be empty or absent), then the parent fsynced. A reader sees the
    old ``final`` or the whole new one, never a part; after a crash, one of the two. Raises OSError
    (``staged`` is then left where it was). Returns ``final``."""
    staged, final = Path(staged), Path(final)
    if staged.is_dir() and not staged.is_symlink():
        fsync_tree(staged)
    elif staged.is_file() and not staged.is_symlink():
        fd = os.open(staged, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(staged, final)
    fsync_dir(final.parent)
    return final


def atomic_write(path: Path, write: Callable[[Path], object], *, strict_dir_sync: bool = False) -> Path:
    """Create or replace ``path`` atomically: ``write(tmp)`` fills a temporary file beside it, which
    is fsynced, renamed over ``path``, and the directory fsynced.

    On any exception the temporary file is removed and an existing ``path`` is left as it was; the
    exception propagates. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent, strict=strict_dir_sync)
    return path


def atomic_write_bytes(path: Path, data: bytes, *, strict_dir_sync: bool = False) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), strict_dir_sync=strict_dir_sync)


def atomic_write_text(path: Path, text: str) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def move_into_place(staged: Path, path: Path) -> None:
    """Atomically move a finished file to ``path`` (copying first when it sits on another device)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staged, path)
    except OSError:
        atomic_write(path, lambda tmp: shutil.copyfile(staged, tmp))
        os.unlink(staged)
        return
    fsync_dir(path.parent, strict=False)


def file_digest(path: Path, *, digest_size: int = 32) -> str:
    """blake2b (hex, ``digest_size`` bytes) of a file's content, read in 8 MiB blocks."""
    h = hashlib.blake2b(digest_size=digest_size)
    with open(path, "rb") as f:
        while block := f.read(_READ_BYTES):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's content, read in 8 MiB blocks: what bundle manifests record."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_READ_BYTES):
            h.update(block)
    return h.hexdigest()


def stat_key(path: Path) -> list[int]:
    """What says a file may have changed: device, inode, mtime and ctime (ns), size."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size]


@dataclass
class DigestMemo:
    """Content digests of files, memoised by :func:`stat_key` so an unchanged file is read once.

    ``entries`` is a plain JSON-able dict (path → ``{"stat", "digest", "recorded_ns", …}``) that the
    owner keeps where it likes: the knowledge split in a file, the sensor in its cursor. Other keys of
    an entry are kept. An entry is trusted only when the stat is unchanged and the file was last
    modified well before the digest was taken (a write in the same clock tick would be invisible).
    """

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    digest_size: int = 32
    changed: bool = False

    def cached(self, path: Path) -> str | None:
        """The memoised digest when ``path`` is provably unchanged since it was taken, else None."""
        entry = self.entries.get(str(path))
        if not isinstance(entry, dict) or "digest" not in entry:
            return None
        stat = stat_key(path)
        if entry.get("stat") != stat or max(stat[2], stat[3]) >= int(entry.get("recorded_ns", 0)) - _RACY_NS:
            return None
        return str(entry["digest"])

    def digest(self, path: Path) -> str:
        """The content digest of ``path``, from the memo when trustworthy, else read and recorded.

        Raises :class:`FileChangedError` when the file changed while it was being read.
        """
        hit = self.cached(path)
        if hit is not None:
            return hit
        before = stat_key(path)
        digest = file_digest(path, digest_size=self.digest_size)
        if stat_key(path) != before:
            raise FileChangedError(path)
        entry = self.entries.get(str(path))
        extra = entry if isinstance(entry, dict) else {}
        now = _now_ns()
        if (
            extra.get("stat") == before
            and extra.get("digest") == digest
            and max(before[2], before[3]) >= now - _RACY_NS
        ):
            # Read again only because it changed too recently to trust: recording it now would still
            # not make it trustworthy, and would change the memo for nothing.
            return digest
        self.entries[str(path)] = {**extra, "stat": before, "digest": digest, "recorded_ns": now}
        self.changed = True
        return digest

    def newest(self, keep: int) -> dict[str, dict[str, Any]]:
        """The ``keep`` most recently recorded entries (to bound a memo that is saved)."""
        ranked = sorted(self.entries.items(), key=lambda kv: kv[1].get("recorded_ns", 0))
        return dict(ranked[-keep:])


def acquire_lock(
    path: Path, *, wait_s: float, busy: Callable[[float, str], Exception], note: str = ""
) -> int:
    """Take an exclusive ``flock`` on ``path`` (created if missing), waiting up to ``wait_s`` seconds.

    Returns the open descriptor: the lock is held until it is closed (:func:`release_lock`). The
    holder's pid, the time and ``note`` are written into the file so a waiter can say who holds it.
    When the wait runs out, raises ``busy(waited_s, holder)`` — the caller's own typed error.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    start = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            waited = time.monotonic() - start
            if waited >= wait_s:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "holder unknown"
                raise busy(waited, holder) from None
            time.sleep(_LOCK_POLL_S)
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        os.pwrite(fd, f"pid {os.getpid()} since {stamp}{'; ' + note if note else ''}".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def release_lock(fd: int) -> None:
    """Release a lock taken by :func:`acquire_lock` (closing the descriptor drops the flock)."""
    os.close(fd)


@contextlib.contextmanager
def locked(
    path: Path, *, wait_s: float, busy: Callable[[float, str], Exception], note: str = ""
) -> Iterator[None]:
    """:func:`acquire_lock` for the duration of a ``with`` block."""
    fd = acquire_lock(path, wait_s=wait_s, busy=busy, note=note)
    try:
        yield
    finally:
        release_lock(fd)
