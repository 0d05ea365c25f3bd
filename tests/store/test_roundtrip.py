"""Round trips, ranges, listings and names through the real engine on real drive directories."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from fragmenthelpers import fragments

from objfs.store import Store
from objfs.store.errors import (
    BadDigest,
    BucketAlreadyExists,
    BucketNotEmpty,
    IncompleteBody,
    InvalidBucketName,
    InvalidKey,
    KeyExists,
    KeyTooLong,
    NoSuchBucket,
    NoSuchKey,
    PreconditionFailed,
)
from objfs.store.fragments import parse_meta
from objfs.store.volumes import RECORD_SUFFIX, list_volumes, read_record, scan_records

SEG = 1 << 20


@pytest.fixture
def pacs(store: Store) -> Store:
    store.create_bucket("pacs")
    return store


@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG + 12345])
def test_roundtrip_sizes(pacs: Store, size: int) -> None:
    data = os.urandom(size)
    info = pacs.put_object("pacs", "study/slice.dcm", io.BytesIO(data), content_type="application/dicom", metadata={"a": "b"})
    assert info.size == size
    assert info.etag == hashlib.md5(data).hexdigest()
    assert pacs.get_object_bytes("pacs", "study/slice.dcm") == data
    head = pacs.head_object("pacs", "study/slice.dcm")
    assert (head.size, head.content_type, head.metadata) == (size, "application/dicom", {"a": "b"})


def test_streaming_body_of_unknown_length(pacs: Store) -> None:
    data = os.urandom(2 * SEG + 7)

    class Trickle(io.RawIOBase):
        """Returns at most 1000 bytes per read, like a socket."""

        def __init__(self) -> None:
            self.pos = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            chunk = data[self.pos : self.pos + min(1000, n if n >= 0 else 1000)]
            self.pos += len(chunk)
            return chunk

    pacs.put_object("pacs", "trickle", Trickle())
    assert pacs.get_object_bytes("pacs", "trickle") == data


def test_ranges_across_segment_boundaries(pacs: Store) -> None:
    data = os.urandom(3 * SEG + 100)
    pacs.put_object("pacs", "r", data)
    with pacs.open_object("pacs", "r") as reader:
        for start, end in [
            (0, 1),
            (SEG - 5, SEG + 5),
            (SEG, 2 * SEG),
            (2 * SEG - 1, 3 * SEG + 1),
            (3 * SEG + 99, 3 * SEG + 100),
            (7, len(data)),
        ]:
            assert b"".join(reader.iter_range(start, end)) == data[start:end], (start, end)
        # random access as the FUSE mount uses it
        assert reader.read(SEG - 10, 20) == data[SEG - 10 : SEG + 10]
        assert reader.read(len(data) - 3, 100) == data[-3:]
        assert reader.read(len(data) + 10, 5) == b""


def test_short_body_and_bad_digest_leave_nothing(pacs: Store) -> None:
    with pytest.raises(IncompleteBody):
        pacs.put_object("pacs", "short", io.BytesIO(b"abc"), length=10)
    with pytest.raises(BadDigest):
        pacs.put_object("pacs", "digest", b"abc", content_md5=hashlib.md5(b"abd").digest())
    assert pacs.list_objects("pacs").objects == []
    assert _fragment_files(pacs) == []


def _fragment_files(store: Store) -> list[str]:
    """Every fragment (files and volume entries) and every temporary file on the drives."""
    return fragments(store) + [str(d.tmp_dir / n) for d in store.all_drives() for n in os.listdir(d.tmp_dir)]


def _meta_files(store: Store) -> list[str]:
    out = []
    for drive in store.all_drives():
        for dirpath, _dirs, names in os.walk(drive.path / "blobs"):
            out += [os.path.join(dirpath, n) for n in names if n.endswith(".meta")]
    return out


def test_overwrite_replaces_and_collects_old_fragments(pacs: Store) -> None:
    old = pacs.put_object("pacs", "k", b"one" * 1000)
    fragments_before = fragments(pacs)
    pacs.put_object("pacs", "k", b"two" * 1000)
    assert pacs.get_object_bytes("pacs", "k") == b"two" * 1000
    # The old version's fragments wait for the collector's minimum age (readers may still need them) ...
    assert set(fragments_before) <= set(fragments(pacs))
    assert pacs.collect_garbage().waiting == 1
    # ... then go; its tombstone stays so rebuild-index never brings it back.
    assert pacs.collect_garbage(min_age=0).collected == 1
    fragments_after = fragments(pacs)
    assert len(fragments_after) == len(fragments_before) and not set(fragments_before) & set(fragments_after)
    assert len(_drives_with_tombstone(pacs, old.object_id)) == pacs.config.hot.m + 1


def _drives_with_tombstone(store: Store, object_id: str) -> set[str]:
    """The drives holding a tombstone of ``object_id``: a ``.meta`` file, or a record entry in a record volume."""
    held = {Path(f).parts[-5] for f in _meta_files(store) if f.endswith(f"{object_id}.meta")}
    for drive in store.all_drives():
        for volume in list_volumes(drive.path, RECORD_SUFFIX):
            for entry in scan_records(volume):
                stone = parse_meta(read_record(volume, entry.offset, entry.length)) if entry.blob_id == object_id else None
                if stone is not None and stone.get("deleted"):
                    held.add(drive.path.name)
    return held


def test_conditional_put(pacs: Store) -> None:
    pacs.put_object("pacs", "c", b"1")
    with pytest.raises(PreconditionFailed):
        pacs.put_object("pacs", "c", b"2", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        pacs.put_object("pacs", "c", b"2", if_match="0" * 32)
    assert pacs.get_object_bytes("pacs", "c") == b"1"


def test_listing_prefix_delimiter_pagination(pacs: Store) -> None:
    keys = sorted([f"p{p}/s{s}/i{i:03d}.dcm" for p in range(3) for s in range(2) for i in range(5)] + ["top.txt", "p1/readme"])
    for key in keys:
        pacs.put_object("pacs", key, key.encode())
    listing = pacs.list_objects("pacs", delimiter="/")
    assert listing.common_prefixes == ["p0/", "p1/", "p2/"]
    assert [o.key for o in listing.objects] == ["top.txt"]
    listing = pacs.list_objects("pacs", prefix="p1/", delimiter="/")
    assert listing.common_prefixes == ["p1/s0/", "p1/s1/"]
    assert [o.key for o in listing.objects] == ["p1/readme"]
    # paginate everything 7 at a time
    seen, marker = [], ""
    while True:
        page = pacs.list_objects("pacs", start_after=marker, max_keys=7)
        seen += [o.key for o in page.objects]
        if not page.truncated:
            break
        marker = page.next_marker
    assert seen == keys
    # paginate with a delimiter: prefixes are not repeated across pages
    entries, marker = [], ""
    while True:
        page = pacs.list_objects("pacs", delimiter="/", start_after=marker, max_keys=2)
        entries += page.common_prefixes + [o.key for o in page.objects]
        if not page.truncated:
            break
        marker = page.next_marker
    assert sorted(entries) == ["p0/", "p1/", "p2/", "top.txt"]
    assert pacs.list_objects("pacs", prefix="p2/s1/i004").objects[0].key == "p2/s1/i004.dcm"


def test_copy_and_rename(pacs: Store) -> None:
    data = os.urandom(SEG + 3)
    pacs.put_object("pacs", "a/src", data, metadata={"x": "1"})
    pacs.create_bucket("other")
    copy = pacs.copy_object("pacs", "a/src", "other", "dst")
    assert copy.metadata == {"x": "1"}
    assert pacs.get_object_bytes("other", "dst") == data
    before = {p["id"] for p in pacs.head_object("pacs", "a/src").record["parts"]}
    pacs.rename_object("pacs", "a/src", "b/moved")
    moved = pacs.head_object("pacs", "b/moved")
    assert {p["id"] for p in moved.record["parts"]} == before  # no data moved
    with pytest.raises(NoSuchKey):
        pacs.head_object("pacs", "a/src")
    pacs.put_object("pacs", "b/other", b"x")
    with pytest.raises(KeyExists):
        pacs.rename_object("pacs", "b/moved", "b/other", no_replace=True)
    assert pacs.rename_prefix("pacs", "b/", "c/d/") == 2
    assert [o.key for o in pacs.list_objects("pacs").objects] == ["c/d/moved", "c/d/other"]
    assert pacs.get_object_bytes("pacs", "c/d/moved") == data


def test_buckets(store: Store) -> None:
    store.create_bucket("bk1")
    with pytest.raises(BucketAlreadyExists):
        store.create_bucket("bk1")
    for bad in ["ab", "A-bucket", "b_1", "192.168.1.1", "-ab", "ab-", "a..b", "x" * 64, "xn--abc"]:
        with pytest.raises(InvalidBucketName):
            store.create_bucket(bad)
    store.put_object("bk1", "k", b"x")
    with pytest.raises(BucketNotEmpty):
        store.delete_bucket("bk1")
    store.delete_object("bk1", "k")
    store.delete_bucket("bk1")
    with pytest.raises(NoSuchBucket):
        store.put_object("bk1", "k", b"x")
    assert store.list_buckets() == []


@pytest.mark.parametrize(
    "key",
    ["../x", "a/../b", "a//b", "./a", "a/.", "", "nul\0byte", "/abs", "a/" + "x" * 256, "k" * 1025],
)
def test_hostile_keys_refused(pacs: Store, key: str) -> None:
    with pytest.raises((InvalidKey, KeyTooLong)):
        pacs.put_object("pacs", key, b"x")
    assert pacs.list_objects("pacs").objects == []


def test_unusual_but_valid_keys(pacs: Store) -> None:
    keys = [
        "ünïcødé/€.dcm",
        "with space/and+plus",
        "dir/",
        "a" * 200 + "/" + "b" * 200 + "/" + "c" * 200,
        "x" * 250 + "/" + "y" * 250 + "/" + "z" * 250 + "/q" * 50,
    ]
    for key in keys:
        pacs.put_object("pacs", key, key.encode())
    for key in keys:
        assert pacs.get_object_bytes("pacs", key) == key.encode()
    assert sorted(o.key for o in pacs.list_objects("pacs").objects) == sorted(keys)
