"""Fixtures for the DICOMweb tests: a real gateway (for C-STORE/C-FIND) and a real ``objfs dicomweb`` on one store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dicom"))

from dicomtest import REPO, Gateway, configure, free_port, start_gateway, stop_gateway  # noqa: E402

from objfs.store import init_store  # noqa: E402
from objfs.store.keys import KeyRing  # noqa: E402


@dataclass
class Web:
    url: str
    proc: subprocess.Popen
    admin: tuple[str, str]
    reader: tuple[str, str]
    other_bucket: tuple[str, str]


def start_dicomweb(store: Path, port: int | None = None) -> tuple[str, subprocess.Popen]:
    port = port or free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "objfs.dicomweb", str(store), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/dicom-web"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dicomweb exited: {proc.stderr.read().decode()}")
        try:
            requests.get(url + "/studies", timeout=2)
            return url, proc
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("dicomweb did not come up")


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace")


@pytest.fixture(scope="module")
def page_port() -> int:
    """The port of the browser test's page server: its origin is one CORS allows."""
    return free_port()


@pytest.fixture(scope="module")
def web_store(tmp_path_factory: pytest.TempPathFactory, page_port: int) -> Path:
    store = tmp_path_factory.mktemp("dicomweb") / "store"
    init_store(store).close()
    configure(store, allowed=["TESTSCU", "FINDSCU"])
    origins = f'cors_origins = ["http://viewer.test", "http://127.0.0.1:{page_port}"]'
    text = (store / "objfs.toml").read_text().replace("cors_origins = []", origins)
    (store / "objfs.toml").write_text(text)
    return store


@pytest.fixture(scope="module")
def gateway(web_store: Path) -> Iterator[Gateway]:
    gw = start_gateway(web_store)
    yield gw
    err = stop_gateway(gw)
    assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def web(web_store: Path, gateway: Gateway) -> Iterator[Web]:
    ring = KeyRing.of_store(web_store)
    admin = ring.create("viewer-admin")
    reader = ring.create("viewer", read_only=True)
    other = ring.create("elsewhere", buckets=("other",))
    url, proc = start_dicomweb(web_store)
    yield Web(
        url,
        proc,
        (admin.access_key, admin.secret_key),
        (reader.access_key, reader.secret_key),
        (other.access_key, other.secret_key),
    )
    err = stop(proc)
    assert "Traceback" not in err, err
