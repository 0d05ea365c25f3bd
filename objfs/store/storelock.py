"""The store lock, ``STORE/run/store.lock``: serving processes share it, offline tools hold it alone.

Guarantee: while any process serves the store (``objfs serve``, ``objfs
mount``, ``s3sidecar``, ``objfs dicom``) it holds a shared ``flock`` on the
lock file for its whole life; a tool that must not run beside them
(``objfs rebuild-index``, ``objfs upgrade``) takes the lock exclusively
without waiting and refuses (:class:`StoreBusy`) while anything serves. The
kernel drops a dead process's lock, so a crash never leaves the store
locked. flock locks belong to an open file description: one process takes
one of the two kinds, through this module only.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .config import CONFIG_NAME
from .errors import ConfigError, StoreError

LOCK_FILE = "store.lock"

__all__ = ["LOCK_FILE", "StoreBusy", "StoreLock", "hold_exclusive", "hold_shared"]


class StoreBusy(StoreError):
    """Something serves the store, so a tool that needs it alone refuses."""


class StoreLock:
    """One held lock on the store; released by :meth:`release` or when the process ends."""

    def __init__(self, fd: int, exclusive: bool) -> None:
        self.fd: int | None = fd
        self.exclusive = exclusive

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open(root: Path) -> int:
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} is a file, not a store directory")
    if not (root / CONFIG_NAME).is_file():
        raise ConfigError(f"{root} is not an objfs store (no {CONFIG_NAME}); run 'objfs init' first")
    run = root / "run"
    run.mkdir(exist_ok=True)
    return os.open(run / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def hold_shared(root: str | os.PathLike[str]) -> StoreLock:
    """Share the store with other serving processes; raises StoreBusy while a tool holds it alone."""
    fd = _open(Path(root).resolve())
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreBusy(f"{root} is held by a maintenance command (rebuild-index or upgrade); try again when it ends") from None
    return StoreLock(fd, exclusive=False)


def hold_exclusive(root: str | os.PathLike[str], what: str) -> StoreLock:
    """Hold the store alone for ``what``; raises StoreBusy while anything serves it."""
    fd = _open(Path(root).resolve())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreBusy(
            f"{what} needs the store alone, but a process serves {root} "
            "(objfs serve, objfs mount, s3sidecar or objfs dicom): stop it first "
            "(systemctl stop objfs), then run this again"
        ) from None
    return StoreLock(fd, exclusive=True)
