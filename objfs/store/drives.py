"""Drives, their health, and placement of fragments by rendezvous hashing.

A drive is a directory (a mount point on an appliance) holding a marker file
``.objfs-drive`` that names the store and the drive. A drive whose directory
or marker is gone, or that belongs to another store, is not healthy: nothing
is read from or written to it, so a drive that failed to mount never fills
the root filesystem by mistake.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MARKER = ".objfs-drive"
BLOBS = "blobs"
TMP = "tmp"
BUCKETS = "buckets"
VOLUMES = "volumes"  # small blobs' fragments, packed (see volumes.py)
#: A drive with less free space than this takes no new fragments (it is "full").
RESERVE_BYTES = 64 << 20

# Drive states, as ``objfs status`` shows them. Only OK takes writes; OK, READ_ONLY
# and FULL are read from.
OK = "ok"
MISSING = "missing"  # no directory, or no marker: nothing (of ours) is mounted there
FOREIGN = "foreign"  # the marker names another store or another drive
WIPED = "wiped"  # our marker, but the layout under it is gone (contents deleted)
READ_ONLY = "read-only"
FULL = "full"
READABLE = frozenset({OK, READ_ONLY, FULL})


@dataclass(frozen=True)
class Drive:
    """One drive of a tier. ``drive_id`` is stable across re-ordering of paths."""

    drive_id: str
    path: Path
    tier: str

    def blob_dir(self, blob_id: str) -> Path:
        return self.path / BLOBS / blob_id[:2] / blob_id[2:4]

    def fragment_path(self, blob_id: str, index: int) -> Path:
        return self.blob_dir(blob_id) / f"{blob_id}.f{index}"

    def meta_path(self, object_id: str) -> Path:
        return self.blob_dir(object_id) / f"{object_id}.meta"

    @property
    def tmp_dir(self) -> Path:
        return self.path / TMP

    def state(self, store_id: str) -> str:
        """One of OK, MISSING, FOREIGN, WIPED, READ_ONLY, FULL (checked in that order)."""
        try:
            marker = json.loads((self.path / MARKER).read_text())
        except (OSError, ValueError):
            return MISSING
        if marker.get("store") != store_id or marker.get("drive") != self.drive_id:
            return FOREIGN
        if not (self.path / BLOBS).is_dir() or not self.tmp_dir.is_dir():
            return WIPED
        try:
            vfs = os.statvfs(self.tmp_dir)
        except OSError:
            return MISSING
        if vfs.f_flag & os.ST_RDONLY or not os.access(self.tmp_dir, os.W_OK):
            return READ_ONLY
        if vfs.f_bavail * vfs.f_frsize < RESERVE_BYTES:
            return FULL
        return OK

    def free_bytes(self) -> tuple[int, int]:
        """(free, total) bytes of the filesystem holding the drive."""
        usage = shutil.disk_usage(self.path)
        return usage.free, usage.total


def format_drive(path: Path, store_id: str, drive_id: str) -> None:
    """Prepare an empty directory as a drive of this store, or restore the layout of a wiped one.

    Refuses a directory that already belongs to another store or drive.
    """
    path.mkdir(parents=True, exist_ok=True)
    marker = path / MARKER
    for sub in (BLOBS, TMP, BUCKETS, VOLUMES):
        (path / sub).mkdir(exist_ok=True)
    if marker.exists():
        existing = json.loads(marker.read_text())
        if existing.get("store") != store_id or existing.get("drive") != drive_id:
            raise FileExistsError(errno.EEXIST, f"{path} is a drive of another store or drive", str(path))
        fsync_dir(path)
        return
    tmp = path / (MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"store": store_id, "drive": drive_id}, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, marker)
    fsync_dir(path)


def drive_id_for(store_id: str, tier: str, index: int) -> str:
    """The id a tier's ``index``-th drive gets when it is formatted (``objfs init``)."""
    return f"{tier}-{index}"


def read_marker(path: Path) -> dict | None:
    """The drive marker at ``path``, or None when there is none (or it is unreadable)."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def identify_drives(store_id: str, tier: str, paths: tuple[Path, ...] | list[Path]) -> list[Drive]:
    """The tier's drives, each path under the id its marker names, not its position in ``objfs.toml``.

    Reordering the paths in the configuration therefore changes nothing. A
    path whose marker is missing (a drive not mounted, a new empty disk) or
    not one of this tier's takes an id that no marker claims: its positional
    one when free, else the first free one, so ids stay unique and a
    replacement disk is formatted under the id of the drive it replaces.
    """
    ids = [drive_id_for(store_id, tier, i) for i in range(len(paths))]
    claimed: dict[int, str] = {}
    for i, path in enumerate(paths):
        marker = read_marker(path)
        if marker and marker.get("store") == store_id and marker.get("drive") in ids:
            if marker["drive"] not in claimed.values():
                claimed[i] = marker["drive"]
    free = [drive_id for drive_id in ids if drive_id not in claimed.values()]
    result = []
    for i, path in enumerate(paths):
        if i in claimed:
            drive_id = claimed[i]
        else:
            drive_id = ids[i] if ids[i] in free else free[0]
            free.remove(drive_id)
        result.append(Drive(drive_id, path, tier))
    return result


def rendezvous_order(object_id: str, drives: list[Drive]) -> list[Drive]:
    """Drives ranked for ``object_id``: highest random weight first.

    Adding or removing a drive only moves the objects whose top choices
    change, and the ranking is the same in every process.
    """

    def weight(drive: Drive) -> bytes:
        return hashlib.blake2b(f"{object_id}/{drive.drive_id}".encode(), digest_size=8).digest()

    return sorted(drives, key=weight, reverse=True)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a create or rename in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
