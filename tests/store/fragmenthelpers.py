"""Helpers of the tests that reach fragments on the drives: files and volume entries alike.

A fragment is either a file of its own or an entry's payload in a volume
(see objfs/store/volumes.py); these helpers find it the way the engine does
(:func:`objfs.store.blobs.fragment_location`) and damage it the way a disk
does: flipped bytes inside the frames, a lost file, a wiped stretch of a
volume (zeros).
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path
from typing import Any

from objfs.store import Store
from objfs.store.blobs import fragment_location
from objfs.store.engine import FS_IMMUTABLE_FL, FS_IOC_GETFLAGS
from objfs.store.fragments import read_footer
from objfs.store.volumes import list_volumes, scan


def location(store: Store, desc: dict[str, Any], index: int) -> tuple[Path, int, int]:
    """``(path, offset, length)`` of fragment ``index`` of the blob ``desc`` (a file: offset 0, its size)."""
    drive = store.drive_by_id(desc["drives"][index])
    path, offset, length = fragment_location(drive, desc, index)
    if length is None:
        length = path.stat().st_size
    return path, offset, length


def is_packed(desc: dict[str, Any], index: int) -> bool:
    """Whether fragment ``index`` is a volume entry (not a fragment file)."""
    vols = desc.get("vols")
    return bool(vols and index < len(vols) and vols[index])


def fragment_bytes(store: Store, desc: dict[str, Any], index: int) -> bytes:
    """The image of fragment ``index``: frames with their CRCs, the footer, the tail."""
    path, offset, length = location(store, desc, index)
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def fragment_whole(store: Store, desc: dict[str, Any], index: int) -> bool:
    """Whether fragment ``index`` is there with a valid footer (what a repair must restore)."""
    drive = store.drive_by_id(desc["drives"][index])
    path, offset, length = fragment_location(drive, desc, index)
    if not path.exists():
        return False
    footer = read_footer(path, offset, length)
    return footer is not None and footer.get("blob", {}).get("id") == desc["id"]


def is_immutable(path: Path) -> bool:
    """Whether ``path`` carries FS_IMMUTABLE_FL (``chattr +i``: not even root may change or unlink it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(struct.pack("i", 0))
        try:
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        except OSError:
            return False
        return bool(struct.unpack("i", buf)[0] & FS_IMMUTABLE_FL)
    finally:
        os.close(fd)


def _write_at(store: Store, path: Path, offset: int, data: bytes) -> None:
    # A volume made immutable for a locked version: the "disk" damages it anyway, and the flag stays.
    immutable = is_immutable(path)
    if immutable:
        store.set_immutable(path, False)
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        if immutable:
            store.set_immutable(path, True)


def corrupt_fragment(store: Store, desc: dict[str, Any], index: int, offset: int = 10) -> None:
    """Flip one byte ``offset`` bytes into fragment ``index`` (inside its first frame by default).

    A negative ``offset`` counts from the fragment's end (its footer and tail).
    """
    path, base, length = location(store, desc, index)
    if offset < 0:
        offset += length
    assert 0 <= offset < length, f"offset {offset} outside the fragment ({length} bytes)"
    with open(path, "rb") as f:
        f.seek(base + offset)
        byte = f.read(1)
    _write_at(store, path, base + offset, bytes([byte[0] ^ 0xFF]))


def overwrite_fragment(store: Store, desc: dict[str, Any], index: int, offset: int, data: bytes) -> None:
    """Write ``data`` over fragment ``index`` at ``offset`` (within the fragment), as a bad disk or a forger would."""
    path, base, length = location(store, desc, index)
    assert 0 <= offset and offset + len(data) <= length, "outside the fragment"
    _write_at(store, path, base + offset, data)


def tear_fragment(store: Store, desc: dict[str, Any], index: int, keep: int = 10) -> None:
    """Keep only the first ``keep`` bytes of fragment ``index`` (a torn write): a file is truncated, an entry zeroed past them."""
    path, base, length = location(store, desc, index)
    if is_packed(desc, index):
        _write_at(store, path, base + keep, bytes(length - keep))
    else:
        store.set_immutable(path, False)
        os.truncate(path, keep)


def lose_fragment(store: Store, desc: dict[str, Any], index: int) -> None:
    """Lose fragment ``index``: a file is unlinked, a volume entry's payload becomes zeros (a wiped stretch)."""
    path, base, length = location(store, desc, index)
    if is_packed(desc, index):
        _write_at(store, path, base, bytes(length))
    else:
        store.set_immutable(path, False)  # a locked version's file: the disk loses it anyway
        path.unlink()


def fragment_files(store: Store) -> list[Path]:
    """Every fragment file on every drive (not meta files, not temp files, not volumes)."""
    out = []
    for drive in store.all_drives():
        for dirpath, _dirs, names in os.walk(drive.path / "blobs"):
            out += [Path(dirpath) / n for n in names if not n.endswith(".meta")]
    return sorted(out)


def volume_entries(store: Store) -> list[tuple[str, str, int]]:
    """Every entry found in the volumes of every drive: ``(volume path, blob id, fragment index)``."""
    out = []
    for drive in store.all_drives():
        for path in list_volumes(drive.path):
            out += [(str(path), e.blob_id, e.index) for e in scan(path)]
    return sorted(out)


def fragments(store: Store) -> list[str]:
    """Every fragment on every drive, files and volume entries, as comparable names."""
    files = [str(p) for p in fragment_files(store)]
    return sorted(files + [f"{v}#{b}.f{i}" for v, b, i in volume_entries(store)])


def count_fragments(store: Store) -> int:
    """How many fragments the drives hold (files and volume entries)."""
    return len(fragment_files(store)) + len(volume_entries(store))


def blob_fragments(top: Path, blob_id: str | None = None) -> list[str]:
    """The fragments of one blob (every blob: None) in any drive under ``top``: file paths, ``volume#blob.fN`` entries.

    Entries the collector punched are gone from a volume's scan, as an unlinked file is from its directory.
    """
    pattern = f"{blob_id}.f*" if blob_id else "*.f[0-9]*"
    files = [str(p) for p in top.rglob(pattern) if p.parent.parent.parent.name == "blobs" and not p.name.endswith(".tmp")]
    volumes = [v for v in top.rglob("*.vol") if v.parent.name == "volumes"]
    entries = [f"{v}#{e.blob_id}.f{e.index}" for v in volumes for e in scan(v) if blob_id in (None, e.blob_id)]
    return sorted(files + entries)
