"""Rebuild the LMDB index from the drives alone.

What the drives hold, and what each says:

- fragment files: a footer with the blob's layout and the record as it was
  written (for a multipart part: its upload, number, ETag and ``seq``);
- ``<id>.meta`` files: the newest record of an object id after it changed
  without moving data (rename, retention, legal hold, tags, attributes,
  placement after healing), a delete marker, an unfinished upload, or a
  *tombstone* (``deleted``) once the version was retired;
- ``buckets/<name>.meta``: bucket settings, or a bucket tombstone;
- ``renames/<gen>-<id>.rename``: a directory rename (bucket, old and new
  prefix, the object ids it moved, its ``gen``), written before its index
  commit instead of one ``.meta`` per moved object.

The rules, so the result is exactly the live state:

1. per object id (and per bucket) the copy with the newest ``gen`` wins;
   then the directory renames apply in ``gen`` order, each to the ids it
   lists whose winning copy is older than it and still under its old prefix
   (a later change of an object rewrote its metadata with its new name);
2. tombstoned ids are gone; ids whose blobs have no fragment left were
   collected;
3. per key, S3 allows one ``null`` version: only the newest (by ``seq``,
   tombstones included) survives;
4. in a bucket that never had versioning only the newest entry of a key
   counts (a tombstone there means the key is deleted); otherwise every
   remaining version is kept and the newest is current;
5. an upload is restored when its own meta is still its newest record, with
   the newest part per number; parts it no longer uses become garbage;
6. versions sharing blobs (hard links) are counted again, and a blob some
   surviving version names is never garbage, whatever retired name listed it.

Everything found dead by positive evidence (a tombstone, a newer null
version, a completed or aborted upload) is queued for the garbage collector,
which still applies its minimum age and reader leases. Fragment files
nobody claims (no record, no upload) are left alone and counted. The drives
are read in parallel, one thread per drive.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .crypto import KeyService, unseal_record
from .drives import BLOBS, Drive
from .errors import StoreError
from .fragments import read_footer, read_meta
from .gc import summary
from .index import object_key, version_key
from .links import link_key
from .renames import RENAMES

if TYPE_CHECKING:
    from .engine import Store

BUCKETS_DIR = "buckets"


def index_is_empty(store: Store) -> bool:
    with store.index.read() as txn:
        return all(txn.count(db) == 0 for db in ("buckets", "objects", "versions"))


def move_index_aside(root: Path) -> Path | None:
    """Move an existing index directory away (kept, never deleted) before a rebuild."""
    index = root / "index"
    if not index.exists():
        return None
    target = root / f"index.old-{time.strftime('%Y%m%dT%H%M%S')}"
    shutil.move(str(index), str(target))
    return target


class _Found:
    """What one or more drives hold."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.buckets: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, dict[str, Any]] = {}
        self.fragments: Counter[str] = Counter()
        self.parts: dict[str, dict[str, Any]] = {}  # blob id -> part footer owner
        self.owners: dict[str, str] = {}  # blob id -> the object id its footer names
        self.renames: dict[str, dict[str, Any]] = {}  # rename id -> directory rename record

    def offer(self, rec: dict[str, Any]) -> None:
        old = self.records.get(rec["id"])
        if old is None or rec.get("gen", 0) > old.get("gen", 0):
            self.records[rec["id"]] = rec

    def offer_bucket(self, settings: dict[str, Any]) -> None:
        old = self.buckets.get(settings["name"])
        if old is None or settings.get("gen", 0) > old.get("gen", 0):
            self.buckets[settings["name"]] = settings

    def merge(self, other: _Found) -> None:
        for rec in other.records.values():
            self.offer(rec)
        for settings in other.buckets.values():
            self.offer_bucket(settings)
        self.blobs.update(other.blobs)
        self.fragments.update(other.fragments)
        self.parts.update(other.parts)
        self.owners.update(other.owners)
        self.renames.update(other.renames)

    def apply_renames(self) -> int:
        """Move the records each directory rename moved (oldest rename first); returns how many moved."""
        moved = 0
        for rename in sorted(self.renames.values(), key=lambda r: r["gen"]):
            start, to, gen = rename["from"], rename["to"], rename["gen"]
            for object_id in rename["ids"]:
                rec = self.records.get(object_id)
                if rec is None or rec.get("gen", 0) >= gen or rec.get("bucket") != rename["bucket"]:
                    continue
                if not str(rec.get("key", "")).startswith(start):
                    continue
                # The same fields the rename's index commit wrote (objfs/store/renames.py).
                self.records[object_id] = dict(
                    rec, key=to + rec["key"][len(start) :], gen=gen, seq=max(gen, (rec.get("seq") or 0) + 1)
                )
                moved += 1
        return moved


