"""Helpers of the trust tests: self-verifying bodies, the live state of a store (its fragments: fragmenthelpers)."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from objfs.store import Store

_HEAD = struct.Struct("<4sQ32s")  # magic, length, sha256 of the rest


def body(tag: str, size: int) -> bytes:
    """A body that proves its own integrity: any short, long or altered read fails :func:`verify`."""
    size = max(size, _HEAD.size)
    seed = hashlib.sha256(tag.encode()).digest()
    rest = (seed * ((size - _HEAD.size) // 32 + 1))[: size - _HEAD.size]
    return _HEAD.pack(b"OBJF", size, hashlib.sha256(rest).digest()) + rest


def verify(data: bytes) -> None:
    """Raise AssertionError unless ``data`` is exactly a body made by :func:`body`."""
    assert len(data) >= _HEAD.size, f"short read: {len(data)} bytes"
    magic, size, digest = _HEAD.unpack_from(data)
    assert magic == b"OBJF", "not a body we wrote (wrong bytes)"
    assert len(data) == size, f"silently short or long read: {len(data)} of {size} bytes"
    assert hashlib.sha256(data[_HEAD.size :]).digest() == digest, "wrong bytes"


def live_state(store: Store) -> dict[str, Any]:
    """Everything a client can observe of a store, in a comparable form (no placement details)."""

    def rec(r: dict[str, Any]) -> tuple:
        return (
            r["key"],
            r["version"],
            r["etag"],
            r["size"],
            bool(r.get("delete_marker")),
            tuple(sorted((r.get("tags") or {}).items())),
            tuple(sorted((k, v) for k, v in (r.get("posix") or {}).items())),
            tuple(sorted((r.get("xattrs") or {}).items())),
            tuple(sorted((r.get("meta") or {}).items())),
            (r.get("retention") or {}).get("mode"),
            round((r.get("retention") or {}).get("until") or 0),
            bool(r.get("legal_hold")),
        )

    state: dict[str, Any] = {}
    with store.index.read() as txn:
        state["buckets"] = sorted(
            (b["name"], b.get("versioning"), bool(b.get("object_lock")), str(b.get("lock_default")))
            for _, b in txn.scan("buckets")
        )
        state["objects"] = sorted(rec(r) for _, r in txn.scan("objects"))
        state["versions"] = sorted(rec(r) for _, r in txn.scan("versions"))
        state["uploads"] = sorted((u["id"], u["bucket"], u["key"]) for _, u in txn.scan("uploads"))
        state["parts"] = sorted((k, p["etag"], p["size"]) for k, p in txn.scan("parts"))
    return state
