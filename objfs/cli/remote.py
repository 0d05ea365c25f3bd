"""``objfs remote add|list|remove``: the S3 endpoints replication and remote tiers use.

Guarantee: ``remote add`` stores the definition durably in a file only root
can read (see :mod:`objfs.store.remotes`) and never prints the secret;
every change leaves one line in the audit trail.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from objfs.store.remotes import RemoteError, add_remote, list_remotes, remove_remote
from objfs.stores import open_store

from .common import cli_principal, store_command

SECRET_ENV = "OBJFS_REMOTE_SECRET_KEY"


def register(subparsers: Any) -> None:
    """Add the remote commands to the ``objfs`` parser."""
    p = subparsers.add_parser("remote", help="remote S3 endpoints (replication targets, remote tiers)")
    sub = p.add_subparsers(dest="remote_command", required=True)
    a = store_command(sub, "add", "define a remote S3 endpoint", cmd_remote_add)
    a.add_argument("name")
    a.add_argument("--endpoint", required=True, help="http(s)://HOST:PORT of the S3 service")
    a.add_argument("--access-key", required=True)
    a.add_argument(
        "--secret-key",
        help=f"the secret key; '-' reads it from stdin; without it, from ${SECRET_ENV} (keeps it out of ps)",
    )
    a.add_argument("--region", default="us-east-1")
    a.add_argument("--ca-bundle", default="", help="CA certificate file to verify an https endpoint with")
    a.add_argument("--replace", action="store_true", help="redefine an existing remote")
    store_command(sub, "list", "the remotes (secrets are never shown)", cmd_remote_list, json=True)
    r = store_command(sub, "remove", "forget a remote", cmd_remote_remove)
    r.add_argument("name")


def read_secret(args: argparse.Namespace) -> str:
    """The secret key of ``--secret-key`` ('-': a line of stdin), else of ${OBJFS_REMOTE_SECRET_KEY}."""
    if args.secret_key == "-":
        return sys.stdin.readline().strip()
    if args.secret_key:
        return args.secret_key
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise SystemExit(f"objfs: give --secret-key (or '-' for stdin, or set {SECRET_ENV})")
    return secret


def cmd_remote_add(args: argparse.Namespace) -> int:
    secret = read_secret(args)
    with open_store(args.store) as store:
        remote = add_remote(
            args.store,
            args.name,
            endpoint=args.endpoint,
            access_key=args.access_key,
            secret_key=secret,
            region=args.region,
            ca_bundle=args.ca_bundle,
            replace=args.replace,
        )
        store.record_audit("remote-add", cli_principal(), "ok", True, detail=f"{remote.name} {remote.endpoint}")
    print(f"remote {remote.name}: {remote.endpoint} (region {remote.region}, key {remote.access_key})")
    return 0


def cmd_remote_list(args: argparse.Namespace) -> int:
    remotes = list_remotes(args.store)
    if args.json:
        print(json.dumps(remotes, indent=2))
        return 0
    for r in remotes:
        print(f"{r['name']:<16} {r['endpoint']:<40} region {r['region']:<12} key {r['access_key']}")
    return 0


def cmd_remote_remove(args: argparse.Namespace) -> int:
    with open_store(args.store) as store:
        users = store.remotes_in_use().get(args.name)
        if users:
            raise RemoteError(f"remote {args.name} is used by the replication rules of {', '.join(users)}; remove them first")
        users = [t.name for t in store.config.tiers if t.remote == args.name]
        if users:  # its objects would become unreadable
            raise RemoteError(f"remote {args.name} holds tier {', '.join(users)}: move its versions off it first")
        remove_remote(args.store, args.name)
        store.record_audit("remote-remove", cli_principal(), "ok", True, detail=args.name)
    print(f"removed remote {args.name}")
    return 0
