"""``objfs serve``: argument parsing for the whole appliance; :mod:`objfs.serve` composes and runs the fronts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``serve`` command to the ``objfs`` parser."""
    p = subparsers.add_parser("serve", help="run the S3 sidecar, the FUSE mount and the DICOM gateway in one process")
    p.add_argument("store")
    p.add_argument("--mount", help="mount point for the FUSE front")
    p.add_argument("--allow-other", action="store_true", help="let other users (the PACS service user) use the mount")
    p.add_argument("--host", help="S3 listen address (default from objfs.toml)")
    p.add_argument("--port", type=int, help="S3 port (default from objfs.toml)")
    p.add_argument("--dicom-port", type=int, help="DICOM port (default from objfs.toml)")
    p.add_argument("--admin-port", type=int, help="admin HTTP port: health, metrics, dashboard (default from objfs.toml)")
    p.add_argument("--no-dicom", action="store_true", help="do not start the DICOM gateway")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from objfs.serve import serve_forever

    return serve_forever(
        Path(args.store).resolve(),
        mount=Path(args.mount).resolve() if args.mount else None,
        allow_other=args.allow_other,
        host=args.host,
        port=args.port,
        dicom=not args.no_dicom,
        dicom_port=args.dicom_port,
        admin_port=args.admin_port,
    )
