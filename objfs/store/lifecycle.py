"""Lifecycle rules: when versions move to colder tiers, expire, and when unfinished uploads are aborted.

A bucket's rules are S3's LifecycleConfiguration, kept in the bucket's
settings (``lifecycle``) in the shape boto3 uses (``{"Rules": [{"ID",
"Status", "Filter", "Transitions", "Expiration",
"NoncurrentVersionTransitions", "NoncurrentVersionExpiration",
"AbortIncompleteMultipartUpload"}]}``), so the S3 API, ``objfs lifecycle
set`` and the bucket files on the drives all carry the same document.
A bucket without rules follows the store-wide default of ``[lifecycle]``
(warm after 90 days, archive after 7 years, for the tiers that exist).

Guarantees of a pass (:meth:`LifecycleMixin.run_lifecycle`):

* ages are counted in lifecycle days of ``[lifecycle] day_seconds`` seconds
  on the engine's clock; a version only ever moves to a colder tier (later
  in ``[[tiers]]``) than the one it is on;
* moves go through the mover (:mod:`.mover`): crash-safe, verified,
  WORM-preserving; expirations go through the engine's ordinary deletes as
  the ``lifecycle`` system principal (audited), and a version under
  retention or legal hold is never expired (counted as kept);
* the pass is resumable: its cursor (bucket, database, key) is in the
  index after every batch, so a pass cut short by ``max_actions`` or a kill
  resumes where it stopped; every action is re-decided from the live record
  and is conditional on it, so repeating one is harmless;
* the mover's copy rate is limited to ``[lifecycle] max_bytes_per_second``.
"""

from __future__ import annotations

import calendar
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from .errors import InvalidArgument, NoSuchKey, NoSuchUpload, NoSuchVersion, ObjectLocked, StoreError
from .index import bucket_prefix, object_key
from .locks import lock_active
from .progress import Progress
from .reports import Report
from .tiers import InvalidStorageClass, tier_of_record

if TYPE_CHECKING:
    from .engine import Store

log = logging.getLogger(__name__)

MAX_RULES = 1000
BATCH = 256
CURSOR_KEY = b"lifecycle-cursor"
LAST_PASS_KEY = b"lifecycle-last"  # read by objfs/store/opstatus.py
RULE_FIELDS = {
    "ID",
    "Status",
    "Filter",
    "Prefix",
    "Transitions",
    "Expiration",
    "NoncurrentVersionTransitions",
    "NoncurrentVersionExpiration",
    "AbortIncompleteMultipartUpload",
}


@dataclass
class LifecycleReport(Report):
    moved: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    kept_locked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    bytes_moved: int = 0
    finished: bool = True


