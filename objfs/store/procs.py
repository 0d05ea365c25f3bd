"""Process identities: a pid plus its start time, so a reused pid is never mistaken for its owner.

Used to tell whether the process that left a temp fragment, a spool file or a
reader lease behind is still running. A process identity is only ever used
to *keep* a file (its owner may still need it); a dead owner is one piece
of evidence, never by itself a reason to delete data that may be committed.
"""

from __future__ import annotations

import os
from typing import Any


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


_SELF: dict[str, int | None] = {}


def own_identity() -> dict[str, Any]:
    """This process: ``{"pid": ..., "start": ...}`` (cached per pid, so forks get their own)."""
    pid = os.getpid()
    if _SELF.get("pid") != pid:
        _SELF.clear()
        _SELF.update(pid=pid, start=process_start(pid))
    return dict(_SELF)


def identity_alive(identity: dict[str, Any] | None) -> bool:
    """Whether the process named by ``identity`` is still the same running process."""
    if not identity:
        return False
    return process_start(identity.get("pid", -1)) == identity.get("start")
