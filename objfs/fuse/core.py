"""The mount's shared state and plumbing: tables, the engine-call edge, attributes of paths.

:class:`MountState` is the base of every operations mixin: the store, the
inode table, the open handles and spools, and the helpers they all use.
Every engine call runs in a worker thread (``trio.to_thread.run_sync``
under one CapacityLimiter, see :meth:`MountState._run`) and every engine
error becomes a ``FUSEError`` there, through the one table in
:mod:`.errors`.

Consistency: attributes and entries are cached by the kernel for at most
:data:`TIMEOUT` seconds, so what another front writes is visible here
within a second.
"""

from __future__ import annotations

import errno
import functools
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
import trio

from objfs.store import ObjectInfo, ObjectReader, PreconditionFailed, Principal, Store

from . import namespace as ns
from .errors import fuse_error
from .inodes import DIR, FILE, LINK, SPECIAL, Inode, InodeTable, join_path, split_path
from .spool import Spool, attrs_of

#: Seconds the kernel may cache entries and attributes: other fronts' changes show within it.
TIMEOUT = 0.5
NAME_MAX = 255


@dataclass(eq=False)
class Handle:
    """An open file.

    A handle either reads the version it opened (``reader``, kept for the
    handle's whole life, whatever replaces the file meanwhile), or, when it
    was opened for writing or while the file was being written on this
    mount (``via_spool``), the inode's spool and then the commit it became.
    """

    inode: Inode
    writable: bool
    append: bool
    #: The process that opened it: its commits (flush, fsync, last close) are in its name.
    principal: Principal
    #: Counted in the spool's ``handles``: opened for writing, or the handle that created the file.
    holds_spool: bool = False
    via_spool: bool = False
    reader: ObjectReader | None = None
    cache: tuple[int, bytes] = (0, b"")
    lock: trio.Lock = field(default_factory=trio.Lock)
    #: Sequential reads stream through the engine's iter_range, which reads the
    #: next segment while this one is returned; a reader of its own, since
    #: readers are not thread-safe and the prefetch runs in the engine's pool.
    stream_reader: ObjectReader | None = None
    stream: Iterator[bytes] | None = None
    stream_pos: int = 0

    def close_readers(self) -> None:
        """Close the readers (blocking: a reader that met a bad fragment queues a heal)."""
        stream, readers = self.stream, (self.reader, self.stream_reader)
        self.reader = self.stream_reader = self.stream = None
        self.cache = (0, b"")
        if stream is not None:
            stream.close()  # type: ignore[attr-defined]
        for reader in readers:
            if reader is not None:
                reader.close()