def parse_date(text: Any) -> float:
    """An S3 lifecycle Date (ISO 8601, midnight UTC) as a Unix time."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    raw = str(text).strip().replace("+00:00", "").rstrip("Z").split(".")[0]
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return float(calendar.timegm(time.strptime(raw, fmt)))
        except ValueError:
            continue
    raise InvalidArgument(f"lifecycle date {text!r} is not an ISO 8601 date")


def _days(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(f"{what} must be a whole number of at least {minimum}")
    return value


def check_lifecycle(document: dict[str, Any], classes: dict[str, str]) -> dict[str, Any]:
    """Validate a LifecycleConfiguration (boto3 shape); returns it normalised. Raises InvalidArgument."""
    if not isinstance(document, dict) or not isinstance(document.get("Rules"), list):
        raise InvalidArgument("a lifecycle configuration is {'Rules': [...]}")
    rules = document["Rules"]
    if not 1 <= len(rules) <= MAX_RULES:
        raise InvalidArgument(f"a lifecycle configuration has 1 to {MAX_RULES} rules")
    ids = set()
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise InvalidArgument(f"rule {i + 1} is not an object")
        unknown = set(rule) - RULE_FIELDS
        if unknown:
            raise InvalidArgument(f"rule {i + 1}: unknown field(s) {sorted(unknown)}")
        rule = dict(rule)
        rule.setdefault("ID", f"rule-{i + 1}")
        if rule["ID"] in ids:
            raise InvalidArgument(f"rule ID {rule['ID']!r} is used twice")
        ids.add(rule["ID"])
        if rule.get("Status") not in ("Enabled", "Disabled"):
            raise InvalidArgument(f"rule {rule['ID']}: Status is Enabled or Disabled")
        _check_filter(rule)
        actions = 0
        for tr in rule.get("Transitions") or []:
            if ("Days" in tr) == ("Date" in tr):
                raise InvalidArgument(f"rule {rule['ID']}: a Transition has Days or Date")
            if "Days" in tr:
                _days(tr["Days"], "Transition Days")
            else:
                parse_date(tr["Date"])
            _check_class(tr.get("StorageClass"), classes)
            actions += 1
        exp = rule.get("Expiration")
        if exp:
            given = [k for k in ("Days", "Date", "ExpiredObjectDeleteMarker") if k in exp]
            if len(given) != 1:
                raise InvalidArgument(f"rule {rule['ID']}: an Expiration has one of Days, Date, ExpiredObjectDeleteMarker")
            if "Days" in exp:
                _days(exp["Days"], "Expiration Days", 1)
            if "Date" in exp:
                parse_date(exp["Date"])
            actions += 1
        for tr in rule.get("NoncurrentVersionTransitions") or []:
            _days(tr.get("NoncurrentDays"), "NoncurrentDays")
            _check_class(tr.get("StorageClass"), classes)
            actions += 1
        if rule.get("NoncurrentVersionExpiration"):
            _days(rule["NoncurrentVersionExpiration"].get("NoncurrentDays"), "NoncurrentDays", 1)
            actions += 1
        if rule.get("AbortIncompleteMultipartUpload"):
            _days(rule["AbortIncompleteMultipartUpload"].get("DaysAfterInitiation"), "DaysAfterInitiation", 1)
            actions += 1
        if not actions:
            raise InvalidArgument(f"rule {rule['ID']} has no action")
        out.append(rule)
    return {"Rules": out}


def _check_class(storage_class: Any, classes: dict[str, str]) -> None:
    if storage_class not in classes:
        raise InvalidStorageClass(f"storage class {storage_class!r} maps to no tier of this store")


def _check_filter(rule: dict[str, Any]) -> None:
    filt = rule.get("Filter")
    if filt is None:
        return
    if not isinstance(filt, dict):
        raise InvalidArgument(f"rule {rule['ID']}: Filter is an object")
    given = [k for k in ("Prefix", "Tag", "And", "ObjectSizeGreaterThan", "ObjectSizeLessThan") if k in filt]
    if len(given) > 1:
        raise InvalidArgument(f"rule {rule['ID']}: a Filter has one condition; combine several with And")


def _conditions(rule: dict[str, Any]) -> dict[str, Any]:
    """A rule's filter flattened: prefix, tags, size bounds."""
    filt = rule.get("Filter") or {}
    cond = dict(filt.get("And") or {})
    if "Prefix" in filt:
        cond["Prefix"] = filt["Prefix"]
    if "Tag" in filt:
        cond["Tags"] = [filt["Tag"]]
    for bound in ("ObjectSizeGreaterThan", "ObjectSizeLessThan"):
        if bound in filt:
            cond[bound] = filt[bound]
    if "Prefix" in rule and "Prefix" not in cond:
        cond["Prefix"] = rule["Prefix"]
    return cond


def rule_matches(rule: dict[str, Any], record: dict[str, Any]) -> bool:
    cond = _conditions(rule)
    if not record["key"].startswith(cond.get("Prefix") or ""):
        return False
    tags = record.get("tags") or {}
    for tag in cond.get("Tags") or []:
        if tags.get(tag["Key"]) != tag["Value"]:
            return False
    size = record.get("size", 0)
    if "ObjectSizeGreaterThan" in cond and not size > cond["ObjectSizeGreaterThan"]:
        return False
    if "ObjectSizeLessThan" in cond and not size < cond["ObjectSizeLessThan"]:
        return False
    return True


