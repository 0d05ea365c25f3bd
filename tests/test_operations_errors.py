"""Start-up problems an operator meets are one line naming the problem, never a traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ports import free_port

from objfs.store import init_store

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def run(*args: str, module: str = "objfs.cli") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=ENV, timeout=60)


def one_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    store = tmp_path / "st"
    init_store(store).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        admin = ("--admin-port", str(free_port()))
        line = one_line(run("serve", str(store), "--port", str(port), "--dicom-port", str(free_port()), *admin))
        assert f"S3 port {port} is in use" in line
        line = one_line(run("serve", str(store), "--port", str(free_port()), "--dicom-port", str(port), *admin))
        assert f"DICOM port {port} is in use" in line
        line = one_line(
            run("serve", str(store), "--port", str(free_port()), "--dicom-port", str(free_port()), "--admin-port", str(port))
        )
        assert f"admin port {port} is in use" in line
        line = one_line(run(str(store), "--port", str(port), module="s3sidecar.server"))
        assert f"port {port} is in use" in line


def test_a_file_as_the_store_and_a_non_empty_mount_point(tmp_path: Path) -> None:
    afile = tmp_path / "notes.txt"
    afile.write_text("not a store")
    for args in (("status", str(afile)), ("serve", str(afile)), ("rebuild-index", str(afile))):
        assert f"{afile} is a file, not a store directory" in one_line(run(*args))
    store, mnt = tmp_path / "st", tmp_path / "mnt"
    init_store(store).close()
    mnt.mkdir()
    (mnt / "old-pacs-file.dcm").write_bytes(b"old")
    ports = ("--port", str(free_port()), "--dicom-port", str(free_port()), "--admin-port", str(free_port()))
    line = one_line(run("serve", str(store), "--mount", str(mnt), *ports))
    assert "not empty" in line and str(mnt) in line


def test_s3sidecar_listens_where_objfs_toml_says(tmp_path: Path) -> None:
    store = tmp_path / "st"
    init_store(store).close()
    port = free_port()
    config = store / "objfs.toml"
    config.write_text(config.read_text().replace("port = 9000", f"port = {port}"))
    proc = subprocess.Popen([sys.executable, "-m", "s3sidecar.server", str(store)], env=ENV, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    assert sock.recv(12).startswith(b"HTTP/1.1 403")
                    break
            except ConnectionRefusedError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"s3sidecar does not listen on [s3] port {port}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
