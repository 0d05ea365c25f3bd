"""Rebuild the LMDB index from the drives alone.

Every fragment file's footer carries its blob's layout and (for single-part
objects) the object's record as written; ``<id>.meta`` files carry newer
records (renames, retention changes, multipart completions, delete markers);
``buckets/<name>.meta`` files carry bucket settings. The newest record of
each object id wins (``gen``), then per key the newest version (``seq``)
becomes current; in buckets that never had versioning only that one is kept.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .drives import BLOBS
from .errors import StoreError
from .fragments import read_footer, read_meta
from .index import object_key, version_key

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


def rebuild_index(store: Store) -> dict[str, int]:
    """Fill an empty index from the drives; returns counts."""
    if not index_is_empty(store):
        raise StoreError("the index is not empty; move it aside first (objfs rebuild-index --force)")
    records: dict[str, dict[str, Any]] = {}
    blobs: dict[str, dict[str, Any]] = {}
    buckets: dict[str, dict[str, Any]] = {}
    for drive in store.all_drives():
        if not store.drive_healthy(drive):
            continue
        for name in _listdir(drive.path / BUCKETS_DIR):
            if name.endswith(".meta"):
                settings = read_meta(drive.path / BUCKETS_DIR / name)
                if settings and settings.get("gen", 0) >= buckets.get(settings["name"], {}).get("gen", -1):
                    buckets[settings["name"]] = settings
        for dirpath, _dirs, names in os.walk(drive.path / BLOBS):
            for name in names:
                path = Path(dirpath) / name
                if name.endswith(".meta"):
                    rec = read_meta(path)
                    if rec:
                        _offer(records, rec)
                    continue
                footer = read_footer(path)
                if footer is None:
                    continue
                desc = footer["blob"]
                blobs[desc["id"]] = desc
                owner = footer.get("owner") or {}
                if "bucket" in owner and "key" in owner:
                    rec = dict(owner, parts=[desc])
                    _offer(records, rec)
    for rec in records.values():
        # Single-part records from footers point at their blob; prefer the fullest descriptor seen.
        rec["parts"] = [blobs.get(d["id"], d) for d in rec.get("parts", [])]
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records.values():
        if rec.get("parts") and any(d["id"] not in blobs for d in rec["parts"]):
            continue  # its fragments are gone: it was deleted
        by_key.setdefault((rec["bucket"], rec["key"]), []).append(rec)
    counts = {"buckets": 0, "objects": 0, "versions": 0}
    with store.index.write() as txn:
        for name in sorted(set(buckets) | {b for b, _ in by_key}):
            settings = buckets.get(name) or {
                "name": name,
                "created": store.clock.now(),
                "owner": None,
                "versioning": None,
                "object_lock": False,
                "lock_default": None,
                "tagging": {},
            }
            settings.pop("gen", None)
            txn.put("buckets", name.encode(), settings)
            counts["buckets"] += 1
        for (bucket, key), recs in by_key.items():
            recs.sort(key=lambda r: r.get("seq") or int(r["created"] * 1e9), reverse=True)
            versioned = (buckets.get(bucket) or {}).get("versioning") is not None
            current, rest = recs[0], recs[1:] if versioned else []
            txn.put("objects", object_key(bucket, key), current)
            counts["objects"] += 1
            for indexer in store.indexers:
                if not current.get("delete_marker"):
                    indexer.on_change(txn, None, current)
            for rec in rest:
                txn.put("versions", version_key(bucket, key, rec.get("seq") or int(rec["created"] * 1e9)), rec)
                counts["versions"] += 1
    return counts


def _offer(records: dict[str, dict[str, Any]], rec: dict[str, Any]) -> None:
    old = records.get(rec["id"])
    if old is None or rec.get("gen", 0) > old.get("gen", 0):
        records[rec["id"]] = rec


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