class _Throttle:
    """At most ``rate`` bytes per second (0: unlimited), shared by the moves of one pass."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.done = 0
        self.lock = threading.Lock()

    def __call__(self, n: int) -> None:
        if not self.rate:
            return
        with self.lock:
            self.done += n
            ahead = self.done / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


class LifecycleMixin:
    """Lifecycle rules and passes of :class:`objfs.store.Store`."""

    def put_lifecycle(self: Store, bucket: str, document: dict[str, Any] | None, *, principal=None) -> dict[str, Any]:
        """Set (or with None remove) a bucket's lifecycle rules; validated first. Durable when it returns."""
        rules = None if document is None else check_lifecycle(document, self.config.storage_classes)
        return self.update_bucket(bucket, lifecycle=rules, principal=principal)

    def get_lifecycle(self: Store, bucket: str, *, principal=None) -> dict[str, Any] | None:
        """A bucket's own lifecycle rules, or None (it follows the store-wide default)."""
        return self.head_bucket(bucket, principal=principal).get("lifecycle")

    def default_lifecycle(self: Store) -> dict[str, Any] | None:
        """The store-wide default rules (``[lifecycle] default_transitions``), or None when there are none."""
        transitions = [{"Days": d, "StorageClass": c} for d, c in self.config.lifecycle.default_transitions]
        if not transitions:
            return None
        return {"Rules": [{"ID": "store-default", "Status": "Enabled", "Filter": {}, "Transitions": transitions}]}

    def run_lifecycle(self: Store, *, max_actions: int | None = None, progress: TextIO | None = None) -> LifecycleReport:
        """One pass over every bucket, from the saved cursor; returns what was moved, expired, aborted, kept.

        ``progress`` (a stream, e.g. stderr) gets the versions examined, with
        rate and ETA against the kept counters of the buckets that have rules.
        """
        with Progress.to(progress, "lifecycle: versions examined", None) as bar:
            return self._run_lifecycle(max_actions, bar)

    def _run_lifecycle(self: Store, max_actions: int | None, bar: Progress) -> LifecycleReport:
        report = LifecycleReport()
        throttle = _Throttle(self.config.lifecycle.max_bytes_per_second)
        with self.index.read() as txn:
            buckets = [settings for _, settings in txn.scan("buckets")]
            cursor = txn.get("settings", CURSOR_KEY) or {}
        budget = [max_actions if max_actions is not None else -1]
        if bar.shown:
            ruled = {s["name"] for s in buckets if _enabled_rules(self, s)}
            bar.set_total(sum(sum(n for n, _ in e.values()) for b, _, e in self.counters.entries() if b in ruled))
        for settings in buckets:
            name = settings["name"]
            if cursor and name < cursor.get("bucket", ""):
                continue
            rules = _enabled_rules(self, settings)
            for db in ("objects", "versions"):
                start = None
                if cursor.get("bucket") == name:
                    if db < cursor.get("db", "") or (db == cursor.get("db") and cursor.get("done")):
                        continue
                    if db == cursor.get("db"):
                        start = cursor.get("key")
                if rules and not self._lifecycle_scan(name, db, rules, start, report, throttle, budget, bar):
                    report.finished = False
                    return report
            if rules:
                self._abort_stale_uploads(name, rules, report)
            cursor = {}
        actions = len(report.moved) + len(report.expired) + len(report.aborted)
        self._save_cursor(None, last_pass={"finished": time.time(), "actions": actions})
        return report

    def _save_cursor(self: Store, cursor: dict[str, Any] | None, last_pass: dict[str, Any] | None = None) -> None:
        def change(txn) -> None:
            if cursor is None:
                txn.delete("settings", CURSOR_KEY)
            else:
                txn.put("settings", CURSOR_KEY, cursor)
            if last_pass is not None:  # a whole pass ended: `objfs status` shows when (its lag)
                txn.put("settings", LAST_PASS_KEY, last_pass)

        self.index.commit(change)

    def _lifecycle_scan(self: Store, bucket: str, db: str, rules, start, report, throttle, budget, bar: Progress) -> bool:
        """Walk one database of a bucket in batches; False when the action budget ran out (cursor saved)."""
        prefix = bucket_prefix(bucket)
        while True:
            with self.index.read() as txn:
                batch = []
                for raw, rec in txn.scan(db, prefix, start):
                    if raw == start:
                        continue
                    successor = None
                    if db == "versions":
                        successor = self._successor_created(txn, rec)
                    batch.append((raw, rec, successor))
                    if len(batch) >= BATCH:
                        break
            if not batch:
                return True
            for raw, rec, successor in batch:
                if budget[0] == 0:
                    self._save_cursor({"bucket": bucket, "db": db, "key": start})
                    return False
                if self._lifecycle_one(rec, successor, rules, report, throttle):
                    budget[0] -= 1
                bar.advance()
                start = raw
            self._save_cursor({"bucket": bucket, "db": db, "key": start})
            if len(batch) < BATCH:
                return True

    def _successor_created(self: Store, txn, rec: dict[str, Any]) -> float:
        """When a noncurrent version became noncurrent: its next newer version's creation."""
        okey = object_key(rec["bucket"], rec["key"])
        newer = None
        for _, other in txn.scan("versions", okey + b"\0"):
            if other["key"] != rec["key"]:
                continue
            if other["seq"] > rec["seq"] and (newer is None or other["seq"] < newer["seq"]):
                newer = other
        if newer is None:
            newer = txn.get("objects", okey)
        return (newer or rec)["created"]

    def _lifecycle_one(self: Store, rec, successor: float | None, rules, report: LifecycleReport, throttle) -> bool:
        """Apply the due action to one version; True when something was done (or refused)."""
        now = self.clock.now()
        day = self.config.lifecycle.day_seconds
        noncurrent = successor is not None
        age = (now - (successor if noncurrent else rec["created"])) / day
        name = f"{rec['bucket']}/{rec['key']}@{rec['version']}"
        matching = [r for r in rules if rule_matches(r, rec)]
        if not matching:
            return False
        lifecycle = self.system_principal("lifecycle")
        # Expiration first: an expired version is not moved.
        expire = False
        for rule in matching:
            if noncurrent:
                nve = rule.get("NoncurrentVersionExpiration")
                expire = expire or bool(nve and age >= nve["NoncurrentDays"])
            elif not rec.get("delete_marker"):
                exp = rule.get("Expiration") or {}
                expire = expire or ("Days" in exp and age >= exp["Days"]) or ("Date" in exp and now >= parse_date(exp["Date"]))
        if expire or (not noncurrent and rec.get("delete_marker") and self._lone_marker(rec, matching)):
            if lock_active(rec, now):
                report.kept_locked.append(name)
                return True
            try:
                if noncurrent or rec.get("delete_marker"):
                    self.delete_object(rec["bucket"], rec["key"], rec["version"], principal=lifecycle)
                else:
                    self.delete_object(rec["bucket"], rec["key"], principal=lifecycle)
                report.expired.append(name)
            except ObjectLocked:
                report.kept_locked.append(name)
            except (NoSuchKey, NoSuchVersion):
                return False
            return True
        if rec.get("delete_marker"):
            return False
        if rec.get("promoted") and now - rec["promoted"] < self.config.lifecycle.promoted_days * day:
            return False  # brought back to the first tier for a reader: it stays there a while
        target = self._due_tier(rec, matching, age, now, noncurrent)
        if target is None:
            return False
        try:
            self.move_version(
                rec["bucket"], rec["key"], rec["version"], tier=target, principal=lifecycle, throttle=throttle, expect=rec
            )
            report.moved.append(f"{name} -> {target}")
            report.bytes_moved += rec.get("size", 0)
        except (NoSuchKey, NoSuchVersion):
            return False
        except StoreError as exc:
            report.failed.append(f"{name}: {exc}")
            log.warning("lifecycle: %s not moved to %s: %s", name, target, exc)
        return True

    def _due_tier(self: Store, rec, rules, age: float, now: float, noncurrent: bool) -> str | None:
        """The coldest tier a due transition names, if colder than the version's tier now."""
        order = {t.name: i for i, t in enumerate(self.config.tiers)}
        here = order.get(tier_of_record(rec, self.config.hot.name), 0)
        best = None
        for rule in rules:
            key = "NoncurrentVersionTransitions" if noncurrent else "Transitions"
            for tr in rule.get(key) or []:
                if noncurrent:
                    due = age >= tr["NoncurrentDays"]
                else:
                    due = age >= tr["Days"] if "Days" in tr else now >= parse_date(tr["Date"])
                tier = self.config.storage_classes.get(tr.get("StorageClass"))
                if due and tier is not None and order[tier] > here and (best is None or order[tier] > order[best]):
                    best = tier
        return best

    def _lone_marker(self: Store, rec, rules) -> bool:
        """A current delete marker with no older version left, under a rule that expires such markers."""
        if not any((r.get("Expiration") or {}).get("ExpiredObjectDeleteMarker") for r in rules):
            return False
        with self.index.read() as txn:
            for _, other in txn.scan("versions", object_key(rec["bucket"], rec["key"]) + b"\0"):
                if other["key"] == rec["key"]:
                    return False
        return True

    def _abort_stale_uploads(self: Store, bucket: str, rules, report: LifecycleReport) -> None:
        now = self.clock.now()
        day = self.config.lifecycle.day_seconds
        for upload in self.list_uploads(bucket):
            for rule in rules:
                abort = rule.get("AbortIncompleteMultipartUpload")
                if not abort or not upload["key"].startswith(_conditions(rule).get("Prefix") or ""):
                    continue
                if (now - upload["created"]) / day >= abort["DaysAfterInitiation"]:
                    try:
                        self.abort_multipart(upload["id"], principal=self.system_principal("lifecycle"))
                        report.aborted.append(f"{bucket}/{upload['key']} upload {upload['id']}")
                    except NoSuchUpload:
                        pass
                    break


def _enabled_rules(store: Store, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """A bucket's enabled rules: its own, or the store-wide default it follows."""
    rules = settings.get("lifecycle") or store.default_lifecycle()
    return [r for r in (rules or {}).get("Rules", []) if r.get("Status") == "Enabled"]
