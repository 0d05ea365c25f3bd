"""``objfs mb|put|get|ls|rm``: buckets and objects from the command line.

Guarantee: ``objfs get`` writes only to stdout (``-``) or to a regular file,
which it replaces whole (a temporary file renamed over it) or not at all; it
refuses a directory or a device (``/dev/null``, a disk) before reading
anything, so it can never replace a device node.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
import time
from typing import Any

from objfs.stores import Store

from .common import cli_principal, split_target


def register(subparsers: Any) -> None:
    """Add the object commands to the ``objfs`` parser."""
    p = subparsers.add_parser("put", help="store a file (or - for stdin) as BUCKET/KEY")
    p.add_argument("store")
    p.add_argument("target", metavar="BUCKET/KEY")
    p.add_argument("file", metavar="FILE|-")
    p.set_defaults(func=cmd_put)

    p = subparsers.add_parser("get", help="read BUCKET/KEY into FILE (or stdout)")
    p.add_argument("store")
    p.add_argument("target", metavar="BUCKET/KEY")
    p.add_argument("file", nargs="?", metavar="FILE|-")
    p.set_defaults(func=cmd_get)

    p = subparsers.add_parser("ls", help="list buckets, or objects under BUCKET[/PREFIX]")
    p.add_argument("store")
    p.add_argument("target", nargs="?", metavar="BUCKET[/PREFIX]")
    p.add_argument("-r", "--recursive", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = subparsers.add_parser("mb", help="make a bucket")
    p.add_argument("store")
    p.add_argument("bucket")
    p.add_argument("--object-lock", action="store_true", help="WORM bucket (versioning on, retention possible)")
    p.set_defaults(func=cmd_mb)

    p = subparsers.add_parser("rm", help="delete BUCKET/KEY (a delete marker in versioned buckets) or one version")
    p.add_argument("store")
    p.add_argument("target", metavar="BUCKET/KEY")
    p.add_argument("--version")
    p.add_argument("--bypass-governance", action="store_true")
    p.set_defaults(func=cmd_rm)


def cmd_put(args: argparse.Namespace) -> int:
    bucket, key = split_target(args.target)
    with Store.open(args.store) as store:
        if args.file == "-":
            info = store.put_object(bucket, key, sys.stdin.buffer, principal=cli_principal())
        else:
            with open(args.file, "rb") as f:
                info = store.put_object(bucket, key, f, length=os.fstat(f.fileno()).st_size, principal=cli_principal())
    print(f"{bucket}/{key}\t{info.size}\t{info.etag}")
    return 0


def refuse_output(path: str) -> str | None:
    """Why ``objfs get`` must not write to ``path``, or None when it is a regular file or absent."""
    try:
        st = os.stat(path)  # follows a symlink: a link to /dev/null is refused like /dev/null
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return f"{path} is a directory; give a file name (or - for stdout)"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file; objfs get writes only to a regular file or - (stdout)"
    return None


def cmd_get(args: argparse.Namespace) -> int:
    bucket, key = split_target(args.target)
    to_stdout = args.file in (None, "-")
    if not to_stdout:
        problem = refuse_output(args.file)
        if problem:
            print(f"objfs: {problem}", file=sys.stderr)
            return 2
    with Store.open(args.store) as store, store.open_object(bucket, key, principal=cli_principal()) as reader:
        if to_stdout:
            out = sys.stdout.buffer
            for chunk in reader.iter_range():
                out.write(chunk)
            out.flush()
            return 0
        tmp = args.file + ".objfs-part"
        try:
            f = open(tmp, "wb")
        except OSError as exc:
            print(f"objfs: cannot write {args.file}: {exc.strerror}", file=sys.stderr)
            return 2
        try:
            with f:
                for chunk in reader.iter_range():
                    f.write(chunk)
            os.rename(tmp, args.file)
        except BaseException:
            # A failed read leaves the target as it was and no partial file behind.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        if not args.target:
            for bucket in store.list_buckets():
                print(f"{bucket['name']}/")
            return 0
        bucket, prefix = split_target(args.target)
        marker = ""
        while True:
            page = store.list_objects(bucket, prefix=prefix, delimiter="" if args.recursive else "/", start_after=marker)
            for cp in page.common_prefixes:
                print(f"{'':>12}  {'':19}  {cp}")
            for obj in page.objects:
                print(f"{obj.size:>12}  {_iso(obj.modified)}  {obj.key}")
            if not page.truncated:
                return 0
            marker = page.next_marker or ""


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def cmd_mb(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        store.create_bucket(args.bucket, object_lock=args.object_lock, principal=cli_principal())
    print(f"{args.bucket}/")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    bucket, key = split_target(args.target)
    with Store.open(args.store) as store:
        result = store.delete_object(
            bucket, key, args.version, principal=cli_principal(), bypass_governance=args.bypass_governance
        )
    print(json.dumps(result))
    return 0
