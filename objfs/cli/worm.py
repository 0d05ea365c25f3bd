"""``objfs retention`` and ``objfs audit``: WORM and the audit trail from the CLI.

The CLI acts as ``cli:<user>``, the ``cli`` system principal (every right).
It obeys the same WORM rules as every other front: COMPLIANCE cannot be
shortened or bypassed by anyone; the local administrator may bypass
GOVERNANCE (shorten, remove, or harden it to COMPLIANCE) only by asking for
it explicitly with ``--bypass-governance`` (``objfs retention`` and ``objfs rm``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from objfs.store import RETENTION_MODES
from objfs.store.locks import utc_text
from objfs.stores import Store

from .common import cli_principal, parse_time, split_target


def register(subparsers: Any) -> None:
    """Add the ``retention`` and ``audit`` commands to the ``objfs`` parser."""
    p = subparsers.add_parser("retention", help="show or change WORM retention and legal holds")
    p.add_argument("action", choices=["show", "set", "extend", "legal-hold"])
    p.add_argument("store")
    p.add_argument("target", metavar="BUCKET/KEY")
    p.add_argument("state", nargs="?", choices=["on", "off"], help="for legal-hold")
    p.add_argument("--version")
    p.add_argument("--mode", choices=RETENTION_MODES)
    p.add_argument("--until", help="retain until DATE (YYYY-MM-DD[THH:MM:SSZ])")
    p.add_argument("--days", type=int, help="retain for N days from now")
    p.add_argument("--bypass-governance", action="store_true", help="shorten, remove or harden GOVERNANCE retention")
    p.set_defaults(func=cmd_retention)

    p = subparsers.add_parser("audit", help="verify, show or rotate the audit trail")
    p.add_argument("action", choices=["verify", "show", "rotate"], help="rotate: seal the live log into a segment now")
    p.add_argument("store")
    p.add_argument("--bucket")
    p.add_argument("--key", help="a key, or a prefix ending in '/' (a study)")
    p.add_argument("--since", help="YYYY-MM-DD[THH:MM:SSZ]")
    p.add_argument("--who")
    p.add_argument("--reads-only", action="store_true", help="only reads: who opened it")
    p.set_defaults(func=cmd_audit)


def _until(args: argparse.Namespace, store: Store) -> float:
    if args.until:
        return parse_time(args.until)
    if args.days:
        return store.clock.now() + args.days * 86400
    raise SystemExit("objfs: give --until DATE or --days N")


def _show(info: Any) -> dict[str, Any]:
    retention = info.retention
    return {
        "bucket": info.bucket,
        "key": info.key,
        "version_id": info.version_id,
        "retention": None if not retention else {"mode": retention["mode"], "until": utc_text(retention["until"])},
        "legal_hold": info.legal_hold,
    }


def cmd_retention(args: argparse.Namespace) -> int:
    bucket, key = split_target(args.target)
    principal = cli_principal()
    with Store.open(args.store) as store:
        if args.action == "show":
            info = store.head_object(bucket, key, args.version)
        elif args.action == "set":
            info = store.set_retention(
                bucket,
                key,
                args.mode,
                _until(args, store),
                version_id=args.version,
                principal=principal,
                bypass_governance=args.bypass_governance,
            )
        elif args.action == "extend":
            current = store.head_object(bucket, key, args.version).retention
            if not current:
                raise SystemExit("objfs: the version has no retention to extend; use 'set'")
            until = _until(args, store)
            if until < current["until"]:
                raise SystemExit("objfs: 'extend' only moves the date later")
            info = store.set_retention(bucket, key, current["mode"], until, version_id=args.version, principal=principal)
        else:
            info = store.set_legal_hold(bucket, key, args.state == "on", version_id=args.version, principal=principal)
    print(json.dumps(_show(info)))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        if args.action == "verify":
            problems, head = store.audit.verify()
            for problem in problems:
                print(f"TAMPERED: {problem}")
            print(json.dumps({"ok": not problems, "lines": head["lines"], "head_seq": head["seq"], "head_hash": head["hash"]}))
            return 1 if problems else 0
        if args.action == "rotate":
            segment = store.audit.rotate(store.clock.now())
            print(json.dumps({"sealed": str(segment) if segment else None}))
            return 0
        since = parse_time(args.since) if args.since else None
        for entry in store.audit.show(bucket=args.bucket, key=args.key, since=since, who=args.who):
            if args.action == "show" and args.reads_only and entry.get("action") != "read":
                continue
            print(json.dumps(entry, sort_keys=True))
    return 0
