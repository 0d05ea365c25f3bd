"""No request can take the mount down for everyone: spool I/O errors reach the caller as their errno.

``truncate -s 999999999999999`` once killed the mount (an uncaught EFBIG
from the spool file). The spool lives on the store's filesystem (ext4 in
the tests, whose largest file is 16 TiB), so that size is EFBIG there.
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

HUGE = 999_999_999_999_999


def test_spool_errors_reach_the_caller_and_the_mount_keeps_serving(mount) -> None:
    f = mount.path / "pacs" / "victim.dcm"
    f.write_bytes(b"data")
    done = subprocess.run(["truncate", "-s", str(HUGE), str(f)], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "File too large" in done.stderr, done.stderr
    fd = os.open(f, os.O_RDWR)
    try:
        with pytest.raises(OSError) as info:
            os.ftruncate(fd, HUGE)
        assert info.value.errno == errno.EFBIG
        with pytest.raises(OSError) as info:
            os.pwrite(fd, b"x", HUGE)
        assert info.value.errno == errno.EFBIG
        assert os.pwrite(fd, b"D", 0) == 1  # the descriptor still works
    finally:
        os.close(fd)
    assert mount.proc is not None and mount.proc.poll() is None, mount.log()
    assert f.read_bytes() == b"Data"
    other = mount.path / "pacs" / "after.dcm"
    other.write_bytes(b"still serving")
    assert other.read_bytes() == b"still serving"
    assert sorted(os.listdir(mount.path / "pacs")) == ["after.dcm", "victim.dcm"]
