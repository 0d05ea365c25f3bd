"""``objfs init|status|heal|scrub|gc|replace-drive|rebuild-index|upgrade``: the store itself and its drives.

Guarantee: these commands only parse arguments and call the engine; ``scrub``
exits 1 when anything is lost or unjudgeable, so a timer unit fails loudly;
``status`` exits 1 when the store is degraded (a drive not ok, objects
waiting for healing) and 2 when objects are lost or a tier is below quorum.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from objfs.store.progress import Progress, add_progress_flag, duration_text
from objfs.store.storelock import hold_exclusive
from objfs.stores import Store, init_store

from .common import store_command


def register(subparsers: Any) -> None:
    """Add the store commands to the ``objfs`` parser."""
    p = subparsers.add_parser("init", help="create a store")
    p.add_argument("store")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--drives", type=int, help="number of directory drives under STORE/drives")
    group.add_argument("--drive", action="append", help="a drive directory (mount point); repeat")
    p.add_argument("--ec", default="4+2", help="erasure code K+M (default 4+2)")
    p.set_defaults(func=cmd_init)

    store_command(subparsers, "scrub", "verify every object, repair fragments, collect proven garbage", cmd_scrub, json=True)

    p = store_command(
        subparsers, "gc", "collect retired versions' fragments now (old enough, unread, unlocked)", cmd_gc, json=True
    )
    p.add_argument("--min-age", type=float, default=None, help="seconds (default: [gc] min_age_seconds)")

    p = store_command(
        subparsers, "heal", "heal every object in the heal queue now (the server does it in the background)", cmd_heal, json=True
    )
    add_progress_flag(p)
    p = store_command(subparsers, "status", "drives, free space, objects, degraded objects", cmd_status, json=True)
    p.add_argument(
        "--recount",
        action="store_true",
        help="recount objects and bytes from a full scan of the index (repairs the kept counters)",
    )

    p = store_command(
        subparsers, "replace-drive", "format an empty replacement disk for a lost drive, then heal", cmd_replace_drive
    )
    p.add_argument("drive", help="drive id, as objfs status shows it (e.g. hot-3)")
    p.add_argument(
        "--allow-directory",
        action="store_true",
        help="accept a path that is not a mount point (stores made with 'objfs init' without --drive always do)",
    )

    p = store_command(
        subparsers, "backup-index", "copy a consistent snapshot of the index (LMDB copy; safe while serving)", cmd_backup_index
    )
    p.add_argument("destination", help="a new or empty directory; gets data.mdb and snapshot.json")
    p = store_command(subparsers, "rebuild-index", "recreate the index from the drives", cmd_rebuild_index)
    p.add_argument("--force", action="store_true", help="move a non-empty index aside first")

    p = store_command(
        subparsers,
        "upgrade",
        "move the store to this objfs's on-disk format and pack its small blobs (stop the service first)",
        cmd_upgrade,
        json=True,
    )
    p.add_argument("--no-pack", action="store_true", help="record the format only; leave existing blobs as they are")
    add_progress_flag(p)


def cmd_init(args: argparse.Namespace) -> int:
    store = init_store(args.store, drives=args.drives, drive_paths=args.drive, ec=args.ec)
    tier = store.config.hot
    print(f"initialised {store.root}: tier {tier.name}, EC {tier.k}+{tier.m} on {len(tier.drives)} drives")
    store.close()
    return 0


def cmd_scrub(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        report = store.scrub(progress=sys.stderr)
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
        remote = store.sweep_remote_orphans(min_age=args.min_age)
    data = dict(report.as_dict(), **({"remote_orphans": remote} if remote else {}))
    print(json.dumps(data) if args.json else "\n".join(f"{k}: {v}" for k, v in data.items()))
    if remote.get("index_problem"):
        print(f"objfs: {remote['index_problem']}; no remote object was deleted: run `objfs rebuild-index STORE`", file=sys.stderr)
    return 0


def cmd_heal(args: argparse.Namespace) -> int:
    """Heal the queued objects; exits 1 when some are lost (beyond repair)."""
    with Store.open(args.store) as store, Progress(label="heal", unit="objects", enabled=args.progress) as progress:
        report = store.process_heal_queue(progress)
    result = report.as_dict()
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 1 if report.lost else 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the store's state; exits 0 when whole, 1 when degraded, 2 when objects are lost or unreadable."""
    with Store.open(args.store) as store:
        if args.recount:
            store.counters.recount()
        status = store.status()
    if args.json:
        print(json.dumps(status))
    else:
        _print_status(status)
    if status["lost_objects"] or any(t["redundancy_left"] < 0 for t in status["tiers"]):
        return 2
    return 1 if status["degraded"] else 0


