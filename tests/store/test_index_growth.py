"""The index map grows with the store: a deliberately small map fills and every write still lands.

The initial size comes from ``OBJFS_INDEX_MAP_SIZE``; the engine writes
through its ordinary paths (group commit, plain write transactions) from
several threads, and a second process that grows the map is followed by
this one (LMDB's MAP_RESIZED).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lmdb

from objfs.store import Store
from objfs.store.index import MAP_SIZE_ENV

REPO = Path(__file__).resolve().parents[2]
SMALL = 256 << 10  # 64 pages of 4 KiB


def test_small_map_grows_under_threaded_writes(store_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(MAP_SIZE_ENV, str(SMALL))
    with Store.open(store_path) as store:
        assert store.index.map_size() == SMALL
        store.create_bucket("pacs")
        keys = [f"PAT{i % 7}/study/{i:04d}-" + "x" * 200 + ".dcm" for i in range(300)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda k: store.put_object("pacs", k, k.encode()), keys))
        for batch in range(10):  # plain write transactions, in batches as maintenance writes them
            with store.index.write() as txn:
                for i in range(100):
                    txn.put("settings", f"filler-{batch}-{i}".encode(), "y" * 300)
        grown = store.index.map_size()
        # A block bigger than the room left fails once, after the map grew: run again, it fits.
        for attempt in range(2):
            try:
                with store.index.write() as txn:
                    for i in range(grown // 1024):
                        txn.put("settings", f"big-{i}".encode(), "y" * 300)
                break
            except lmdb.MapFullError:
                assert attempt == 0
        assert store.index.map_size() > SMALL
        for key in keys[::37]:
            assert store.get_object_bytes("pacs", key) == key.encode()
        with store.index.read() as txn:
            assert txn.count("objects") == len(keys)


def test_map_grown_by_another_process_is_followed(store_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(MAP_SIZE_ENV, str(SMALL))
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        store.put_object("pacs", "first", b"1")
        # Another process fills the index far beyond this process's map.
        script = (
            "import sys\n"
            "from objfs.store import Store\n"
            "with Store.open(sys.argv[1]) as s:\n"
            "    for i in range(250):\n"
            "        s.put_object('pacs', f'other/{i:04d}-' + 'z' * 200, b'2')\n"
            "    print(s.index.map_size())\n"
        )
        env = dict(os.environ, PYTHONPATH=str(REPO))
        out = subprocess.run([sys.executable, "-c", script, str(store_path)], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        assert int(out.stdout) > SMALL
        # This process's map is the small one still: reads and writes follow the grown file.
        assert store.get_object_bytes("pacs", "other/0249-" + "z" * 200) == b"2"
        store.put_object("pacs", "last", b"3")
        with store.index.read() as txn:
            assert txn.count("objects") == 252
        assert store.index.map_size() >= int(out.stdout)
