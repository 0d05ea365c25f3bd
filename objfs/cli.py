"""The ``objfs`` command: argument parsing only; each command calls the engine or a front."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from objfs.store import Principal
from objfs.store.errors import StoreError
from objfs.stores import Store, init_store


def _split_target(text: str) -> tuple[str, str]:
    bucket, _, key = text.partition("/")
    return bucket, key


def cmd_init(args: argparse.Namespace) -> int:
    store = init_store(args.store, drives=args.drives, drive_paths=args.drive, ec=args.ec)
    tier = store.config.hot
    print(f"initialised {store.root}: tier {tier.name}, EC {tier.k}+{tier.m} on {len(tier.drives)} drives")
    store.close()
    return 0


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


def cli_principal() -> Principal:
    """The local administrator: the ``cli`` system principal, named after the user running it."""
    return Principal.system("cli", who=getpass.getuser())


def cmd_put(args: argparse.Namespace) -> int:
    bucket, key = _split_target(args.target)
    with Store.open(args.store) as store:
        if args.file == "-":
            info = store.put_object(bucket, key, sys.stdin.buffer, principal=cli_principal())
        else:
            with open(args.file, "rb") as f:
                info = store.put_object(bucket, key, f, length=os.fstat(f.fileno()).st_size, principal=cli_principal())
    print(f"{bucket}/{key}\t{info.size}\t{info.etag}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    bucket, key = _split_target(args.target)
    with Store.open(args.store) as store, store.open_object(bucket, key, principal=cli_principal()) as reader:
        if args.file in (None, "-"):
            out = sys.stdout.buffer
            for chunk in reader.iter_range():
                out.write(chunk)
            out.flush()
        else:
            tmp = args.file + ".objfs-part"
            with open(tmp, "wb") as f:
                for chunk in reader.iter_range():
                    f.write(chunk)
            os.rename(tmp, args.file)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        if not args.target:
            for bucket in store.list_buckets():
                print(f"{bucket['name']}/")
            return 0
        bucket, prefix = _split_target(args.target)
        marker = ""
        while True:
            page = store.list_objects(bucket, prefix=prefix, delimiter="" if args.recursive else "/", start_after=marker)
            for cp in page.common_prefixes:
                print(f"{'':>12}  {'':19}  {cp}")
            for obj in page.objects:
                stamp = _iso(obj.modified)
                print(f"{obj.size:>12}  {stamp}  {obj.key}")
            if not page.truncated:
                return 0
            marker = page.next_marker or ""


def _iso(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def cmd_mb(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        store.create_bucket(args.bucket, object_lock=args.object_lock, principal=cli_principal())
    print(f"{args.bucket}/")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="objfs", description="Erasure-coded archive for medical images")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="create a store")
    p.add_argument("store")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--drives", type=int, help="number of directory drives under STORE/drives")
    group.add_argument("--drive", action="append", help="a drive directory (mount point); repeat")
    p.add_argument("--ec", default="4+2", help="erasure code K+M (default 4+2)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("key", help="manage S3 access keys")
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

    p = sub.add_parser("put", help="store a file (or - for stdin) as BUCKET/KEY")
    p.add_argument("store")
    p.add_argument("target", metavar="BUCKET/KEY")
    p.add_argument("file", metavar="FILE|-")
    p.set_defaults(func=cmd_put)

    p = sub.add_parser("get", help="read BUCKET/KEY into FILE (or stdout)")
    p.add_argument("store")
    p.add_argument("target", metavar="BUCKET/KEY")
    p.add_argument("file", nargs="?", metavar="FILE|-")
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("ls", help="list buckets, or objects under BUCKET[/PREFIX]")
    p.add_argument("store")
    p.add_argument("target", nargs="?", metavar="BUCKET[/PREFIX]")
    p.add_argument("-r", "--recursive", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("mb", help="make a bucket")
    p.add_argument("store")
    p.add_argument("bucket")
    p.add_argument("--object-lock", action="store_true", help="WORM bucket (versioning on, retention possible)")
    p.set_defaults(func=cmd_mb)

    p = sub.add_parser("scrub", help="verify every object, repair fragments, collect proven garbage")
    p.add_argument("store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scrub)

    p = sub.add_parser("gc", help="collect retired versions' fragments now (old enough, unread, unlocked)")
    p.add_argument("store")
    p.add_argument("--min-age", type=float, default=None, help="seconds (default: [gc] min_age_seconds)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("status", help="drives, free space, objects, degraded objects")
    p.add_argument("store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("replace-drive", help="format an empty replacement disk for a lost drive, then heal")
    p.add_argument("store")
    p.add_argument("drive", help="drive id, as objfs status shows it (e.g. hot-3)")
    p.set_defaults(func=cmd_replace_drive)

    p = sub.add_parser("rebuild-index", help="recreate the index from the drives")
    p.add_argument("store")
    p.add_argument("--force", action="store_true", help="move a non-empty index aside first")
    p.set_defaults(func=cmd_rebuild_index)

    for register in _front_commands():
        register(sub)
    return parser


def _front_commands() -> list[Any]:
    """Commands contributed by the fronts (mount, serve, dicom, migrate, ...)."""
    registers = []
    for module in ("objfs.fuse.cli", "objfs.dicom.cli", "objfs.serve", "objfs.worm_cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        registers.append(mod.register)
    return registers


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except StoreError as exc:
        print(f"objfs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
