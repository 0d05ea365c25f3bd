"""Asynchronous replication: the bucket rules, the durable queue and the per-version status.

Guarantees:

* **Queued with the change.** :class:`ReplicationQueue` is an indexer: the
  queue entry of a change is written by the very LMDB transaction that
  commits the change (a new version, a delete marker when its rule says so,
  a later change of tags, retention or legal hold). Acknowledged means
  queued; a process killed at any point loses nothing. A version deleted by
  id is never queued (as on S3: a mistake or an attack on one side cannot
  erase the other), nor are renames' removals.
* **A replica is never sent again.** A record written as a replica carries
  ``replica`` (status REPLICA on HEAD/GET) and queues nothing, so two
  appliances replicating to each other do not loop.
* **Order per key.** Entries are keyed by a monotonic sequence (8 bytes, big
  endian, in this store's ``replication-state`` counter): the sender takes a
  key's changes in the order they were committed and never skips past one
  that has not been sent.
* **Status lives in the queue database, not the record.** PENDING while a
  version has entries waiting, FAILED (with the reason) once an entry failed
  :data:`FAILED_AFTER` times (it is still retried, with backoff), COMPLETED
  after its last entry was accepted. A status is secondary state: it moves
  no data, so it is not written beside the fragments, and ``rebuild-index``
  forgets it (``objfs replication resync`` sends what the destination lacks).
* **Bounded memory.** The backlog lives in LMDB; the sender reads it a batch
  at a time.

Rule shape (``settings["replication"]``)::

    {"rules": [{"id", "status": "Enabled"|"Disabled", "prefix", "remote",
                "bucket", "delete_markers": bool}]}
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Any, TextIO

from .audit import audited
from .errors import InvalidArgument
from .index import SEP, Txn, bucket_prefix, object_key, version_key
from .progress import Progress

if TYPE_CHECKING:
    from .engine import Principal, Store

QUEUE_DB = "replication-queue"
STATE_DB = "replication-state"
COUNTER_KEY = b"\0seq"
STATS_KEY = b"\0stats"
STATUS_PREFIX = b"s"
#: An entry that failed this many times shows its version as FAILED (it is still retried).
FAILED_AFTER = 3
#: Seconds over which the sending rate is measured.
RATE_WINDOW = 30.0
#: Longest wait between two tries of one entry.
MAX_BACKOFF = 300.0

PENDING, COMPLETED, FAILED, REPLICA = "PENDING", "COMPLETED", "FAILED", "REPLICA"


class ReplicationRefused(InvalidArgument):
    """A replication rule the bucket cannot take (no versioning, unknown remote, bad rule): S3 InvalidRequest."""


def check_rules(document: dict[str, Any] | None, versioning: str | None, remotes: set[str]) -> dict[str, Any] | None:
    """Validate replication rules (engine shape); raises ReplicationRefused."""
    if document is None:
        return None
    if versioning != "Enabled":
        raise ReplicationRefused("versioning must be enabled on a bucket before replication rules can be set")
    rules = document.get("rules")
    if not isinstance(rules, list) or not rules:
        raise ReplicationRefused("a replication configuration needs at least one rule")
    out = []
    ids = set()
    for i, rule in enumerate(rules):
        rid = str(rule.get("id") or f"rule-{i + 1}")
        if rid in ids:
            raise ReplicationRefused(f"two replication rules named {rid!r}")
        ids.add(rid)
        status = rule.get("status", "Enabled")
        if status not in ("Enabled", "Disabled"):
            raise ReplicationRefused("a rule's status is Enabled or Disabled")
        remote = rule.get("remote") or ""
        if remote not in remotes:
            raise ReplicationRefused(f"rule {rid}: no remote {remote!r} (objfs remote add)")
        bucket = rule.get("bucket") or ""
        if not bucket:
            raise ReplicationRefused(f"rule {rid}: no destination bucket")
        out.append(
            {
                "id": rid,
                "status": status,
                "prefix": str(rule.get("prefix") or ""),
                "remote": remote,
                "bucket": bucket,
                "delete_markers": bool(rule.get("delete_markers")),
            }
        )
    return {"rules": out}


def matching_rules(settings: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """The enabled rules of a bucket whose prefix ``key`` starts with."""
    config = (settings or {}).get("replication") or {}
    return [r for r in config.get("rules", ()) if r.get("status") == "Enabled" and key.startswith(r.get("prefix", ""))]


def status_key(bucket: str, key: str, version: str) -> bytes:
    return STATUS_PREFIX + object_key(bucket, key) + SEP + version.encode()


def _seq_key(seq: int) -> bytes:
    return struct.pack(">Q", seq)


LOCK_FIELDS = ("tags", "retention", "legal_hold")


def enqueue(txn: Txn, record: dict[str, Any], op: str, rules: list[dict[str, Any]], *, now: float | None = None) -> int:
    """Inside a transaction: one queue entry per rule for ``record``'s change ``op``; returns how many."""
    if not rules:
        return 0
    now = time.time() if now is None else now
    seq = txn.get(STATE_DB, COUNTER_KEY) or 0
    for rule in rules:
        seq += 1
        entry = {
            "op": op,  # "put" (a new version), "marker", "update" (tags, retention, legal hold)
            "bucket": record["bucket"],
            "key": record["key"],
            "version": record["version"],
            "id": record["id"],
            "size": record.get("size", 0) if op == "put" else 0,
            "rule": rule["id"],
            "remote": rule["remote"],
            "to": rule["bucket"],
            "queued": now,
            "attempts": 0,
            "next": 0.0,
            "error": "",
        }
        txn.put(QUEUE_DB, _seq_key(seq), entry)
    txn.put(STATE_DB, COUNTER_KEY, seq)
    skey = status_key(record["bucket"], record["key"], record["version"])
    state = txn.get(STATE_DB, skey) or {"pending": 0}
    state["pending"] = state.get("pending", 0) + len(rules)
    state["status"] = FAILED if state.get("status") == FAILED else PENDING
    txn.put(STATE_DB, skey, state)
    return len(rules)


