"""Upgrade: an older store moved to this objfs's on-disk format in place, crash-safe and resumable.

From format 1 or 2 to format 3 (:mod:`.volumes`) an upgrade does two things:

1. **records the format** (``[store] format`` in ``objfs.toml``, written
   atomically by :func:`.config.write_store_format`);
2. **packs the small blobs** (at most ``[store] pack_max`` bytes) of every
   current and noncurrent version into volumes: each such version's bytes
   are read (an ordinary :class:`~.objects.ObjectReader`, under a reader
   lease), written again by a :class:`~.blobs.BlobWriter` (which packs, the
   store being format 3 now), read back and compared with the source's MD5
   and ETag, then switched in by one conditional index transaction that
   queues the old blobs for the collector: the tier mover's copy, verify,
   switch and collect (:mod:`.mover`), to the version's own tier. The
   version keeps its id, version id, ETag, times, tags and metadata; its
   ``gen`` is new. The old fragment files are removed by the collector
   under the trust model (minimum age, reader leases), never here.

Order: the format is recorded **first**. A record whose blob descriptor
says ``vols`` can only be read by an objfs that knows volumes; recording
format 3 before the first such record exists means an older objfs refuses
the store (a newer format is refused on open) rather than misreading it.
Format 3 does not require every small blob to be packed (large blobs,
blobs locked at birth and repaired fragments are fragment files in format
3 too), so a store whose packing was interrupted is a valid format 3 store
with more to pack, and the writers pack by the store's own ``pack_max``.

Skipped (they stay fragment files): versions under retention or legal hold
(their files are immutable), versions whose blobs other names share
(hard links: replacing the blobs of one name would retire the others'),
versions encrypted with a customer's key (SSE-C: the store cannot re-encode
them), versions on a remote tier, and versions with a blob larger than
``pack_max`` (already as they should be).

Guarantees: a process killed at any point leaves every version readable
with its exact bytes (before the switch the old record and blobs stand and
the new entries are an unsettled intent; after it the new ones do and the
old blobs are queued garbage). Running it again continues: the scan
resumes after the last batch done (kept in ``settings``) and a version
already packed (its descriptors carry ``vols``) is skipped; when nothing is
left it changes nothing. Memory is bounded by one batch of records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .blobs import BlobWriter
from .config import PACKED_FORMAT, STORE_FORMAT, write_store_format
from .errors import DataLoss, StoreError
from .links import shared_count
from .locks import lock_active
from .mover import MoveRaced
from .objects import ObjectInfo, ObjectReader
from .progress import Progress
from .remotetier import is_remote

if TYPE_CHECKING:
    from .engine import Store

log = logging.getLogger(__name__)

#: Index (``settings``) key of an unfinished packing pass: where the next run resumes.
PACK_POSITION = b"upgrade-pack\0"
#: Records read per index read transaction (and between two saved positions).
BATCH = 256
_DATABASES = ("objects", "versions")  # current, then noncurrent versions


class ForeignDrives(StoreError):
    """A drive in objfs.toml carries another store's (or drive's) marker: nothing was changed."""


@dataclass
class PackReport:
    """What a packing pass did; ``kept`` counts the versions left as files, by reason."""

    examined: int = 0
    packed: int = 0
    blobs: int = 0
    bytes: int = 0
    already: int = 0
    kept: dict[str, int] = field(default_factory=dict)

    def keep(self, reason: str) -> None:
        self.kept[reason] = self.kept.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "packed": self.packed,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "already_packed": self.already,
            "kept": dict(sorted(self.kept.items())),
        }


@dataclass
class UpgradeReport:
    store: str
    before: int
    after: int
    changed: bool
    pack: PackReport | None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"store": self.store, "from": self.before, "to": self.after, "changed": self.changed}
        if self.pack is not None:
            out["pack"] = self.pack.as_dict()
        return out


def upgrade_store(
    root: str | Path,
    open_store: Callable[[Path], Store],
    *,
    pack: bool = True,
    progress: Progress | None = None,
) -> UpgradeReport:
    """Record the current format, then (with ``pack``) pack the small blobs; see the module docstring.

    ``open_store`` opens the store as the caller's process does (with its
    indexers). The caller holds the store alone (``hold_exclusive``): nothing
    else writes while records are switched. Raises ForeignDrives (before
    any change) when a drive belongs to another store.
    """
    root = Path(root).resolve()
    with open_store(root) as store:
        before = store.config.format
        foreign = sorted(d.drive_id for d in store.all_drives() if store.drive_state(d) == "foreign")
    if foreign:
        raise ForeignDrives(f"drives {', '.join(foreign)} belong to another store or drive; fix objfs.toml first")
    changed = write_store_format(root, STORE_FORMAT)
    report = UpgradeReport(str(root), before, STORE_FORMAT, changed, None)
    if pack:
        # Opened again: the configuration read now is format 3's, so the writers pack.
        with open_store(root) as store:
            report.pack = pack_small_versions(store, progress)
    return report


def pack_small_versions(store: Store, progress: Progress | None = None) -> PackReport:
    """Pack every small, unlocked, unpacked version's blobs into volumes; resumes where a killed run stopped."""
    report = PackReport()
    pack_max = store.config.pack_max
    if store.config.format < PACKED_FORMAT or pack_max <= 0:
        return report  # this store does not pack (pack_max = 0): nothing to move
    with store.index.read() as txn:
        position = txn.get("settings", PACK_POSITION) or {}
        total = txn.count("objects") + txn.count("versions")
    if progress is not None:
        progress.set_total(total)
    now = store.clock.now()
    started = False
    for db in _DATABASES:
        if position and not started and position["db"] != db:
            continue  # done by the run that was stopped
        start = bytes.fromhex(position["after"]) + b"\0" if position and not started else b""
        started = True
        while True:
            with store.index.read() as txn:
                batch = []
                for raw_key, record in txn.scan(db, start=start):
                    batch.append((raw_key, record, shared_count(txn, record) > 1))
                    if len(batch) >= BATCH:
                        break
            if not batch:
                break
            for _raw_key, record, linked in batch:
                _consider(store, record, linked, pack_max, now, report)
                if progress is not None:
                    progress.advance(1, nbytes=sum(p.get("size", 0) for p in record.get("parts") or []))
            last = batch[-1][0]
            with store.index.write() as txn:
                txn.put("settings", PACK_POSITION, {"db": db, "after": last.hex()})
            start = last + b"\0"
    with store.index.write() as txn:
        txn.delete("settings", PACK_POSITION)
    return report


