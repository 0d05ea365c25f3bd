"""``objfs dicomweb STORE``: the DICOMweb front on its own (``objfs serve`` also starts it)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from functools import partial
from typing import Any

import trio

from objfs.store.errors import StoreError


def register(subparsers: Any) -> None:
    """Add the ``dicomweb`` subcommand to the ``objfs`` parser."""
    p = subparsers.add_parser("dicomweb", help="serve DICOMweb (QIDO-RS, WADO-RS, STOW-RS) for web viewers")
    _arguments(p)
    p.set_defaults(func=cmd_dicomweb)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store")
    p.add_argument("--host", help="listening address (default: objfs.toml [dicomweb] host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="listening port (default: objfs.toml [dicomweb] port, 8042)")
    p.add_argument("--bucket", help="bucket served (default: objfs.toml [dicomweb] bucket, else [dicom] bucket)")


async def _until_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


def cmd_dicomweb(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="objfs dicomweb: %(levelname)s %(name)s: %(message)s")
    from objfs.dicomweb.app import PREFIX, serve_dicomweb
    from objfs.stores import Store

    try:
        store = Store.open(args.store)
    except StoreError as exc:
        print(f"objfs dicomweb: {exc}", file=sys.stderr)
        return 2
    cfg = store.config.dicomweb
    host = args.host or cfg.host
    port = args.port if args.port is not None else cfg.port or 8042
    bucket = args.bucket or cfg.bucket

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(
                partial(
                    serve_dicomweb,
                    store,
                    host,
                    port,
                    bucket=bucket,
                    cors_origins=cfg.cors_origins,
                    shutdown_trigger=_until_signal,
                )
            )
            print(f"objfs dicomweb: {', '.join(a + PREFIX for a in addresses)}", flush=True)

    try:
        trio.run(run)
    except OSError as exc:
        print(f"objfs dicomweb: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="objfs dicomweb", description="Serve DICOMweb for an objfs store.")
    _arguments(p)
    return cmd_dicomweb(p.parse_args(argv))
