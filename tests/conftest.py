"""Shared fixtures: real stores on real drive directories in tmp.

As in S3QL, a test fails if anything logs a warning or error it did not
declare with ``@pytest.mark.allow_warnings``: warnings in a storage system are
bugs until proven otherwise.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from objfs.store import Store, init_store

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_warnings: the test expects warnings or errors to be logged")


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in ("objfs", "s3sidecar"):
            self.records.append(record)


@pytest.fixture(autouse=True)
def fail_on_logged_warnings(request: pytest.FixtureRequest):
    handler = _WarningCollector()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
    if handler.records and request.node.get_closest_marker("allow_warnings") is None:
        lines = "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in handler.records)
        pytest.fail(f"unexpected warnings were logged:\n{lines}")


@pytest.fixture
def store_path(tmp_path: Path):
    """A fresh store (6 directory drives, EC 4+2), closed; open it yourself or use ``store``."""
    path = tmp_path / "store"
    init_store(path).close()
    yield path
    # WORM tests leave immutable fragment files; lift the flag so tmp can be cleaned.
    subprocess.run(["chattr", "-R", "-f", "-i", str(path)], check=False, capture_output=True)


@pytest.fixture
def store(store_path: Path):
    s = Store.open(store_path)
    try:
        yield s
    finally:
        s.close()


def run_cli(*args: str, input: bytes | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real ``objfs`` command (same interpreter) and capture its output."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "objfs.cli", *args], input=input, capture_output=True, check=check, timeout=timeout, env=env
    )


@pytest.fixture
def cli():
    return run_cli
