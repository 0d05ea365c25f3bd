"""Operations around a running sidecar: the store lock and key management, with real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from s3helpers import Key, create_key, env, make_client, start_server


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


def _audit_lines(store: Path) -> list[dict]:
    return [json.loads(line) for line in (store / "audit" / "audit.log").read_text().splitlines()]


def test_keys_disable_enable_rotate_delete(store_path: Path) -> None:
    server = start_server(store_path)
    try:
        key = create_key(store_path, "--name", "pacs")
        s3 = make_client(server.url, key)
        s3.create_bucket(Bucket="pacs")

        assert b"disabled key" in objfs("key", "disable", str(store_path), key.access_key).stdout
        listing = json.loads(objfs("key", "list", str(store_path), "--json").stdout)
        assert [(row["access_key"], row["disabled"]) for row in listing] == [(key.access_key, True)]
        time.sleep(1.2)  # the sidecar re-reads the keys file at most once a second
        with pytest.raises(ClientError) as refused:
            s3.list_objects_v2(Bucket="pacs")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

        objfs("key", "enable", str(store_path), key.access_key)
        time.sleep(1.2)
        s3.put_object(Bucket="pacs", Key="a", Body=b"1")

        rotated = json.loads(objfs("key", "rotate", str(store_path), key.access_key).stdout)
        assert rotated["access_key"] == key.access_key and rotated["secret_key"] != key.secret_key
        assert rotated["secret_key"].encode() not in objfs("key", "list", str(store_path)).stdout
        time.sleep(1.2)
        with pytest.raises(ClientError) as old_secret:
            s3.get_object(Bucket="pacs", Key="a")
        assert old_secret.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        fresh = make_client(server.url, Key(rotated["access_key"], rotated["secret_key"]))
        assert fresh.get_object(Bucket="pacs", Key="a")["Body"].read() == b"1"

        objfs("key", "delete", str(store_path), key.access_key)
        assert objfs("key", "list", str(store_path)).stdout == b""
        missing = objfs("key", "delete", str(store_path), key.access_key, check=False)
        assert missing.returncode == 1 and b"no access key" in missing.stderr
    finally:
        server.stop()
    actions = [(line["action"], line["who"]) for line in _audit_lines(store_path) if line["action"].startswith("key-")]
    assert [a for a, _ in actions] == ["key-create", "key-disable", "key-enable", "key-rotate", "key-delete"]
    assert all(who.startswith("cli") for _, who in actions)
    assert all(key.access_key in line.get("detail", "") for line in _audit_lines(store_path) if line["action"].startswith("key-"))
