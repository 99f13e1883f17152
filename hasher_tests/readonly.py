"""Real read-only directories for the tests, as root (CI) and as an ordinary user.

``chmod`` does not stop root: root's ``CAP_DAC_OVERRIDE`` writes through any permission bits. So,
as root, :func:`read_only` mounts a read-only filesystem there (a read-only ``tmpfs``, or a
read-only bind mount of the directory onto itself to keep what is in it): writes fail with EROFS,
as on a Docker ``--read-only`` container or a volume mounted ``ro``. As another user the permission
bits are enough (EACCES). :func:`without_write_override` runs a command as root without the
capabilities that ignore permission bits (``setpriv``), for the EACCES case as root.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

IS_ROOT = os.geteuid() == 0


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


@contextlib.contextmanager
def read_only(path: Path, *, keep_content: bool = False) -> Iterator[Path]:
    """``path`` (created if missing) cannot be written inside this block; it can again after.

    As root: a read-only tmpfs on it (empty), or with ``keep_content`` a read-only bind mount of
    itself. Otherwise: mode 0555. Fails (AssertionError naming the command) when the mount is refused.
    """
    path.mkdir(parents=True, exist_ok=True)
    if not IS_ROOT:
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(mode)
        return
    if keep_content:
        _run(["mount", "--bind", str(path), str(path)])
        try:
            _run(["mount", "-o", "remount,ro,bind", str(path)])
        except AssertionError:
            _run(["umount", str(path)])
            raise
    else:
        _run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)])
    try:
        yield path
    finally:
        _run(["umount", str(path)])


def without_write_override(argv: list[str]) -> list[str]:
    """``argv`` run so that permission bits hold: as root without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH (util-linux ``setpriv``), unchanged for another user."""
    if not IS_ROOT:
        return argv
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *argv]
