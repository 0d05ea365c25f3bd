"""The one mapping from engine errors to errno for the FUSE mount.

Every engine call of the mount, and every request handler as a whole,
goes through :func:`fuse_error` at the edge (:mod:`objfs.fuse.core` and
:mod:`objfs.fuse.operations`), so an application sees the same errno for
the same condition wherever it happens. EIO is reserved for real,
unrecoverable loss (:class:`DataLoss`); anything unexpected is also EIO but
logged, because it is a bug.
"""

from __future__ import annotations

import errno
import logging

import pyfuse3

from objfs.store import errors as E

log = logging.getLogger(__name__)

# Most specific first: KeyTooLong is an InvalidKey.
_ERRNO: tuple[tuple[type[E.StoreError], int], ...] = (
    (E.NoSuchKey, errno.ENOENT),
    (E.NoSuchBucket, errno.ENOENT),
    (E.NoSuchVersion, errno.ENOENT),
    (E.BucketAlreadyExists, errno.EEXIST),
    (E.KeyExists, errno.EEXIST),
    (E.BucketNotEmpty, errno.ENOTEMPTY),
    (E.KeyTooLong, errno.ENAMETOOLONG),
    (E.InvalidKey, errno.EINVAL),
    (E.InvalidBucketName, errno.EINVAL),
    (E.InvalidArgument, errno.EINVAL),
    (E.InsufficientDrives, errno.ENOSPC),
    (E.NoSpace, errno.ENOSPC),
    (E.DataLoss, errno.EIO),
    (E.ObjectLocked, errno.EPERM),
    (E.AccessDenied, errno.EPERM),
    (E.PreconditionFailed, errno.EAGAIN),
    (E.IncompleteBody, errno.EIO),
    (E.BadDigest, errno.EIO),
    (E.ConfigError, errno.EIO),
)


def errno_for(exc: BaseException) -> int:
    """The errno that stands for ``exc`` on the mount."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc.errno
    for cls, code in _ERRNO:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, OSError) and exc.errno:
        # Spool I/O: ENOSPC/EDQUOT on the spool filesystem reach the caller as such.
        return exc.errno
    return errno.EIO


def fuse_error(exc: BaseException) -> pyfuse3.FUSEError:
    """``exc`` as the FUSEError to raise to the kernel; unexpected exceptions are logged."""
    code = errno_for(exc)
    if not isinstance(exc, (E.StoreError, OSError, pyfuse3.FUSEError)):
        log.error("unexpected error in the mount, answered EIO", exc_info=exc)
    elif isinstance(exc, E.DataLoss):
        log.error("unrecoverable read: %s", exc)
    return pyfuse3.FUSEError(code)
