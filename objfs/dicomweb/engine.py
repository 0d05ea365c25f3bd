"""The only way the DICOMweb front reaches the engine, and its one error table.

Every engine call runs in a worker thread under a :class:`trio.CapacityLimiter`
(the engine is synchronous and thread-safe); every engine error leaves
:meth:`Engine.run` as the :class:`HTTPError` of :data:`ENGINE_ERRORS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from objfs.store import Store
from objfs.store import errors as E

log = logging.getLogger(__name__)
T = TypeVar("T")


class HTTPError(Exception):
    """A request that ends with ``status`` and a short plain-text reason."""

    def __init__(self, status: int, message: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


#: Engine error -> HTTP status (lookup walks the exception's MRO).
ENGINE_ERRORS: dict[type[E.StoreError], int] = {
    E.InvalidBucketName: 400,
    E.InvalidKey: 400,
    E.InvalidArgument: 400,
    E.NoSuchBucket: 404,
    E.NoSuchKey: 404,
    E.NoSuchVersion: 404,
    E.AccessDenied: 403,
    E.ObjectLocked: 409,
    E.KeyExists: 409,
    E.PreconditionFailed: 409,
    E.InsufficientDrives: 503,
    E.NoSpace: 503,
    E.DataLoss: 500,
    E.ConfigError: 500,
}


def http_error_for(exc: E.StoreError) -> HTTPError:
    for cls in type(exc).__mro__:
        status = ENGINE_ERRORS.get(cls)  # type: ignore[arg-type]
        if status is not None:
            if status >= 500:
                # The engine's text names internals (blob ids): logged, not sent.
                log.error("engine error: %s: %s", type(exc).__name__, exc)
                return HTTPError(status, "the archive could not serve this request")
            return HTTPError(status, str(exc))
    log.error("unmapped engine error: %s: %s", type(exc).__name__, exc)
    return HTTPError(500, "internal error")


class Engine:
    """An open store, the bucket this front serves and the threads it calls the engine from."""

    def __init__(self, store: Store, bucket: str, threads: int = 16) -> None:
        self.store = store
        self.bucket = bucket
        self.limiter = trio.CapacityLimiter(threads)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread; engine errors become HTTP errors."""
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)
        except E.StoreError as exc:
            raise http_error_for(exc) from exc
