"""``objfs key create|list``: S3 access keys. The secret is printed once, at creation, and never listed."""

from __future__ import annotations

import argparse
import json
from typing import Any

from objfs.stores import Store


def register(subparsers: Any) -> None:
    """Add the ``key`` command group to the ``objfs`` parser."""
    p = subparsers.add_parser("key", help="manage S3 access keys")
    keysub = p.add_subparsers(dest="key_command", required=True)
    k = keysub.add_parser("create", help="create a key; prints JSON with the secret, once")
    k.add_argument("store")
    k.add_argument("--name", default="default")
    k.add_argument("--read-only", action="store_true")
    k.add_argument("--bucket", action="append", help="limit the key to this bucket; repeat")
    k.add_argument("--legal-hold", action="store_true", help="may place and lift legal holds")
    k.add_argument("--retention", action="store_true", help="may set and extend retention (and lock headers on writes)")
    k.add_argument(
        "--bypass-governance",
        action="store_true",
        help="may shorten, remove or harden GOVERNANCE retention to COMPLIANCE, when a request asks",
    )
    k.set_defaults(func=cmd_key_create)
    k = keysub.add_parser("list", help="list keys (no secrets)")
    k.add_argument("store")
    k.set_defaults(func=cmd_key_list)


def cmd_key_create(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        key = store.keys.create(
            args.name,
            read_only=args.read_only,
            buckets=tuple(args.bucket or ()),
            bypass_governance=args.bypass_governance,
            legal_hold=args.legal_hold,
            retention=args.retention,
            now=store.clock.now(),
        )
    print(json.dumps({"access_key": key.access_key, "secret_key": key.secret_key}))
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        keys = store.keys.all()
    for key in keys:
        scope = ",".join(key.buckets) or "*"
        rights = ",".join(["read", *key.rights()])
        print(f"{key.access_key}\t{key.name}\tbuckets={scope}\trights={rights}")
    return 0
