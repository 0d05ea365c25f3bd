"""``objfs dicom`` (the gateway) and ``objfs migrate`` (copy in a legacy share).

Guarantee: argument parsing only; the gateway stops cleanly on SIGTERM or
SIGINT, and ``migrate`` exits 3 while the copy is incomplete. pynetdicom is
imported when a command runs, not for every ``objfs`` command.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

from objfs.store.errors import StoreError
from objfs.store.names import check_bucket_name
from objfs.store.storelock import hold_shared
from objfs.stores import Store


def register(subparsers: Any) -> None:
    """Add the ``dicom`` and ``migrate`` subcommands to the ``objfs`` parser."""
    p = subparsers.add_parser("dicom", help="run the DICOM gateway (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET)")
    p.add_argument("store")
    p.add_argument("--port", type=int, help="listening port (default: objfs.toml [dicom] port, 11112)")
    p.add_argument("--aet", help="our AE title (default: objfs.toml, OBJFS)")
    p.add_argument("--bucket", help="bucket of received studies (default: objfs.toml, pacs)")
    p.add_argument("--host", default="", help="listening address (default: all interfaces)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every association")
    p.set_defaults(func=cmd_dicom)

    p = subparsers.add_parser("migrate", help="copy a legacy share into a bucket (resumable, incremental)")
    p.add_argument("store")
    p.add_argument("source", metavar="SOURCE_DIR")
    p.add_argument("--bucket", required=True)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--verify", action="store_true", help="compare the sha256 of every source file with its object")
    p.add_argument(
        "--mirror-deletes",
        action="store_true",
        help="delete the objects this migration copied from files since deleted from the share "
        "(default: keep them and list them in missing_from_source); WORM-locked objects and "
        "objects rewritten since are never deleted",
    )
    p.add_argument(
        "--max-deletes",
        type=int,
        metavar="N",
        help="with --mirror-deletes, delete nothing if more than N objects would go",
    )
    p.add_argument("--report", metavar="FILE", help="write the JSON report here (default: stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_migrate)


#: Log lines of ``objfs dicom`` (the pid tells which gateway process wrote a line).
LOG_FORMAT = "objfs dicom[%(process)d]: %(levelname)s %(name)s: %(message)s"


def configure_logging(verbose: bool) -> None:
    """``objfs dicom``'s logging, in the command's process and in its gateway worker processes."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)
    if not verbose:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # The gateway's own lines (one summary per association, refusals) are what an administrator reads.
    logging.getLogger("objfs.dicom").setLevel(logging.INFO)


def cmd_dicom(args: argparse.Namespace) -> int:
    configure_logging(args.verbose)
    from objfs.dicom.processes import GatewayProcessDied
    from objfs.dicom.server import serve_dicom

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ready = threading.Event()
    failure: list[BaseException] = []

    def run(store: Store) -> None:
        try:
            serve_dicom(
                store,
                port=args.port,
                aet=args.aet,
                bucket=args.bucket,
                host=args.host,
                ready_event=ready,
                stop_event=stop,
                log_style="cli",
                verbose=args.verbose,
            )
        except (StoreError, OSError, ValueError, GatewayProcessDied) as exc:  # reported in one line by the main thread
            failure.append(exc)

    try:
        store_lock = hold_shared(args.store)
        store = Store.open(args.store)
    except StoreError as exc:
        print(f"objfs dicom: {exc}", file=sys.stderr)
        return 2
    with store_lock, store:
        cfg = store.config.dicom
        try:
            for name in [args.bucket or cfg.bucket, *cfg.aets.values()]:
                check_bucket_name(name)
        except StoreError as exc:
            print(f"objfs dicom: {exc}", file=sys.stderr)
            return 2
        thread = threading.Thread(target=run, args=(store,), name="objfs-dicom", daemon=True)
        thread.start()
        while not ready.wait(0.1):
            if not thread.is_alive():
                reason = failure[0] if failure else "the gateway stopped"
                print(f"objfs dicom: {reason}", file=sys.stderr)
                return 1
        titles = ", ".join(f"{t} -> {b}" for t, b in {args.aet or cfg.aet: args.bucket or cfg.bucket, **cfg.aets}.items())
        tls = " (TLS)" if cfg.tls_certfile else ""
        print(
            f"objfs dicom: {args.aet or cfg.aet} listening on port {args.port or cfg.port}{tls}, bucket {args.bucket or cfg.bucket}"
            + (f"; AE titles {titles}" if cfg.aets else ""),
            flush=True,
        )
        # The main thread only waits, so signals are handled promptly.
        while thread.is_alive() and not stop.wait(0.5):
            pass
        thread.join(timeout=60)
    if failure:
        print(f"objfs dicom: {failure[0]}", file=sys.stderr)
        return 1
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from objfs.dicom.migrate import migrate

    # A migration writes for hours: it shares the store lock as a server does.
    with hold_shared(args.store), Store.open(args.store) as store:
        report = migrate(
            store,
            args.source,
            args.bucket,
            workers=args.workers,
            verify=args.verify,
            mirror_deletes=args.mirror_deletes,
            max_deletes=args.max_deletes,
            progress_out=None if args.quiet else sys.stderr,
        )
    text = json.dumps(report, indent=2)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0 if report["complete"] else 3
