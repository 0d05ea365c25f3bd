"""Extended attributes of the mount (one of the mixins of :class:`~objfs.fuse.operations.ObjfsOperations`).

``user.*`` attributes are stored with the object (``store.update_object``,
index only). The object's own metadata -- ETag, version, content type, S3
user metadata, DICOM tags, retention -- is readable under ``user.objfs.``
and read-only there (EPERM): FUSE passes every namespace through, but
``user.`` is the one tools such as ``getfattr -d`` and ``rsync -X`` show
and copy. Changing a ``user.*`` attribute of a retained or held version is
EPERM on the mount (``store.check_change``, as for any attribute change,
which audits the refusal), because on a filesystem an xattr is part of
the file that WORM freezes. Other namespaces (``security.``, ``trusted.``, ``system.``) are
not stored: ENOATTR on read, ENOTSUP on write.
"""

from __future__ import annotations

import errno

import pyfuse3

from objfs.store import Principal

from . import namespace as ns
from .core import MountState
from .inodes import DIR, Inode, split_path
from .principal import principal_of
from .spool import attrs_of

ENOATTR = pyfuse3.ENOATTR


class XattrOps(MountState):
    """getxattr, listxattr, setxattr, removexattr over the engine's records."""

    def _xattr_target(self, node: Inode, st: ns.Stat) -> tuple[str, str] | None:
        """The (bucket, key) whose record holds the inode's xattrs; None for buckets/root."""
        if node.path is None:
            return None
        bucket, key = split_path(node.path)
        if not key:
            return None
        return bucket, key + "/" if node.kind == DIR else key

    async def _xattrs(self, node: Inode) -> dict[str, bytes]:
        st = await self._stat_inode(node)
        out: dict[str, bytes] = {}
        if st.info is not None:
            out.update(st.info.xattrs)
            out.update(ns.meta_xattrs(st.info))
        spool = self.spools.get(node.ino)
        if spool is not None:
            for name, value in spool.xattrs.items():
                if value is None:
                    out.pop(name, None)
                else:
                    out[name] = value
        return out

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        key = name.decode("utf-8", "surrogateescape")
        if not key.startswith("user."):
            # security.capability is asked on every write: answer it without the index.
            raise pyfuse3.FUSEError(ENOATTR)
        value = (await self._xattrs(self.inodes.get(inode))).get(key)
        if value is None:
            raise pyfuse3.FUSEError(ENOATTR)
        return value

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return [name.encode() for name in await self._xattrs(self.inodes.get(inode))]

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._change_xattr(self.inodes.get(inode), name, bytes(value), principal_of(ctx))

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        node = self.inodes.get(inode)
        if name.decode("utf-8", "surrogateescape") not in await self._xattrs(node):
            raise pyfuse3.FUSEError(ENOATTR)
        await self._change_xattr(node, name, None, principal_of(ctx))

    async def _change_xattr(self, node: Inode, raw: bytes, value: bytes | None, principal: Principal) -> None:
        name = raw.decode("utf-8", "surrogateescape")
        if name.startswith(ns.META_XATTR):
            raise pyfuse3.FUSEError(errno.EPERM)  # object metadata is read-only here
        if not name.startswith("user."):
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        st = await self._stat_inode(node)
        await self._check_change(st.info, "setattr", principal)  # before the spool records it
        spool = self.spools.get(node.ino)
        if spool is not None:
            spool.xattrs[name] = value
            if spool.base is None or node.unlinked:
                return
        target = self._xattr_target(node, st)
        if target is None:
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        if node.kind == DIR and not st.explicit:
            await self._run(self.store.put_object, *target, b"", posix=attrs_of(dict(st.posix)), principal=principal)
        await self._run(self.store.update_object, *target, xattrs={name: value}, principal=principal)
