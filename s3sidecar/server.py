"""Running the sidecar: ``s3sidecar STORE`` and :func:`serve_s3` for a trio nursery.

One worker serves in this process (:func:`serve_s3`, also what ``objfs
serve`` runs beside the FUSE mount, sharing its open Store). With
``--workers N`` Hypercorn spawns N processes that share the listening socket
and each open the store (LMDB is multi-process safe); they build the app
from ``s3sidecar.app:create_app()`` with the store path and settings passed
through the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from hypercorn.config import Config

from objfs.store import Store
from objfs.store.config import load_config
from objfs.store.errors import StoreError
from objfs.store.storelock import hold_shared

from .app import create_app
from .settings import SETTINGS_ENV, STORE_ENV, Settings

APP_FACTORY = "s3sidecar.app:create_app()"


def build_config(
    host: str,
    port: int,
    *,
    settings: Settings,
    workers: int = 1,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> Config:
    """The Hypercorn configuration of a sidecar (trio workers)."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.worker_class = "trio"
    config.workers = workers
    config.backlog = 1024
    config.certfile = certfile
    config.keyfile = keyfile
    # The app answers header sections above settings.max_header_bytes with an
    # S3 error; h11's own limit (a bare 400) is the backstop for far larger ones.
    config.h11_max_incomplete_size = max(4 * settings.max_header_bytes, 64 * 1024)
    config.h2_max_header_list_size = config.h11_max_incomplete_size
    # Also bounds the time a connection may take to send its header section
    # (Hypercorn's idle timer runs until a request's headers are complete).
    config.keep_alive_timeout = settings.header_timeout
    # ASGI messages a connection may have queued for the app: with
    # continue100.READ_SIZE reads, (2 + 1) x 256 KiB bounds what a connection
    # buffers, about Hypercorn's default (10 + 1) x 64 KiB, so a refused
    # upload is not read much further (tests/s3/test_admission.py).
    config.max_app_queue_size = 2
    config.graceful_timeout = 5
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through the root handler (journald priorities)
    config.loglevel = "WARNING"
    config.include_server_header = False
    config.application_path = APP_FACTORY
    return config


async def serve_s3(
    store: Store | str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 9000,
    *,
    settings: Settings | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve S3 for ``store`` in the current trio run until cancelled or ``shutdown_trigger`` returns.

    ``store`` may be a Store already open in this process (share it with the
    FUSE mount: LMDB must not be opened twice by one process) or a path,
    then opened here and closed on exit. ``task_status.started`` receives the
    bound addresses (``["http://127.0.0.1:9000"]``) once the socket listens.
    """
    import hypercorn.trio

    settings = settings or Settings()
    app = create_app(store, settings)
    config = build_config(host, port, settings=settings, certfile=certfile, keyfile=keyfile)
    await hypercorn.trio.serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)


async def _until_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _cannot_listen(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (one line, naming the port), or None."""
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} is in use ({host}:{port}); stop what listens there or choose another port"
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="s3sidecar", description="Serve an objfs store over the S3 REST API.")
    p.add_argument("store", help="path of the objfs store")
    p.add_argument("--host", help="listen address (default: [s3] host of objfs.toml)")
    p.add_argument("--port", type=int, help="port (default: [s3] port of objfs.toml)")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the store")
    p.add_argument("--certfile", help="TLS certificate (PEM); requires --keyfile")
    p.add_argument("--keyfile", help="TLS private key (PEM)")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--domain", action="append", help="virtual-host domain (repeatable; default s3.localhost, localhost)")
    p.add_argument("--max-object-size", type=_size, default=Settings.max_object_size, help="largest PUT/part body (5G)")
    p.add_argument("--max-requests", type=int, default=Settings.max_requests, help="requests in flight per worker")
    p.add_argument("--max-header-bytes", type=_size, default=Settings.max_header_bytes)
    p.add_argument("--engine-threads", type=int, default=Settings.engine_threads)
    p.add_argument("--max-authenticating", type=int, default=Settings.max_authenticating)
    p.add_argument("--header-timeout", type=float, default=Settings.header_timeout)
    p.add_argument("--body-timeout", type=float, default=Settings.body_timeout, help="seconds a body may stall")
    p.add_argument("--body-min-rate", type=int, default=Settings.body_min_rate, help="slowest body rate, bytes/s")
    p.add_argument("--body-rate-grace", type=float, default=Settings.body_rate_grace)
    args = p.parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        p.error("--certfile and --keyfile go together")
    if args.workers < 1:
        p.error("--workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``s3sidecar`` command."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    store_path = Path(args.store).resolve()
    try:
        s3_config = load_config(store_path).s3
        # Held for the process's life (workers included): rebuild-index and upgrade refuse meanwhile.
        store_lock = hold_shared(store_path)  # noqa: F841
    except StoreError as exc:
        print(f"s3sidecar: {exc}", file=sys.stderr)
        return 2
    if args.host is None:
        args.host = s3_config.host
    if args.port is None:
        args.port = s3_config.port
    if args.certfile is None and s3_config.tls_certfile:
        args.certfile, args.keyfile = s3_config.tls_certfile, s3_config.tls_keyfile
    problem = _cannot_listen(args.host, args.port)
    if problem:
        print(f"s3sidecar: {problem}", file=sys.stderr)
        return 2
    settings = Settings(
        region=args.region,
        domains=tuple(args.domain) if args.domain else Settings.domains,
        max_object_size=args.max_object_size,
        max_requests=args.max_requests,
        max_header_bytes=args.max_header_bytes,
        engine_threads=args.engine_threads,
        max_authenticating=args.max_authenticating,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        body_min_rate=args.body_min_rate,
        body_rate_grace=args.body_rate_grace,
    )
    if args.workers == 1:
        trio.run(
            lambda: serve_s3(
                store_path,
                args.host,
                args.port,
                settings=settings,
                certfile=args.certfile,
                keyfile=args.keyfile,
                shutdown_trigger=_until_signal,
            )
        )
        return 0
    from hypercorn.run import run

    os.environ[STORE_ENV] = str(store_path)
    os.environ[SETTINGS_ENV] = settings.to_env()
    config = build_config(
        args.host, args.port, settings=settings, workers=args.workers, certfile=args.certfile, keyfile=args.keyfile
    )
    return run(config)


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["serve_s3", "build_config", "main"]
