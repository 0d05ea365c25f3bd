"""The WORM rule every change to a version passes through (no other imports, no cycles)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .errors import ObjectLocked

if TYPE_CHECKING:
    from .engine import Principal


def check_lock(record: dict[str, Any], now: float, principal: Principal | None, bypass: bool) -> None:
    """Raise ObjectLocked if WORM rules forbid deleting or overwriting ``record``."""
    if record.get("delete_marker"):
        return
    if record.get("legal_hold"):
        raise ObjectLocked(f"{record['bucket']}/{record['key']} version {record['version']} is under legal hold")
    retention = record.get("retention")
    if not retention or retention["until"] <= now:
        return
    if retention["mode"] == "GOVERNANCE" and bypass and principal is not None and principal.bypass_governance:
        return
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(retention["until"]))
    raise ObjectLocked(
        f"{record['bucket']}/{record['key']} version {record['version']} is locked ({retention['mode']}) until {until}"
    )


def lock_active(record: dict[str, Any], now: float) -> bool:
    retention = record.get("retention")
    return bool(record.get("legal_hold")) or bool(retention and retention["until"] > now)
