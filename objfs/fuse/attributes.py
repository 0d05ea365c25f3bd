"""Lookups and attributes: lookup, forget, getattr, setattr (chmod, chown, utimes, truncate), statfs.

A retained or held version refuses attribute changes and truncation with
EPERM, decided and audited by the engine (``store.check_change``) before
anything changes, so a refused chmod leaves no trace in an open spool
either (POSIX attributes of a locked version are frozen, as by chattr +i).
"""

from __future__ import annotations

import errno
import stat
import time

import pyfuse3

from objfs.store import Principal
from objfs.store.errors import NoSuchKey, ObjectLocked

from . import namespace as ns
from .core import NAME_MAX, MountState
from .inodes import DIR, FILE, ROOT_INODE, Inode, split_path
from .principal import principal_of
from .spool import attrs_of


class AttributeOps(MountState):
    """lookup, forget, getattr, setattr, statfs."""

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        try:
            st = await self._stat(path)
        except pyfuse3.FUSEError as exc:
            if parent_inode == ROOT_INODE and exc.errno == errno.EINVAL:
                raise pyfuse3.FUSEError(errno.ENOENT) from None  # not a valid bucket name: not there
            raise
        if st is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if st.kind == DIR:
            await self._count_links(path)
        inode = self.inodes.for_path(path, st.kind, st.alias)
        inode.lookups += 1
        return self._attrs(inode, st)

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self._free(self.inodes.forget(ino, count))

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        node = self.inodes.get(inode)
        return self._attrs(node, await self._stat_inode(node))

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self.inodes.get(inode)
        async with node.busy:
            await self._setattr(node, attr, fields, principal_of(ctx))
        return await self.getattr(inode, ctx)

    async def _setattr(
        self, node: Inode, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields, principal: Principal
    ) -> None:
        st = await self._stat_inode(node)
        now = time.time_ns()
        change: dict[str, int] = {}
        if fields.update_mode:
            change["mode"] = stat.S_IFMT(st.posix.get("mode", 0)) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            change["uid"] = attr.st_uid
        if fields.update_gid:
            change["gid"] = attr.st_gid
        if fields.update_mtime:
            change["mtime_ns"] = attr.st_mtime_ns
        if fields.update_atime:
            change["atime_ns"] = attr.st_atime_ns
        if change or fields.update_size:
            change["ctime_ns"] = now
            await self._check_change(st.info, "truncate" if fields.update_size else "setattr", principal)
        if fields.update_size:
            if node.kind != FILE:
                raise pyfuse3.FUSEError(errno.EISDIR if node.kind == DIR else errno.EINVAL)
            await self._truncate(node, st, attr.st_size, principal)  # type: ignore[attr-defined]
        if change:
            await self._set_posix(node, st, change, principal)

    async def _set_posix(self, node: Inode, st: ns.Stat, change: dict[str, int], principal: Principal) -> None:
        spool = self.spools.get(node.ino)
        if spool is not None:
            spool.posix.update(change)
            if spool.base is None or node.unlinked:
                return  # persisted with the content at commit
        if node.unlinked or node.path is None:
            return
        bucket, key = split_path(node.path)
        if not key:
            return  # buckets and the root carry no POSIX attributes: accept, as rsync -a expects
        if node.kind == DIR:
            if st.explicit:
                await self._run(self.store.update_object, bucket, key + "/", posix=change, principal=principal)
            else:
                posix = dict(attrs_of(st.posix), **change)
                await self._run(self.store.put_object, bucket, key + "/", b"", posix=posix, principal=principal)
            return
        # A hard-linked file's attributes are its inode's: every name this mount knows gets them.
        for path in node.names:
            try:
                await self._run(self.store.update_object, *split_path(path), posix=change, principal=principal)
            except NoSuchKey:
                if path == node.path:
                    raise
                # another front removed that name meanwhile: nothing left to change there

    async def touch_names(self, node: Inode | None, principal: Principal) -> None:
        """The inode's link count changed (a name added or gone): every name it has left gets a new ctime."""
        if node is None or node.path is None or node.kind == DIR:
            return
        now = time.time_ns()
        for path in node.names:
            try:
                await self._run(self.store.update_object, *split_path(path), posix={"ctime_ns": now}, principal=principal)
            except (NoSuchKey, ObjectLocked):
                pass  # gone meanwhile, or locked (its attributes are frozen): its ctime stays

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        cap = await self._run(self.store.capacity)
        st = pyfuse3.StatvfsData()
        st.f_bsize = st.f_frsize = 4096
        st.f_blocks = cap["total"] // 4096
        st.f_bfree = cap["unused"] // 4096  # blocks reserved for root are free, not used (df's Used)
        st.f_bavail = cap["free"] // 4096
        st.f_files = 1 << 32
        st.f_ffree = st.f_favail = (1 << 32) - len(self.inodes)
        st.f_namemax = NAME_MAX
        return st
