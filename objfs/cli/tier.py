"""``objfs tier add|list|promote``: the store's tiers (local drives, or a bucket on a remote S3 system).

Guarantee: ``tier add`` formats the new drives (``--drive``), or reaches the
remote bucket (``--s3 REMOTE/BUCKET``, a remote of ``objfs remote add``; or
``--s3 http(s)://ENDPOINT --bucket B --access-key AK --secret-key SK``, which
defines remote ``tier-NAME`` first, its secret in a 0600 file and never
printed, and forgets it again when the tier cannot be added), then replaces ``objfs.toml`` atomically with a version validated in full
first (a bad tier leaves the file as it was); ``tier list`` prints each
tier's profile, storage classes, versions and bytes; ``tier promote`` brings
the versions under a prefix back to the first tier (now, or queued for the
mover of ``objfs serve``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from objfs.store.remotes import add_remote, remove_remote
from objfs.store.tiers import add_remote_tier, add_tier
from objfs.stores import open_store

from .common import cli_principal, store_command
from .remote import SECRET_ENV, read_secret


def register(subparsers: Any) -> None:
    """Add the tier commands to the ``objfs`` parser."""
    p = subparsers.add_parser("tier", help="tiers of drives (hot, warm, archive)")
    sub = p.add_subparsers(dest="tier_command", required=True)
    a = sub.add_parser("add", help="add a tier of local drives, or on a remote S3 bucket (appends it to objfs.toml)")
    a.add_argument("store")
    a.add_argument("name")
    where = a.add_mutually_exclusive_group(required=True)
    where.add_argument("--drive", action="append", help="a drive directory (mount point); repeat")
    where.add_argument(
        "--s3",
        metavar="REMOTE[/BUCKET]|ENDPOINT",
        help="a bucket of a remote defined with `objfs remote add`, or the http(s):// URL of an S3 service"
        " (with --access-key and --secret-key: defines remote tier-NAME)",
    )
    a.add_argument("--ec", default="4+2", help="erasure code K+M of a tier of drives (default 4+2)")
    a.add_argument("--bucket", help="the remote bucket (or give it as REMOTE/BUCKET)")
    a.add_argument("--access-key", help="with --s3 ENDPOINT: the access key objfs uses there")
    a.add_argument(
        "--secret-key",
        help=f"with --s3 ENDPOINT: the secret key; '-' reads it from stdin; without it, from ${SECRET_ENV}",
    )
    a.add_argument("--region", default="us-east-1", help="with --s3 ENDPOINT: the region (default us-east-1)")
    a.add_argument("--ca-bundle", default="", help="with --s3 ENDPOINT: CA certificate file for an https endpoint")
    a.add_argument("--prefix", default="", help="key prefix on the remote bucket")
    a.add_argument(
        "--promote-on-read", action="store_true", help="a read of a version on this tier brings it back to the first tier"
    )
    a.set_defaults(func=cmd_tier_add)
    store_command(sub, "list", "tiers with their versions and bytes", cmd_tier_list, json=True)
    pr = store_command(
        sub, "promote", "bring versions under BUCKET/PREFIX back to the first tier (a patient's priors)", cmd_tier_promote
    )
    pr.add_argument("target", metavar="BUCKET[/PREFIX]")
    pr.add_argument("--queue", action="store_true", help="only queue the moves for the mover of objfs serve")


def cmd_tier_add(args: argparse.Namespace) -> int:
    if args.s3:
        return _add_remote(args)
    config = add_tier(args.store, args.name, args.drive, args.ec)
    tier = config.tier(args.name)
    classes = sorted(c for c, t in config.storage_classes.items() if t == tier.name)
    print(f"added tier {tier.name}: EC {tier.k}+{tier.m} on {len(tier.drives)} drives; storage classes {classes or 'none'}")
    print("restart objfs serve (and mounts) for them to use it")
    return 0


def _is_endpoint(s3: str) -> bool:
    return s3.startswith(("http://", "https://"))


def _add_remote(args: argparse.Namespace) -> int:
    if _is_endpoint(args.s3):
        return _add_endpoint(args)
    if args.access_key or args.secret_key:
        print("objfs: --access-key/--secret-key go with --s3 http(s)://ENDPOINT, not a defined remote", file=sys.stderr)
        return 2
    remote, _, bucket = args.s3.partition("/")
    return _add_on_remote(args, remote, bucket.strip("/") or args.bucket)


def _add_endpoint(args: argparse.Namespace) -> int:
    """``--s3 ENDPOINT``: define remote ``tier-NAME`` with the given key, then the tier on it (or neither)."""
    if not args.bucket or not args.access_key:
        print("objfs: --s3 ENDPOINT needs --bucket B and --access-key AK (and --secret-key SK)", file=sys.stderr)
        return 2
    secret = read_secret(args)
    name = "tier-" + args.name.lower()
    remote = add_remote(
        args.store,
        name,
        endpoint=args.s3,
        access_key=args.access_key,
        secret_key=secret,
        region=args.region,
        ca_bundle=args.ca_bundle,
    )
    try:
        done = _add_on_remote(args, name, args.bucket)
    except BaseException:
        remove_remote(args.store, name)  # a tier that was not added leaves no remote (nor secret) behind
        raise
    with open_store(args.store) as store:
        store.record_audit("remote-add", cli_principal(), "ok", True, detail=f"{remote.name} {remote.endpoint}")
    return done


def _add_on_remote(args: argparse.Namespace, remote: str, bucket: str | None) -> int:
    if not bucket:
        print("objfs: give the remote bucket as --s3 REMOTE/BUCKET or --bucket B", file=sys.stderr)
        return 2
    config, facts = add_remote_tier(
        args.store, args.name, remote, bucket, prefix=args.prefix, promote_on_read=args.promote_on_read
    )
    tier = config.tier(args.name)
    classes = sorted(c for c, t in config.storage_classes.items() if t == tier.name)
    lock = "object lock enabled" if facts["object_lock"] else "no object lock: locked versions will not move there"
    print(
        f"added tier {tier.name}: s3://{remote}/{bucket}/{tier.prefix} (versioning {facts['versioning']}, {lock}); storage classes {classes or 'none'}"
    )
    print("restart objfs serve (and mounts) for them to use it")
    return 0


def cmd_tier_list(args: argparse.Namespace) -> int:
    with open_store(args.store) as store:
        tiers = store.tier_usage()
    if args.json:
        print(json.dumps(tiers, indent=2))
        return 0
    for t in tiers:
        classes = ",".join(t["classes"]) or "-"
        print(
            f"{t['name']:<10} ec {t['ec']:<6} drives {len(t['drives']):<3} classes {classes:<24} versions {t['versions']:<8} bytes {t['bytes']}"
        )
    return 0


def cmd_tier_promote(args: argparse.Namespace) -> int:
    bucket, _, prefix = args.target.partition("/")
    with open_store(args.store) as store:
        names = store.promote_prefix(bucket, prefix, now=not args.queue, principal=cli_principal())
    verb = "queued" if args.queue else "promoted"
    for name in names:
        print(f"{verb} {name}")
    print(f"{len(names)} versions {verb} to the first tier")
    return 0
