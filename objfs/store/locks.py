"""The WORM rule every change to a version passes through (no other imports, no cycles)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .errors import ObjectLocked

if TYPE_CHECKING:
    from .engine import Principal


def utc_text(ts: float) -> str:
    """A retain-until date as every front shows it: ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(ts)))


def in_commit_grace(record: dict[str, Any], now: float, grace: float) -> bool:
    """Whether a version that took its bucket's default retention is still in its commit grace.

    During the grace it may be renamed and get POSIX attributes set (never
    altered or deleted), so that write-to-temp-then-rename works on WORM
    buckets; explicit retention and legal holds have no grace.
    """
    retention = record.get("retention")
    return (
        grace > 0
        and not record.get("legal_hold")
        and bool(retention)
        and retention.get("source") == "default"
        and now - record["created"] < grace
    )


def check_lock(record: dict[str, Any], now: float, principal: Principal | None, bypass: bool, *, grace: float = 0.0) -> None:
    """Raise ObjectLocked if WORM rules forbid changing ``record``.

    ``grace`` is given only for renames and attribute changes (see :func:`in_commit_grace`).
    """
    if record.get("delete_marker") or in_commit_grace(record, now, grace):
        return
    if record.get("legal_hold"):
        raise ObjectLocked(f"{record['bucket']}/{record['key']} version {record['version']} is under legal hold")
    retention = record.get("retention")
    if not retention or retention["until"] <= now:
        return
    if retention["mode"] == "GOVERNANCE" and bypass and principal is not None and principal.bypass_governance:
        return
    raise ObjectLocked(
        f"{record['bucket']}/{record['key']} version {record['version']} is locked ({retention['mode']}) until {utc_text(retention['until'])}"
    )


def lock_active(record: dict[str, Any], now: float) -> bool:
    retention = record.get("retention")
    return bool(record.get("legal_hold")) or bool(retention and retention["until"] > now)
