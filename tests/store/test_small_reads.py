"""Small reads fetch the CRC blocks of one data fragment that hold them, and stay exact when it is lost or damaged."""

from __future__ import annotations

import random

import pytest
from fragmenthelpers import corrupt_fragment, lose_fragment

from objfs.store import Store
from objfs.store.codec import get_codec
from objfs.store.config import write_store_format
from objfs.store.crypto import Encryption
from objfs.store.fragments import CRC_BLOCK
from objfs.store.upgrade import upgrade_store

SEG = 1 << 20


def _check_every_piece(store: Store, key: str, data: bytes) -> set[int]:
    """Every offset's piece is the exact bytes at its place; returns the piece lengths seen."""
    lengths = set()
    rng = random.Random(3)
    offsets = {0, len(data) - 1, SEG - 1, SEG, len(data) // 2} | {rng.randrange(len(data)) for _ in range(40)}
    with store.open_object("pacs", key) as reader:
        for offset in sorted(o for o in offsets if 0 <= o < len(data)):
            start, piece = reader.read_piece(offset)
            assert start <= offset < start + len(piece)
            assert piece == data[start : start + len(piece)]
            lengths.add(len(piece))
        assert reader.read_piece(len(data)) == (len(data), b"")
    return lengths


def test_a_small_read_reads_the_crc_blocks_that_hold_it(store: Store) -> None:
    store.create_bucket("pacs")
    data = random.Random(1).randbytes(2 * SEG + 333_333)  # two full segments and a partial one
    store.put_object("pacs", "ct.dcm", data)
    assert store.head_object("pacs", "ct.dcm").record["parts"][0]["cb"] == CRC_BLOCK
    lengths = _check_every_piece(store, "ct.dcm", data)
    assert max(lengths) == CRC_BLOCK  # one CRC block of one data fragment, not a frame or a segment
    with store.open_object("pacs", "ct.dcm") as reader:
        # A read across a block boundary gets both blocks, checked; up to the end of the fragment's share.
        start, piece = reader.read_piece(CRC_BLOCK - 100, 200)
        assert start <= CRC_BLOCK - 100 and start + len(piece) >= CRC_BLOCK + 100
        assert piece == data[start : start + len(piece)] and len(piece) <= 2 * CRC_BLOCK
        start, piece = reader.read_piece(SEG // 4 - 10, 4096)
        assert start + len(piece) == SEG // 4 and piece == data[start : SEG // 4]


def test_a_damaged_block_costs_only_the_reads_that_touch_it(store: Store) -> None:
    store.create_bucket("pacs")
    data = random.Random(5).randbytes(SEG)
    store.put_object("pacs", "ct.dcm", data)
    desc = store.head_object("pacs", "ct.dcm").record["parts"][0]
    header = get_codec(desc["k"], desc["m"], desc["ec"]).data_offset()
    corrupt_fragment(store, desc, 0, header + 3 * CRC_BLOCK + 7)  # in fragment 0's fourth block
    with store.open_object("pacs", "ct.dcm") as reader:
        start, piece = reader.read_piece(10)  # its first block still checks out: one block, not the segment
        assert (start, piece) == (0, data[: len(piece)]) and len(piece) < CRC_BLOCK
        assert not store.heal_queue()
        start, piece = reader.read_piece(3 * CRC_BLOCK + 100)
        assert (start, piece) == (0, data)  # the damaged block: the segment, decoded from the others
    assert store.heal_queue(), "the damaged fragment is queued for healing"


def test_a_store_not_yet_upgraded_keeps_one_crc_per_frame(store_path) -> None:
    write_store_format(store_path, 3)  # an objfs of format 3 may still open it: frames as that one reads them
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        data = random.Random(6).randbytes(2 * SEG + 333_333)
        store.put_object("pacs", "ct.dcm", data)
        assert "cb" not in store.head_object("pacs", "ct.dcm").record["parts"][0]
        assert max(_check_every_piece(store, "ct.dcm", data)) == SEG // 4  # the fragment's whole frame
    upgrade_store(store_path, Store.open)
    with Store.open(store_path) as store:
        store.put_object("pacs", "new.dcm", data)
        assert store.head_object("pacs", "new.dcm").record["parts"][0]["cb"] == CRC_BLOCK
        assert store.get_object_bytes("pacs", "ct.dcm") == data == store.get_object_bytes("pacs", "new.dcm")


def test_nowait_reads_only_open_fragments_in_the_page_cache(store: Store) -> None:
    store.create_bucket("pacs")
    data = random.Random(7).randbytes(SEG)
    store.put_object("pacs", "ct.dcm", data)
    with store.open_object("pacs", "ct.dcm") as reader:
        with pytest.raises(BlockingIOError):
            reader.read_piece(5000, 4096, nowait=True)  # the fragment is not open yet: opening may wait
        start, piece = reader.read_piece(5000, 4096)
        assert reader.read_piece(5000, 4096, nowait=True) == (start, piece)  # open, and just read: cached
        assert piece == data[start : start + len(piece)]


def test_a_lost_or_damaged_data_fragment_falls_back_to_decoding(store: Store) -> None:
    store.create_bucket("pacs")
    data = random.Random(2).randbytes(SEG + 4096)
    store.put_object("pacs", "ct.dcm", data)
    desc = store.head_object("pacs", "ct.dcm").record["parts"][0]
    lose_fragment(store, desc, 0)
    corrupt_fragment(store, desc, 1, 100)  # inside segment 0's frame of fragment 1
    with store.open_object("pacs", "ct.dcm") as reader:
        start, piece = reader.read_piece(10)
        assert (start, piece) == (0, data[:SEG])  # the whole segment, decoded from parity
        start, piece = reader.read_piece(SEG // 4 + 10)
        assert piece == data[start : start + len(piece)] and start <= SEG // 4 + 10 < start + len(piece)
    assert store.heal_queue(), "the damaged fragments are queued for healing"


def test_encrypted_objects_read_whole_segments(store: Store) -> None:
    store.create_bucket("pacs")
    data = random.Random(4).randbytes(SEG + 10)
    store.put_object("pacs", "secret.dcm", data, encryption=Encryption("S3"))
    assert _check_every_piece(store, "secret.dcm", data) == {SEG, 10}
