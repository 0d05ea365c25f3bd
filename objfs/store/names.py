"""Validation of bucket names and object keys.

Bucket names follow S3's rules. Keys are UTF-8 of at most 4096 bytes (a
path on the mount may be as long as PATH_MAX, S3's own limit of 1024 bytes
notwithstanding: S3 clients list, read and delete such keys too) with no
NUL and no empty, ``.`` or ``..`` segment, because every key must also be a
valid path under the FUSE mount. A trailing ``/`` is allowed: such a key is
a directory marker (what S3 consoles call a folder object).
"""

from __future__ import annotations

import ipaddress
import re

from .errors import InvalidBucketName, InvalidKey, KeyTooLong

MAX_KEY_BYTES = 4096  # PATH_MAX
MAX_SEGMENT_BYTES = 255  # NAME_MAX on the filesystems the mount is used beside

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def check_bucket_name(name: str) -> str:
    """Return ``name`` if it is a valid S3 bucket name, else raise InvalidBucketName."""
    if not isinstance(name, str) or not _BUCKET_RE.match(name):
        raise InvalidBucketName(f"invalid bucket name {name!r}: 3-63 of a-z 0-9 . -")
    if ".." in name or ".-" in name or "-." in name:
        raise InvalidBucketName(f"invalid bucket name {name!r}: bad dot/dash sequence")
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
        raise InvalidBucketName(f"invalid bucket name {name!r}: reserved prefix or suffix")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise InvalidBucketName(f"invalid bucket name {name!r}: looks like an IP address")


def check_key(key: str) -> str:
    """Return ``key`` if valid, else raise InvalidKey (or KeyTooLong)."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("the key is empty")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKey(f"the key is not valid UTF-8: {exc}") from None
    if len(raw) > MAX_KEY_BYTES:
        raise KeyTooLong(f"the key is {len(raw)} bytes; at most {MAX_KEY_BYTES}")
    if "\0" in key:
        raise InvalidKey("the key contains a NUL character")
    body = key[:-1] if key.endswith("/") else key
    for segment in body.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"the key {key!r} has an empty, '.' or '..' path segment")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise KeyTooLong(f"a path segment of {key!r} is longer than {MAX_SEGMENT_BYTES} bytes")
    return key


def check_prefix(prefix: str) -> str:
    """Listing prefixes are free-form but must still be UTF-8 without NUL."""
    if "\0" in prefix:
        raise InvalidKey("the prefix contains a NUL character")
    if len(prefix.encode("utf-8", "strict")) > MAX_KEY_BYTES:
        raise KeyTooLong("the prefix is longer than a key can be")
    return prefix


_SPOOL_KIND_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def check_spool_kind(kind: str) -> str:
    """A spool area name: lower-case letters, digits and dashes (it is a directory name)."""
    if not _SPOOL_KIND_RE.match(kind):
        raise InvalidKey(f"invalid spool kind {kind!r}")
    return kind
