"""The only way the S3 layer reaches the engine.

Every engine call runs in a worker thread (the engine is synchronous and
thread-safe) under a :class:`trio.CapacityLimiter`, and every engine error
leaves this module as the S3 error of :data:`ENGINE_ERRORS` - the one table
mapping the engine's vocabulary to S3's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from objfs.store import Store
from objfs.store import errors as E
from objfs.store.replication import ReplicationRefused

from . import errors as S3
from .settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Most specific first does not matter: lookup walks the exception's MRO.
ENGINE_ERRORS: dict[type[E.StoreError], type[S3.S3Error]] = {
    E.InvalidBucketName: S3.InvalidBucketName,
    E.InvalidStorageClass: S3.InvalidStorageClass,
    # AWS has no code for a key that is not a valid path (empty, "." or ".."
    # segment, NUL): InvalidArgument is the closest it uses for bad input.
    E.InvalidKey: S3.InvalidArgument,
    E.KeyTooLong: S3.KeyTooLongError,
    E.NoSuchBucket: S3.NoSuchBucket,
    # One tenant owns every bucket of a store, so an existing name is always "yours".
    E.BucketAlreadyExists: S3.BucketAlreadyOwnedByYou,
    E.BucketNotEmpty: S3.BucketNotEmpty,
    E.NoSuchKey: S3.NoSuchKey,
    E.NoSuchVersion: S3.NoSuchVersion,
    E.KeyExists: S3.PreconditionFailed,
    E.NoSuchUpload: S3.NoSuchUpload,
    E.InvalidPart: S3.InvalidPart,
    E.InvalidPartOrder: S3.InvalidPartOrder,
    E.EntityTooSmall: S3.EntityTooSmall,
    E.BadDigest: S3.BadDigest,
    E.IncompleteBody: S3.IncompleteBody,
    E.PreconditionFailed: S3.PreconditionFailed,
    E.InvalidPartNumber: S3.InvalidPartNumber,
    E.InvalidRange: S3.InvalidRange,
    # Too few drives or a full drive: the client should retry later, as for S3's 503s.
    E.InsufficientDrives: S3.ServiceUnavailable,
    E.NoSpace: S3.ServiceUnavailable,
    E.DataLoss: S3.DataUnreadable,
    # S3 answers a write to a WORM-locked version with AccessDenied.
    E.ObjectLocked: S3.AccessDenied,
    E.AccessDenied: S3.AccessDenied,
    E.MalformedPolicy: S3.MalformedPolicy,
    E.InvalidArgument: S3.InvalidArgument,
    E.ConfigError: S3.InternalError,
    # Encryption at rest: a store without a key file cannot do what the request asks.
    E.EncryptionNotConfigured: S3.S3NotImplemented,
    E.NoSuchEncryptionKey: S3.KMSNotFound,
    # S3: an SSE-C object read without its key is a 400, with another key a 403.
    E.EncryptionKeyRequired: S3.InvalidRequest,
    # Replication rules on a bucket without versioning (or to no known remote): S3's InvalidRequest.
    ReplicationRefused: S3.InvalidRequest,
    E.EncryptionKeyMismatch: S3.AccessDenied,
}


def s3_error_for(exc: E.StoreError) -> S3.S3Error:
    """The S3 error for an engine error (InternalError for anything unmapped)."""
    for cls in type(exc).__mro__:
        target = ENGINE_ERRORS.get(cls)  # type: ignore[arg-type]
        if target is not None:
            if issubclass(target, S3.InternalError):
                # The engine's text names internals (blob ids): logged, not sent.
                log.error("engine error: %s: %s", type(exc).__name__, exc)
                return target()
            return target(str(exc) or None)
    log.error("unmapped engine error: %s: %s", type(exc).__name__, exc)
    return S3.InternalError()


# For a call whose slot the caller already holds.
_UNLIMITED = trio.CapacityLimiter(float("inf"))


class Engine:
    """An open store plus the thread limiters the sidecar calls it through.

    ``run`` is for calls that finish on their own (metadata, one segment);
    ``run_upload`` for calls that wait on the client's body, so a crowd of
    slow uploaders cannot starve reads of threads.
    """

    def __init__(self, store: Store, settings: Settings, *, owns_store: bool = False) -> None:
        self.store = store
        self.settings = settings
        self.owns_store = owns_store
        self.limiter = trio.CapacityLimiter(settings.engine_threads)
        self.upload_limiter = trio.CapacityLimiter(settings.upload_threads)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread; engine errors become S3 errors."""
        return await self._call(self.limiter, fn, args)

    async def run_upload(self, fn: Callable[..., T], *args: Any, prefetch: Callable[[], Awaitable[None]] | None = None) -> T:
        """``fn(*args)`` in an upload thread; ``prefetch()`` first, on the event loop, holding that thread's slot.

        The slot bounds how many prefetched bodies are in memory at once,
        as it bounds the uploads in progress.
        """
        if prefetch is None:
            return await self._call(self.upload_limiter, fn, args)
        async with self.upload_limiter:
            await prefetch()
            return await self._call(_UNLIMITED, fn, args)

    async def _call(self, limiter: trio.CapacityLimiter, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            # Not abandoned on cancel: a thread mid-write must finish (or discard)
            # before its request is considered over.
            return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
        except E.StoreError as exc:
            raise s3_error_for(exc) from exc

    def close(self) -> None:
        if self.owns_store:
            self.store.close()
