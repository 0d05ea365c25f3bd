"""Files written sequentially stream into the store while they are written; anything else falls back to the spool."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))
from fragmenthelpers import blob_fragments  # noqa: E402

from objfs.store import NoSuchKey, Store  # noqa: E402

MIB = 1 << 20


def store_bytes(store_path: Path, key: str) -> bytes:
    with Store.open(store_path) as store:
        return store.get_object_bytes("pacs", key)


def fragment_files(store_path: Path) -> list[str]:
    """Every fragment on the drives, files and volume entries (an abandoned put must leave none behind)."""
    return blob_fragments(store_path / "drives")


def write_in_chunks(fh, data: bytes, chunk: int = 64 << 10) -> None:
    for start in range(0, len(data), chunk):
        fh.write(data[start : start + chunk])


def test_a_sequential_write_is_stored_exactly(mount) -> None:
    data = random.Random(1).randbytes(3 * MIB + 12345)  # more than the stream's buffer of segments
    f = mount.path / "pacs" / "ct.dcm"
    with open(f, "wb", buffering=0) as fh:
        write_in_chunks(fh, data)
    assert store_bytes(mount.store, "ct.dcm") == data
    assert f.read_bytes() == data
    assert len(fragment_files(mount.store)) == 6  # one blob of EC 4+2


def test_a_write_elsewhere_abandons_the_stream_and_keeps_every_byte(mount) -> None:
    rng = random.Random(2)
    head, tail = rng.randbytes(2 * MIB), rng.randbytes(MIB + 7)
    f = mount.path / "pacs" / "edited.bin"
    with open(f, "wb", buffering=0) as fh:
        write_in_chunks(fh, head)
        fh.seek(100)
        fh.write(b"X" * 10)
        fh.seek(len(head))
        write_in_chunks(fh, tail)
    expected = bytearray(head + tail)
    expected[100:110] = b"X" * 10
    assert store_bytes(mount.store, "edited.bin") == expected
    assert f.read_bytes() == expected
    assert len(fragment_files(mount.store)) == 6  # the abandoned put's fragments are gone


def test_a_file_renamed_while_written_is_stored_under_its_new_name(mount) -> None:
    rng = random.Random(3)
    first, second = rng.randbytes(MIB + 5), rng.randbytes(300_000)
    f, moved = mount.path / "pacs" / "part.tmp", mount.path / "pacs" / "final.dcm"
    with open(f, "wb", buffering=0) as fh:
        write_in_chunks(fh, first)
        os.rename(f, moved)
        write_in_chunks(fh, second)
    assert store_bytes(mount.store, "final.dcm") == first + second
    with Store.open(mount.store) as store, pytest.raises(NoSuchKey):
        store.head_object("pacs", "part.tmp")
    assert len(fragment_files(mount.store)) == 6


def test_fsync_part_way_stores_what_was_written_then_the_rest_on_close(mount) -> None:
    rng = random.Random(4)
    first, second = rng.randbytes(MIB + 99), rng.randbytes(2 * MIB)
    f = mount.path / "pacs" / "growing.bin"
    with open(f, "wb", buffering=0) as fh:
        write_in_chunks(fh, first)
        os.fsync(fh.fileno())
        assert store_bytes(mount.store, "growing.bin") == first
        write_in_chunks(fh, second)
    assert store_bytes(mount.store, "growing.bin") == first + second
    assert f.read_bytes() == first + second


def test_a_truncated_file_streams_again_from_its_first_byte(mount) -> None:
    rng = random.Random(5)
    old, new = rng.randbytes(MIB + 1), rng.randbytes(2 * MIB + 3)
    f = mount.path / "pacs" / "rewritten.bin"
    f.write_bytes(old)
    with open(f, "r+b", buffering=0) as fh:
        fh.truncate(0)
        write_in_chunks(fh, new)
        os.chmod(f, 0o600)  # an attribute changed while the bytes stream: the commit carries it
    assert store_bytes(mount.store, "rewritten.bin") == new
    assert os.stat(f).st_mode & 0o777 == 0o600
    with Store.open(mount.store) as store:
        assert store.head_object("pacs", "rewritten.bin").posix["mode"] & 0o777 == 0o600
