"""The mount's spool files are the engine's owned spool files: a killed mount's are swept at the next open."""

from __future__ import annotations

import contextlib

from objfs.store import Store


def test_spool_of_a_killed_mount_is_swept_when_the_store_is_reopened(mount) -> None:
    area = mount.store / "spool" / "fuse"
    fh = open(mount.path / "pacs" / "open.dcm", "wb")
    try:
        fh.write(b"x" * 10_000)
        fh.flush()
        assert mount.proc is not None
        owner = mount.proc.pid
        spooled = [p for p in area.iterdir()]
        assert len(spooled) == 1 and spooled[0].name.startswith(f"{owner}-"), spooled
        mount.kill()
    finally:
        with contextlib.suppress(OSError):
            fh.close()
    assert spooled[0].exists()  # nobody has opened the store since
    mount.start()
    assert not spooled[0].exists()
    assert list(area.iterdir()) == []
    with Store.open(mount.store) as store:
        assert store.list_objects("pacs").objects == []  # never closed: never stored
