"""Names: unlink, rename, link, symlink, readlink.

A retained or held version refuses unlink, rename and being replaced by a
rename with EPERM, decided and audited by the engine (``store.check_change``
here, or the engine's own rename rules). An unlinked file stays readable
and writable through the handles open on it until the last one closes.
"""

from __future__ import annotations

import errno
import stat

import pyfuse3

from . import namespace as ns
from .core import MountState
from .inodes import DIR, FILE, LINK, split_path
from .principal import principal_of
from .spool import attrs_of


class NameOps(MountState):
    """unlink, rename, symlink, readlink."""

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        bucket, key = split_path(path)
        if not key:
            raise pyfuse3.FUSEError(errno.EISDIR)
        principal = principal_of(ctx)
        inode = self.inodes.find(path)
        if self._pending(inode) is None:
            st = await self._stat(path)
            if st is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            if st.kind == DIR:
                raise pyfuse3.FUSEError(errno.EISDIR)
            # The engine would accept this delete in a locked (hence versioned) bucket as a
            # delete marker, keeping the version; the file would still vanish from the
            # mount, which WORM on a filesystem forbids. So a delete is checked first.
            await self._check_change(st.info, "delete", principal)
            if inode is not None and inode.opens and inode.kind == FILE and not inode.aliases:
                # Still open: keep the bytes in the spool so the handles outlive the name.
                async with inode.busy:
                    spool = self.spools.get(inode.ino)
                    if spool is None:
                        spool = self._new_spool(inode, st.info, attrs_of(st.posix))
                    async with spool.lock:
                        await self._run(spool.load, self.store)
            await self._run(self.store.delete_object, bucket, key, principal=principal)
        self._touch_parent(path)
        self._free(self.inodes.unlink(path))
        await self.touch_names(inode, principal)  # type: ignore[attr-defined]

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        no_replace = bool(flags & pyfuse3.RENAME_NOREPLACE)
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        (bucket, src), (dst_bucket, dst) = split_path(old), split_path(new)
        if bucket != dst_bucket or not src or not dst:
            raise pyfuse3.FUSEError(errno.EXDEV)  # buckets are separate filesystems to mv
        principal = principal_of(ctx)
        st = await self._stat(old)
        if st is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if st.kind != DIR:
            # A directory's locked members (and its marker) are refused by the engine's
            # rename_prefix, in one transaction: nothing moves unless everything may.
            await self._check_change(st.info, "rename", principal)
        target = await self._stat(new)
        if target is not None and no_replace:
            raise pyfuse3.FUSEError(errno.EEXIST)
        if target is not None and target.kind != DIR:
            await self._check_change(target.info, "delete", principal)  # replacing it deletes it
        if st.kind == DIR:
            if target is not None:
                if target.kind != DIR:
                    raise pyfuse3.FUSEError(errno.ENOTDIR)
                if self._pending_under(new) or await self._run(ns.has_children, self.store, new):
                    raise pyfuse3.FUSEError(errno.ENOTEMPTY)
                if target.explicit:
                    await self._check_change(target.info, "delete", principal)
                    await self._run(self.store.delete_object, bucket, dst + "/", principal=principal)
            await self._run(self.store.rename_prefix, bucket, src + "/", dst + "/", principal=principal)
        else:
            if target is not None and target.kind == DIR:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if self._pending(self.inodes.find(old)) is not None:
                if target is not None and self._pending(self.inodes.find(new)) is None:
                    await self._run(self.store.delete_object, bucket, dst, principal=principal)  # the rename replaces it
            else:
                await self._run(self.store.rename_object, bucket, src, dst, no_replace=no_replace, principal=principal)
        replaced = self.inodes.find(new) if target is not None and target.kind != DIR else None
        for gone in self.inodes.rename(old, new, directory=st.kind == DIR):
            self._free(gone)
        if replaced is not None and replaced.path != new:
            await self.touch_names(replaced, principal)  # type: ignore[attr-defined]
        self._touch_parent(old, new)
        if st.kind == DIR:
            self.dir_changed.pop(old, None)
            self._touch_dir(new)  # its ctime: its ".." entry changed

    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        """A hard link: the engine's second name for the same bytes (:mod:`objfs.store.links`)."""
        node = self.inodes.get(inode)
        if node.kind == DIR:
            raise pyfuse3.FUSEError(errno.EPERM)
        if node.path is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        new = self._child(new_parent_inode, new_name)
        (bucket, src), (dst_bucket, dst) = split_path(node.path), split_path(new)
        if bucket != dst_bucket or not dst:
            raise pyfuse3.FUSEError(errno.EXDEV)  # buckets are separate filesystems
        if self._pending(node) is not None:
            raise pyfuse3.FUSEError(errno.EAGAIN)  # not stored yet: its creator has not closed it
        if await self._stat(new) is not None:
            raise pyfuse3.FUSEError(errno.EEXIST)
        # link(2) changes the inode's ctime: set on the source first, so the new name's copy has it too.
        await self.touch_names(node, principal_of(ctx))  # type: ignore[attr-defined]
        info = await self._run(self.store.link_object, bucket, src, dst, principal=principal_of(ctx))
        self.inodes.set_alias(node, info.record["parts"][0]["id"])
        self._touch_parent(new)
        return await self.lookup(new_parent_inode, new_name, ctx)  # type: ignore[attr-defined]

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        bucket, key = split_path(path)
        if not key:
            raise pyfuse3.FUSEError(errno.EPERM)  # the root holds buckets only
        if await self._stat(path) is not None:
            raise pyfuse3.FUSEError(errno.EEXIST)
        posix = {"mode": stat.S_IFLNK | 0o777, "uid": ctx.uid, "gid": ctx.gid}
        await self._run(self.store.put_object, bucket, key, bytes(target), posix=posix, principal=principal_of(ctx))
        self._touch_parent(path)
        return await self.lookup(parent_inode, name, ctx)  # type: ignore[attr-defined]

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.inodes.get(inode)
        if node.kind != LINK or node.path is None:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return await self._run(self.store.get_object_bytes, *split_path(node.path))
