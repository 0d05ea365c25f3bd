"""Sparse files on the mount: holes cost no fragments, st_blocks tells real usage, reads give zeros.

Everything through a real mount process and real drive directories; the
fragment bytes are counted on the drives themselves.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from objfs.store import Store

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
SIZE = 64 * MIB


def _drive_bytes(store_path: Path) -> int:
    """Bytes of every file under the drives (fragments, footers, meta files)."""
    return sum(f.stat().st_size for f in (store_path / "drives").rglob("*") if f.is_file())


def _md5_of_sparse(size: int, data: dict[int, bytes]) -> str:
    """MD5 of ``size`` bytes that are zero except ``data`` (offset -> bytes), without building them."""
    md5 = hashlib.md5()
    zeros = bytes(MIB)
    pos = 0
    for offset in sorted(data):
        while pos < offset:
            n = min(MIB, offset - pos)
            md5.update(zeros[:n])
            pos += n
        md5.update(data[offset])
        pos += len(data[offset])
    while pos < size:
        n = min(MIB, size - pos)
        md5.update(zeros[:n])
        pos += n
    return md5.hexdigest()


def _check_reads(path: Path, data: dict[int, bytes]) -> None:
    """The file reads as zeros with ``data`` at its offsets, through the mount."""
    assert path.stat().st_size == SIZE
    with open(path, "rb") as f:
        for offset, chunk in data.items():
            f.seek(offset)
            assert f.read(len(chunk)) == chunk
        f.seek(SIZE // 4 + 12345)  # inside a hole in both tests
        assert f.read(4096) == bytes(4096)
        f.seek(0)
        md5 = hashlib.md5()
        while block := f.read(4 * MIB):
            md5.update(block)
    assert md5.hexdigest() == _md5_of_sparse(SIZE, data)


def _rebuild_index(store_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run(
        [sys.executable, "-m", "objfs.cli", "rebuild-index", "--force", str(store_path)], check=True, env=env, capture_output=True
    )


def test_a_sparse_files_holes_cost_no_fragments(store_path: Path, tmp_path: Path, mounter) -> None:
    m = mounter(store_path, tmp_path / "mnt").start()
    (m.path / "pacs").mkdir()
    before = _drive_bytes(store_path)
    path = m.path / "pacs" / "sparse.bin"
    with open(path, "wb") as f:
        f.seek(SIZE - 1)
        f.write(b"x")
    data = {SIZE - 1: b"x"}
    used = _drive_bytes(store_path) - before
    assert used < MIB, f"a 64 MiB file with one byte took {used} bytes on the drives"
    assert path.stat().st_blocks * 512 <= 128 * 1024, "st_blocks counts the holes"
    _check_reads(path, data)
    m.stop()

    # The engine (what S3 GET reads) gives the full logical bytes, and the ETag is their MD5.
    with Store.open(store_path) as store:
        info = store.head_object("pacs", "sparse.bin")
        assert info.size == SIZE and info.stored_size < MIB
        assert info.etag == _md5_of_sparse(SIZE, data)
        with store.open_object("pacs", "sparse.bin") as reader:
            assert reader.read(SIZE - 10, 100) == bytes(9) + b"x"
            md5 = hashlib.md5()
            for chunk in reader.iter_range(0, SIZE):
                md5.update(chunk)
            assert md5.hexdigest() == info.etag
        extents = info.record["extents"]

    _rebuild_index(store_path)
    with Store.open(store_path) as store:
        rebuilt = store.head_object("pacs", "sparse.bin")
        assert rebuilt.record["extents"] == extents and rebuilt.etag == info.etag

    m = mounter(store_path, tmp_path / "mnt2").start()
    _check_reads(m.path / "pacs" / "sparse.bin", data)
    m.stop()


def test_zeros_written_become_holes_and_an_edit_keeps_the_file_sparse(store_path: Path, tmp_path: Path, mounter) -> None:
    m = mounter(store_path, tmp_path / "mnt").start()
    (m.path / "pacs").mkdir()
    path = m.path / "pacs" / "zeros.bin"
    head, tail = os.urandom(MIB), os.urandom(MIB)
    with open(path, "wb") as f:
        f.write(head)
        for _ in range(SIZE // MIB - 2):
            f.write(bytes(MIB))  # explicit zeros, as dd or a PACS's preallocation writes them
        f.write(tail)
    data = {0: head, SIZE - MIB: tail}
    full = path.stat().st_blocks * 512
    assert full < 4 * MIB, f"explicit zeros were stored: st_blocks says {full} bytes"
    _check_reads(path, data)

    # Overwriting data with zeros is the mount's hole punch: the range becomes a hole at the close.
    before = _drive_bytes(store_path)
    with open(path, "r+b") as f:
        f.seek(0)
        f.write(bytes(MIB))
        f.seek(SIZE // 2)
        f.write(b"mid")
    data = {SIZE // 2: b"mid", SIZE - MIB: tail}
    assert path.stat().st_blocks * 512 < 2 * MIB
    # The new version stores about one MiB (its tail), not the 64 MiB it spans.
    assert _drive_bytes(store_path) - before < 3 * MIB
    _check_reads(path, data)
    m.stop()

    m = mounter(store_path, tmp_path / "mnt2").start()
    _check_reads(m.path / "pacs" / "zeros.bin", data)
    m.stop()
