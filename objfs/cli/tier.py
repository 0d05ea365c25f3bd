"""``objfs tier add|list``: the store's tiers of local drives.

Guarantee: ``tier add`` formats the new drives, then replaces ``objfs.toml``
atomically with a version validated in full first (a bad tier leaves the file
as it was); ``tier list`` prints each tier's profile, storage classes,
versions and bytes.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from objfs.store.tiers import add_tier
from objfs.stores import open_store

from .common import store_command


def register(subparsers: Any) -> None:
    """Add the tier commands to the ``objfs`` parser."""
    p = subparsers.add_parser("tier", help="tiers of drives (hot, warm, archive)")
    sub = p.add_subparsers(dest="tier_command", required=True)
    a = sub.add_parser("add", help="add a tier of local drives (formats them, appends it to objfs.toml)")
    a.add_argument("store")
    a.add_argument("name")
    a.add_argument("--drive", action="append", required=True, help="a drive directory (mount point); repeat")
    a.add_argument("--ec", default="4+2", help="erasure code K+M of this tier (default 4+2)")
    a.set_defaults(func=cmd_tier_add)
    store_command(sub, "list", "tiers with their versions and bytes", cmd_tier_list, json=True)


def cmd_tier_add(args: argparse.Namespace) -> int:
    config = add_tier(args.store, args.name, args.drive, args.ec)
    tier = config.tier(args.name)
    classes = sorted(c for c, t in config.storage_classes.items() if t == tier.name)
    print(f"added tier {tier.name}: EC {tier.k}+{tier.m} on {len(tier.drives)} drives; storage classes {classes or 'none'}")
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
