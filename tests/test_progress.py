"""objfs/store/progress.py on a real terminal (a pty) and a pipe, and through `objfs heal --progress`."""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from objfs.store.progress import Progress
from objfs.stores import init_store, open_store

REPO = Path(__file__).resolve().parent.parent


def test_silent_unless_a_terminal_or_asked() -> None:
    out = io.StringIO()
    with Progress(total=10, label="scrub", stream=out, interval=0) as p:
        for _ in range(10):
            p.advance()
    assert out.getvalue() == ""


def test_plain_lines_with_rate_and_eta_when_asked() -> None:
    out = io.StringIO()
    p = Progress(total=4, label="rebuild-index", unit="objects", total_bytes=4000, enabled=True, stream=out, interval=0)
    p.advance(1, nbytes=1000)
    time.sleep(0.01)
    p.advance(1, nbytes=1000)
    p.close()
    p.close()  # idempotent
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in out.getvalue()
    assert lines[0].startswith("rebuild-index: 1/4 objects") and "objects/s" in lines[0]
    assert "ETA" in lines[1] and "2.0 KB/4.0 KB" in lines[1]
    assert lines[-1].endswith("done")


def test_a_terminal_gets_one_redrawn_line() -> None:
    leader, follower = os.openpty()
    try:
        stream = os.fdopen(follower, "w")
        with Progress(total=3, label="heal", stream=stream, interval=0) as p:  # not asked: shown because a tty
            for _ in range(3):
                p.advance()
        stream.flush()
        text = ""
        while not text.endswith("\n") and select.select([leader], [], [], 5)[0]:
            text += os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        stream.close()
    # rich redraws one line in place (carriage return + erase line), a bar first, and ends it with one newline
    assert text.count("\r\x1b[2K") >= 3 and text.count("\n") == 1 and "━" in text, repr(text)
    last = text.rsplit("\r\x1b[2K", 1)[-1]
    assert "heal: 3/3 items" in last and "items/s" in last and "ETA" in last


def test_heal_reports_progress(tmp_path: Path) -> None:
    store = init_store(tmp_path / "store")
    try:
        store.create_bucket("b1b")
        for i in range(3):
            store.put_object("b1b", f"k{i}", b"v" * 100)
            with store.index.read() as txn:
                record = txn.get("objects", f"b1b\0k{i}".encode())
            store.queue_heal(record, "test: verify")
    finally:
        store.close()
    env = dict(os.environ, PYTHONPATH=str(REPO), OBJFS_PROGRESS_INTERVAL="0")
    cmd = [sys.executable, "-m", "objfs.cli", "heal", str(tmp_path / "store"), "--json"]
    quiet = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""  # not a terminal, not asked
    opened = open_store(tmp_path / "store")
    try:
        with opened.index.read() as txn:
            record = txn.get("objects", b"b1b\0k0")
        opened.queue_heal(record, "test: verify")  # the queue is empty now: queue one again
    finally:
        opened.close()
    done = subprocess.run(cmd + ["--progress"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["objects"] == 1
    assert "heal: 1/1 objects" in done.stderr and "done" in done.stderr


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OBJFS_PROGRESS_INTERVAL="0")
    return subprocess.run([sys.executable, "-m", "objfs.cli", *args], env=env, input=stdin, capture_output=True, timeout=120)


def test_replace_drive_and_lifecycle_run_report_progress(store_path: Path) -> None:
    store = str(store_path)
    assert _cli("mb", store, "pacs").returncode == 0
    for i in range(3):
        assert _cli("put", store, f"pacs/k{i}", "-", stdin=b"z" * 20_000).returncode == 0

    # A lost drive: replace-drive heals it back, saying how far it got on the way (rate, ETA, a final line).
    subprocess.run(["rm", "-rf", str(store_path / "drives" / "d2")], check=True)
    replaced = _cli("replace-drive", store, "hot-2")
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(replaced.stdout.splitlines()[-1])["fragments_repaired"] > 0
    err = replaced.stderr.decode()
    assert "scrub: records verified: 3/3" in err and "ETA" in err and "done" in err, err

    rules = {"Rules": [{"ID": "old", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 3650}}]}
    assert _cli("lifecycle", "set", store, "pacs", "-", stdin=json.dumps(rules).encode()).returncode == 0
    ran = _cli("lifecycle", "run", store, "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["expired"] == []  # stdout is the report alone
    err = ran.stderr.decode()
    assert "lifecycle: versions examined: 3/3 items" in err and "done" in err, err


def test_replication_resync_reports_progress(store_path: Path) -> None:
    from objfs.store.remotes import add_remote

    add_remote(store_path, "peer", endpoint="http://127.0.0.1:9", access_key="AK", secret_key="SK")
    with open_store(store_path) as store:
        store.create_bucket("images")
        store.update_bucket("images", versioning="Enabled")
        store.put_replication("images", {"rules": [{"id": "r", "remote": "peer", "bucket": "copy", "prefix": ""}]})
        for i in range(4):
            store.put_object("images", f"ct/{i}", b"x" * 10)
        out = io.StringIO()
        queued = store.queue_versions("images", lacking=lambda rule, record: True, progress=out)
    assert queued == 4
    assert out.getvalue().splitlines()[-1].startswith("replication resync images: versions checked: 4/4 items")
    assert out.getvalue().rstrip().endswith("done")
