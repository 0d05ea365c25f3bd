"""What ``objfs status`` says beyond capacity: SMART health, background-work backlogs and lag, the last scrub.

* SMART health per drive: ``smartctl --json -H`` (smartmontools) on the
  block device backing the drive's filesystem, when smartctl is installed
  and the filesystem sits on a disk the kernel lists under /sys/dev/block.
  Directory drives (``directory_drives``), filesystems without a disk
  (tmpfs, overlay), a missing smartctl or an answer without a verdict give
  ``"unknown"``: asking never fails or slows ``status`` much (a 10 s
  timeout per disk, and an answer is kept for :data:`SMART_TTL` seconds).
* Lifecycle: when the last whole pass ended, how long ago (its lag), and
  where an unfinished pass stands (its cursor).
* Replication: the queue's entries, bytes, the oldest entry's age (lag)
  and failures.
* The last scrub: when it ended, how long it took and its result, written
  by :meth:`record_scrub` in the index's ``settings`` when a scrub ends.

Guarantee: every value here is read from kept state (one record, the
replication queue, a cached smartctl answer), never from a scan of the
objects, so ``status`` stays fast at any store size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Store
    from .scrub import ScrubReport

SCRUB_KEY = b"scrub-last"
LIFECYCLE_KEY = b"lifecycle-last"
LIFECYCLE_CURSOR_KEY = b"lifecycle-cursor"  # objfs/store/lifecycle.py CURSOR_KEY
SMART_TTL = 600.0
SMART_TIMEOUT = 10.0

_smart_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_smart_lock = threading.Lock()


def block_device(path: str | os.PathLike[str]) -> str | None:
    """The whole disk (``/dev/sda``, ``/dev/nvme0n1``) backing the filesystem of ``path``, or None."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return None
    sys_dir = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    try:
        resolved = sys_dir.resolve(strict=True)
    except OSError:
        return None  # no block device: tmpfs, overlay, a network filesystem
    if (resolved / "partition").exists():
        resolved = resolved.parent  # a partition: SMART speaks for its disk
    return f"/dev/{resolved.name}"


def smart_health(device: str | None) -> dict[str, Any]:
    """``{"health": "passed"|"failed"|"unknown", "device": ..., "detail": ...}`` for one disk."""
    if device is None:
        return {"health": "unknown", "device": None, "detail": "no block device (directory or virtual filesystem)"}
    smartctl = shutil.which("smartctl")
    if smartctl is None:
        return {"health": "unknown", "device": device, "detail": "smartctl not installed (apt install smartmontools)"}
    now = time.monotonic()
    with _smart_lock:
        cached = _smart_cache.get(device)
        if cached is not None and now - cached[0] < SMART_TTL:
            return cached[1]
    result = _ask_smartctl(smartctl, device)
    with _smart_lock:
        _smart_cache[device] = (now, result)
    return result


def _ask_smartctl(smartctl: str, device: str) -> dict[str, Any]:
    try:
        done = subprocess.run([smartctl, "--json", "-H", device], capture_output=True, text=True, timeout=SMART_TIMEOUT)
        answer = json.loads(done.stdout or "{}")
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        return {"health": "unknown", "device": device, "detail": f"smartctl: {exc}"}
    passed = (answer.get("smart_status") or {}).get("passed")
    if passed is None:
        messages = (answer.get("smartctl") or {}).get("messages") or [{}]
        return {"health": "unknown", "device": device, "detail": messages[0].get("string", "no SMART verdict")}
    return {"health": "passed" if passed else "failed", "device": device, "detail": ""}


def drive_smart(store: Store, path: str | os.PathLike[str]) -> dict[str, Any]:
    """SMART health of the disk under one drive ("unknown" for the store's directory drives)."""
    if store.config.directory_drives:
        return {"health": "unknown", "device": None, "detail": "directory drive"}
    return smart_health(block_device(path))


def record_scrub(store: Store, report: ScrubReport, started: float, finished: float) -> None:
    """Keep the outcome of a scrub that ran to its end (read by :func:`operations`)."""
    if report.lost:
        result = f"{len(report.lost)} objects lost"
    elif report.index_problem:
        result = "index not trusted: " + report.index_problem
    elif report.drive_errors:
        result = f"{len(report.drive_errors)} drive errors"
    elif report.fragments_repaired:
        result = f"repaired {report.fragments_repaired} fragments"
    else:
        result = "ok"
    summary = {
        "finished": finished,
        "seconds": round(finished - started, 3),
        "result": result,
        "ok": not (report.lost or report.index_problem or report.drive_errors),
        "objects": report.objects,
        "fragments_checked": report.fragments_checked,
        "fragments_repaired": report.fragments_repaired,
        "lost": len(report.lost),
        "drive_errors": len(report.drive_errors),
    }
    store.index.commit(lambda txn: txn.put("settings", SCRUB_KEY, summary))


def operations(store: Store, now: float | None = None) -> dict[str, Any]:
    """Lifecycle, replication and scrub state for ``status``."""
    now = time.time() if now is None else now
    with store.index.read() as txn:
        scrub = txn.get("settings", SCRUB_KEY)
        lifecycle_last = txn.get("settings", LIFECYCLE_KEY)
        cursor = txn.get("settings", LIFECYCLE_CURSOR_KEY)
    lifecycle: dict[str, Any] = {
        "last_pass": lifecycle_last.get("finished") if lifecycle_last else None,
        "lag_seconds": round(now - lifecycle_last["finished"], 3) if lifecycle_last else None,
        "pass_in_progress": bool(cursor),
        "resumes_at_bucket": (cursor or {}).get("bucket"),
    }
    if lifecycle_last:
        lifecycle["last_pass_actions"] = lifecycle_last.get("actions", 0)
    from .replication import QUEUE_DB

    replication: dict[str, Any] = {"backlog_objects": 0, "backlog_bytes": 0, "lag_seconds": 0.0, "failures": 0}
    if QUEUE_DB in store.index.dbs:
        backlog = store.replication_backlog(now=now)
        replication = {
            "backlog_objects": backlog["backlog_objects"],
            "backlog_bytes": backlog["backlog_bytes"],
            "lag_seconds": backlog["lag_seconds"],
            "failures": len(backlog["failures"]),
        }
    last_scrub = dict(scrub, age_seconds=round(now - scrub["finished"], 3)) if scrub else None
    return {"lifecycle": lifecycle, "replication": replication, "last_scrub": last_scrub}