def _smart(drive: dict[str, Any]) -> str:
    smart = drive.get("smart") or {"health": "unknown"}
    return smart["health"] + (f" ({smart['device']})" if smart.get("device") else "")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _print_status(status: dict[str, Any]) -> None:
    print(f"store {status['store']}")
    for t in status["tiers"]:
        if t.get("remote"):
            where = f"s3://{t['remote']}/{t['bucket']}/{t['prefix']}".rstrip("/")
            state = "reachable" if t["reachable"] else f"UNREACHABLE ({t['problem']})"
            print(f"tier {t['name']}: remote {where} at {t['endpoint'] or '?'}, {state}")
            continue
        print(
            f"tier {t['name']}: EC {t['ec']}, {t['drives_ok']}/{t['drives']} drives ok, "
            f"redundancy left {t['redundancy_left']} of {t['m']}; "
            f"usable {_gib(t['usable_free_bytes'])} free of {_gib(t['usable_bytes'])} "
            f"(raw {_gib(t['raw_free_bytes'])} free of {_gib(t['raw_bytes'])})"
        )
    for d in status["drives"]:
        state = d["state"].upper()
        if "free" not in d:
            print(f"  {d['id']:<8} {state:<9} {d['path']}  SMART {_smart(d)}")
            continue
        flag = "" if d["immutable_flag"] else "  (no immutable flag: WORM hardening unavailable)"
        space = f"{_gib(d['free'])} free of {_gib(d['total'])}"
        if "shares_filesystem_with" in d:
            space = f"same filesystem as {d['shares_filesystem_with']}"
        print(f"  {d['id']:<8} {state:<9} {d['path']}  {space}  SMART {_smart(d)}{flag}")
    for name in (
        "format",
        "buckets",
        "objects",
        "noncurrent_versions",
        "bytes",
        "degraded_objects",
        "lost_objects",
        "heal_queue",
        "gc_queue",
        "multipart_uploads",
    ):
        print(f"{name}: {status[name]}")
    life, repl, scrub = status["lifecycle"], status["replication"], status["last_scrub"]
    if life["last_pass"] is None:
        passed = "no whole pass yet"
    else:
        passed = f"last whole pass {duration_text(life['lag_seconds'])} ago ({life['last_pass_actions']} actions)"
    pending = f"; a pass is under way (at bucket {life['resumes_at_bucket']})" if life["pass_in_progress"] else ""
    print(f"lifecycle: {passed}{pending}")
    print(
        f"replication: backlog {repl['backlog_objects']} versions ({_gib(repl['backlog_bytes'])}), "
        f"lag {duration_text(repl['lag_seconds'])}, {repl['failures']} failing"
    )
    if scrub is None:
        print("last scrub: never")
    else:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(scrub["finished"]))
        print(
            f"last scrub: {when} ({duration_text(scrub['age_seconds'])} ago, took {duration_text(scrub['seconds'])}): {scrub['result']}"
        )
    if status["degraded"]:
        print("DEGRADED: " + "; ".join(status["degraded"]))
    else:
        print("state: ok")


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
        if not os.path.ismount(drive.path) and not (store.config.directory_drives or args.allow_directory):
            # Formatting a bare directory would heal a whole disk's worth of fragments into the root filesystem.
            print(
                f"objfs: no disk is mounted at {drive.path}; mount the replacement disk there first "
                "(or give --allow-directory if this drive is meant to be a directory)",
                file=sys.stderr,
            )
            return 2
        format_drive(drive.path, store.config.store_id, drive.drive_id)
        store.refresh_drive_health()
        print(f"formatted {drive.path} as drive {drive.drive_id}; healing its fragments")
        report = store.scrub(progress=sys.stderr)  # hours on a full disk: rate and ETA on stderr
    print(json.dumps(report.as_dict()))
    return 1 if report.lost else 0


def cmd_backup_index(args: argparse.Namespace) -> int:
    """LMDB's own copy (one read transaction: a consistent snapshot while writers go on), compacted."""
    destination = Path(args.destination)
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.iterdir()):
        print(f"objfs: {destination} is not empty; give a new or empty directory", file=sys.stderr)
        return 2
    with Store.open(args.store) as store:
        state = store.index.state()
        store.index.env.copy(str(destination), compact=True)
        counted = store.counters.totals()
    manifest = {
        "store": str(store.root),
        "store_id": store.config.store_id,
        "index_id": state["index_id"],
        "txnid": state["txnid"],
        "taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "objects": counted["objects"],
        "bytes": counted["bytes"],
    }
    (destination / "snapshot.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest))
    return 0


def cmd_rebuild_index(args: argparse.Namespace) -> int:
    from objfs.store.rebuild import index_is_empty, move_index_aside, rebuild_in_progress, rebuild_index

    root = Path(args.store).resolve()
    # Alone, or a serving process would keep writing to the index being moved aside.
    with hold_exclusive(root, "rebuild-index"):
        with Store.open(root) as store:
            empty = index_is_empty(store)
            resumable = rebuild_in_progress(store)
        if args.force or not (empty or resumable):
            if not args.force:
                print("objfs: the index is not empty; --force moves it aside and rebuilds", file=sys.stderr)
                return 2
            if not empty:
                moved = move_index_aside(root)
                print(f"old index kept at {moved}")
        with Store.open(root) as store:
            counts = rebuild_index(store, progress=sys.stderr)
    print(json.dumps(counts))
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Record the current format, then pack the small blobs into volumes; resumable after a crash, or run twice.

    Alone (the exclusive store lock): nothing serves while records are switched.
    """
    from objfs.store.upgrade import ForeignDrives, upgrade_store

    root = Path(args.store).resolve()
    with hold_exclusive(root, "upgrade"), Progress(label="upgrade", unit="versions", enabled=args.progress) as progress:
        try:
            report = upgrade_store(root, Store.open, pack=not args.no_pack, progress=progress)
        except ForeignDrives as exc:
            print(f"objfs: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0
    if report.changed:
        print(f"upgraded {root} from format {report.before} to format {report.after}")
    else:
        print(f"{root} is already format {report.after}")
    if report.pack is not None:
        packed = report.pack
        kept = ", ".join(f"{n} {reason}" for reason, n in packed.kept.items()) or "none"
        print(
            f"packed {packed.packed} versions ({packed.blobs} blobs, {packed.bytes} bytes) into volumes; "
            f"{packed.already} were packed already; kept as files: {kept}"
        )
        if packed.packed:
            print("the old fragment files are freed by the collector (objfs serve, or objfs gc) once old enough")
    return 0
