"""S3 GET of a sparse version (as the mount writes them): the full bytes, holes as zeros, ETag the MD5 of them all."""

from __future__ import annotations

import hashlib
from pathlib import Path

from objfs.store import Store

SIZE = 8 << 20


def test_get_of_a_sparse_version_returns_every_byte(s3, bucket: str, s3_store: Path) -> None:
    logical = bytearray(SIZE)
    logical[1000:1100] = b"a" * 100
    logical[SIZE - 1 :] = b"z"
    extents = [(1000, 100), (SIZE - 1, 1)]
    with Store.open(s3_store) as store:
        stored = b"".join(bytes(logical[o : o + n]) for o, n in extents)
        info = store.put_object(bucket, "sparse", stored, length=SIZE, extents=extents)
        assert info.stored_size == 101
    got = s3.get_object(Bucket=bucket, Key="sparse")
    assert got["ContentLength"] == SIZE and got["Body"].read() == bytes(logical)
    assert got["ETag"].strip('"') == hashlib.md5(logical).hexdigest()
    ranged = s3.get_object(Bucket=bucket, Key="sparse", Range="bytes=990-1109")
    assert ranged["Body"].read() == bytes(logical[990:1110])
    tail = s3.get_object(Bucket=bucket, Key="sparse", Range="bytes=-3")
    assert tail["Body"].read() == b"\0\0z"
