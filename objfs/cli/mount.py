"""``objfs mount STORE MOUNTPOINT [--foreground] [--allow-other]``: the FUSE front on its own.

Guarantee: the command exits 0 only once the kernel has the mount (in the
background case too), and reports a refused or failed mount with exit 2 or 1.
pyfuse3 and trio are imported when the command runs, not for every ``objfs`` command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from objfs.stores import Store


def register(subparsers: Any) -> None:
    """Add the ``mount`` subcommand to the ``objfs`` parser."""
    p = subparsers.add_parser("mount", help="mount the store's buckets as directories (FUSE)")
    p.add_argument("store")
    p.add_argument("mountpoint")
    p.add_argument("--foreground", "-f", action="store_true", help="stay attached to the terminal")
    p.add_argument("--allow-other", action="store_true", help="let other users (the PACS service user) use the mount")
    p.set_defaults(func=cmd_mount)


def _serve(args: argparse.Namespace, on_ready: Any) -> None:
    import trio

    from objfs.fuse.mount import run_mount

    with Store.open(args.store) as store:

        async def main() -> None:
            ready = trio.Event()
            async with trio.open_nursery() as nursery:

                async def announce() -> None:
                    await ready.wait()
                    on_ready()

                nursery.start_soon(announce)
                await run_mount(store, args.mountpoint, allow_other=args.allow_other, ready=ready)
                nursery.cancel_scope.cancel()

        trio.run(main)


def cmd_mount(args: argparse.Namespace) -> int:
    """Mount; without --foreground, detach only once the mount is ready.

    The exit status reports failure either way: in the background case the
    parent waits on a pipe that the child closes with "ok" once the kernel
    has the mount, or with the error.
    """
    from objfs.fuse.mount import MountError, check_mountpoint

    try:
        check_mountpoint(args.mountpoint)
    except MountError as exc:
        print(f"objfs: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="objfs mount: %(levelname)s %(name)s: %(message)s")
    if args.foreground:
        try:
            _serve(args, lambda: None)
        except MountError as exc:
            print(f"objfs: {exc}", file=sys.stderr)
            return 2
        return 0
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        with os.fdopen(rfd, "rb") as pipe:
            message = pipe.read()
        if message == b"ok":
            return 0
        os.waitpid(pid, 0)
        print(f"objfs: mount failed: {message.decode(errors='replace') or 'the mount process died'}", file=sys.stderr)
        return 1
    # Child: a session of its own, so the terminal closing does not take the mount down.
    os.close(rfd)
    os.setsid()

    def ready() -> None:
        os.write(wfd, b"ok")
        os.close(wfd)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)

    try:
        _serve(args, ready)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which exits 1
        try:
            os.write(wfd, str(exc).encode() or type(exc).__name__.encode())
        except OSError:
            pass
        os._exit(1)
    os._exit(0)
