"""Small reads fetch one fragment's share of a segment, and stay exact when that fragment is lost or damaged."""

from __future__ import annotations

import random

from fragmenthelpers import corrupt_fragment, lose_fragment

from objfs.store import Store
from objfs.store.crypto import Encryption

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


def test_a_small_read_reads_one_data_fragment_share(store: Store) -> None:
    store.create_bucket("pacs")
    data = random.Random(1).randbytes(2 * SEG + 333_333)  # two full segments and a partial one
    store.put_object("pacs", "ct.dcm", data)
    lengths = _check_every_piece(store, "ct.dcm", data)
    assert max(lengths) == SEG // 4  # a quarter of a segment (k=4), not the whole segment
    assert -(-333_333 // 4) in lengths or 333_333 - 3 * -(-333_333 // 4) in lengths


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
