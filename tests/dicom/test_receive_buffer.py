"""The gateway's receive buffer: an ordinary instance never touches the disk, a large one spills to an owned spool file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from objfs.dicom.spool import ReceiveBuffer


def _files(area: Path) -> list[Path]:
    return sorted(area.iterdir())


def test_a_dataset_up_to_the_limit_stays_in_memory(tmp_path: Path) -> None:
    buffer = ReceiveBuffer(str(tmp_path), "123-456-", memory_max=1000, suffix=".dcm")
    for part in (b"a" * 400, b"b" * 600):
        assert buffer.write(part) == len(part)
        buffer.file.flush()
    assert buffer.in_memory and buffer.size == 1000 and _files(tmp_path) == []
    with buffer.reader() as fp:
        assert fp.read() == b"a" * 400 + b"b" * 600
    buffer.close()
    assert buffer.closed and _files(tmp_path) == []


def test_a_larger_dataset_spills_everything_to_an_owned_spool_file(tmp_path: Path) -> None:
    buffer = ReceiveBuffer(str(tmp_path), "123-456-", memory_max=1000, suffix=".dcm")
    buffer.write(b"a" * 600)
    buffer.write(b"b" * 600)  # beyond the limit: the first part goes to the file too
    buffer.write(b"c" * 10)
    buffer.flush()
    assert not buffer.in_memory and buffer.size == 1210
    (spilled,) = _files(tmp_path)
    assert str(spilled) == buffer.name and spilled.name.startswith("123-456-") and spilled.suffix == ".dcm"
    assert spilled.stat().st_mode & 0o777 == 0o600
    with buffer.reader() as fp:
        assert fp.read() == b"a" * 600 + b"b" * 600 + b"c" * 10
    buffer.close()
    os.unlink(buffer.name)  # as pynetdicom does after the handler


@pytest.mark.parametrize("memory_max", [0, -1])
def test_no_memory_allowed_means_a_file_from_the_start(tmp_path: Path, memory_max: int) -> None:
    buffer = ReceiveBuffer(str(tmp_path), "1-2-", memory_max=memory_max)
    assert not buffer.in_memory and len(_files(tmp_path)) == 1
    buffer.write(b"x")
    buffer.close()
    assert Path(buffer.name).read_bytes() == b"x"
