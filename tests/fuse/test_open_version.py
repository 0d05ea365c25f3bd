"""A process holding a file open reads the version it opened to the end, whatever replaces the file.

The reader gets exactly the old bytes while another process replaces the
file by write-to-temp-then-rename or by rewriting it in place and closing.
An ``O_TRUNC`` rewrite through the same mount truncates the very inode the
reader holds, so the kernel itself ends the reader's file at the new size
(a short read, as on ext4); what the reader got must still be old bytes,
never an error or other bytes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

OLD = bytes(range(256)) * (24 << 10)  # 6 MiB: more than the kernel's readahead window of the mount


def by_rename(f: Path) -> None:
    script = f'printf new > "{f}.tmp" && mv "{f}.tmp" "{f}"'
    subprocess.run(["sh", "-c", script], check=True, timeout=60)


def by_truncating_rewrite(f: Path) -> None:
    subprocess.run(["sh", "-c", f'printf new > "{f}"'], check=True, timeout=60)


def by_rewrite_in_place(f: Path) -> None:
    code = "import sys; fh = open(sys.argv[1], 'r+b'); fh.write(b'new'); fh.close()"
    subprocess.run([sys.executable, "-c", code, str(f)], check=True, timeout=60)


@pytest.mark.parametrize("replace", [by_rename, by_rewrite_in_place])
def test_reader_keeps_the_version_it_opened(mount, replace) -> None:
    f = mount.path / "pacs" / "study.dcm"
    f.write_bytes(OLD)
    with open(f, "rb", buffering=0) as fh:
        got = [fh.read(64 << 10)]
        replace(f)
        while chunk := fh.read(256 << 10):  # slowly: many small reads after the replacement
            got.append(chunk)
    assert b"".join(got) == OLD
    expected = b"new" + OLD[3:] if replace is by_rewrite_in_place else b"new"
    assert f.read_bytes() == expected


def test_reader_across_a_truncating_rewrite_gets_only_old_bytes(mount) -> None:
    f = mount.path / "pacs" / "study.dcm"
    f.write_bytes(OLD)
    with open(f, "rb", buffering=0) as fh:
        got = [fh.read(64 << 10)]
        by_truncating_rewrite(f)
        while chunk := fh.read(256 << 10):
            got.append(chunk)
    data = b"".join(got)
    assert len(data) >= 64 << 10 and data == OLD[: len(data)]
    assert f.read_bytes() == b"new"


def test_reader_of_an_unlinked_file_keeps_its_version_while_a_writer_changes_it(mount) -> None:
    f = mount.path / "pacs" / "ghost.dcm"
    f.write_bytes(OLD)
    reader = open(f, "rb", buffering=0)
    writer = open(f, "r+b", buffering=0)
    try:
        f.unlink()
        assert reader.read(10) == OLD[:10]
        writer.write(b"W")
        writer.flush()
        reader.seek(0)
        got = []
        while chunk := reader.read(1 << 20):
            got.append(chunk)
        assert b"".join(got) == OLD
    finally:
        writer.close()
        reader.close()