@dataclass(eq=False)
class DirHandle:
    """An open directory: a listing snapshot taken page by page, so offsets stay stable."""

    inode: Inode
    entries: list[tuple[str, ns.Stat]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    marker: str = ""
    done: bool = False


def entry_name(raw: bytes) -> str:
    """A directory entry's name as a key segment: ENAMETOOLONG, EINVAL (keys are UTF-8)."""
    if len(raw) > NAME_MAX:
        raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise pyfuse3.FUSEError(errno.EINVAL) from None


class MountState:
    """State and helpers shared by the operations mixins."""

    def __init__(self, store: Store, *, threads: int = 16) -> None:
        super().__init__()
        self.store = store
        self.inodes = InodeTable()
        self.limiter = trio.CapacityLimiter(threads)
        self.handles: dict[int, Handle] = {}
        self.dirs: dict[int, DirHandle] = {}
        self.spools: dict[int, Spool] = {}
        self._next_fh = 1
        self._mounted_ns = time.time_ns()
        #: Directories whose entries changed through this mount: path -> when (their mtime and ctime).
        self.dir_changed: dict[str, int] = {}
        #: Subdirectory counts of directories (their st_nlink - 2): path -> (count, expires, monotonic).
        self.dir_links: dict[str, tuple[int, float]] = {}

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking engine call in a worker thread; engine errors become FUSEError."""
        try:
            return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self.limiter)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            raise fuse_error(exc) from None

    async def _run_cached(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on this thread when it needs no disk (``nowait=True``), else in a worker thread.

        A read served from the page cache costs less than the hop to a
        thread; one that would wait for a disk (:class:`BlockingIOError`)
        must not stall the loop, so it goes to a worker like any engine call.
        """
        try:
            return fn(*args, nowait=True)
        except BlockingIOError:
            return await self._run(fn, *args)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            raise fuse_error(exc) from None

    async def _check_change(self, info: ObjectInfo | None, action: str, principal: Principal) -> None:
        """EPERM if the engine's WORM rules forbid ``action`` on ``info``'s version now (the engine audits it)."""
        if info is not None:
            await self._run(self.store.check_change, info, action, principal=principal)

    def _fh(self) -> int:
        self._next_fh += 1
        return self._next_fh

    def _pending(self, inode: Inode | None) -> Spool | None:
        """The spool of a file that exists only on this mount so far (created, not yet committed)."""
        if inode is None or inode.unlinked:
            return None
        spool = self.spools.get(inode.ino)
        return spool if spool is not None and spool.base is None else None

    def _pending_under(self, path: str) -> bool:
        """Whether directory ``path`` holds files that exist only on this mount so far."""
        return bool(self.spools) and any(self._pending(i) for i in self.inodes.under(path))

    def _new_spool(self, inode: Inode, base: ObjectInfo | None, posix: dict[str, int]) -> Spool:
        spool = self.spools[inode.ino] = Spool(self.store, inode.ino, base=base, posix=posix)
        return spool

    def _touch_dir(self, *paths: str) -> None:
        """Entries of these directories changed: their mtime and ctime move, their link count is recounted."""
        now = time.time_ns()
        for path in paths:
            self.dir_changed[path] = now
            self.dir_links.pop(path, None)

    def _touch_parent(self, *paths: str) -> None:
        self._touch_dir(*(p.rpartition("/")[0] for p in paths))

    async def _create_empty(self, path: str, posix: dict[str, int], principal: Principal, *, marker: bool = False) -> None:
        """Store an empty object at ``path`` (a FIFO, a device; with ``marker`` a directory's marker ``key/``) unless
        one exists: EEXIST then."""
        bucket, key = split_path(path)
        if marker:
            key += "/"

        def make() -> bool:
            try:
                self.store.put_object(bucket, key, b"", posix=posix, if_none_match=True, principal=principal)
            except PreconditionFailed:
                return False  # made meanwhile by another front
            return True

        if not await self._run(make):
            raise pyfuse3.FUSEError(errno.EEXIST)
        self._touch_parent(path)

    async def _count_links(self, path: str) -> None:
        """Count ``path``'s subdirectories for its st_nlink (cached as long as the kernel caches attributes)."""
        cached = self.dir_links.get(path)
        if cached is not None and cached[1] > time.monotonic():
            return
        count = await self._run(ns.count_subdirectories, self.store, path)
        self.dir_links[path] = (count, time.monotonic() + TIMEOUT)

    def _attrs(self, inode: Inode, st: ns.Stat) -> pyfuse3.EntryAttributes:
        spool = self.spools.get(inode.ino)
        size, posix = st.size, st.posix
        if spool is not None and inode.kind == FILE:
            size, posix = spool.size, spool.posix
        p = attrs_of(posix)
        if not st.posix.get("mtime_ns") and st.kind == DIR:
            stamp = int(st.created * 1e9) if st.created else self._mounted_ns
            p.update(mtime_ns=stamp, atime_ns=stamp, ctime_ns=stamp)
        if st.kind == FILE and not posix.get("mtime_ns") and st.created:
            p.update(mtime_ns=int(st.created * 1e9), atime_ns=int(st.created * 1e9), ctime_ns=int(st.created * 1e9))
        changed = self.dir_changed.get(inode.path or "") if inode.kind == DIR else None
        if changed is not None and changed > p["mtime_ns"]:
            p.update(mtime_ns=changed, ctime_ns=max(changed, p["ctime_ns"]))
        fmt = {DIR: stat.S_IFDIR, FILE: stat.S_IFREG, LINK: stat.S_IFLNK}.get(inode.kind)
        if fmt is None:  # a FIFO, socket or device node: its type is in its mode
            fmt = stat.S_IFMT(p["mode"])
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = inode.ino
        attrs.generation = 0
        attrs.entry_timeout = TIMEOUT
        attrs.attr_timeout = TIMEOUT
        attrs.st_mode = fmt | stat.S_IMODE(p["mode"])
        if inode.kind == DIR:
            attrs.st_nlink = 2 + self.dir_links.get(inode.path or "", (0, 0.0))[0]
        else:
            attrs.st_nlink = 0 if inode.unlinked else st.links
        attrs.st_uid = p["uid"]
        attrs.st_gid = p["gid"]
        attrs.st_rdev = int(st.posix.get("rdev", 0)) if inode.kind == SPECIAL else 0
        attrs.st_size = size
        attrs.st_blksize = 128 * 1024
        attrs.st_blocks = self._blocks(inode, st, size)
        attrs.st_atime_ns = p["atime_ns"]
        attrs.st_mtime_ns = p["mtime_ns"]
        attrs.st_ctime_ns = p["ctime_ns"]
        return attrs

    def _blocks(self, inode: Inode, st: ns.Stat, size: int) -> int:
        """st_blocks: what the content really uses, so a sparse file's holes count nothing."""
        spool = self.spools.get(inode.ino)
        if spool is not None and inode.kind == FILE:
            return spool.blocks()
        if st.info is not None:
            return (st.info.stored_size + 511) // 512
        return (size + 511) // 512

    def _spool_stat(self, spool: Spool) -> ns.Stat:
        return ns.Stat(FILE, spool.size, spool.posix)

    async def _stat(self, path: str) -> ns.Stat | None:
        pending = self._pending(self.inodes.find(path))
        if pending is not None:
            return self._spool_stat(pending)
        return await self._run(ns.stat_path, self.store, path)

    async def _stat_inode(self, inode: Inode) -> ns.Stat:
        spool = self.spools.get(inode.ino)
        if inode.unlinked:
            if spool is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self._spool_stat(spool)
        assert inode.path is not None
        st = await self._stat(inode.path)
        if st is None or st.kind != inode.kind:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if st.kind == DIR:
            await self._count_links(inode.path)
        return st

    def _child(self, parent_inode: int, name: bytes) -> str:
        parent = self.inodes.get(parent_inode)
        if parent.path is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return join_path(parent.path, entry_name(name))

    def _free(self, inode: Inode | None) -> None:
        """An inode left the table for good: its spool (an unlinked file's bytes) goes too."""
        if inode is not None:
            self._free_spool(inode)

    def _free_spool(self, inode: Inode) -> None:
        """Drop the inode's spool: committed, or no longer wanted."""
        spool = self.spools.pop(inode.ino, None)
        if spool is not None:
            spool.close()
