"""``objfs remote``: definitions kept root-only and durable, secrets never shown, a client that reaches the endpoint."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from s3helpers import REGION, Key, Server

from objfs.store.remotes import RemoteError, add_remote, load_remote

REPO = Path(__file__).resolve().parents[2]


def objfs(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "objfs.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=60,
    )


def test_remote_add_keeps_the_secret_root_only_and_unprinted(s3_store: Path, server: Server, admin_key: Key) -> None:
    name = "peer-secret"
    done = objfs(
        "remote", "add", str(s3_store), name, "--endpoint", server.url, "--access-key", admin_key.access_key,
        "--secret-key", "-", "--region", REGION, stdin=admin_key.secret_key + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert admin_key.secret_key not in done.stdout + done.stderr
    path = s3_store / "remotes" / f"{name}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    listed = objfs("remote", "list", str(s3_store), "--json")
    assert listed.returncode == 0, listed.stderr
    assert admin_key.secret_key not in listed.stdout
    (entry,) = [r for r in json.loads(listed.stdout) if r["name"] == name]
    assert entry["endpoint"] == server.url and "secret_key" not in entry
    audit = "".join(p.read_text(errors="replace") for p in (s3_store / "audit").rglob("*") if p.is_file())
    assert f"{name} {server.url}" in audit and admin_key.secret_key not in audit

    again = objfs(
        "remote", "add", str(s3_store), name, "--endpoint", server.url, "--access-key", "x",
        env={"OBJFS_REMOTE_SECRET_KEY": "y"},
    )  # fmt: skip
    assert again.returncode == 1 and "exists" in again.stderr
    assert load_remote(s3_store, name).secret_key == admin_key.secret_key  # unchanged by the refused add

    removed = objfs("remote", "remove", str(s3_store), name)
    assert removed.returncode == 0, removed.stderr
    assert not path.exists()
    with pytest.raises(RemoteError):
        load_remote(s3_store, name)


def test_remote_client_reaches_the_endpoint(s3_store: Path, server: Server, admin_key: Key, s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a/b.dcm", Body=b"hello")
    remote = add_remote(
        s3_store, "peer-client", endpoint=server.url, access_key=admin_key.access_key,
        secret_key=admin_key.secret_key, region=REGION, ca_bundle="",
    )  # fmt: skip
    client = remote.client()
    assert client.get_object(Bucket=bucket, Key="a/b.dcm")["Body"].read() == b"hello"
    wrong = add_remote(
        s3_store, "peer-wrong", endpoint=server.url, access_key=admin_key.access_key,
        secret_key="not-the-secret", region=REGION,
    )  # fmt: skip
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        wrong.client().get_object(Bucket=bucket, Key="a/b.dcm")


@pytest.mark.parametrize(
    ("name", "endpoint", "message"),
    [
        ("Bad Name", "http://127.0.0.1:1", "remote name"),
        ("ok", "ftp://127.0.0.1:1", "expected http"),
        ("ok", "http://127.0.0.1:1/bucket", "without a path"),
        ("../etc", "http://127.0.0.1:1", "remote name"),
    ],
)
def test_remote_add_refuses_bad_definitions(tmp_path: Path, name: str, endpoint: str, message: str) -> None:
    with pytest.raises(RemoteError, match=message):
        add_remote(tmp_path, name, endpoint=endpoint, access_key="a", secret_key="s")
    assert not (tmp_path / "remotes").exists() or not any((tmp_path / "remotes").iterdir())
