"""How the store's buckets and keys look as a directory tree (blocking helpers).

* the mount root lists the buckets; a bucket is a top-level directory;
* ``bucket/a/b`` is the object ``a/b`` if it exists (a file, or a symlink
  when its POSIX mode says S_IFLNK), else a directory when the
  directory-marker object ``a/b/`` exists (an explicit directory, which
  persists empty and carries its own mode) or when any key starts with
  ``a/b/`` (an implicit directory, mode 0755);
* an object ``x`` hides a directory ``x/`` of the same name.

Every function here calls the engine and blocks: the mount runs them in
worker threads. Engine errors propagate; the caller maps them to errno.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import Any

from objfs.store import NoSuchKey, ObjectInfo, Store
from objfs.store.locks import utc_text

from .inodes import DIR, FILE, LINK, SPECIAL, split_path

#: Read-only object metadata is exposed under this xattr prefix; setting it is EPERM.
META_XATTR = "user.objfs."
DIR_MODE = stat.S_IFDIR | 0o755
#: File types stored as metadata-only objects (``mknod``): their mode carries the type, ``rdev`` the device.
SPECIAL_TYPES = frozenset({stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK})


@dataclass
class Stat:
    """What the mount needs to answer getattr for one path."""

    kind: str
    size: int
    posix: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    info: ObjectInfo | None = None
    #: For directories: whether a marker object (or the bucket) makes it explicit.
    explicit: bool = True
    #: For files: how many names share the bytes (st_nlink), and the blob they share when more than one.
    links: int = 1
    alias: str | None = None


def stat_of_info(info: ObjectInfo) -> Stat:
    mode = info.posix.get("mode", 0)
    kind = LINK if stat.S_ISLNK(mode) else SPECIAL if stat.S_IFMT(mode) in SPECIAL_TYPES else FILE
    return Stat(kind, info.size, info.posix, info.modified, info)


def with_links(store: Store, st: Stat) -> Stat:
    """``st`` with its hard-link count (and shared blob) filled in: one index read."""
    if st.kind != DIR and st.info is not None and st.info.record.get("parts"):
        st.links = store.link_count(st.info)
        if st.links > 1:
            st.alias = st.info.record["parts"][0]["id"]
    return st


def count_subdirectories(store: Store, path: str) -> int:
    """How many directories ``path`` holds (its st_nlink is 2 more).

    A key-only walk with ``/`` as delimiter: each subdirectory costs one
    seek, each file one index key (no record is decoded).
    """
    if path == "":
        return len(store.list_buckets())
    bucket, key = split_path(path)
    return store.count_subdirectories(bucket, key + "/" if key else "")


def marker_stat(store: Store, bucket: str, prefix: str) -> Stat:
    """A directory's attributes: from its marker object if any, else implicit."""
    try:
        info = store.head_object(bucket, prefix)
    except NoSuchKey:
        return Stat(DIR, 0, {"mode": DIR_MODE}, 0.0, None, explicit=False)
    posix = dict(info.posix)
    posix["mode"] = stat.S_IFDIR | stat.S_IMODE(posix.get("mode", 0o755))
    return Stat(DIR, 0, posix, info.modified, info)


def stat_path(store: Store, path: str) -> Stat | None:
    """The attributes of ``path``, or None if nothing is there."""
    if path == "":
        return Stat(DIR, 0, {"mode": DIR_MODE})
    bucket, key = split_path(path)
    if not key:
        settings = store.head_bucket(bucket)
        return Stat(DIR, 0, {"mode": DIR_MODE}, settings.get("created") or 0.0)
    try:
        return with_links(store, stat_of_info(store.head_object(bucket, key)))
    except NoSuchKey:
        pass
    found = marker_stat(store, bucket, key + "/")
    if found.explicit:
        return found
    page = store.list_objects(bucket, prefix=key + "/", max_keys=1)
    if page.objects or page.common_prefixes:
        return found
    return None


def has_children(store: Store, path: str) -> bool:
    """Whether directory ``path`` holds anything besides its own marker."""
    bucket, key = split_path(path)
    prefix = key + "/" if key else ""
    page = store.list_objects(bucket, prefix=prefix, delimiter="/", max_keys=2)
    if page.common_prefixes:
        return True
    return any(obj.key != prefix for obj in page.objects)


def list_page(store: Store, path: str, marker: str, max_keys: int) -> tuple[list[tuple[str, Stat]], str | None]:
    """One page of directory ``path``: ``[(name, Stat)]`` and the marker of the next page.

    Uses the listing's own records (no head per file), so a directory of
    100,000 entries costs 100,000 index reads, not 100,000 round trips.
    """
    if path == "":
        buckets = store.list_buckets()
        return [(b["name"], Stat(DIR, 0, {"mode": DIR_MODE}, b.get("created") or 0.0)) for b in buckets], None
    bucket, key = split_path(path)
    prefix = key + "/" if key else ""
    page = store.list_objects(bucket, prefix=prefix, delimiter="/", start_after=marker, max_keys=max_keys)
    entries: list[tuple[str, Stat]] = []
    for info in page.objects:
        if info.key == prefix:
            continue  # this directory's own marker
        entries.append((info.key[len(prefix) :], with_links(store, stat_of_info(info))))
    for common in page.common_prefixes:
        entries.append((common[len(prefix) : -1], marker_stat(store, bucket, common)))
    return entries, page.next_marker if page.truncated else None


def meta_xattrs(info: ObjectInfo) -> dict[str, bytes]:
    """The read-only object metadata of ``info`` as xattrs under ``user.objfs.``."""
    out = {
        META_XATTR + "etag": info.etag.encode(),
        META_XATTR + "version_id": info.version_id.encode(),
        META_XATTR + "content_type": info.content_type.encode(),
        META_XATTR + "object_id": info.object_id.encode(),
    }
    for name, value in info.metadata.items():
        out[f"{META_XATTR}meta.{name}"] = str(value).encode()
    for name, value in (info.dicom or {}).items():
        if isinstance(value, (str, int, float)):
            out[f"{META_XATTR}dicom.{name}"] = str(value).encode()
    if info.retention:
        out[META_XATTR + "retention"] = retention_text(info.retention).encode()
    if info.legal_hold:
        out[META_XATTR + "legal_hold"] = b"ON"  # absent when there is no hold
    return out


def retention_text(retention: dict[str, Any]) -> str:
    """A retention as ``MODE YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds), e.g. ``COMPLIANCE 2033-11-28T23:59:59Z``.

    Stable for a given retention, whatever the mount's time zone, so scripts
    may compare it; the date is the stored retain-until cut to the second,
    shown as set even after it has passed (the record's history, not a
    verdict: whether the file is locked now is what EPERM says).
    """
    return f"{retention['mode']} {utc_text(retention['until'])}"
