"""Rebuild the LMDB index from the drives alone.

What the drives hold, and what each says:

- fragment files: a footer with the blob's layout and the record as it was
  written (for a multipart part: its upload, number, ETag and ``seq``);
- volume entries (``volumes/<id>.vol``, see :mod:`.volumes`): a small
  blob's fragment packed with others, its payload the same image as a
  fragment file (footer included); where it was found becomes the
  descriptor's ``vols`` (one ``[volume id, offset, length]`` per fragment
  index, None for a file), which no footer carries;
- ``<id>.meta`` files: the newest record of an object id after it changed
  without moving data (rename, retention, legal hold, tags, attributes,
  placement after healing), a delete marker, an unfinished upload, or a
  *tombstone* (``deleted``) once the version was retired;
- record volumes (``volumes/<id>.rec``): entries holding the same images as
  ``.meta`` files, packed (a format-3 store writes its tombstones so,
  :mod:`.gc`), read as if they were ``.meta`` files of their id;
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
are listed in parallel (a thread per drive, merged in blob id order), one
footer is read per blob, and memory stays bounded: see :func:`rebuild_index`.

Volume entries go through the same rules as fragment files: each drive's
volumes are scanned first (in parallel, into the spill), then read back in
blob id order beside the fragment files, so a blob's files and entries on
every drive form one group. An entry whose footer is not whole (a torn
tail) is not a fragment; when one fragment index is found twice, a file
wins (healing rewrites packed fragments as files), else a copy whose
footer is whole.
"""

from __future__ import annotations

import heapq
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from .crypto import KeyService, unseal_record
from .drives import BLOBS
from .errors import StoreError
from .fragments import parse_meta, read_footer, read_meta
from .gc import summary
from .index import object_key, pack, unpack, version_key
from .links import link_key
from .progress import Progress
from .renames import RENAMES
from .spill import sorted_fragments
from .volumes import RECORD_SUFFIX, list_volumes, read_record, scan_entries, volume_path

if TYPE_CHECKING:
    from .engine import Store

BUCKETS_DIR = "buckets"
T = TypeVar("T")
log = logging.getLogger(__name__)


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


def rebuild_in_progress(store: Store) -> bool:
    """Whether the index is one a killed ``rebuild-index`` left half-filled (a rerun continues it)."""
    with store.index.read() as txn:
        return txn.get("settings", _PROGRESS) is not None


def rebuild_index(store: Store, *, progress: TextIO | None = None, batch: int = 1000) -> dict[str, int]:
    """Fill an empty index from the drives; returns counts.

    Memory stays bounded whatever the store's size: what the drives hold
    goes to a temporary SQLite database under ``run/rebuild`` (records by
    id, newest ``gen`` winning; blobs with their fragment count), read back
    key by key in order. One footer is read per blob (the next copy only
    when it is missing or damaged), the drives are listed in parallel, and
    the index is written ``batch`` records per transaction with its
    position, so a killed rebuild continues when run again.
    """
    resuming = rebuild_in_progress(store)
    if not resuming and not index_is_empty(store):
        raise StoreError("the index is not empty; move it aside first (objfs rebuild-index --force)")
    spill = _Spill(store.run_dir / "rebuild", store.index.index_id)
    if resuming and not spill.done("scanned"):
        spill.close()
        raise StoreError("the rebuild's scan of the drives is gone; start over with `objfs rebuild-index --force`")
    try:
        if not spill.done("scanned"):
            _scan(store, spill, progress)
            spill.mark("scanned")
        counts = _write_index(store, spill, progress, batch)
    finally:
        spill.close()
    store.mark_index_seen()
    spill.remove()
    return counts


_PROGRESS = b"rebuild-progress"


