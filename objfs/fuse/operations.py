"""The pyfuse3 filesystem: FUSE requests translated into engine calls.

Translation only, one job per module: lookups and attributes in
:mod:`.attributes`, directories in :mod:`.directories`, names (unlink,
rename, symlinks) in :mod:`.names`, special files (mknod) in :mod:`.specials`, open files and reads in :mod:`.files`,
writes and commits in :mod:`.writes`, extended attributes in
:mod:`.xattrs`; the namespace rules in :mod:`.namespace`, pending writes in
:mod:`.spool`, inode numbers in :mod:`.inodes`, errno in :mod:`.errors`.

This class is the edge: every request handler is wrapped so that whatever
it raises reaches the caller as an errno (the engine's errors through the
one table in :mod:`.errors`, spool I/O errors such as EFBIG or ENOSPC as
themselves, anything unexpected as a logged EIO). No request can take the
mount down for its other users.

WORM and audit are the engine's: every engine call made for a request
carries the requesting process as its :class:`~objfs.store.Principal`
(``fuse:uid=U,pid=P``); changes staged on the mount before any engine call
(open for writing, truncate, attributes, xattrs, unlink, rename) are
checked first with ``store.check_change``, which audits a refusal and is
answered EPERM; reads are audited by the engine's ``open_object``, once per
open, never per read().
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import pyfuse3

from objfs.store import Store

from .attributes import AttributeOps
from .directories import DirectoryOps
from .errors import fuse_error
from .files import FileOps
from .names import NameOps
from .specials import SpecialOps
from .writes import WriteOps
from .xattrs import XattrOps

__all__ = ["ObjfsOperations"]


def _errno_edge(handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    async def answer(self: Any, *args: Any) -> Any:
        try:
            return await handler(self, *args)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            raise fuse_error(exc) from None

    return answer


def _with_errno_edge(cls: type) -> type:
    """Wrap every request handler ``cls`` implements with :func:`_errno_edge`."""
    for name, default in vars(pyfuse3.Operations).items():
        handler = getattr(cls, name, None)
        if not name.startswith("_") and handler is not default and inspect.iscoroutinefunction(handler):
            setattr(cls, name, _errno_edge(handler))
    return cls


@_with_errno_edge
class ObjfsOperations(AttributeOps, DirectoryOps, NameOps, SpecialOps, FileOps, WriteOps, XattrOps, pyfuse3.Operations):
    """Buckets as directories, objects as files."""

    supports_dot_lookup = False
    enable_writeback_cache = False  # would break close-to-open: the kernel would hold dirty pages

    def __init__(self, store: Store, *, threads: int = 16) -> None:
        super().__init__(store, threads=threads)
