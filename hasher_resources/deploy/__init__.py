"""The deployment target (DESIGN §6): ``store`` (versioned bundle directories, the ``current``
pointer, backups, rollback, the lock), ``steps`` (one deploy's report, deadline and health rule),
``verify`` (the read-back check on the kernel and the device), ``bundle_files`` (a bundle's files in
a directory)."""

from .store import DeploymentStore

__all__ = ["DeploymentStore"]