_SPILL_NAME = "spill.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS rec (id TEXT PRIMARY KEY, gen INTEGER, kind TEXT, bucket TEXT, key TEXT, body BLOB);
CREATE INDEX IF NOT EXISTS rec_key ON rec (kind, bucket, key);
CREATE TABLE IF NOT EXISTS bucket (name TEXT PRIMARY KEY, gen INTEGER, body BLOB);
CREATE TABLE IF NOT EXISTS blob (id TEXT PRIMARY KEY, frags INTEGER, desc BLOB);
CREATE TABLE IF NOT EXISTS part (blob TEXT PRIMARY KEY, upload TEXT, body BLOB);
CREATE INDEX IF NOT EXISTS part_upload ON part (upload);
CREATE TABLE IF NOT EXISTS owner (blob TEXT PRIMARY KEY, object TEXT);
CREATE TABLE IF NOT EXISTS claimed (blob TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS name (blob TEXT, rec TEXT, PRIMARY KEY (blob, rec));
CREATE TABLE IF NOT EXISTS ventry (blob TEXT, idx INTEGER, drive TEXT, vol TEXT, off INTEGER, len INTEGER,
  PRIMARY KEY (blob, idx, drive, vol, off)) WITHOUT ROWID;
"""


class _Spill:
    """What the drives hold, in SQLite on disk (bounded memory; survives a kill)."""

    def __init__(self, directory: Path, index_id: str) -> None:
        self.directory = directory
        if directory.exists() and _spill_index(directory / _SPILL_NAME) != index_id:
            shutil.rmtree(directory)  # left by a rebuild of an index since moved aside: start over
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / _SPILL_NAME
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-65536")  # 64 MiB of pages at most
        self.db.execute("PRAGMA temp_store=FILE")
        self.db.executescript(_SCHEMA)
        self.put("index_id", index_id)

    def get(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def put(self, name: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (name, value))

    def done(self, name: str) -> bool:
        return self.get(name) == "done"

    def mark(self, name: str) -> None:
        self.put(name, "done")

    def offer(self, rec: dict[str, Any]) -> None:
        if "upload" in rec:
            kind, bucket, key = "u", None, None
        elif rec.get("version") and "bucket" in rec and "key" in rec:
            kind, bucket, key = "v", rec["bucket"], rec["key"]
        else:
            kind, bucket, key = "x", None, None  # the tombstone of an aborted upload
        self.db.execute(
            "INSERT INTO rec VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "gen = excluded.gen, kind = excluded.kind, bucket = excluded.bucket, key = excluded.key, body = excluded.body "
            "WHERE excluded.gen > rec.gen",
            (rec["id"], rec.get("gen", 0), kind, bucket, key, pack(rec)),
        )

    def offer_bucket(self, settings: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO bucket VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET gen = excluded.gen, body = excluded.body "
            "WHERE excluded.gen > bucket.gen",
            (settings["name"], settings.get("gen", 0), pack(settings)),
        )

    def offer_blob(self, desc: dict[str, Any], fragments: int) -> None:
        self.db.execute(
            "INSERT INTO blob VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET frags = max(frags, excluded.frags), "
            "desc = CASE WHEN excluded.frags >= frags THEN excluded.desc ELSE desc END",
            (desc["id"], fragments, pack(desc)),
        )

    def blobs(self, ids: list[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        """Fragment count and footer descriptor of each of ``ids`` the drives hold."""
        out = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for blob_id, frags, desc in self.db.execute(f"SELECT id, frags, desc FROM blob WHERE id IN ({marks})", chunk):
                out[blob_id] = (frags, unpack(desc))
        return out

    def apply_renames(self, renames: list[dict[str, Any]]) -> None:
        """Move the records each directory rename moved, oldest rename first (rule 1; idempotent)."""
        self.db.execute("BEGIN")
        for rename in sorted(renames, key=lambda r: r["gen"]):
            start, to, gen = rename["from"], rename["to"], rename["gen"]
            for object_id in rename["ids"]:
                row = self.db.execute("SELECT gen, body FROM rec WHERE id = ?", (object_id,)).fetchone()
                if row is None or row[0] >= gen:
                    continue
                rec = unpack(row[1])
                if rec.get("bucket") != rename["bucket"] or not str(rec.get("key", "")).startswith(start):
                    continue
                # The same fields the rename's index commit wrote (objfs/store/renames.py).
                rec = dict(rec, key=to + rec["key"][len(start) :], gen=gen, seq=max(gen, (rec.get("seq") or 0) + 1))
                self.db.execute("UPDATE rec SET gen = ?, key = ?, body = ? WHERE id = ?", (gen, rec["key"], pack(rec), object_id))
        self.db.execute("COMMIT")

    def shared_elsewhere(self, rec: dict[str, Any]) -> bool:
        """Whether another version not retired names ``rec``'s blobs (a hard link, rule 6)."""
        parts = rec.get("parts") or []
        if not parts:
            return False
        first = parts[0]["id"]
        for (body,) in self.db.execute(
            "SELECT rec.body FROM name JOIN rec ON rec.id = name.rec WHERE name.blob = ? AND name.rec != ?",
            (first, rec["id"]),
        ):
            other = unpack(body)
            if not other.get("deleted") and (other.get("parts") or [{}])[0].get("id") == first:
                return True
        return False

    def claim(self, ids: list[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO claimed VALUES (?)", [(i,) for i in ids])

    def close(self) -> None:
        self.db.close()

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _spill_index(path: Path) -> str | None:
    """The index id a spill was made for, or None."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM state WHERE name = 'index_id'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return None if row is None else row[0]


def _prefetched(items: Iterator[T], depth: int = 4096) -> Iterator[T]:
    """``items`` produced by a thread of its own (a drive's listing runs beside the others')."""
    queue: Queue = Queue(depth)
    end = object()

    def produce() -> None:
        try:
            for item in items:
                queue.put(item)
        finally:
            queue.put(end)

    threading.Thread(target=produce, daemon=True).start()
    while (item := queue.get()) is not end:
        yield item


def _scan(store: Store, spill: _Spill, progress: TextIO | None) -> None:
    """Fill the spill from every readable drive, one fan-out directory (a checkpoint) at a time."""
    drives = [d for d in store.all_drives() if store.drive_readable(d)]
    keys = store.encryption
    spill.db.execute("BEGIN")
    for drive in drives:
        for name in _listdir(drive.path / BUCKETS_DIR):
            if name.endswith(".meta"):
                settings = read_meta(drive.path / BUCKETS_DIR / name)
                if settings and "name" in settings:
                    spill.offer_bucket(settings)
    spill.db.execute("COMMIT")
    renames: dict[str, dict[str, Any]] = {}
    for drive in drives:
        for name in _listdir(drive.path / RENAMES):
            if name.endswith(".rename"):
                rename = read_meta(drive.path / RENAMES / name)
                if rename and "rename" in rename:
                    renames[rename["rename"]] = rename
    if not spill.done("volumes"):
        _scan_volumes(spill, drives, progress)
        spill.mark("volumes")
    after = spill.get("scanned_after") or ""
    streams = [
        _prefetched((top, leaf.name, name, leaf) for top, name, leaf in sorted_fragments(d.path / BLOBS, after=after))
        for d in drives
    ]
    streams.append(_prefetched(_packed_entries(spill.directory / _SPILL_NAME, after, {d.drive_id: d.path for d in drives})))
    merged = heapq.merge(*streams, key=lambda t: (t[0], t[1], t[2]))
    bar = Progress.to(progress, "rebuild-index: fan-out directories scanned", 256, done=int(after or "-1", 16) + 1)

    def groups() -> Iterator[tuple[str, str, list[Path | _Packed]]]:
        current: tuple[str, str] | None = None
        paths: list[Path | _Packed] = []
        for top, _sub, name, leaf in merged:
            if isinstance(leaf, _Packed):
                object_id, item = leaf.blob_id, leaf
            else:
                object_id = name[:-5] if name.endswith(".meta") else name.partition(".f")[0]
                item = leaf / name
            if (top, object_id) != current:
                if current is not None:
                    yield current[0], current[1], paths
                current, paths = (top, object_id), []
            paths.append(item)
        if current is not None:
            yield current[0], current[1], paths

    with ThreadPoolExecutor(max_workers=max(2, len(drives))) as pool:
        current_top = None
        window: list[tuple[str, str, list[Path | _Packed]]] = []

        def drain() -> None:
            spill.db.execute("BEGIN")
            for found in pool.map(lambda g: _read_group(g[1], g[2], keys), window):
                _offer(spill, found)
            if current_top is not None:
                spill.put("scanned_after", current_top)
            spill.db.execute("COMMIT")
            window.clear()

        for group in groups():
            if group[0] != current_top and current_top is not None:
                drain()  # every file of the previous fan-out directory is in: checkpoint it
                bar.advance()
            current_top = group[0]
            window.append(group)
            if len(window) >= 2048:
                held, current_top = current_top, None  # a partial directory is no checkpoint
                drain()
                current_top = held
        drain()
    spill.apply_renames(list(renames.values()))
    bar.close()


def _read_group(object_id: str, paths: list[Path | _Packed], keys: KeyService) -> dict[str, Any]:
    """What the files and volume entries of one id hold: its metas, and the footer of one good fragment
    (of as many as exist); a packed blob's descriptor gets its ``vols``."""
    out: dict[str, Any] = {"metas": [], "footer": None, "fragments": 0}
    indexes = set()
    packed: dict[int, list[_Packed]] = {}
    for path in paths:
        if isinstance(path, _Packed):
            if path.index == RECORD_INDEX:
                rec = path.record()
                if rec and "id" in rec:
                    out["metas"].append(unseal_record(keys, rec))
                continue
            packed.setdefault(path.index, []).append(path)
            continue
        if path.name.endswith(".meta"):
            rec = read_meta(path)
            if rec and "id" in rec:
                out["metas"].append(unseal_record(keys, rec))
            continue
        indexes.add(path.name.partition(".f")[2])
        if out["footer"] is None:
            footer = read_footer(path)
            if footer is not None and footer.get("blob", {}).get("id") == object_id:
                out["footer"] = footer
    if packed:
        indexes |= _place_packed(object_id, packed, indexes, out)
    out["fragments"] = len(indexes)
    if out["footer"] is not None:
        out["footer"]["owner"] = unseal_record(keys, out["footer"].get("owner") or {})
    return out


#: The ``ventry`` index of a record entry (a packed ``.meta`` image) rather than a fragment.
RECORD_INDEX = -1


@dataclass(frozen=True)
class _Packed:
    """A fragment found as a volume entry on a drive."""

    blob_id: str
    index: int
    drive_id: str
    drive: Path
    volume_id: str
    offset: int
    length: int

    def record(self) -> dict[str, Any] | None:
        """A record entry's record (a packed ``.meta`` image), or None when it is torn or damaged."""
        try:
            path = volume_path(self.drive, self.volume_id, RECORD_SUFFIX)
            return parse_meta(read_record(path, self.offset, self.length))
        except OSError:
            return None

    def footer(self) -> dict[str, Any] | None:
        """The entry's footer if it is whole and names this blob and index (else it is torn or stray)."""
        footer = read_footer(volume_path(self.drive, self.volume_id), self.offset, self.length)
        if footer is None or footer.get("blob", {}).get("id") != self.blob_id or footer.get("index", self.index) != self.index:
            return None
        return footer


def _scan_volumes(spill: _Spill, drives: list, progress: TextIO | None) -> None:
    """Every entry of every drive's volumes into the spill's ``ventry`` table, the drives read in parallel.

    Only the entries' locations are kept (on disk); each volume is marked
    done once all its entries are in, and inserting is idempotent, so a
    rebuild killed half-way through a volume scans just that one again.
    """
    todo = [(d.drive_id, [p for p in _all_volumes(d.path) if not spill.done(f"volume:{d.drive_id}:{p.stem}")]) for d in drives]
    bar = Progress.to(progress, "rebuild-index: volumes scanned", sum(len(paths) for _, paths in todo))
    queue: Queue = Queue(8192)
    end = object()

    def produce(drive_id: str, paths: list[Path]) -> None:
        try:
            for path in paths:
                try:
                    for is_record, entry in scan_entries(path):
                        index = RECORD_INDEX if is_record else entry.index
                        queue.put((entry.blob_id, index, drive_id, path.stem, entry.offset, entry.length))
                except OSError as exc:  # an unreadable volume: its blobs are missing fragments (healed later)
                    log.warning("rebuild-index: cannot read volume %s: %s", path, exc)
                    continue
                queue.put((drive_id, path.stem))
        finally:
            queue.put(end)

    for drive_id, paths in todo:
        threading.Thread(target=produce, args=(drive_id, paths), daemon=True).start()
    running, rows = len(todo), []

    def flush() -> None:
        spill.db.executemany("INSERT OR IGNORE INTO ventry VALUES (?, ?, ?, ?, ?, ?)", rows)
        rows.clear()

    spill.db.execute("BEGIN")
    while running:
        item = queue.get()
        if item is end:
            running -= 1
        elif len(item) == 2:  # a volume read to its end: checkpoint it
            flush()
            spill.mark(f"volume:{item[0]}:{item[1]}")
            spill.db.execute("COMMIT")
            spill.db.execute("BEGIN")
            bar.advance()
        else:
            rows.append(item)
            if len(rows) >= 10_000:
                flush()
    flush()
    spill.db.execute("COMMIT")
    bar.close()


def _all_volumes(drive: Path) -> list[Path]:
    """A drive's data volumes and record volumes (tombstones)."""
    return list_volumes(drive) + list_volumes(drive, RECORD_SUFFIX)


def _packed_entries(path: Path, after: str, drives: dict[str, Path]) -> Iterator[tuple[str, str, str, _Packed]]:
    """The scanned volume entries in blob id order, shaped like :func:`.spill.sorted_fragments`' files
    (fan-out directories after ``after`` only), a page at a time from a connection of their own."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    last: tuple = (after + "~" if after else "", -1, "", "", -1)  # "~" sorts after every hex digit
    try:
        while rows := db.execute(
            "SELECT blob, idx, drive, vol, off, len FROM ventry WHERE (blob, idx, drive, vol, off) > (?, ?, ?, ?, ?) "
            "ORDER BY blob, idx, drive, vol, off LIMIT 4096",
            last,
        ).fetchall():
            for blob_id, index, drive_id, volume_id, offset, length in rows:
                if drive_id in drives:
                    packed = _Packed(blob_id, index, drive_id, drives[drive_id], volume_id, offset, length)
                    # Names in the same order as the rows: a record (".r") before the fragments (".v000", ...).
                    name = f"{blob_id}.r" if index == RECORD_INDEX else f"{blob_id}.v{index:03d}"
                    yield blob_id[:2], blob_id[2:4], name, packed
            last = rows[-1][:5]
    finally:
        db.close()


def _place_packed(object_id: str, packed: dict[int, list[_Packed]], files: set[str], out: dict[str, Any]) -> set[str]:
    """The fragment indexes the volume entries hold; sets the footer (if no file gave one) and ``vols``.

    One footer is read per blob, as for files; more only where an index
    was found twice (the first copy with a whole footer wins, one on the
    drive the descriptor names first) or an entry read proved torn.
    """
    whole: dict[_Packed, bool] = {}
    if out["footer"] is None:
        for index in sorted(packed):
            for entry in packed[index]:
                footer = entry.footer()
                whole[entry] = footer is not None
                if footer is not None:
                    out["footer"] = footer
                    break
            if out["footer"] is not None:
                break
    if out["footer"] is None:
        return set()  # nothing whole of this blob in any volume
    desc = out["footer"]["blob"]
    drives = desc.get("drives") or []
    placed: dict[int, _Packed] = {}
    for index, entries in packed.items():
        if str(index) in files or index >= len(drives):
            continue  # a fragment file of the same index (healing wrote it) wins; an index past k+m is stray
        candidates = sorted((e for e in entries if whole.get(e, True)), key=lambda e: drives[index] != e.drive_id)
        if len(candidates) > 1:
            best = next((e for e in candidates if whole.get(e) or e.footer() is not None), None)
            candidates = [best] if best is not None else []
        if candidates:
            placed[index] = candidates[0]
    if placed:
        desc["vols"] = [
            [placed[i].volume_id, placed[i].offset, placed[i].length] if i in placed else None for i in range(len(drives))
        ]
    return {str(i) for i in placed}


def _place(desc: dict[str, Any], found: dict[str, Any]) -> None:
    """Give a record's blob descriptor the fragment locations the scan found (volume entries or files)."""
    if found.get("vols"):
        desc["vols"] = found["vols"]
    else:
        desc.pop("vols", None)


def _offer(spill: _Spill, found: dict[str, Any]) -> None:
    for rec in found["metas"]:
        spill.offer(rec)
    footer = found["footer"]
    if footer is None:
        return
    desc, owner = footer["blob"], footer["owner"]
    spill.offer_blob(desc, found["fragments"])
    if "upload" in owner and "part" in owner:
        spill.db.execute("INSERT OR REPLACE INTO part VALUES (?, ?, ?)", (desc["id"], owner["upload"], pack(owner)))
    elif "bucket" in owner and "key" in owner and "id" in owner:
        spill.offer(dict(owner, parts=owner.get("parts") or [desc]))
        spill.db.execute("INSERT OR REPLACE INTO owner VALUES (?, ?)", (desc["id"], owner["id"]))
    elif "moved" in owner:  # a blob a tier move wrote for a multipart version (its record is in the meta)
        spill.db.execute("INSERT OR REPLACE INTO owner VALUES (?, ?)", (desc["id"], owner["moved"]))


class _Writer:
    """Index writes in batches, each committed with the rebuild's position (so a rerun skips them)."""

    def __init__(self, store: Store, batch: int) -> None:
        self.store = store
        self.batch = batch
        self.ops: list[tuple[str, bytes, Any, dict[str, Any] | None]] = []
        self.now = time.time()

    def put(self, db: str, key: bytes, value: Any, *, indexed: dict[str, Any] | None = None) -> None:
        self.ops.append((db, key, value, indexed))

    def garbage(self, desc: dict[str, Any], rec: dict[str, Any] | None) -> None:
        self.put(
            "gc",
            desc["id"].encode(),
            {"blob": desc, "object": (rec or {}).get("id"), "t": self.now, "rec": rec, "override": False},
        )

    def full(self) -> bool:
        return len(self.ops) >= self.batch

    def commit(self, position: dict[str, Any] | None) -> None:
        """Write what is queued; ``position`` is where a rerun starts (None: the rebuild is complete)."""
        with self.store.index.write() as txn:
            for db, key, value, indexed in self.ops:
                txn.put(db, key, value)
                if indexed is not None:
                    for indexer in self.store.indexers:
                        indexer.on_change(txn, None, indexed)
            if position is None:
                txn.delete("settings", _PROGRESS)
            else:
                txn.put("settings", _PROGRESS, position)
        self.ops = []


def _write_index(store: Store, spill: _Spill, progress: TextIO | None, batch: int) -> dict[str, int]:
    with store.index.read() as txn:
        position = txn.get("settings", _PROGRESS) or {"phase": "claim", "counts": {}}
    counts: dict[str, int] = dict(
        {"buckets": 0, "objects": 0, "versions": 0, "uploads": 0, "garbage": 0}, **position.get("counts", {})
    )
    out = _Writer(store, batch)
    buckets: dict[str, dict[str, Any]] = {}
    for (raw,) in spill.db.execute("SELECT body FROM bucket"):
        settings = unpack(raw)
        if not settings.get("deleted"):
            buckets[settings["name"]] = {k: v for k, v in settings.items() if k != "gen"}
    with store.index.read() as txn:
        for name, settings in txn.scan("buckets"):  # defaults a killed run made
            buckets.setdefault(name.decode(), settings)

    def checkpoint(phase: str, after: Any = None) -> None:
        out.commit({"phase": phase, "after": after, "counts": counts})

    if position["phase"] == "claim":
        # Every blob a record lists is claimed (rebuilt, garbage or collected).
        last = ""
        while True:
            rows = spill.db.execute("SELECT id, body FROM rec WHERE id > ? ORDER BY id LIMIT 1000", (last,)).fetchall()
            if not rows:
                break
            spill.db.execute("BEGIN")
            bodies = [(rec_id, unpack(body)) for rec_id, body in rows]
            spill.claim([d["id"] for _, rec in bodies for d in rec.get("parts") or []])
            spill.db.executemany(
                "INSERT OR IGNORE INTO name VALUES (?, ?)",
                [(rec["parts"][0]["id"], rec_id) for rec_id, rec in bodies if rec.get("parts") and not rec.get("deleted")],
            )
            spill.db.execute("COMMIT")
            last = rows[-1][0]
        for name, settings in buckets.items():
            out.put("buckets", name.encode(), settings)
        counts["buckets"] = len(buckets)
        position = {"phase": "keys", "after": None}
        checkpoint("keys")
    if position["phase"] == "keys":
        _write_keys(store, spill, out, buckets, counts, position.get("after"), checkpoint, progress)
        position = {"phase": "uploads", "after": None}
    if position["phase"] == "uploads":
        _write_uploads(spill, out, counts, position.get("after") or "", checkpoint)
    # Parts of uploads that completed or were aborted, and replaced parts, are garbage by that evidence.
    _garbage_rows(
        spill,
        out,
        counts,
        "SELECT part.blob, blob.desc FROM part JOIN blob ON blob.id = part.blob WHERE part.blob > ? "
        "AND part.blob NOT IN (SELECT blob FROM claimed) AND part.upload IN (SELECT id FROM rec) ORDER BY part.blob LIMIT 1000",
        checkpoint,
    )
    # A blob whose footer names an object whose newest record lists other blobs was left by a tier
    # move (the version's bytes are elsewhere now): garbage by that record's evidence.
    _garbage_rows(
        spill,
        out,
        counts,
        "SELECT owner.blob, blob.desc FROM owner JOIN blob ON blob.id = owner.blob WHERE owner.blob > ? "
        "AND owner.blob NOT IN (SELECT blob FROM claimed) AND owner.object IN (SELECT id FROM rec) ORDER BY owner.blob LIMIT 1000",
        checkpoint,
    )
    _write_link_counts(store, spill, out)
    counts["unclaimed_blobs"] = spill.db.execute(
        "SELECT count(*) FROM blob WHERE id NOT IN (SELECT blob FROM claimed)"
    ).fetchone()[0]
    out.commit(None)
    return counts


def _write_link_counts(store: Store, spill: _Spill, out: _Writer) -> None:
    """Count again the versions sharing blobs (hard links, rule 6) among those the index now holds."""
    shared = spill.db.execute("SELECT blob FROM name GROUP BY blob HAVING count(*) > 1").fetchall()
    for (blob_id,) in shared:
        live = 0
        for (body,) in spill.db.execute(
            "SELECT rec.body FROM name JOIN rec ON rec.id = name.rec WHERE name.blob = ?", (blob_id,)
        ):
            rec = unpack(body)
            with store.index.read() as txn:
                current = txn.get("objects", object_key(rec["bucket"], rec["key"]))
                older = txn.get("versions", version_key(rec["bucket"], rec["key"], rec.get("seq") or 0))
            if any(r is not None and r.get("id") == rec["id"] for r in (current, older)):
                live += 1
        if live > 1:
            out.put("settings", link_key({"parts": [{"id": blob_id}]}), {"count": live})


def _garbage_rows(spill: _Spill, out: _Writer, counts: dict[str, int], query: str, checkpoint) -> None:
    """Queue for the collector every blob ``query`` finds (a page after a given blob id at a time), claiming it."""
    last = ""
    while rows := spill.db.execute(query, (last,)).fetchall():
        for _blob_id, desc in rows:
            out.garbage(unpack(desc), None)
            counts["garbage"] += 1
        checkpoint("garbage")  # in the index before they are claimed: a rerun finds them again
        spill.db.execute("BEGIN")
        spill.claim([blob_id for blob_id, _ in rows])
        spill.db.execute("COMMIT")
        last = rows[-1][0]


def _write_keys(store, spill: _Spill, out: _Writer, buckets, counts, after, checkpoint, progress) -> None:
    """Every key's versions by the rules of the module docstring, in key order, ``out.batch`` at a time."""
    total = spill.db.execute("SELECT count(*) FROM rec WHERE kind = 'v'").fetchone()[0]
    bar = Progress.to(progress, "rebuild-index: versions written", total)
    bucket, key = after or ("", "")
    while True:
        rows = spill.db.execute(
            "SELECT bucket, key, body FROM rec WHERE kind = 'v' AND (bucket, key) > (?, ?) ORDER BY bucket, key LIMIT ?",
            (bucket, key, max(out.batch, 2)),
        ).fetchall()
        if not rows:
            break
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for b, k, body in rows:
            groups.setdefault((b, k), []).append(unpack(body))
        if len(rows) >= max(out.batch, 2) and len(groups) > 1:
            groups.pop((rows[-1][0], rows[-1][1]))  # maybe cut short: it comes whole with the next page
        elif len(rows) >= max(out.batch, 2):
            b, k = rows[0][0], rows[0][1]  # one key with more versions than a page: read it whole
            groups[(b, k)] = [
                unpack(body)
                for (body,) in spill.db.execute("SELECT body FROM rec WHERE kind = 'v' AND bucket = ? AND key = ?", (b, k))
            ]
        blob_ids = [d["id"] for entries in groups.values() for r in entries for d in r.get("parts") or []]
        blobs = spill.blobs(blob_ids)
        for (b, k), entries in groups.items():
            _write_key(store, out, buckets, counts, b, k, entries, blobs, spill)
            bar.advance(len(entries))
        bucket, key = max(groups)
        checkpoint("keys", [bucket, key])
    bar.close()


def _write_key(
    store, out: _Writer, buckets, counts, bucket: str, key: str, found: list[dict[str, Any]], blobs, spill: _Spill
) -> None:
    def frags(desc: dict[str, Any]) -> int:
        return blobs.get(desc["id"], (0, None))[0]

    def held(desc: dict[str, Any]) -> bool:
        # Still somewhere: fragments on the drives, or an object on a remote tier (as its manifest says).
        return bool(frags(desc)) or bool(desc.get("remote"))

    def desc_of(desc: dict[str, Any]) -> dict[str, Any]:
        return blobs.get(desc["id"], (0, desc))[1] or desc

    def retire(rec: dict[str, Any]) -> None:
        if spill.shared_elsewhere(rec):
            return  # a hard link's other name still holds the bytes
        for d in rec.get("parts") or []:
            if held(d):
                out.garbage(desc_of(d), summary(rec))
                counts["garbage"] += 1

    entries = []
    for rec in found:
        parts = rec.get("parts") or []
        if rec.get("deleted"):
            retire(rec)
        elif parts and not any(held(d) for d in parts):
            continue  # every fragment collected: it was deleted
        entries.append(rec)
    if not entries:
        return
    entries.sort(key=lambda r: r.get("seq") or int((r.get("created") or 0) * 1e9), reverse=True)
    survivors, seen_null = [], False
    for rec in entries:
        if rec.get("version") == "null":
            if seen_null:
                if not rec.get("deleted"):
                    retire(rec)
                continue
            seen_null = True
        survivors.append(rec)
    settings = buckets.get(bucket)
    if settings is None:
        if all(r.get("deleted") for r in survivors):
            return
        settings = buckets[bucket] = _default_bucket(store, bucket)
        out.put("buckets", bucket.encode(), settings)
        counts["buckets"] += 1
    if settings.get("versioning") is None:
        newest, older = survivors[0], survivors[1:]
        for rec in older:
            if not rec.get("deleted"):
                retire(rec)
        survivors = [newest]
    live = [r for r in survivors if not r.get("deleted")]
    if not live or survivors[0].get("deleted") and settings.get("versioning") is None:
        return
    for rec in live:
        rec.pop("written", None)
        for d in rec.get("parts") or []:
            if not d.get("remote") and d["id"] in blobs:
                _place(d, blobs[d["id"]][1])
        if any(not d.get("remote") and frags(d) < d["k"] + d["m"] for d in rec.get("parts") or []):
            out.put(
                "heal",
                rec["id"].encode(),
                {
                    **{k: rec[k] for k in ("bucket", "key", "version")},
                    "reason": "fragments missing at rebuild",
                    "t": store.clock.now(),
                },
            )
    current, rest = live[0], live[1:]
    out.put("objects", object_key(bucket, key), current, indexed=None if current.get("delete_marker") else current)
    counts["objects"] += 1
    for rec in rest:
        out.put("versions", version_key(bucket, key, rec["seq"]), rec)
        counts["versions"] += 1


def _write_uploads(spill: _Spill, out: _Writer, counts, after: str, checkpoint) -> None:
    """Unfinished uploads whose own meta is their newest record, with the newest part per number."""
    while True:
        rows = spill.db.execute("SELECT id, body FROM rec WHERE kind = 'u' AND id > ? ORDER BY id LIMIT 100", (after,)).fetchall()
        if not rows:
            return
        for upload_id, body in rows:
            rec = unpack(body)
            if rec.get("deleted"):
                continue
            newest: dict[int, tuple[int, str, dict[str, Any]]] = {}
            for blob_id, owner_raw in spill.db.execute("SELECT blob, body FROM part WHERE upload = ?", (upload_id,)):
                owner = unpack(owner_raw)
                if owner["seq"] >= newest.get(owner["part"], (-1, "", {}))[0]:
                    newest[owner["part"]] = (owner["seq"], blob_id, owner)
            blobs = spill.blobs([blob_id for _, blob_id, _ in newest.values()])
            out.put("uploads", upload_id.encode(), rec["upload"])
            for number, (_seq, blob_id, owner) in sorted(newest.items()):
                desc = blobs[blob_id][1]
                part = {"number": number, "etag": owner["etag"], "size": desc["size"], "blob": desc, "created": owner["created"]}
                if owner.get("checksums"):
                    part["checksums"] = owner["checksums"]
                out.put("parts", upload_id.encode() + b"\0" + number.to_bytes(4, "big"), part)
            spill.db.execute("BEGIN")
            spill.claim([blob_id for _, blob_id, _ in newest.values()])
            spill.db.execute("COMMIT")
            counts["uploads"] += 1
        after = rows[-1][0]
        checkpoint("uploads", after)


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
