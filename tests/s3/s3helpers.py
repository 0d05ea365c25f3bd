"""Helpers for the S3 tests: start a real sidecar process, make keys and clients, plain HTTP."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from ports import free_port

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


@dataclass
class Key:
    access_key: str
    secret_key: str


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    store: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def start_server(store: Path, *args: str, timeout: float = 30, tls: bool = False) -> Server:
    """Start ``python -m s3sidecar.server STORE`` on a free port; returns once it answers HTTP."""
    port = free_port()
    log = store.parent / f"s3sidecar-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "s3sidecar.server", str(store), "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env(),
        )
    server = Server(proc, port, store, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"s3sidecar exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                sock = raw
                if tls:
                    ctx = ssl.create_default_context()
                    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                    sock = ctx.wrap_socket(raw)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                if sock.recv(12).startswith(b"HTTP/1.1"):
                    return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"s3sidecar did not answer on port {port}:\n{log.read_text()}")


def create_key(store: Path, *args: str) -> Key:
    out = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "key", "create", str(store), *args],
        capture_output=True,
        check=True,
        env=env(),
        timeout=60,
    )
    data = json.loads(out.stdout)
    return Key(data["access_key"], data["secret_key"])


def make_client(url: str, key: Key, *, verify: bool = True, **config: object):
    """A boto3 S3 client: path style, us-east-1, no retries (a failure must show, not be retried away)."""
    cfg = Config(
        region_name=REGION,
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        retries={"total_max_attempts": 1},
        connect_timeout=10,
        read_timeout=60,
        **config,
    )
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=key.access_key,
        aws_secret_access_key=key.secret_key,
        config=cfg,
        verify=verify,
    )


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    content: bytes


_pool = None


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    """One plain HTTP request (urllib3, which botocore already brings), no retries."""
    global _pool
    import urllib3

    if _pool is None:
        _pool = urllib3.PoolManager(retries=False, timeout=60, cert_reqs="CERT_NONE")
    r = _pool.request(method, url, body=body, headers=headers or {}, preload_content=True, redirect=False)
    return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.data)


def signed_headers(method: str, url: str, key: Key, body: bytes = b"", headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers of a request signed by botocore's own S3 SigV4 signer (payload hash signed)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    S3SigV4Auth(Credentials(key.access_key, key.secret_key), "s3", REGION).add_auth(request)
    return dict(request.headers.items())


def error_code(content: bytes) -> str:
    """The <Code> of an S3 error document."""
    if b"<Code>" not in content:
        return ""
    return content.split(b"<Code>", 1)[1].split(b"</Code>", 1)[0].decode()
