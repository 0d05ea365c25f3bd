"""Reader leases: a version being read is not collected under its reader.

Every :class:`~objfs.store.objects.ObjectReader` holds a lease on the blobs
of the version it opened, from open to close. Leases of this process are
counted in memory and published in ``STORE/run/leases/<pid>-<start>``
(rewritten in place; not fsynced: a lease only matters while its process
lives, and a crash ends both): at once when a blob is leased, and within
:data:`RELEASE_LAG` seconds when leases end (a lease published a little too
long only delays the collector). A reader of the file that catches it half
rewritten cannot parse it and must then collect nothing this time. The
garbage collector of any process reads every published lease before it
deletes a blob and keeps every blob leased by a live process, for at most
``[gc] reader_grace_seconds`` after the lease was taken (so a reader that
never closes cannot pin garbage forever).
"""

from __future__ import annotations

import collections
import os
import re
import threading
import time
from pathlib import Path

import msgpack

from .procs import own_identity, process_start

_NAME = re.compile(r"^(\d+)-(\d+)$")
#: Seconds a released lease may stay published.
RELEASE_LAG = 0.2


class LeasesUnreadable(Exception):
    """Another process's lease file was caught mid-rewrite: collect nothing this pass."""


class ReaderLeases:
    """The lease table of one process, and the view of every process's leases."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "leases"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._counts: collections.Counter[str] = collections.Counter()
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._fd_pid = -1
        self._published = 0.0
        self._timer: threading.Timer | None = None

    def _own_path(self) -> Path:
        me = own_identity()
        return self.dir / f"{me['pid']}-{me['start']}"

    def hold(self, blob_ids: list[str]) -> None:
        """Lease ``blob_ids`` until :meth:`release`; published before this returns."""
        if not blob_ids:
            return
        now = time.time()
        with self._lock:
            fresh = False
            for blob_id in blob_ids:
                if self._counts[blob_id] == 0:
                    self._since[blob_id] = now
                    fresh = True
                self._counts[blob_id] += 1
            if fresh:
                self._publish()

    def release(self, blob_ids: list[str]) -> None:
        if not blob_ids:
            return
        with self._lock:
            gone = False
            for blob_id in blob_ids:
                self._counts[blob_id] -= 1
                if self._counts[blob_id] <= 0:
                    del self._counts[blob_id]
                    self._since.pop(blob_id, None)
                    gone = True
            if not gone:
                return
            if time.monotonic() - self._published >= RELEASE_LAG:
                self._publish()
            elif self._timer is None:
                self._timer = threading.Timer(RELEASE_LAG, self._flush)
                self._timer.daemon = True
                self._timer.start()

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            self._publish()

    def _publish(self) -> None:
        """Rewrite this process's lease file in place (one pwrite): cheap enough for every read."""
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd = os.open(self._own_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._fd_pid = os.getpid()
        body = msgpack.packb(self._since)
        os.pwrite(self._fd, body, 0)
        os.ftruncate(self._fd, len(body))
        self._published = time.monotonic()

    def held(self, now: float, grace: float) -> set[str]:
        """Blob ids leased by any live process (this one included) for less than ``grace`` seconds."""
        with self._lock:
            out = {b for b, since in self._since.items() if now - since < grace}
        own = self._own_path().name
        try:
            names = os.listdir(self.dir)
        except OSError:
            return out
        for name in names:
            match = _NAME.match(name)
            if match is None or name == own:
                continue
            if process_start(int(match.group(1))) != int(match.group(2)):
                try:
                    os.unlink(self.dir / name)  # its owner is gone: so are its readers
                except OSError:
                    pass
                continue
            try:
                since = msgpack.unpackb((self.dir / name).read_bytes())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                raise LeasesUnreadable(f"lease file {name}: {exc}") from None
            out.update(b for b, t in since.items() if now - t < grace)
        return out
