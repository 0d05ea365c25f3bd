"""``objfs init|status|scrub|gc|replace-drive|rebuild-index``: the store itself and its drives.

Guarantee: these commands only parse arguments and call the engine; ``scrub``
exits 1 when anything is lost or unjudgeable, so a timer unit fails loudly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from objfs.stores import Store, init_store


def register(subparsers: Any) -> None:
    """Add the store commands to the ``objfs`` parser."""
    p = subparsers.add_parser("init", help="create a store")
    p.add_argument("store")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--drives", type=int, help="number of directory drives under STORE/drives")
    group.add_argument("--drive", action="append", help="a drive directory (mount point); repeat")
    p.add_argument("--ec", default="4+2", help="erasure code K+M (default 4+2)")
    p.set_defaults(func=cmd_init)

    p = subparsers.add_parser("scrub", help="verify every object, repair fragments, collect proven garbage")
    p.add_argument("store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scrub)

    p = subparsers.add_parser("gc", help="collect retired versions' fragments now (old enough, unread, unlocked)")
    p.add_argument("store")
    p.add_argument("--min-age", type=float, default=None, help="seconds (default: [gc] min_age_seconds)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gc)

    p = subparsers.add_parser("status", help="drives, free space, objects, degraded objects")
    p.add_argument("store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("replace-drive", help="format an empty replacement disk for a lost drive, then heal")
    p.add_argument("store")
    p.add_argument("drive", help="drive id, as objfs status shows it (e.g. hot-3)")
    p.set_defaults(func=cmd_replace_drive)

    p = subparsers.add_parser("rebuild-index", help="recreate the index from the drives")
    p.add_argument("store")
    p.add_argument("--force", action="store_true", help="move a non-empty index aside first")
    p.set_defaults(func=cmd_rebuild_index)


def cmd_init(args: argparse.Namespace) -> int:
    store = init_store(args.store, drives=args.drives, drive_paths=args.drive, ec=args.ec)
    tier = store.config.hot
    print(f"initialised {store.root}: tier {tier.name}, EC {tier.k}+{tier.m} on {len(tier.drives)} drives")
    store.close()
    return 0


def cmd_scrub(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        report = store.scrub()
    data = report.as_dict()
    if args.json:
        print(json.dumps(data))
    else:
        for name, value in data.items():
            print(f"{name}: {len(value) if isinstance(value, list) else value}")
        for lost in report.lost:
            print(f"LOST: {lost}")
        for error in report.drive_errors:
            print(f"DRIVE: {error}")
    if report.index_problem:
        print(
            f"objfs: {report.index_problem}; scrub collected nothing the index would judge: run `objfs rebuild-index STORE`",
            file=sys.stderr,
        )
    return 1 if report.lost or report.index_problem or report.drive_errors else 0


def cmd_gc(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        report = store.collect_garbage(min_age=args.min_age)
    print(json.dumps(report.as_dict()) if args.json else "\n".join(f"{k}: {v}" for k, v in report.as_dict().items()))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        status = store.status()
    if args.json:
        print(json.dumps(status))
        return 0
    print(f"store {status['store']}")
    for d in status["drives"]:
        state = d["state"].upper()
        if "free" in d:
            flag = "" if d["immutable_flag"] else "  (no immutable flag: WORM hardening unavailable)"
            print(
                f"  {d['id']:<8} {state:<9} {d['path']}  {d['free'] / 2**30:.1f} GiB free of {d['total'] / 2**30:.1f} GiB{flag}"
            )
        else:
            print(f"  {d['id']:<8} {state:<9} {d['path']}")
    for name in (
        "buckets",
        "objects",
        "noncurrent_versions",
        "bytes",
        "degraded_objects",
        "heal_queue",
        "gc_queue",
        "multipart_uploads",
    ):
        print(f"{name}: {status[name]}")
    return 0


def cmd_replace_drive(args: argparse.Namespace) -> int:
    from objfs.store.drives import format_drive

    with Store.open(args.store) as store:
        drive = store.drive_by_id(args.drive)
        if drive is None:
            print(f"objfs: no drive {args.drive!r}; drives: {', '.join(d.drive_id for d in store.all_drives())}", file=sys.stderr)
            return 2
        state = store.drive_state(drive)
        if state != "missing" and state != "wiped":
            print(
                f"objfs: drive {args.drive} at {drive.path} is {state}; only a missing or wiped drive is replaced",
                file=sys.stderr,
            )
            return 2
        if state == "missing" and drive.path.exists() and any(drive.path.iterdir()):
            print(f"objfs: {drive.path} is not empty; mount a new, empty disk there first", file=sys.stderr)
            return 2
        format_drive(drive.path, store.config.store_id, drive.drive_id)
        store.refresh_drive_health()
        print(f"formatted {drive.path} as drive {drive.drive_id}; healing its fragments")
        report = store.scrub()
    print(json.dumps(report.as_dict()))
    return 1 if report.lost else 0


def cmd_rebuild_index(args: argparse.Namespace) -> int:
    from objfs.store.rebuild import index_is_empty, move_index_aside, rebuild_index

    root = Path(args.store).resolve()
    with Store.open(root) as store:
        empty = index_is_empty(store)
    if not empty:
        if not args.force:
            print("objfs: the index is not empty; --force moves it aside and rebuilds", file=sys.stderr)
            return 2
        moved = move_index_aside(root)
        print(f"old index kept at {moved}")
    with Store.open(root) as store:
        counts = rebuild_index(store)
    print(json.dumps(counts))
    return 0
