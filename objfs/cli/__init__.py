"""The ``objfs`` command: one module per command group, argument parsing only.

Every command group is a module here with a ``register(subparsers)`` function
and ``cmd_*`` functions that parse arguments and call the engine (or start a
front); every store is opened through :mod:`objfs.stores`, so the standard
indexers are registered. :data:`COMMAND_GROUPS` lists them explicitly: a group
that fails to import fails the command, nothing is skipped silently.

This is the one place where errors become exit codes: a
:class:`~objfs.store.errors.StoreError` prints ``objfs: <message>`` on stderr
and exits 1 (2 for a store held by another process,
:class:`~objfs.store.storelock.StoreBusy`); Ctrl-C exits 130; a reader that closes stdout early (``objfs
status | head -1``) ends the command quietly with 141, as a process killed by
SIGPIPE would (Python ignores SIGPIPE, and must: the servers write to sockets).
"""

from __future__ import annotations

import argparse
import os
import sys

from objfs import __version__
from objfs.store.errors import StoreError
from objfs.store.storelock import StoreBusy

from . import dicom, dicomweb, keys, kms, lifecycle, mount, objects, remote, replication, serve, store, systemd, tier, worm

__all__ = ["COMMAND_GROUPS", "build_parser", "main"]

COMMAND_GROUPS = (store, keys, kms, objects, worm, mount, dicom, dicomweb, serve, systemd, tier, lifecycle, remote, replication)
EXIT_BROKEN_PIPE = 128 + 13  # what the shell reports for a process ended by SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    """The ``objfs`` parser with every command group registered."""
    parser = argparse.ArgumentParser(prog="objfs", description="Erasure-coded archive for medical images")
    parser.add_argument("--version", action="version", version=f"objfs {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``objfs`` command; returns its exit code."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args) or 0
        # Flushed here, so a closed pipe is seen now and not as a traceback at interpreter exit.
        sys.stdout.flush()
        return code
    except StoreBusy as exc:
        print(f"objfs: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"objfs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so what is still buffered is dropped instead of failing again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
