"""``objfs key create|list|delete|disable|enable|rotate``: S3 access keys.

Guarantee: a secret is printed once, at creation or rotation, and never
listed; every change is a durable audit line (``key-create``, ``key-delete``,
``key-disable``, ``key-enable``, ``key-rotate``) by the ``cli`` principal
naming the access key id. A running sidecar sees a change within a second.
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

from objfs.stores import Store

from .common import cli_principal, store_command

#: command -> (help, KeyRing method, its extra arguments)
CHANGES = {
    "delete": ("delete a key for good", "delete", ()),
    "disable": ("stop a key from signing requests (its rights are kept)", "set_disabled", (True,)),
    "enable": ("let a disabled key sign requests again", "set_disabled", (False,)),
    "rotate": ("give a key a new secret, printed once; the old secret stops working", "rotate", ()),
}


def register(subparsers: Any) -> None:
    """Add the ``key`` command group to the ``objfs`` parser."""
    p = subparsers.add_parser("key", help="manage S3 access keys")
    keysub = p.add_subparsers(dest="key_command", required=True)
    k = store_command(keysub, "create", "create a key; prints JSON with the secret, once", cmd_key_create)
    k.add_argument("--name", default="default")
    k.add_argument(
        "--shell",
        action="store_true",
        help='print export lines for the aws CLI instead of JSON: eval "$(objfs key create ... --shell)"',
    )
    k.add_argument("--read-only", action="store_true")
    k.add_argument("--account", default=None, help="the account the key acts for (default: the store's default account)")
    k.add_argument("--bucket", action="append", help="limit the key to this bucket; repeat")
    k.add_argument("--legal-hold", action="store_true", help="may place and lift legal holds")
    k.add_argument("--retention", action="store_true", help="may set and extend retention (and lock headers on writes)")
    k.add_argument(
        "--bypass-governance",
        action="store_true",
        help="may shorten, remove or harden GOVERNANCE retention to COMPLIANCE, when a request asks",
    )
    k.add_argument(
        "--replication",
        action="store_true",
        help="may write replicas keeping their version ids (the key another appliance replicates here with)",
    )
    store_command(keysub, "list", "list keys (no secrets)", cmd_key_list, json=True)
    for command, (text, _, _) in CHANGES.items():
        k = store_command(keysub, command, text, cmd_key_change, json=True)
        k.add_argument("access_key")
        k.set_defaults(change=command)


def cmd_key_create(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        key = store.keys.create(
            args.name,
            read_only=args.read_only,
            buckets=tuple(args.bucket or ()),
            bypass_governance=args.bypass_governance,
            legal_hold=args.legal_hold,
            retention=args.retention,
            replication=args.replication,
            now=store.clock.now(),
            **({"account": args.account} if args.account else {}),
        )
        store.record_audit("key-create", cli_principal(), "ok", True, detail=f"{key.access_key} ({key.name})")
    if args.shell:
        print(f"export AWS_ACCESS_KEY_ID={shlex.quote(key.access_key)} AWS_SECRET_ACCESS_KEY={shlex.quote(key.secret_key)}")
    else:
        print(json.dumps({"access_key": key.access_key, "secret_key": key.secret_key}))
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        keys = store.keys.every()
    rows = [
        {
            "access_key": key.access_key,
            "name": key.name,
            "account": key.account,
            "buckets": list(key.buckets),
            "rights": ["read", *key.rights()],
            "disabled": key.disabled,
        }
        for key in keys
    ]
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        scope = ",".join(row["buckets"]) or "*"
        state = "\tDISABLED" if row["disabled"] else ""
        print(
            f"{row['access_key']}\t{row['name']}\taccount={row['account']}\tbuckets={scope}\trights={','.join(row['rights'])}{state}"
        )
    return 0


def cmd_key_change(args: argparse.Namespace) -> int:
    _, method, extra = CHANGES[args.change]
    with Store.open(args.store) as store:
        key = getattr(store.keys, method)(args.access_key, *extra)
        store.record_audit(f"key-{args.change}", cli_principal(), "ok", True, detail=f"{key.access_key} ({key.name})")
    if args.change == "rotate":
        print(json.dumps({"access_key": key.access_key, "secret_key": key.secret_key}))
    elif args.json:
        print(json.dumps({"access_key": key.access_key, args.change: True}))
    else:
        done = {"delete": "deleted", "disable": "disabled", "enable": "enabled"}[args.change]
        print(f"{done} key {key.access_key} ({key.name})")
    return 0