class ReplicationQueue:
    """The indexer that queues replication work in the commit transaction of each change."""

    databases = (QUEUE_DB, STATE_DB)

    def extract(self, head: bytes, key: str) -> dict[str, Any] | None:
        return None

    def on_change(self, txn: Txn, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Names only (current versions): replication follows :meth:`on_record`, which sees every record."""

    def on_record(self, txn: Txn, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        """A record was written: a new version or marker (``old`` None) or a changed one (same id)."""
        if new.get("replica") or new.get("version") in (None, "null"):
            return  # a replica is never sent back; an unversioned write has no version to preserve
        settings = txn.get("buckets", new["bucket"].encode())
        rules = matching_rules(settings, new["key"])
        if not rules:
            return
        if old is None:
            if new.get("delete_marker"):
                enqueue(txn, new, "marker", [r for r in rules if r.get("delete_markers")])
            else:
                enqueue(txn, new, "put", rules)
        elif any(old.get(f) != new.get(f) for f in LOCK_FIELDS) and not new.get("delete_marker"):
            enqueue(txn, new, "update", rules)


class ReplicationMixin:
    """Replication rules, queue and status of :class:`objfs.store.Store`."""

    # -- rules -----------------------------------------------------------------

    def put_replication(
        self: Store, bucket: str, document: dict[str, Any] | None, *, principal: Principal | None = None
    ) -> dict[str, Any]:
        """Set (or with None remove) a bucket's replication rules; versioning must be enabled. Durable when it returns."""
        from .remotes import list_remotes

        settings = self.head_bucket(bucket, principal=principal)
        names = {r["name"] for r in list_remotes(self.root)}
        rules = check_rules(document, settings.get("versioning"), names)
        return self.update_bucket(bucket, replication=rules, principal=principal)

    def get_replication(self: Store, bucket: str, *, principal: Principal | None = None) -> dict[str, Any] | None:
        """A bucket's replication rules, or None."""
        return self.head_bucket(bucket, principal=principal).get("replication")

    def remotes_in_use(self: Store) -> dict[str, list[str]]:
        """Remote name -> the buckets whose replication rules send to it."""
        used: dict[str, list[str]] = {}
        with self.index.read() as txn:
            for _, settings in txn.scan("buckets"):
                for rule in (settings.get("replication") or {}).get("rules", ()):
                    used.setdefault(rule["remote"], []).append(settings["name"])
        return used

    # -- status ------------------------------------------------------------------

    def replication_status(self: Store, record: dict[str, Any]) -> str | None:
        """``x-amz-replication-status`` of a version: REPLICA, PENDING, FAILED, COMPLETED, or None."""
        if record.get("replica"):
            return REPLICA
        if QUEUE_DB not in self.index.dbs:
            return None
        with self.index.read() as txn:
            state = txn.get(STATE_DB, status_key(record["bucket"], record["key"], record["version"]))
        return None if state is None else state.get("status")

    # -- queueing what exists ---------------------------------------------------------

    @audited("bucket-settings", target=lambda a, k, r: {"bucket": a[0], "detail": "replication resync"})
    def queue_versions(
        self: Store,
        bucket: str,
        *,
        lacking: Any = None,
        principal: Principal | None = None,
        progress: TextIO | None = None,
    ) -> int:
        """Queue every version (and delete marker, when its rule says so) of ``bucket`` for its rules.

        ``lacking(rule, record)``, if given, says whether the rule's
        destination lacks the version (resync); without it every version not
        already completed is queued (``--existing``). Replicas are never
        queued. Returns how many entries were queued.
        """
        with self.index.read() as txn:
            settings = self._bucket(txn, bucket)
        records = versions_of(self, bucket)
        records.sort(key=lambda r: r.get("seq", 0))  # a key's oldest versions first, as they were written
        with Progress.to(progress, f"replication resync {bucket}: versions checked", len(records)) as bar:
            return self._queue_versions(settings, records, lacking, bar)

    def _queue_versions(self: Store, settings: dict[str, Any], records: list[dict[str, Any]], lacking: Any, bar: Progress) -> int:
        queued = 0
        for record in records:
            bar.advance()
            if record.get("replica") or record.get("version") in (None, "null"):
                continue
            rules = matching_rules(settings, record["key"])
            if record.get("delete_marker"):
                rules = [r for r in rules if r.get("delete_markers")]
            if lacking is not None:
                rules = [r for r in rules if lacking(r, record)]
            if not rules:
                continue

            def change(txn: Txn, record: dict[str, Any] = record, rules: list[dict[str, Any]] = rules) -> int:
                if lacking is None:
                    state = txn.get(STATE_DB, status_key(record["bucket"], record["key"], record["version"]))
                    if state is not None:
                        return 0  # queued or sent already
                return enqueue(txn, record, "marker" if record.get("delete_marker") else "put", rules)

            queued += self.index.commit(change)
        return queued

    # -- the sender's side ---------------------------------------------------------------

    def replication_due(self: Store, *, limit: int = 256, now: float | None = None) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` entries due now, in order; a key whose earlier entry waits holds back its later ones."""
        now = time.time() if now is None else now
        out: list[tuple[int, dict[str, Any]]] = []
        waiting: set[tuple[str, str]] = set()
        scanned = 0
        with self.index.read() as txn:
            for raw, entry in txn.scan(QUEUE_DB):
                scanned += 1
                name = (entry["bucket"], entry["key"])
                if name in waiting:
                    continue
                waiting.add(name)  # later entries of this key wait for this one, due or not
                if entry.get("next", 0) <= now:
                    out.append((struct.unpack(">Q", raw)[0], entry))
                    if len(out) >= limit:
                        break
                if scanned >= limit * 16:
                    break
        return out

    def replication_record(self: Store, entry: dict[str, Any]) -> dict[str, Any] | None:
        """The record an entry sends, as it is now; None when the version is gone (deleted by id since)."""
        with self.index.read() as txn:
            okey = object_key(entry["bucket"], entry["key"])
            current = txn.get("objects", okey)
            if current is not None and current["version"] == entry["version"]:
                return current
            for _, rec in txn.scan("versions", okey + SEP):
                if rec["key"] == entry["key"] and rec["version"] == entry["version"]:
                    return rec
        return None

    def replication_done(self: Store, seq: int, entry: dict[str, Any], *, sent_bytes: int = 0, skipped: bool = False) -> None:
        """The destination accepted the entry (or it had nothing left to send): remove it, update status."""

        def change(txn: Txn) -> None:
            if not txn.delete(QUEUE_DB, _seq_key(seq)):
                return
            skey = status_key(entry["bucket"], entry["key"], entry["version"])
            state = txn.get(STATE_DB, skey) or {"pending": 1}
            state["pending"] = max(0, state.get("pending", 1) - 1)
            if state["pending"] == 0:
                state.update(status=COMPLETED, error="", done=time.time())
            txn.put(STATE_DB, skey, state)
            stats = txn.get(STATE_DB, STATS_KEY) or {}
            stats["sent"] = stats.get("sent", 0) + (0 if skipped else 1)
            stats["sent_bytes"] = stats.get("sent_bytes", 0) + sent_bytes
            now = time.time()
            stats["last_sent"] = now
            if now - stats.get("window_start", 0) > RATE_WINDOW:
                # A new window: the rate shown is that of the last one.
                span = max(1e-3, now - stats.get("window_start", now))
                stats["rate"] = stats.get("window_bytes", 0) / span if stats.get("window_start") else 0.0
                stats["window_start"], stats["window_bytes"] = now, 0
            stats["window_bytes"] = stats.get("window_bytes", 0) + sent_bytes
            txn.put(STATE_DB, STATS_KEY, stats)

        self.index.commit(change)

    def replication_failed(self: Store, seq: int, entry: dict[str, Any], error: str, *, retry_at: float | None = None) -> float:
        """A try failed: back off (doubling, up to MAX_BACKOFF, or until ``retry_at``), remember why.

        Returns the next try's time.
        """
        attempts = entry.get("attempts", 0) + 1
        if retry_at is None:
            retry_at = time.time() + min(MAX_BACKOFF, 2.0 ** min(attempts, 10) / 2)

        def change(txn: Txn) -> None:
            current = txn.get(QUEUE_DB, _seq_key(seq))
            if current is None:
                return
            current.update(attempts=attempts, next=retry_at, error=error[:500], failed_at=time.time())
            txn.put(QUEUE_DB, _seq_key(seq), current)
            if attempts >= FAILED_AFTER:
                skey = status_key(entry["bucket"], entry["key"], entry["version"])
                state = txn.get(STATE_DB, skey) or {"pending": 1}
                state.update(status=FAILED, error=error[:500])
                txn.put(STATE_DB, skey, state)

        self.index.commit(change)
        return retry_at

    def replication_retry_now(self: Store, remote: str | None = None) -> int:
        """Make every waiting entry (of ``remote``) due at once (after a destination came back); returns how many."""

        def change(txn: Txn) -> int:
            count = 0
            for raw, entry in list(txn.scan(QUEUE_DB)):
                if entry.get("next") and (remote is None or entry["remote"] == remote):
                    entry["next"] = 0.0
                    txn.put(QUEUE_DB, raw, entry)
                    count += 1
            return count

        return self.index.commit(change)

    def replication_backlog(self: Store, bucket: str | None = None, *, now: float | None = None) -> dict[str, Any]:
        """What waits: entries, bytes, the oldest's age, failures with reasons, what was sent."""
        now = time.time() if now is None else now
        entries = size = 0
        oldest: float | None = None
        failures: list[dict[str, Any]] = []
        with self.index.read() as txn:
            for _, entry in txn.scan(QUEUE_DB):
                if bucket is not None and entry["bucket"] != bucket:
                    continue
                entries += 1
                size += entry.get("size", 0)
                oldest = entry["queued"] if oldest is None else min(oldest, entry["queued"])
                if entry.get("error") and len(failures) < 20:
                    failures.append(
                        {
                            "bucket": entry["bucket"],
                            "key": entry["key"],
                            "version": entry["version"],
                            "remote": entry["remote"],
                            "attempts": entry.get("attempts", 0),
                            "error": entry["error"],
                        }
                    )
            stats = txn.get(STATE_DB, STATS_KEY) or {}
        return {
            "backlog_objects": entries,
            "backlog_bytes": size,
            "lag_seconds": round(now - oldest, 3) if oldest is not None else 0.0,
            "failures": failures,
            "sent": stats.get("sent", 0),
            "sent_bytes": stats.get("sent_bytes", 0),
            "last_sent": stats.get("last_sent"),
            "rate_bytes_per_second": _rate(stats, now),
        }


def _rate(stats: dict[str, Any], now: float) -> float:
    """Bytes per second sent recently: the current window when it is long enough, else the last one."""
    start = stats.get("window_start")
    if start is None or now - start > 2 * RATE_WINDOW:
        return 0.0
    if now - start >= 1.0:
        return round(stats.get("window_bytes", 0) / (now - start), 1)
    return round(stats.get("rate", 0.0), 1)


def versions_of(store: Store, bucket: str) -> list[dict[str, Any]]:
    """Every version and delete marker of ``bucket`` (current and noncurrent), for resync and verify."""
    with store.index.read() as txn:
        store._bucket(txn, bucket)
        records = [r for _, r in txn.scan_objects(bucket)]
        records += [r for _, r in txn.scan("versions", bucket_prefix(bucket)) if r["bucket"] == bucket]
    return records


__all__ = [
    "COMPLETED",
    "FAILED",
    "PENDING",
    "QUEUE_DB",
    "REPLICA",
    "STATE_DB",
    "ReplicationMixin",
    "ReplicationQueue",
    "ReplicationRefused",
    "check_rules",
    "matching_rules",
    "version_key",
    "versions_of",
]
