"""Paths of ~600 and ~1000 bytes on the mount: ls, find, mv, rm -rf (keys over 480 bytes are hashed in the index)."""

from __future__ import annotations

import os
import subprocess

from objfs.store import Store


def sh(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)


def test_long_paths_list_move_and_remove(mount) -> None:
    top = mount.path / "pacs" / "long"
    d600 = top / ("a" * 200) / ("b" * 200) / ("c" * 180)
    d1000 = d600 / ("d" * 200) / ("e" * 180)
    d600.mkdir(parents=True)
    d1000.mkdir(parents=True)
    files = {d600 / "one.dcm": b"600", d600 / "two.dcm": b"600b", d1000 / "deep.dcm": b"1000"}
    for path, body in files.items():
        path.write_bytes(body)
    for path in files:
        assert 590 < len(str(path.relative_to(mount.path / "pacs")).encode()) < 1024
    assert sorted(os.listdir(d600)) == ["d" * 200, "one.dcm", "two.dcm"]
    assert os.listdir(d1000) == ["deep.dcm"]
    found = sh("find", top, "-type", "f")
    assert found.returncode == 0, found.stderr
    assert sorted(found.stdout.split()) == sorted(str(p) for p in files)

    os.rename(d1000 / "deep.dcm", d1000 / "moved.dcm")
    assert os.listdir(d1000) == ["moved.dcm"]
    moved = sh("mv", top, mount.path / "pacs" / "long2")
    assert moved.returncode == 0, moved.stderr
    new_top = mount.path / "pacs" / "long2"
    assert (new_top / d600.relative_to(top) / "one.dcm").read_bytes() == b"600"
    assert (new_top / d1000.relative_to(top) / "moved.dcm").read_bytes() == b"1000"
    assert not top.exists()

    removed = sh("rm", "-rf", new_top)
    assert removed.returncode == 0, removed.stderr
    assert not new_top.exists()
    assert os.listdir(mount.path / "pacs") == []
    with Store.open(mount.store) as store:
        assert store.list_objects("pacs").objects == []
