"""Mounting the filesystem: checks, pyfuse3 session, signals, clean unmount.

:func:`run_mount` is an ordinary trio coroutine, so ``objfs serve`` can run
the mount beside the S3 server in one process; ``objfs mount`` runs it
alone (see :mod:`objfs.cli.mount`).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from pathlib import Path

import pyfuse3
import trio

from objfs.store import Store

from .operations import ObjfsOperations

log = logging.getLogger(__name__)


class MountError(Exception):
    """The mount point cannot be used; the message says why, for the operator."""


def check_mountpoint(mountpoint: str | os.PathLike[str]) -> Path:
    """The resolved mount point, or MountError if it is missing, busy or not empty.

    A PACS re-pointed at a directory that still holds its old files must not
    have them silently hidden under the mount, so a non-empty directory is
    refused.
    """
    path = Path(os.path.realpath(mountpoint))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mount point {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(f"mount point {path} is a dead FUSE mount; run 'fusermount3 -u {path}' first") from None
        raise MountError(f"mount point {path} is unusable: {exc.strerror}") from None
    if not os.path.isdir(path) or not (st.st_mode & 0o040000):
        raise MountError(f"mount point {path} is not a directory")
    if os.path.ismount(path):
        raise MountError(f"mount point {path} is busy: something is mounted there already")
    if any(os.scandir(path)):
        raise MountError(f"mount point {path} is not empty; refusing to hide its files")
    return path


async def run_mount(
    store: Store,
    mountpoint: str | os.PathLike[str],
    *,
    allow_other: bool = False,
    foreground: bool = True,
    ready: trio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Mount ``store`` at ``mountpoint`` and serve it until unmounted, SIGTERM or SIGINT.

    With ``handle_signals=False`` the caller owns SIGTERM/SIGINT (``objfs
    serve`` does, to tell a requested stop from a front that died).

    ``ready`` is set once the kernel has the mount. On return the mount is
    gone (unmounted even when the loop fails). ``foreground`` is accepted
    for the callers' symmetry: daemonizing happens before the store is
    opened (see :mod:`objfs.cli.mount`), never inside a running trio loop.
    """
    path = check_mountpoint(mountpoint)
    ops = ObjfsOperations(store)
    options = set(pyfuse3.default_options)
    options |= {"fsname=objfs", "subtype=objfs"}
    if allow_other:
        options.add("allow_other")
    pyfuse3.init(ops, str(path), options)
    log.info("mounted %s at %s", store.root, path)
    _raise_readahead(path)
    try:
        async with trio.open_nursery() as nursery:
            if handle_signals:
                nursery.start_soon(_stop_on_signal)
            if ready is not None:
                ready.set()
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
    finally:
        # After an error the kernel mount would linger and hang its users: always unmount.
        pyfuse3.close(unmount=True)
        log.info("unmounted %s", path)


#: Kernel readahead of the mount: four engine segments. FUSE mounts start at
#: 128 KiB, which cuts a sequential read into many small requests, each a
#: round trip through the kernel, pyfuse3 and trio.
READAHEAD_KB = 4096


def _raise_readahead(path: Path) -> None:
    """Best effort (root only): a larger readahead window on the mount's backing device.

    The device number comes from /proc/self/mountinfo: stat() of the mount
    point would ask this very process, whose FUSE loop is not running yet.
    """
    device = None
    target = str(path).replace(" ", "\\040")  # resolved before the mount: no lstat of it now
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] == target:
                    device = fields[2]  # the last mount there is ours
    except OSError:
        return
    if device is None:
        return
    knob = Path(f"/sys/class/bdi/{device}/read_ahead_kb")
    try:
        knob.write_text(f"{READAHEAD_KB}\n")
    except OSError as exc:
        log.info("could not raise the readahead of %s (%s); sequential reads will be slower", path, exc)


async def _stop_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal %s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return
