"""``objfs replication set|show|remove|status|resync|verify``: rules, backlog and checks of replication.

Guarantees: ``set`` refuses a bucket without versioning or a remote that is
not defined (as PutBucketReplication does); ``status`` reads only the local
queue (it works with the destination down) and says ``converged`` when
nothing waits; ``resync`` and ``verify`` list both sides (the destination
through the remote's key); ``verify`` exits 1 when the sides differ and
prints each difference. Every change leaves a line in the audit trail.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from objfs.store.remotes import load_remote
from objfs.store.replication import versions_of
from objfs.stores import open_store

from .common import cli_principal, store_command


def register(subparsers: Any) -> None:
    """Add the replication commands to the ``objfs`` parser."""
    p = subparsers.add_parser("replication", help="asynchronous replication to another appliance or S3 system")
    sub = p.add_subparsers(dest="replication_command", required=True)
    s = store_command(sub, "set", "replicate a bucket (versioning must be on)", cmd_set)
    s.add_argument("bucket")
    s.add_argument("--to", required=True, metavar="REMOTE[/BUCKET]", help="remote (objfs remote add) and its bucket")
    s.add_argument("--prefix", default="", help="only keys starting with this")
    s.add_argument("--delete-markers", action="store_true", help="replicate delete markers too")
    s.add_argument("--existing", action="store_true", help="also queue every version already in the bucket")
    s.add_argument("--id", default="", help="rule id (default: the remote's name); a second id adds a rule")
    g = store_command(sub, "show", "the bucket's replication rules", cmd_show, json=True)
    g.add_argument("bucket")
    r = store_command(sub, "remove", "stop replicating a bucket (its queue still drains)", cmd_remove)
    r.add_argument("bucket")
    st = store_command(sub, "status", "backlog, lag, failures and rate", cmd_status, json=True)
    st.add_argument("bucket", nargs="?")
    rs = store_command(sub, "resync", "queue every version the destination lacks", cmd_resync)
    rs.add_argument("bucket")
    v = store_command(sub, "verify", "compare both sides: keys, version ids, checksums", cmd_verify, json=True)
    v.add_argument("bucket")


def cmd_set(args: argparse.Namespace) -> int:
    remote, _, dest = args.to.partition("/")
    with open_store(args.store) as store:
        rule = {
            "id": args.id or remote,
            "remote": remote,
            "bucket": dest or args.bucket,
            "prefix": args.prefix,
            "delete_markers": args.delete_markers,
        }
        current = store.get_replication(args.bucket) or {"rules": []}
        rules = [r for r in current["rules"] if r["id"] != rule["id"]] + [rule]
        store.put_replication(args.bucket, {"rules": rules}, principal=cli_principal())
        queued = store.queue_versions(args.bucket, principal=cli_principal()) if args.existing else 0
    print(
        f"{args.bucket}: replicating to {remote}/{rule['bucket']}"
        + (f"; {queued} existing versions queued" if args.existing else "")
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with open_store(args.store) as store:
        config = store.get_replication(args.bucket)
    rules = (config or {}).get("rules", [])
    if args.json:
        print(json.dumps(rules, indent=2))
        return 0
    if not rules:
        print(f"{args.bucket}: no replication rules")
    for r in rules:
        markers = ", delete markers" if r["delete_markers"] else ""
        print(f"{r['id']}: {r['status']} prefix {r['prefix']!r} -> {r['remote']}/{r['bucket']}{markers}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    with open_store(args.store) as store:
        store.put_replication(args.bucket, None, principal=cli_principal())
    print(f"{args.bucket}: replication rules removed")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with open_store(args.store) as store:
        if args.bucket:
            store.head_bucket(args.bucket)
        status = store.replication_backlog(args.bucket)
    status["converged"] = status["backlog_objects"] == 0
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(
        f"backlog: {status['backlog_objects']} changes, {status['backlog_bytes']} bytes; "
        f"lag {status['lag_seconds']:.1f} s; rate {status['rate_bytes_per_second']:.0f} B/s; "
        f"sent {status['sent']} ({status['sent_bytes']} bytes)"
    )
    for f in status["failures"]:
        print(f"  failing: {f['bucket']}/{f['key']} {f['version']} -> {f['remote']} ({f['attempts']} tries): {f['error']}")
    print("converged" if status["converged"] else "not converged")
    return 0


def _remote_versions(store: Any, rule: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(key, version id) -> {etag, size, marker, latest} of the destination bucket under the rule's prefix."""
    client = load_remote(store.root, rule["remote"]).client()
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=rule["bucket"], Prefix=rule["prefix"]):
        for v in page.get("Versions", []):
            out[(v["Key"], v["VersionId"])] = {
                "etag": v["ETag"].strip('"'),
                "size": v["Size"],
                "marker": False,
                "latest": v["IsLatest"],
            }
        for m in page.get("DeleteMarkers", []):
            out[(m["Key"], m["VersionId"])] = {"etag": "", "size": 0, "marker": True, "latest": m["IsLatest"]}
    return out


