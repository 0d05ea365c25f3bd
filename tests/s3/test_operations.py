"""Operations around a running sidecar: the store lock and key management, with real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from s3helpers import create_key, env, make_client, start_server


def objfs(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "objfs.cli", *args], capture_output=True, check=check, env=env(), timeout=120)


def test_rebuild_index_refuses_while_the_sidecar_serves(store_path: Path) -> None:
    key = create_key(store_path, "--name", "admin")
    server = start_server(store_path)
    try:
        s3 = make_client(server.url, key)
        s3.create_bucket(Bucket="pacs")
        s3.put_object(Bucket="pacs", Key="a.dcm", Body=b"acknowledged")
        index_inode = (store_path / "index").stat().st_ino
        refused = objfs("rebuild-index", str(store_path), "--force", check=False)
        assert refused.returncode == 2, refused.stderr
        assert b"needs the store alone" in refused.stderr and b"Traceback" not in refused.stderr
        assert (store_path / "index").stat().st_ino == index_inode
        assert not list(store_path.glob("index.old-*"))
        # The sidecar was not disturbed: its write is still there, and it still writes.
        assert s3.get_object(Bucket="pacs", Key="a.dcm")["Body"].read() == b"acknowledged"
        s3.put_object(Bucket="pacs", Key="b.dcm", Body=b"after")
    finally:
        server.stop()
    done = objfs("rebuild-index", str(store_path), "--force")
    assert json.loads(done.stdout.splitlines()[-1])["objects"] == 2
    assert len(list(store_path.glob("index.old-*"))) == 1


def test_a_second_sidecar_shares_the_lock(store_path: Path) -> None:
    first, second = start_server(store_path), start_server(store_path)
    try:
        assert first.proc.poll() is None and second.proc.poll() is None
    finally:
        first.stop()
        second.stop()
