"""WORM: retention, legal holds and the bucket's default lock, enforced for every front.

Who may change a lock is the principal's rights (:mod:`.access`), checked
before any of these run: placing or lifting a legal hold needs
``legal-hold``; setting or extending a version's retention, and the
bucket's default retention, need ``retention``.
COMPLIANCE retention can only be extended; nobody deletes or overwrites
the version before it ends. GOVERNANCE retention can be extended by a
``retention`` holder; shortening it, removing it or raising it to
COMPLIANCE (which nobody could then undo) is a governance bypass: only a
principal holding ``bypass-governance`` who asks for the bypass may.
A legal hold blocks deletion whatever the dates. Fragment files of a locked version are marked
immutable on drives whose filesystem supports it, so even root's ``rm``
fails until the engine lifts the flag.

A version on a remote S3 tier carries its lock there too (object lock of
the remote bucket): a lock change is applied to the remote object first,
synchronously (PutObjectRetention/PutObjectLegalHold with the remote version
id), and only then to the drives and the index. A remote that refuses or
does not answer fails the change (nothing changes locally; the caller may
retry), so the remote is never weaker than the index; should the local
commit fail after the remote took the change, the remote is put back.
Locking a version on a remote bucket without object lock is refused
(RemoteLockUnsupported): promote it first.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .audit import audited
from .blobs import fragment_location
from .errors import InvalidArgument, ObjectLocked, PreconditionFailed
from .locks import COMPLIANCE, check_mode, in_commit_grace, lock_active, may_bypass, utc_text
from .objects import ObjectInfo

if TYPE_CHECKING:
    from .engine import Principal, Store


DAY = 86400
YEAR = 365 * DAY  # S3 counts a retention year as 365 days


class RetentionMixin:
    """WORM operations of :class:`objfs.store.Store`."""

    @audited("lock-config", target=lambda a, k, r: {"bucket": a[0]})
    def put_lock_configuration(
        self: Store,
        bucket: str,
        mode: str | None,
        *,
        days: int | None = None,
        years: int | None = None,
        principal: Principal | None = None,
    ) -> dict[str, Any]:
        """Set (or, with ``mode`` None, clear) the bucket's default retention for new versions.

        Only buckets created with object lock accept one. Durable when it returns.
        """
        settings = self.head_bucket(bucket)
        if not settings.get("object_lock"):
            raise InvalidArgument(f"bucket {bucket!r} was not created with object lock enabled")
        if mode is None:
            return self.update_bucket(bucket, lock_default=None)
        check_mode(mode)
        if (days is None) == (years is None):
            raise InvalidArgument("a default retention has either Days or Years")
        count = days if days is not None else years
        if not isinstance(count, int) or count <= 0:
            raise InvalidArgument("the default retention period must be a positive whole number")
        seconds = count * DAY if days is not None else count * YEAR
        return self.update_bucket(bucket, lock_default={"mode": mode, "seconds": seconds, "days": days, "years": years})

    @audited("retention")
    def set_retention(
        self: Store,
        bucket: str,
        key: str,
        mode: str | None,
        until: float | None,
        *,
        version_id: str | None = None,
        principal: Principal | None = None,
        bypass_governance: bool = False,
    ) -> ObjectInfo:
        """Set, extend, shorten or remove the retention of one version, under the WORM rules.

        COMPLIANCE: only an extension (same mode, later date) is accepted.
        GOVERNANCE: an extension in GOVERNANCE is accepted; shortening,
        removal or a switch to COMPLIANCE needs a bypass-governance principal
        asking for the bypass. The new retention is on the drives and in the
        index when this returns.
        """
        if mode is not None:
            check_mode(mode)
        if (mode is None) != (until is None):
            raise InvalidArgument("a retention has both a mode and a date, or neither")
        settings = self.head_bucket(bucket)
        if not settings.get("object_lock"):
            raise InvalidArgument(f"bucket {bucket!r} was not created with object lock enabled")
        now = self.clock.now()
        if until is not None and until <= now:
            raise InvalidArgument("the retain-until date must be in the future")

        def rule(record: dict[str, Any]) -> None:
            current = record.get("retention")
            if not current or current["until"] <= now:
                return
            if until is not None and until >= current["until"] and mode == current["mode"]:
                return  # an extension in the same mode
            if current["mode"] == COMPLIANCE:
                raise ObjectLocked(f"{bucket}/{key}: COMPLIANCE retention can only be extended")
            if not may_bypass(principal, bypass_governance):
                change = (
                    "raising GOVERNANCE retention to COMPLIANCE"
                    if mode == COMPLIANCE
                    else "shortening or removing GOVERNANCE retention"
                )
                raise ObjectLocked(f"{bucket}/{key}: {change} needs the bypass-governance permission, asked for")

        retention = None if mode is None else {"mode": mode, "until": float(until)}
        bypass = bypass_governance and may_bypass(principal, bypass_governance)
        return self._change_lock(bucket, key, version_id, rule, {"retention": retention}, bypass=bypass)

    @audited("legal-hold")
    def set_legal_hold(
        self: Store, bucket: str, key: str, on: bool, *, version_id: str | None = None, principal: Principal | None = None
    ) -> ObjectInfo:
        """Place or lift a legal hold on one version. Durable when it returns."""
        if not self.head_bucket(bucket).get("object_lock"):
            raise InvalidArgument(f"bucket {bucket!r} was not created with object lock enabled")
        return self._change_lock(bucket, key, version_id, lambda record: None, {"legal_hold": bool(on)})

    def _change_lock(
        self: Store, bucket: str, key: str, version_id: str | None, rule, change: dict[str, Any], *, bypass: bool = False
    ) -> ObjectInfo:
        """Apply a lock change to one version: remote tier objects first (:mod:`.remotetier`), then drives, then index."""
        for _attempt in range(5):
            with self.index.read() as txn:
                self._bucket(txn, bucket)
                record = self._find(txn, bucket, key, version_id)
            if record.get("delete_marker"):
                raise InvalidArgument("a delete marker has no retention or legal hold")
            rule(record)
            new = dict(record, gen=time.time_ns(), **change)
            remote: list[dict[str, Any]] = []
            if any(d.get("remote") for d in record.get("parts") or []):
                from .remotetier import sync_remote_lock  # boto3 only for stores with a remote tier

                # The remote object takes the change first: it is never weaker than the index says.
                remote = sync_remote_lock(self, record, new, bypass=bypass)

            def commit(txn, record=record, new=new):
                now = self._find(txn, bucket, key, record["version"])
                if now["id"] != record["id"] or now.get("gen") != record.get("gen"):
                    raise _Raced()
                self._store_record(txn, new)

            try:
                with self._meta_change([{"id": record["id"], "bucket": bucket, "key": key, "gen": new["gen"]}]):
                    # The drives learn the new lock before the index does (rebuild-index keeps it).
                    self._write_meta_files(new)
                    self.index.commit(commit)
            except BaseException as exc:
                if remote:  # the index kept the old lock: so does the remote
                    from .remotetier import restore_remote_lock

                    restore_remote_lock(self, remote, new, record)
                if isinstance(exc, _Raced):
                    continue  # the drives' copy was undone on the way out
                raise
            self._protect_files(new, lock_active(new, self.clock.now()))
            return ObjectInfo.from_record(new)
        raise PreconditionFailed("the version changed during the update; try again")

    def lock_state(self: Store, info: ObjectInfo, *, action: str = "write") -> str | None:
        """Why the version cannot be changed now ("legal hold", "COMPLIANCE until ..."), or None.

        ``action`` "rename" or "setattr" honours the commit grace of versions
        that took their bucket's default retention (see ``[worm]`` in objfs.toml).
        """
        record = info.record
        if action in ("rename", "setattr") and in_commit_grace(record, self.clock.now(), self.config.worm_commit_grace):
            return None
        if record.get("legal_hold"):
            return "legal hold"
        retention = record.get("retention")
        if retention and retention["until"] > self.clock.now():
            return f"{retention['mode']} until {utc_text(retention['until'])}"
        return None

    def check_change(self: Store, info: ObjectInfo | None, action: str, *, principal: Principal | None) -> None:
        """Refuse a change the WORM rules forbid on ``info``'s version now: raises ObjectLocked.

        For fronts that stage a change before calling the engine (the mount
        opens a file for writing long before it commits). ``action`` is one of
        ``write``, ``delete``, ``truncate``, ``rename``, ``setattr``, ``setxattr``;
        renames and attribute changes honour the commit grace. The refusal is
        a durable ``denied`` audit line before this raises. The principal's
        rights are checked too (AccessDenied, audited the same way). ``info``
        None (a file that exists only in a front's staging) passes.
        """
        if info is None:
            return
        self.authorize(principal, action, info.bucket, info.key)
        reason = self.lock_state(info, action=action)
        if reason is None:
            return
        detail = f"{info.bucket}/{info.key} is locked ({reason})"
        self.record_audit(
            action, principal, "denied", True, bucket=info.bucket, key=info.key, version=info.version_id, detail=detail
        )
        raise ObjectLocked(detail)

    def _protect_files(self: Store, record: dict[str, Any], on: bool) -> None:
        """Mark (or unmark) the fragment files of a version immutable on the drives.

        A fragment in a volume makes the whole volume immutable: this process
        stops appending to it first, and a writer of another process moves to
        a new volume when its next append is refused. A volume is never
        unmarked here (it may hold other locked versions): its dead entries
        keep their space (see :mod:`.volumes`).
        """
        for desc in record.get("parts", []):
            for index, drive_id in enumerate(desc["drives"]):
                drive = self.drive_by_id(drive_id)
                if drive is None:
                    continue
                path, offset, _length = fragment_location(drive, desc, index)
                if offset == 0:
                    self.set_immutable(path, on)
                elif on:
                    self.volumes.seal(path)
                    self.set_immutable(path, True)


class _Raced(Exception):
    """The version changed between read and commit; the change is retried."""