def cmd_resync(args: argparse.Namespace) -> int:
    with open_store(args.store) as store:
        rules = (store.get_replication(args.bucket) or {}).get("rules", [])
        remote = {r["id"]: _remote_versions(store, r) for r in rules}

        def lacking(rule: dict[str, Any], record: dict[str, Any]) -> bool:
            return (record["key"], record["version"]) not in remote.get(rule["id"], {})

        queued = store.queue_versions(args.bucket, lacking=lacking, principal=cli_principal(), progress=sys.stderr)
        store.replication_retry_now()
    print(f"{args.bucket}: {queued} versions queued")
    return 0


def verify_bucket(store: Any, bucket: str) -> list[dict[str, Any]]:
    """Every difference between ``bucket`` and each rule's destination (empty: they agree)."""
    settings = store.head_bucket(bucket)
    rules = (settings.get("replication") or {}).get("rules", [])
    records = versions_of(store, bucket)
    differences: list[dict[str, Any]] = []
    for rule in rules:
        remote = _remote_versions(store, rule)
        local: dict[tuple[str, str], dict[str, Any]] = {}
        for rec in records:
            if not rec["key"].startswith(rule["prefix"]):
                continue
            if rec.get("delete_marker") and not rule["delete_markers"] and not rec.get("replica"):
                continue
            local[(rec["key"], rec["version"])] = rec
        for name, rec in sorted(local.items()):
            there = remote.get(name)
            where = {"key": name[0], "version": name[1], "remote": rule["remote"]}
            if there is None:
                differences.append(dict(where, difference="missing on the destination"))
            elif there["marker"] != bool(rec.get("delete_marker")):
                differences.append(dict(where, difference="a delete marker on one side only"))
            elif not there["marker"] and (there["etag"] != rec["etag"] or there["size"] != rec["size"]):
                differences.append(
                    dict(
                        where,
                        difference=f"checksum differs: {rec['etag']}/{rec['size']} here, {there['etag']}/{there['size']} there",
                    )
                )
        for name, there in sorted(remote.items()):
            if name not in local:
                differences.append(
                    {"key": name[0], "version": name[1], "remote": rule["remote"], "difference": "only on the destination"}
                )
        current = _current_versions(store, bucket)
        for name, there in remote.items():
            if there["latest"] and name[0] in current and current[name[0]] != name[1]:
                differences.append(
                    {
                        "key": name[0],
                        "version": name[1],
                        "remote": rule["remote"],
                        "difference": f"current version differs: {current[name[0]]} here",
                    }
                )
    return differences


def _current_versions(store: Any, bucket: str) -> dict[str, str]:
    """Key -> its current version id (a delete marker's too) here."""
    with store.index.read() as txn:
        return {r["key"]: r["version"] for _, r in txn.scan_objects(bucket)}


def cmd_verify(args: argparse.Namespace) -> int:
    started = time.time()
    with open_store(args.store) as store:
        differences = verify_bucket(store, args.bucket)
    if args.json:
        print(json.dumps({"differences": differences, "same": not differences}, indent=2))
    else:
        for d in differences:
            print(f"{d['key']} {d['version']} ({d['remote']}): {d['difference']}")
        print(
            f"{args.bucket}: {'the same on both sides' if not differences else f'{len(differences)} differences'}"
            f" ({time.time() - started:.1f} s)"
        )
    return 1 if differences else 0