def _reason_to_keep(record: dict[str, Any], linked: bool, pack_max: int, now: float) -> str | None:
    """Why this version stays as it is (``"packed"`` when it is packed already), or None to pack it."""
    parts = record.get("parts") or []
    if record.get("delete_marker") or not parts:
        return "no_data"
    if all(p.get("vols") for p in parts):
        return "packed"
    if any(is_remote(p) for p in parts):
        return "remote"
    if any(p["size"] > pack_max for p in parts):
        return "large"
    if len({p.get("tier") for p in parts}) > 1:
        return "mixed_tiers"
    if lock_active(record, now):
        return "locked"
    if linked:
        return "linked"
    sse = record.get("sse")
    if sse and sse.get("mode") == "C":
        return "customer_key"
    return None


def _consider(store: Store, record: dict[str, Any], linked: bool, pack_max: int, now: float, report: PackReport) -> None:
    report.examined += 1
    reason = _reason_to_keep(record, linked, pack_max, now)
    if reason == "packed":
        report.already += 1
        return
    if reason is not None:
        if reason != "no_data":
            report.keep(reason)
        return
    name = f"{record['bucket']}/{record['key']}@{record['version']}"
    try:
        parts = repack_version(store, record)
    except MoveRaced:
        report.keep("changed")  # cannot happen while the store is held alone; the next run sees it again
        return
    except DataLoss as exc:
        log.error("upgrade: %s not packed, its bytes cannot be read: %s", name, exc)
        report.keep("unreadable")
        return
    report.packed += 1
    report.blobs += len(parts)
    report.bytes += sum(p["size"] for p in parts)


def repack_version(store: Store, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Write ``record``'s bytes again on its own tier (packed when small) and switch them in; the new parts.

    The mover's copy, verify and conditional switch (:meth:`.mover.MoverMixin._copy_parts`,
    ``_switch``): raises MoveRaced when the version changed meanwhile
    (nothing switched; the new blobs are discarded). A one-blob version's
    new fragments carry its whole new record in their footers, as a put's
    do, so no ``<id>.meta`` files are written for it (they would cost the
    inodes packing saves); ``rebuild-index`` takes the newest ``gen``.
    """
    tier = record["parts"][0].get("tier") or store.config.hot.name
    sse = record.get("sse")
    data_key = store.encryption.data_key(sse) if sse else None
    new = dict(record, gen=time.time_ns())
    writers: list[BlobWriter] = []
    try:
        with ObjectReader(store, ObjectInfo.from_record(record), data_key=data_key) as reader:
            parts = store._copy_parts(reader, record, new, tier, data_key, writers, None)
        new["parts"] = parts
        # A multipart version's new footers name only the version: its record goes beside them.
        store._switch(record, new, meta_files=len(parts) > 1)
    except BaseException:
        if not store._switched(new):
            for writer in writers:
                writer.discard()
        raise
    for writer in writers:
        writer.committed()
    store.audit_maintenance("repack", "cli", new, f"{len(parts)} blobs packed into volumes", durable=False)
    if any(len(p["written"]) < p["k"] + p["m"] for p in parts):
        store.queue_heal(new, "packed with a drive missing")
    return parts
