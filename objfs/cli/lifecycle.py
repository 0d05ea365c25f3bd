"""``objfs lifecycle set|show|run``: a bucket's lifecycle rules, and one pass of the mover now.

Guarantee: ``set`` validates the rules (the S3 LifecycleConfiguration in
boto3's JSON shape, as ``aws s3api put-bucket-lifecycle-configuration``
takes it) before storing them; ``run`` runs one pass and prints what it
moved, expired, aborted and kept (exit 1 if a move failed).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from objfs.stores import open_store

from .common import cli_principal, store_command


def register(subparsers: Any) -> None:
    """Add the lifecycle commands to the ``objfs`` parser."""
    p = subparsers.add_parser("lifecycle", help="lifecycle rules: tier moves and expiration")
    sub = p.add_subparsers(dest="lifecycle_command", required=True)
    s = store_command(sub, "set", "set a bucket's rules from a JSON file ('-' for stdin; '{}' removes them)", cmd_set)
    s.add_argument("bucket")
    s.add_argument("file")
    store_command(sub, "show", "a bucket's rules (or the store-wide default it follows)", cmd_show).add_argument("bucket")
    r = store_command(sub, "run", "run one lifecycle pass now", cmd_run, json=True)
    r.add_argument("--max-actions", type=int, default=None, help="stop after this many actions (the next pass resumes)")


def cmd_set(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else open(args.file).read()
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"objfs: {args.file} is not JSON: {exc}") from None
    document = document.get("LifecycleConfiguration", document) if isinstance(document, dict) else document
    with open_store(args.store) as store:
        store.put_lifecycle(args.bucket, document or None, principal=cli_principal())
    print(f"lifecycle rules of {args.bucket} {'set' if document else 'removed'}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with open_store(args.store) as store:
        own = store.get_lifecycle(args.bucket, principal=cli_principal())
        shown = own if own is not None else {"default": True, **(store.default_lifecycle() or {"Rules": []})}
    print(json.dumps(shown, indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    with open_store(args.store) as store:
        report = store.run_lifecycle(max_actions=args.max_actions, progress=sys.stderr)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.moved:
            print(f"moved    {line}")
        for line in report.expired:
            print(f"expired  {line}")
        for line in report.aborted:
            print(f"aborted  {line}")
        for line in report.kept_locked:
            print(f"locked   {line} (kept)")
        for line in report.failed:
            print(f"FAILED   {line}")
        print(
            f"{len(report.moved)} moved ({report.bytes_moved} bytes), {len(report.expired)} expired, "
            f"{len(report.aborted)} uploads aborted, {len(report.kept_locked)} kept (locked)"
            + ("" if report.finished else "; stopped early, the next pass resumes")
        )
    return 1 if report.failed else 0
