"""Fixtures: a real ``s3sidecar`` server process on loopback over a fresh store.

One server (and store) is shared by the whole session because starting one
costs about a second; tests isolate themselves with a fresh bucket each
(``bucket`` fixture). Tests that need special limits start their own with
:func:`s3helpers.start_server` over the ``store_path`` fixture.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from s3helpers import REGION, Key, Server, create_key, env, make_client, start_server

from objfs.store import init_store
from objfs.store.keys import KeyRing


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("s3") / "store"
    init_store(path).close()
    return path


@pytest.fixture(scope="session")
def server(s3_store: Path) -> Iterator[Server]:
    srv = start_server(s3_store)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def admin_key(s3_store: Path, server: Server) -> Key:
    return create_key(s3_store, "--name", "admin")


@pytest.fixture(scope="session")
def s3(server: Server, admin_key: Key):
    return make_client(server.url, admin_key)


@pytest.fixture
def bucket(s3) -> str:
    name = "b-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def aws(server: Server, admin_key: Key, tmp_path_factory: pytest.TempPathFactory):
    """Run the aws command line (awscli v1, same interpreter) against the server."""
    home = tmp_path_factory.mktemp("awshome")
    (home / "config").write_text("[default]\ns3 =\n    addressing_style = path\n    signature_version = s3v4\n")

    def run(*args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess:
        environ = dict(
            env(),
            AWS_ACCESS_KEY_ID=admin_key.access_key,
            AWS_SECRET_ACCESS_KEY=admin_key.secret_key,
            AWS_DEFAULT_REGION=REGION,
            AWS_CONFIG_FILE=str(home / "config"),
            AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
            AWS_MAX_ATTEMPTS="1",
            AWS_PAGER="",
            HOME=str(home),
        )
        proc = subprocess.run(
            [sys.executable, "-m", "awscli", "--endpoint-url", server.url, *args],
            capture_output=True,
            env=environ,
            input=input,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.decode()}")
        return proc

    return run


@pytest.fixture(scope="module")
def client_of(server: Server, s3_store: Path):
    """``client_of(account, read_only=False)``: a boto3 client with a new key of ``account``, usable at once."""
    ring = KeyRing.of_store(s3_store)

    def make(account: str, *, read_only: bool = False):
        key = ring.create(f"{account}-{uuid.uuid4().hex[:6]}", account=account, read_only=read_only)
        client = make_client(server.url, Key(key.access_key, key.secret_key))
        deadline = time.monotonic() + 5  # the server re-reads the key file for an unknown key at most every 0.1 s
        while True:
            try:
                client.list_buckets()
                return client
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "InvalidAccessKeyId" or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    return make
