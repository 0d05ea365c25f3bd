"""S3 sidecar: the objfs engine over the S3 REST API (Starlette on Hypercorn's trio worker).

Public API::

    from s3sidecar import create_app, serve_s3, Settings
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_s3, store, "127.0.0.1", 9000)   # beside the FUSE mount

The sidecar never touches drives or the index itself: every operation is an
engine call (:mod:`s3sidecar.bridge`) made from a worker thread.
"""

from .settings import Settings


def __getattr__(name: str):
    # Lazy, so the pure modules (errors, xmlio, sigv4) import without Starlette/Hypercorn.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve_s3":
        from .server import serve_s3

        return serve_s3
    raise AttributeError(name)


__all__ = ["Settings", "create_app", "serve_s3"]
