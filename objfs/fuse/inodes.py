"""The inode table of the mount: path <-> inode number, lookup counts, forget.

Paths are ``""`` (the mount root), ``"bucket"`` and ``"bucket/a/b"``. An
inode number is handed out the first time a path is seen with a given kind
(directory, file, symlink) and stays the same for that path while the
filesystem is mounted: forgotten inodes keep their number, so ``ls -i`` and
tools that compare ``st_ino`` (tar, rsync, find) see stable numbers. A path
whose kind changes (a file replaced by a directory through S3) gets a new
number, because the kernel must never see an inode change type.

Numbers are never reused, so a stale kernel reference can never name
another file. Only an unlinked (or renamed-over) inode leaves the table, when
the kernel has forgotten it and no handle is open: that is where the spool
of an unlinked-but-open file is freed.

The table is used from the trio thread only; it has no locks. Each inode
carries one trio lock, ``busy``, held by the requests that create, use or
drop its spool across an await (open, setattr, unlink, release), so a last
close never drops a spool that an open or a truncate is about to use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyfuse3
import trio

ROOT_INODE = pyfuse3.ROOT_INODE

DIR, FILE, LINK = "dir", "file", "link"
#: A FIFO, socket or device node: a metadata-only object whose POSIX mode names its type.
SPECIAL = "special"


@dataclass(eq=False)
class Inode:
    """One inode of the mount. ``path`` is None once unlinked."""

    ino: int
    path: str | None
    kind: str
    lookups: int = 0
    opens: int = 0
    busy: trio.Lock = field(default_factory=trio.Lock, repr=False)
    #: Hard links: the inode's other names (``path`` is the one it is used through), and the
    #: blob the names share (:meth:`InodeTable.for_path`'s ``alias``).
    aliases: set[str] = field(default_factory=set, repr=False)
    alias: str | None = None

    @property
    def unlinked(self) -> bool:
        return self.path is None

    @property
    def names(self) -> list[str]:
        """Every path the mount knows for this inode, the one it is used through first."""
        return [] if self.path is None else [self.path, *sorted(self.aliases - {self.path})]


def split_path(path: str) -> tuple[str, str]:
    """``"bucket/a/b"`` -> ``("bucket", "a/b")``; the bucket's own path has key ``""``."""
    bucket, _, key = path.partition("/")
    return bucket, key


def join_path(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class InodeTable:
    """Inode numbers for paths, stable while mounted."""

    def __init__(self) -> None:
        root = Inode(ROOT_INODE, "", DIR, lookups=1)
        self._by_ino: dict[int, Inode] = {ROOT_INODE: root}
        self._by_path: dict[str, Inode] = {"": root}
        self._by_alias: dict[str, Inode] = {}
        self._next = ROOT_INODE + 1

    def __len__(self) -> int:
        return len(self._by_ino)

    def get(self, ino: int) -> Inode:
        """The inode ``ino``; ENOENT if the kernel names one we no longer know (a bug)."""
        try:
            return self._by_ino[ino]
        except KeyError:
            raise pyfuse3.FUSEError(2) from None

    def find(self, path: str) -> Inode | None:
        return self._by_path.get(path)

    def for_path(self, path: str, kind: str, alias: str | None = None) -> Inode:
        """The inode of ``path`` as a ``kind``: the known one, or a new number.

        ``alias`` names what hard links of ``path`` share (their blob): every
        name with the same alias is one inode, as ``rsync -H`` and ``tar``
        expect (same ``st_ino``).
        """
        inode = self._by_path.get(path)
        shared = self._by_alias.get(alias) if alias is not None else None
        if shared is not None and shared.kind == kind and not shared.unlinked:
            if inode is not shared:
                if inode is not None:
                    self.unlink(path)
                self._by_path[path] = shared
                if shared.path != path:
                    shared.aliases.add(path)
            return shared
        if inode is not None and inode.kind == kind:
            if alias is not None:
                self.set_alias(inode, alias)
            return inode
        if inode is not None:
            self.unlink(path)
        inode = Inode(self._next, path, kind)
        self._next += 1
        self._by_ino[inode.ino] = inode
        self._by_path[path] = inode
        if alias is not None:
            self.set_alias(inode, alias)
        return inode

    def set_alias(self, inode: Inode, alias: str) -> None:
        """``inode``'s names share ``alias``: other names seen with it are this inode."""
        inode.alias = alias
        self._by_alias[alias] = inode

    def forget(self, ino: int, count: int) -> Inode | None:
        """Drop ``count`` kernel references; returns the inode if it is now gone for good."""
        inode = self._by_ino.get(ino)
        if inode is None or ino == ROOT_INODE:
            return None
        inode.lookups = max(0, inode.lookups - count)
        return self._maybe_drop(inode)

    def release(self, inode: Inode) -> Inode | None:
        """One handle closed; returns the inode if it is now gone for good."""
        inode.opens = max(0, inode.opens - 1)
        return self._maybe_drop(inode)

    def _maybe_drop(self, inode: Inode) -> Inode | None:
        if inode.unlinked and inode.lookups == 0 and inode.opens == 0:
            self._by_ino.pop(inode.ino, None)
            if inode.alias is not None and self._by_alias.get(inode.alias) is inode:
                del self._by_alias[inode.alias]
            return inode
        return None

    def unlink(self, path: str) -> Inode | None:
        """``path`` is gone: its inode (if known) lives on, nameless, while referenced.

        Returns the inode if it is gone for good already (nobody references it).
        """
        inode = self._by_path.get(path)
        if inode is None:
            return None
        if path != inode.path or inode.aliases:  # a hard link: the inode keeps its other names
            del self._by_path[path]
            inode.aliases.discard(path)
            if path == inode.path:
                inode.path = inode.aliases.pop()
            return None
        self._detach(inode)
        return self._maybe_drop(inode)

    def _detach(self, inode: Inode) -> None:
        if inode.path is not None and self._by_path.get(inode.path) is inode:
            del self._by_path[inode.path]
        inode.path = None

    def rename(self, old: str, new: str, *, directory: bool) -> list[Inode]:
        """Move ``old`` (and everything below it, for a directory) to ``new``.

        The inodes keep their numbers; whatever was known at ``new`` is
        unlinked. Returns the replaced inodes that are now gone for good.
        """
        if directory:
            # A directory rename rewrites every known path below it: O(table), rare.
            replaced = [p for p in self._by_path if p == new or p.startswith(new + "/")]
            moving = [p for p in self._by_path if p == old or p.startswith(old + "/")]
        else:
            replaced = [new] if new in self._by_path else []
            moving = [old] if old in self._by_path else []
        dropped = []
        for p in replaced:
            if p not in moving:
                gone = self.unlink(p)
                if gone is not None:
                    dropped.append(gone)
        moved = [(p, self._by_path.pop(p)) for p in moving]
        for p, inode in moved:
            target = new + p[len(old) :]
            if inode.path == p:
                inode.path = target
            else:
                inode.aliases.discard(p)
                inode.aliases.add(target)
            inode.aliases.discard(inode.path)
            self._by_path[target] = inode
        return dropped

    def under(self, path: str) -> list[Inode]:
        """Known inodes strictly below directory ``path``."""
        prefix = path + "/" if path else ""
        return [i for p, i in self._by_path.items() if p.startswith(prefix) and p != path]
