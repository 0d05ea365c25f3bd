"""Spool hygiene: every staging file under ``STORE/spool`` has an owner process.

Fronts stage data that is not yet an object (a file open for write on the
mount, a C-STORE being received, a multipart part in transit) in spool
files made here, in ``STORE/spool/<kind>/``, named
``<pid>-<start>-<anything>``: the owning process and its start time. A spool
file is never part of the store, so once its owner is dead it is garbage
by positive evidence (the name says whose it was, and that process is gone
or its pid was reused). :meth:`SpoolMixin.sweep_spool` removes exactly
those; it runs when a store is opened and on every scrub. A live owner's
files are never touched, however old.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from .names import check_spool_kind
from .procs import own_identity, process_start

if TYPE_CHECKING:
    from .engine import Store

_OWNED = re.compile(r"^(\d+)-(\d+)-")
_LEGACY = re.compile(r"^fuse-(\d+)-")  # spool files of stores written before owners had start times


class SpoolMixin:
    """Spool operations of :class:`objfs.store.Store`."""

    def spool_area(self: Store, kind: str) -> Path:
        """The directory for spool files of ``kind`` (``fuse``, ``dicom-recv``, ...), created if needed."""
        check_spool_kind(kind)
        area = self.spool_dir / kind
        area.mkdir(parents=True, exist_ok=True)
        return area

    def spool_prefix(self: Store) -> str:
        """The name prefix that marks a spool file as this process's (for libraries that name their own temp files)."""
        me = own_identity()
        return f"{me['pid']}-{me['start']}-"

    def new_spool_file(self: Store, kind: str, hint: str = "") -> tuple[int, Path]:
        """Create a new, empty spool file owned by this process; returns ``(fd, path)`` (O_RDWR, 0600)."""
        safe_hint = re.sub(r"[^A-Za-z0-9_.-]", "_", hint)[:40]
        path = self.spool_area(kind) / f"{self.spool_prefix()}{safe_hint}{secrets.token_hex(6)}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return fd, path

    def sweep_spool(self: Store) -> int:
        """Remove the spool files whose owner process is gone; returns how many. Live owners' files stay."""
        removed = 0
        try:
            entries = list(os.scandir(self.spool_dir))
        except OSError:
            return 0
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                try:
                    files = list(os.scandir(entry.path))
                except OSError:
                    continue
            else:
                files = [entry]
            for item in files:
                if item.is_file(follow_symlinks=False) and not _owner_alive(item.name):
                    try:
                        os.unlink(item.path)
                        removed += 1
                    except OSError:
                        pass
        return removed


def _owner_alive(name: str) -> bool:
    owned = _OWNED.match(name)
    if owned:
        return process_start(int(owned.group(1))) == int(owned.group(2))
    legacy = _LEGACY.match(name)
    if legacy:
        return process_start(int(legacy.group(1))) is not None
    return True  # not a name we gave: not ours to judge
