"""Special files and directory times: mknod (FIFOs, sockets, device nodes), and create's parent touch.

A FIFO, socket or character/block device is a metadata-only object (an
empty body) whose POSIX mode carries its type and whose ``rdev`` the
device number, so it survives a remount and ``rebuild-index`` like any
object; the kernel itself implements opening one. ``mknod`` of a regular
file makes an empty file the same way.

A directory's mtime and ctime move when this mount adds, removes or renames
one of its entries (:meth:`.core.MountState._touch_dir`).
"""

from __future__ import annotations

import errno
import stat
import time

import pyfuse3

from .core import MountState
from .inodes import split_path
from .namespace import SPECIAL_TYPES
from .principal import principal_of


class SpecialOps(MountState):
    """mknod; create (which touches the parent directory)."""

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        bucket, key = split_path(path)
        if not key:
            raise pyfuse3.FUSEError(errno.EPERM)  # the root holds buckets only
        kind = stat.S_IFMT(mode)
        if kind not in SPECIAL_TYPES and kind != stat.S_IFREG:
            raise pyfuse3.FUSEError(errno.EINVAL)
        if await self._stat(path) is not None:
            raise pyfuse3.FUSEError(errno.EEXIST)
        now = time.time_ns()
        posix = {"mode": kind | stat.S_IMODE(mode), "uid": ctx.uid, "gid": ctx.gid}
        posix.update(mtime_ns=now, atime_ns=now, ctime_ns=now)
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            posix["rdev"] = rdev
        await self._create_empty(path, posix, principal_of(ctx))
        return await self.lookup(parent_inode, name, ctx)  # type: ignore[attr-defined]

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        made = await super().create(parent_inode, name, mode, flags, ctx)  # type: ignore[misc]
        self._touch_parent(self._child(parent_inode, name))
        return made
