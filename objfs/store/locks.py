"""The WORM rule every change to a version passes through, and the retention modes (no other imports, no cycles).

:data:`MODES` is the one place the retention modes are spelled; the
engine, the CLI and the fronts import them from here (fronts through
``objfs.store``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .access import BYPASS_GOVERNANCE
from .errors import InvalidArgument, ObjectLocked

if TYPE_CHECKING:
    from .engine import Principal

GOVERNANCE = "GOVERNANCE"
COMPLIANCE = "COMPLIANCE"
MODES = (GOVERNANCE, COMPLIANCE)


def check_mode(mode: str | None) -> None:
    """InvalidArgument unless ``mode`` is a retention mode."""
    if mode not in MODES:
        raise InvalidArgument(f"retention mode must be {' or '.join(MODES)}, not {mode!r}")


def check_new_retention(retention: dict[str, object] | None, now: float) -> None:
    """InvalidArgument unless ``retention`` (``{"mode", "until"}`` or None) may be given to a new version now."""
    if retention is None:
        return
    check_mode(retention.get("mode"))  # type: ignore[arg-type]
    if float(retention["until"]) <= now:  # type: ignore[arg-type]
        raise InvalidArgument("the retain-until date must be in the future")


def may_bypass(principal: Principal | None, asked: bool) -> bool:
    """Whether a change may override GOVERNANCE retention: the principal holds the right and asked for it."""
    return asked and principal is not None and principal.holds(BYPASS_GOVERNANCE)


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
    if retention["mode"] == GOVERNANCE and may_bypass(principal, bypass):
        return
    raise ObjectLocked(
        f"{record['bucket']}/{record['key']} version {record['version']} is locked ({retention['mode']}) until {utc_text(retention['until'])}"
    )


def lock_active(record: dict[str, Any], now: float) -> bool:
    retention = record.get("retention")
    return bool(record.get("legal_hold")) or bool(retention and retention["until"] > now)