def _scan_drive(drive: Drive, keys: KeyService) -> _Found:
    found = _Found()
    for name in _listdir(drive.path / BUCKETS_DIR):
        if name.endswith(".meta"):
            settings = read_meta(drive.path / BUCKETS_DIR / name)
            if settings and "name" in settings:
                found.offer_bucket(settings)
    for name in _listdir(drive.path / RENAMES):
        if name.endswith(".rename"):
            rename = read_meta(drive.path / RENAMES / name)
            if rename and "rename" in rename:
                found.renames[rename["rename"]] = rename
    for dirpath, _dirs, names in os.walk(drive.path / BLOBS):
        for name in names:
            path = Path(dirpath) / name
            if name.endswith(".meta"):
                rec = read_meta(path)
                if rec and "id" in rec:
                    found.offer(unseal_record(keys, rec))
                continue
            footer = read_footer(path)
            if footer is None:
                continue
            desc = footer["blob"]
            found.blobs[desc["id"]] = desc
            found.fragments[desc["id"]] += 1
            owner = unseal_record(keys, footer.get("owner") or {})
            if "upload" in owner and "part" in owner:
                found.parts[desc["id"]] = owner
            elif "bucket" in owner and "key" in owner and "id" in owner:
                found.offer(dict(owner, parts=owner.get("parts") or [desc]))
                found.owners[desc["id"]] = owner["id"]
            elif "moved" in owner:  # a blob a tier move wrote for a multipart version (its record is in the meta)
                found.owners[desc["id"]] = owner["moved"]
    return found


def rebuild_index(store: Store) -> dict[str, int]:
    """Fill an empty index from the drives; returns counts."""
    if not index_is_empty(store):
        raise StoreError("the index is not empty; move it aside first (objfs rebuild-index --force)")
    drives = [d for d in store.all_drives() if store.drive_readable(d)]
    found = _Found()
    with ThreadPoolExecutor(max_workers=max(1, len(drives))) as pool:
        for part in pool.map(lambda d: _scan_drive(d, store.encryption), drives):
            found.merge(part)
    found.apply_renames()
    plan = _plan(store, found)
    counts = {"buckets": 0, "objects": 0, "versions": 0, "uploads": 0, "garbage": len(plan["garbage"])}
    now = time.time()
    with store.index.write() as txn:
        for name, settings in plan["buckets"].items():
            txn.put("buckets", name.encode(), settings)
            counts["buckets"] += 1
        for (bucket, key), (current, rest) in plan["keys"].items():
            txn.put("objects", object_key(bucket, key), current)
            counts["objects"] += 1
            for indexer in store.indexers:
                if not current.get("delete_marker"):
                    indexer.on_change(txn, None, current)
            for rec in rest:
                txn.put("versions", version_key(bucket, key, rec["seq"]), rec)
                counts["versions"] += 1
        for upload, parts in plan["uploads"]:
            txn.put("uploads", upload["id"].encode(), upload)
            for part in parts:
                txn.put("parts", upload["id"].encode() + b"\0" + part["number"].to_bytes(4, "big"), part)
            counts["uploads"] += 1
        for key, count in plan["links"].items():
            txn.put("settings", key, {"count": count})
        for desc, rec in plan["garbage"]:
            txn.put(
                "gc",
                desc["id"].encode(),
                {"blob": desc, "object": (rec or {}).get("id"), "t": now, "rec": rec, "override": False},
            )
        for rec in plan["degraded"]:
            txn.put(
                "heal",
                rec["id"].encode(),
                {
                    **{k: rec[k] for k in ("bucket", "key", "version")},
                    "reason": "fragments missing at rebuild",
                    "t": store.clock.now(),
                },
            )
    store.mark_index_seen()
    counts["unclaimed_blobs"] = plan["unclaimed"]
    return counts


