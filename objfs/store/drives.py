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

    def is_healthy(self, store_id: str) -> bool:
        """True when the drive is present, ours, and its directories are usable."""
        try:
            marker = json.loads((self.path / MARKER).read_text())
        except (OSError, ValueError):
            return False
        return marker.get("store") == store_id and marker.get("drive") == self.drive_id

    def free_bytes(self) -> tuple[int, int]:
        """(free, total) bytes of the filesystem holding the drive."""
        usage = shutil.disk_usage(self.path)
        return usage.free, usage.total


def format_drive(path: Path, store_id: str, drive_id: str) -> None:
    """Prepare an empty directory as a drive of this store.

    Refuses a directory that already belongs to another store.
    """
    path.mkdir(parents=True, exist_ok=True)
    marker = path / MARKER
    if marker.exists():
        existing = json.loads(marker.read_text())
        if existing.get("store") != store_id:
            raise FileExistsError(errno.EEXIST, f"{path} is a drive of another store", str(path))
        return
    (path / BLOBS).mkdir(exist_ok=True)
    (path / TMP).mkdir(exist_ok=True)
    tmp = path / (MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"store": store_id, "drive": drive_id}, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, marker)
    fsync_dir(path)


def drive_id_for(store_id: str, tier: str, index: int) -> str:
    return f"{tier}-{index}"


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
