"""Files on the mount read back identically after a lifecycle pass moved them to the warm tier, even mid-read."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))
from tierhelpers import tiered_store, unlock_tree  # noqa: E402
from trusthelpers import body  # noqa: E402

from objfs.store import Store  # noqa: E402


def test_files_moved_by_lifecycle_read_back_on_the_mount(tmp_path: Path, mounter) -> None:
    root = tiered_store(tmp_path / "store")
    try:
        m = mounter(root, tmp_path / "mnt").start()
        (m.path / "pacs").mkdir()
        files = {f"f{i}.dcm": body(f"f{i}", 150_000 * (i + 1)) for i in range(3)}
        for name, data in files.items():
            (m.path / "pacs" / name).write_bytes(data)
        held = open(m.path / "pacs" / "f2.dcm", "rb")  # open across the move: keeps reading the same bytes
        first = held.read(1000)
        with Store.open(root) as store:
            store.put_lifecycle(
                "pacs",
                {
                    "Rules": [
                        {
                            "ID": "w",
                            "Status": "Enabled",
                            "Filter": {},
                            "Transitions": [{"Days": 1, "StorageClass": "STANDARD_IA"}],
                        }
                    ]
                },
            )
            store.clock.advance(1.5)
            assert len(store.run_lifecycle().moved) == 3
            assert all(store.storage_class_of(store.head_object("pacs", n).record) == "STANDARD_IA" for n in files)
        assert first + held.read() == files["f2.dcm"]
        held.close()
        for name, data in files.items():
            assert (m.path / "pacs" / name).read_bytes() == data
        m.stop()
    finally:
        unlock_tree(tmp_path)
