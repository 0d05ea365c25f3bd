"""Directories: opendir, readdir, releasedir, mkdir, rmdir.

A listing is a snapshot taken page by page from the engine's listing (see
:func:`.namespace.list_page`), so readdir offsets stay stable; files created
on this mount and not yet committed are listed too. A directory holding
such files is not empty (rmdir, and rename over it, answer ENOTEMPTY).
"""

from __future__ import annotations

import errno
import stat

import pyfuse3

from . import namespace as ns
from .core import DirHandle, MountState
from .inodes import DIR, join_path, split_path
from .principal import principal_of

#: Entries fetched per index listing while reading a directory.
LIST_PAGE = 5000


class DirectoryOps(MountState):
    """opendir, readdir, releasedir, mkdir, rmdir."""

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.inodes.get(inode)
        if node.kind != DIR:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = self._fh()
        self.dirs[fh] = DirHandle(node)
        return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self.dirs[fh]
        if start_id == 0 and handle.entries:
            self.dirs[fh] = handle = DirHandle(handle.inode)  # rewinddir: a fresh snapshot
        path = handle.inode.path
        if path is None:
            return
        index = start_id
        while True:
            while index >= len(handle.entries) and not handle.done:
                await self._fill(handle, path)
            if index >= len(handle.entries):
                return
            name, st = handle.entries[index]
            inode = self.inodes.for_path(join_path(path, name), st.kind, st.alias)
            if not pyfuse3.readdir_reply(token, name.encode(), self._attrs(inode, st), index + 1):
                return
            inode.lookups += 1
            index += 1

    async def _fill(self, handle: DirHandle, path: str) -> None:
        entries, marker = await self._run(ns.list_page, self.store, path, handle.marker, LIST_PAGE)
        for name, st in entries:
            if name not in handle.names:  # an object "x" hides a directory "x/"
                handle.names.add(name)
                handle.entries.append((name, st))
        if marker is not None:
            handle.marker = marker
            return
        handle.done = True
        # Files created here and not yet committed exist only on this mount: list them too.
        for inode in self.inodes.under(path) if self.spools else ():
            spool = self._pending(inode)
            if spool is not None and inode.path is not None and inode.path.rpartition("/")[0] == path:
                name = inode.path.rpartition("/")[2]
                if name not in handle.names:
                    handle.names.add(name)
                    handle.entries.append((name, self._spool_stat(spool)))

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        bucket, key = split_path(path)
        principal = principal_of(ctx)
        if not key:
            await self._run(self.store.create_bucket, bucket, owner=str(ctx.uid), principal=principal)
        else:
            if await self._stat(path) is not None:
                raise pyfuse3.FUSEError(errno.EEXIST)
            posix = {"mode": stat.S_IFDIR | stat.S_IMODE(mode), "uid": ctx.uid, "gid": ctx.gid}
            await self._create_empty(path, posix, principal, marker=True)
        return await self.lookup(parent_inode, name, ctx)  # type: ignore[attr-defined]

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        bucket, key = split_path(path)
        principal = principal_of(ctx)
        if self._pending_under(path):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        if not key:
            await self._run(self.store.delete_bucket, bucket, principal=principal)
        else:
            st = await self._stat(path)
            if st is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            if st.kind != DIR:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if await self._run(ns.has_children, self.store, path):
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            if st.explicit:
                # A marker made in a bucket with default retention is a retained object too.
                await self._check_change(st.info, "delete", principal)
                await self._run(self.store.delete_object, bucket, key + "/", principal=principal)
            self._touch_parent(path)
        self._free(self.inodes.unlink(path))