def _plan(store: Store, found: _Found) -> dict[str, Any]:
    buckets = {}
    for name, settings in found.buckets.items():
        if not settings.get("deleted"):
            buckets[name] = {k: v for k, v in settings.items() if k != "gen"}
    garbage: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    claimed: set[str] = set()
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    uploads: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for rec in found.records.values():
        blobs = [d["id"] for d in rec.get("parts") or []]
        claimed.update(blobs)
        if "upload" in rec or not rec.get("version"):
            continue  # an unfinished upload (below), or the tombstone of an aborted one
        if rec.get("deleted"):
            garbage += [(_desc(found, d), summary(rec)) for d in rec.get("parts") or [] if found.fragments[d["id"]]]
        elif blobs and not any(found.fragments[b] for b in blobs):
            continue  # every fragment collected: it was deleted
        by_key.setdefault((rec["bucket"], rec["key"]), []).append(rec)
    keys: dict[tuple[str, str], tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    degraded = []
    for (bucket, key), entries in by_key.items():
        entries.sort(key=lambda r: r.get("seq") or int((r.get("created") or 0) * 1e9), reverse=True)
        survivors, seen_null = [], False
        for rec in entries:
            if rec.get("version") == "null":
                if seen_null:
                    if not rec.get("deleted"):
                        garbage += [(_desc(found, d), summary(rec)) for d in rec.get("parts") or [] if found.fragments[d["id"]]]
                    continue
                seen_null = True
            survivors.append(rec)
        settings = buckets.get(bucket)
        if settings is None:
            if all(r.get("deleted") for r in survivors):
                continue
            settings = buckets[bucket] = _default_bucket(store, bucket)
        if settings.get("versioning") is None:
            newest, older = survivors[0], survivors[1:]
            for rec in older:
                if not rec.get("deleted"):
                    garbage += [(_desc(found, d), summary(rec)) for d in rec.get("parts") or [] if found.fragments[d["id"]]]
            survivors = [newest]
        live = [r for r in survivors if not r.get("deleted")]
        if not live or survivors[0].get("deleted") and settings.get("versioning") is None:
            continue
        for rec in live:
            rec.pop("written", None)
            if any(found.fragments[d["id"]] < d["k"] + d["m"] for d in rec.get("parts") or []):
                degraded.append(rec)
        keys[(bucket, key)] = (live[0], live[1:])
    for upload_id, rec in found.records.items():
        if "upload" not in rec or rec.get("deleted"):
            continue
        newest: dict[int, tuple[int, str]] = {}
        for blob_id, owner in found.parts.items():
            if owner["upload"] == upload_id and owner["seq"] >= newest.get(owner["part"], (-1, ""))[0]:
                newest[owner["part"]] = (owner["seq"], blob_id)
        parts = []
        for number, (_seq, blob_id) in sorted(newest.items()):
            owner, desc = found.parts[blob_id], found.blobs[blob_id]
            part = {"number": number, "etag": owner["etag"], "size": desc["size"], "blob": desc, "created": owner["created"]}
            if owner.get("checksums"):
                part["checksums"] = owner["checksums"]
            parts.append(part)
            claimed.add(blob_id)
        uploads.append((rec["upload"], parts))
    # Parts of uploads that completed or were aborted, and replaced parts, are garbage by that evidence.
    for blob_id, owner in found.parts.items():
        known = found.records.get(owner["upload"])
        if blob_id not in claimed and known is not None:
            garbage.append((found.blobs[blob_id], None))
            claimed.add(blob_id)
    # A blob whose footer names an object whose newest record lists other blobs was left by a tier
    # move (the version's bytes are elsewhere now): garbage by that record's evidence.
    for blob_id, object_id in found.owners.items():
        if blob_id not in claimed and object_id in found.records:
            garbage.append((found.blobs[blob_id], None))
            claimed.add(blob_id)
    # Hard links (links.py): versions sharing blobs are counted again, and a blob that a
    # retired name listed stays off the garbage while another live version names it.
    shared: Counter[bytes] = Counter()
    for current, rest in keys.values():
        for rec in [current, *rest]:
            key = link_key(rec)
            if key is not None:
                shared[key] += 1
    live = {
        b"links/" + d["id"].encode() for current, rest in keys.values() for r in [current, *rest] for d in r.get("parts") or []
    }
    garbage = [(desc, rec) for desc, rec in garbage if b"links/" + desc["id"].encode() not in live]
    unclaimed = sum(1 for blob_id in found.blobs if blob_id not in claimed)
    return {
        "links": {key: count for key, count in shared.items() if count > 1},
        "buckets": buckets,
        "keys": keys,
        "uploads": uploads,
        "garbage": garbage,
        "degraded": degraded,
        "unclaimed": unclaimed,
    }


def _desc(found: _Found, desc: dict[str, Any]) -> dict[str, Any]:
    return found.blobs.get(desc["id"], desc)


def _default_bucket(store: Store, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "created": store.clock.now(),
        "owner": None,
        "versioning": None,
        "object_lock": False,
        "lock_default": None,
        "tagging": {},
    }


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
