"""Fault injection: SIGKILL at random points of writes, overwrites, deletes, multipart
completions, scrub and garbage collection, while readers stream the same keys.

After every round: no acknowledged version is lost, no reader got wrong or
silently short bytes (every body proves its own integrity), no fragment of a
locked version is gone, and ``rebuild-index`` from a copy of the drives
yields the same live state as the index. A rebuild killed half-way and run
again gives that state too.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from fragmenthelpers import fragments
from trusthelpers import body, live_state, verify

from objfs.store import Store
from objfs.store.errors import NoSuchKey

REPO = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).resolve().parent / "faultworker.py")
ROUNDS = 5
DAY = 86400


class Worker:
    """One worker process and the lines it printed."""

    def __init__(self, mode: str, store: Path, seed: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, mode, str(store), str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self.lines: list[str] = []
        self.errors = b""
        self._out = threading.Thread(target=self._collect, daemon=True)
        self._out.start()

    def _collect(self) -> None:
        for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._out.join()
        self.errors = self.proc.stderr.read()


def _setup(path: Path) -> dict[str, str]:
    with Store.open(path) as store:
        store.create_bucket("pacs")
        store.create_bucket("ver")
        store.update_bucket("ver", versioning="Enabled")
        store.create_bucket("locked", object_lock=True)
        held = {}
        for i in range(3):
            info = store.put_object(
                "locked",
                f"held{i}",
                body(f"held{i}", 200_000),
                retention={"mode": "COMPLIANCE", "until": store.clock.now() + DAY},
            )
            held[f"held{i}"] = info.record["parts"][0]["id"]
    return held


def _expected(lines: list[str]) -> tuple[dict[str, set[str]], dict[str, str], set[str]]:
    """From BEGIN/ACK lines: per pacs key the acceptable current tags, the acked versions, the dropped versions."""
    state: dict[str, set[str]] = {}
    versions: dict[str, str] = {}
    dropped: set[str] = set()
    pending: tuple[str, str, str] | None = None

    def interrupted(op: str, key: str, tag: str) -> None:  # killed mid-operation: the old state or the new one
        if op in ("put", "delete"):
            state.setdefault(key, {"-"}).add(tag)
        elif op == "drop":
            dropped.add(tag)

    for line in lines:
        words = line.split()
        if words[0] == "BEGIN":
            if pending is not None:  # the previous round's writer died inside this one
                interrupted(*pending)
            pending = (words[1], words[3], words[4])
        elif words[0] == "ACK":
            op, key, tag = words[1], words[3], words[4]
            if op in ("put", "delete"):
                state[key] = {tag}
            elif op == "version":
                versions[words[5]] = tag
            elif op == "drop":
                dropped.add(tag)
            pending = None
    if pending is not None:
        interrupted(*pending)
    return state, versions, dropped


def test_sigkill_during_mutation_and_maintenance_with_readers(store_path: Path, tmp_path: Path) -> None:
    held = _setup(store_path)
    rng = random.Random(2026)
    readers = [Worker("read", store_path, 100 + i) for i in range(2)]
    all_lines: list[str] = []
    acked = 0
    try:
        for round_ in range(ROUNDS):
            mutator = Worker("mutate", store_path, round_ + 1)
            maint = Worker("maintain", store_path, 50 + round_)
            deadline = time.monotonic() + 1.0 + rng.random() * 1.5
            victims = [mutator, maint]
            while time.monotonic() < deadline:
                time.sleep(0.05)
            rng.shuffle(victims)
            for victim in victims:  # killed at unrelated moments
                victim.kill()
                time.sleep(rng.random() * 0.2)
            assert b"Traceback" not in mutator.errors, mutator.errors.decode()
            assert b"Traceback" not in maint.errors, maint.errors.decode()
            all_lines += mutator.lines
            acked += sum(1 for line in mutator.lines if line.startswith("ACK"))
            assert not [line for line in mutator.lines + maint.lines if line.startswith("BAD")]
            _check(store_path, all_lines, held)
    finally:
        for reader in readers:
            reader.kill()
    reads = [line for r in readers for line in r.lines]
    bad = [line for line in reads if line.startswith("BAD")]
    assert not bad, bad[:5]
    assert sum(1 for line in reads if line.startswith("OK")) > 20 and acked > 20
    with Store.open(store_path) as store:
        report = store.scrub()
        assert report.index_trusted and not report.lost and report.unreferenced_fragments == 0
        store.collect_garbage(min_age=0)
    _check(store_path, all_lines, held)
    _rebuild_matches(store_path, tmp_path)


def _check(path: Path, lines: list[str], held: dict[str, str]) -> None:
    state, versions, dropped = _expected(lines)
    with Store.open(path) as store:
        for key, tags in state.items():
            try:
                data = store.get_object_bytes("pacs", key)
                verify(data)
                assert any(data == body(t, len(data)) for t in tags if t != "-"), f"pacs/{key}: not an acknowledged state"
            except NoSuchKey:
                assert "-" in tags, f"pacs/{key} lost (expected one of {tags})"
        for version, tag in versions.items():
            if version not in dropped:
                key = f"k{0}"
                found = [v for v in store.list_object_versions("ver").versions if v.version_id == version]
                assert found, f"acknowledged version {version} ({tag}) lost"
                key = found[0].key
                data = store.get_object_bytes("ver", key, version)
                verify(data)
        for key, blob_id in held.items():
            verify(store.get_object_bytes("locked", key))
            files = [f for f in fragments(store) if f"{blob_id}.f" in f]
            assert len(files) == 6, f"a fragment of locked {key} is gone"


def _rebuild_matches(path: Path, tmp_path: Path) -> None:
    """rebuild-index on a copy of the drives gives the live state; so does a rebuild killed half-way, run again."""
    with Store.open(path) as store:
        expected = live_state(store)
    copy = tmp_path / "copy"
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns("index", "run", "spool"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    killed = subprocess.Popen([sys.executable, "-m", "objfs.cli", "rebuild-index", str(copy)], env=env)
    time.sleep(0.3)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    subprocess.run(
        [sys.executable, "-m", "objfs.cli", "rebuild-index", str(copy), "--force"], env=env, check=True, capture_output=True
    )
    with Store.open(copy) as rebuilt:
        assert live_state(rebuilt) == expected
