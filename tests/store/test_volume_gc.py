"""Removing data from volumes (issue 10): gc and scrub free packed entries under the rules of fragment files.

Real stores on real drive directories, real processes killed with SIGKILL:

- the collector punches the entries of retired blobs (the volumes' allocated
  blocks shrink) and everything still live reads back; a volume that holds
  locked data is immutable: its dead entries keep their bytes (counted) and
  the collector still finishes; a volume left with nothing is removed, never
  while its writer lives;
- scrub with a lost index punches nothing and reports the entries; an entry
  of a writer killed mid-put is collected only once that process is dead;
- writers, overwriters, deleters and a collector killed at random points while
  readers stream the same keys: no reader ever gets wrong or short bytes, and
  every acknowledged live object reads back exactly.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from trusthelpers import body, verify

from objfs.store import Store, init_store
from objfs.store import scrub as scrub_module
from objfs.store.errors import NoSuchKey
from objfs.store.leases import RELEASE_LAG
from objfs.store.scrub import _holds_data
from objfs.store.volumes import list_volumes, scan

REPO = Path(__file__).resolve().parents[2]
DAY = 86400


def volumes(store: Store) -> list[Path]:
    return [v for d in store.all_drives() for v in list_volumes(d.path)]


def blocks(store: Store) -> int:
    """Allocated 512-byte blocks of every volume of the store."""
    return sum(os.stat(v).st_blocks for v in volumes(store))


def entries(store: Store) -> set[tuple[str, str, int]]:
    """Every entry a scan finds: (volume, blob id, fragment index)."""
    return {(v.name, e.blob_id, e.index) for v in volumes(store) for e in scan(v)}


def volume_bytes(store: Store) -> dict[Path, bytes]:
    return {v: v.read_bytes() for v in volumes(store)}


def test_gc_punches_retired_entries_and_the_rest_reads_back(store: Store) -> None:
    store.create_bucket("pacs")
    for i in range(24):
        store.put_object("pacs", f"k{i}", body(f"old{i}", 40_000 + i))
    assert not [f for d in store.all_drives() for _, _, files in os.walk(d.path / "blobs") for f in files]  # all packed
    for i in range(0, 24, 2):
        store.delete_object("pacs", f"k{i}")
    for i in range(1, 24, 4):
        store.put_object("pacs", f"k{i}", body(f"new{i}", 30_000 + i))
    before = blocks(store)
    report = store.collect_garbage(min_age=0)
    assert report.collected == 12 + 6 and store.gc_pending() == 0
    assert report.volume_entries_punched == 18 * 6 and report.volume_bytes_kept == 0
    assert report.volumes_removed == 0  # this store's own volumes are active
    # Each retired fragment (about 10 KiB) holds at least one whole 4 KiB block: freed.
    assert blocks(store) <= before - 18 * 6 * 4096 // 512
    live = {blob for _, blob, _ in entries(store)}
    for i in range(24):
        if i % 2 == 0:
            with pytest.raises(NoSuchKey):
                store.head_object("pacs", f"k{i}")
            continue
        data = store.get_object_bytes("pacs", f"k{i}")
        verify(data)
        tag = f"new{i}" if i % 4 == 1 else f"old{i}"
        assert data == body(tag, len(data))
        assert store.head_object("pacs", f"k{i}").record["parts"][0]["id"] in live
    assert len(live) == 12 and len(entries(store)) == 12 * 6
    assert store.collect_garbage(min_age=0).volume_entries_punched == 0  # nothing left to do


def test_a_volume_with_nothing_left_is_removed_only_when_its_writer_is_gone(store_path: Path) -> None:
    writer = Store.open(store_path)
    try:
        writer.create_bucket("pacs")
        for i in range(8):
            writer.put_object("pacs", f"k{i}", body(f"k{i}", 20_000))
        for i in range(8):
            writer.delete_object("pacs", f"k{i}")
        report = _collect_in_another_process(store_path)  # the writer's volumes are not that process's own
        assert report["volume_entries_punched"] == 8 * 6 and report["volumes_removed"] == 0
        assert len(volumes(writer)) == 6 and not entries(writer)
        writer.put_object("pacs", "after", body("after", 20_000))  # the writer still appends to them
        verify(writer.get_object_bytes("pacs", "after"))
        writer.delete_object("pacs", "after")
    finally:
        writer.close()
    time.sleep(2 * RELEASE_LAG)  # the read's lease is published up to RELEASE_LAG after it ends
    report = _collect_in_another_process(store_path)
    assert report["volume_entries_punched"] == 6 and report["volumes_removed"] == 6
    with Store.open(store_path) as store:
        assert volumes(store) == []
        store.put_object("pacs", "again", body("again", 20_000))
        verify(store.get_object_bytes("pacs", "again"))
        assert store.scrub().unreferenced_fragments == 0


def _open_volume_fds() -> list[str]:
    fd_dir = Path("/proc/self/fd")
    found = []
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if target.endswith(".vol"):
            found.append(target)
    return found


def test_a_long_lived_writer_closes_the_volumes_it_retires(store_path: Path) -> None:
    """Full volumes are closed (descriptor and lock) once their last sync is done, so gc can remove them."""
    writer = Store.open(store_path)
    try:
        writer.volumes.limit = 32 * 1024  # before the first volume: each takes about four entries
        writer.create_bucket("pacs")
        assert _open_volume_fds() == []
        threads = [
            threading.Thread(
                target=lambda t=t: [writer.put_object("pacs", f"t{t}-{i}", body(f"t{t}-{i}", 30_000)) for i in range(12)]
            )
            for t in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        retired = len(volumes(writer))
        assert retired >= 6 * 8  # many volumes per drive were filled and retired
        held = _open_volume_fds()
        assert len(held) <= 6 and len(set(held)) == len(held)  # one active volume per drive, nothing else
        for t in range(4):
            for i in range(12):
                writer.delete_object("pacs", f"t{t}-{i}")
        time.sleep(2 * RELEASE_LAG)
        report = _collect_in_another_process(store_path)
        # Every volume but the writer's active ones is removed while the writer lives.
        assert report["volumes_removed"] == retired - len(held)
        assert sorted(str(v) for v in volumes(writer)) == sorted(held)
        writer.put_object("pacs", "after", body("after", 30_000))
        verify(writer.get_object_bytes("pacs", "after"))
    finally:
        writer.close()
    assert _open_volume_fds() == []


def _python(code: str, *args: str) -> str:
    """Run ``code`` in a fresh Python process using this tree; its stdout."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _collect_in_another_process(store_path: Path) -> dict:
    code = "import json, sys; from objfs.store import Store; s = Store.open(sys.argv[1]); "
    code += "print(json.dumps(s.collect_garbage(min_age=0).as_dict())); s.close()"
    return json.loads(_python(code, str(store_path)))


def test_an_immutable_volume_keeps_dead_bytes_and_gc_finishes(store: Store) -> None:
    store.create_bucket("locked", object_lock=True)
    store.put_object("locked", "held", body("held", 30_000))
    store.put_object("locked", "free", body("free", 30_000))
    store.set_retention("locked", "held", "COMPLIANCE", store.clock.now() + DAY)  # its volumes become immutable
    kept = volume_bytes(store)
    store.delete_object("locked", "free", store.head_object("locked", "free").version_id)
    report = store.collect_garbage(min_age=0)
    assert report.collected == 1 and store.gc_pending() == 0
    assert report.volume_entries_punched == 0 and report.volume_bytes_kept > 6 * 30_000 // 4
    assert volume_bytes(store) == kept  # not a byte changed
    verify(store.get_object_bytes("locked", "held"))
    assert store.collect_garbage(min_age=0).volume_bytes_kept == 0  # the entry is not retried forever


@pytest.mark.allow_warnings
def test_scrub_with_a_lost_index_punches_nothing_and_reports(store_path: Path, cli, monkeypatch) -> None:
    # Written by a process that is gone (the entries of a live writer are a write in progress, not reported).
    code = "import sys; from objfs.store import Store; s = Store.open(sys.argv[1]); s.create_bucket('pacs')\n"
    code += "for i in range(5): s.put_object('pacs', f'k{i}', bytes(9000))\n"
    code += "s.delete_object('pacs', 'k0'); s.close()"  # a gc entry is pending: it goes with the index
    _python(code, str(store_path))
    writer = _start_writer(store_path)  # a writer killed mid-put: its journal names an uncommitted blob
    try:
        assert writer.stdout.readline().strip() == "APPENDED"
    finally:
        writer.kill()
        writer.wait()
    with Store.open(store_path) as store:
        kept = volume_bytes(store)
        found = entries(store)
    assert len(found) == 6 * 6
    shutil.rmtree(store_path / "index")
    scrub = cli("scrub", str(store_path), "--json", check=False)
    assert scrub.returncode == 1 and b"rebuild-index" in scrub.stderr
    with Store.open(store_path) as store:
        assert volume_bytes(store) == kept  # not one entry punched
        monkeypatch.setattr(scrub_module, "VOLUME_SPILL_CHUNK", 5)  # the entry listing goes through sorted chunks on disk
        report = store.scrub()
        assert not report.index_trusted and report.intents_collected == 0
        assert report.unreferenced_fragments == 6 * 6  # every entry reported
        assert volume_bytes(store) == kept


def test_a_drive_holding_only_volume_entries_holds_data(store: Store) -> None:
    """An index found empty beside such a drive is a lost index, not an empty store."""
    store.create_bucket("pacs")
    store.put_object("pacs", "one", body("one", 9000))
    drives = store.all_drives()
    assert all(list_volumes(d.path) for d in drives)
    assert not [f for d in drives for _, _, files in os.walk(d.path / "blobs") for f in files]  # no file of it anywhere
    for drive in drives:  # empty fan-out directories and the bucket settings aside: only the volumes hold anything
        for sub in ("blobs", "buckets"):
            (drive.path / sub).rename(drive.path / f"{sub}.aside")
    try:
        assert all(_holds_data(d) for d in drives)
    finally:
        for drive in drives:
            for sub in ("blobs", "buckets"):
                (drive.path / f"{sub}.aside").rename(drive.path / sub)


_WRITER = textwrap.dedent(
    """
    import sys, time
    from objfs.store import Store
    from objfs.store.blobs import BlobWriter
    store = Store.open(sys.argv[1])
    writer = BlobWriter(store, store.config.hot.name)
    writer.write(b"x" * 7000)
    writer.finish({"bucket": "pacs", "key": "never"})  # appended and synced; the index commit never comes
    print("APPENDED", flush=True)
    time.sleep(600)
    """
)


def _start_writer(store_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(store_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def test_an_entry_of_a_writer_killed_mid_put_is_collected_once_it_is_dead(store_path: Path) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        store.put_object("pacs", "live", body("live", 9000))
    writer = _start_writer(store_path)
    try:
        assert writer.stdout.readline().strip() == "APPENDED"
        with Store.open(store_path) as store:
            uncommitted = {blob for _, blob, _ in entries(store)} - {store.head_object("pacs", "live").record["parts"][0]["id"]}
            assert len(uncommitted) == 1
            report = store.scrub()  # the writer lives: its entry is a write in progress
            assert report.intents_collected == 0 and report.unreferenced_fragments == 0
            assert len(entries(store)) == 12
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    with Store.open(store_path) as store:
        report = store.scrub()
        assert report.index_trusted and report.intents_collected == 1 and report.unreferenced_fragments == 0
        assert {blob for _, blob, _ in entries(store)} == {store.head_object("pacs", "live").record["parts"][0]["id"]}
        verify(store.get_object_bytes("pacs", "live"))
        assert store.scrub().intents_collected == 0


# -- the attacker: SIGKILL at random points while readers stream ---------------------------

KEYS = [f"k{i}" for i in range(8)]
_MUTATOR = textwrap.dedent(
    """
    import os, random, sys
    sys.path.insert(0, sys.argv[3])
    from trusthelpers import body

    def say(*words):  # one write(2) per line, atomic on a pipe: a SIGKILL never leaves half a line
        os.write(1, (" ".join(words) + "\\n").encode())

    from objfs.store import Store
    from objfs.store.errors import NoSuchKey
    store = Store.open(sys.argv[1])
    seed = int(sys.argv[2])
    rng = random.Random(seed)
    n = 0
    while True:
        n += 1
        key = "k%d" % (int(sys.argv[4]) + rng.randrange(4))  # each concurrent writer has keys of its own
        if rng.random() < 0.7:
            tag = "%d-%d" % (seed, n)
            say("BEGIN", key, tag)
            store.put_object("pacs", key, body(tag, rng.choice([500, 9_000, 150_000, 300_000])))
            say("ACK", key, tag)
        else:
            say("BEGIN", key, "-")
            try:
                store.delete_object("pacs", key)
            except NoSuchKey:
                pass
            say("ACK", key, "-")
    """
)
_COLLECTOR = textwrap.dedent(
    """
    import random, sys
    from objfs.store import Store
    store = Store.open(sys.argv[1])
    rng = random.Random(int(sys.argv[2]))
    while True:
        if rng.random() < 0.2:
            report = store.scrub()
            if report.lost:
                print("BAD scrub lost", report.lost, flush=True)
        store.collect_garbage(min_age=0)
    """
)


class _Proc:
    def __init__(self, code: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        self.lines: list[str] = []
        self._out = threading.Thread(target=self._collect, daemon=True)
        self._out.start()

    def _collect(self) -> None:
        for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    def kill(self) -> bytes:
        """SIGKILL it; its stderr (it must have been running until then)."""
        alive = self.proc.poll() is None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._out.join()
        errors = self.proc.stderr.read()
        assert alive, f"the worker ended by itself: {errors.decode()}"
        return errors


def _acceptable(lines: list[str]) -> dict[str, set[str]]:
    """Per key, the states it may be in: the last acknowledged one, or an interrupted change on top ("-": absent)."""
    state: dict[str, set[str]] = {}
    pending = None
    for line in lines:
        fields = line.split()
        assert len(fields) == 3, f"a worker wrote something else on stdout: {line!r}"
        word, key, tag = fields
        if word == "BEGIN":
            if pending is not None:  # the previous writer died inside its operation
                state.setdefault(pending[0], {"-"}).add(pending[1])
            pending = (key, tag)
        elif word == "ACK":
            state[key] = {tag}
            pending = None
    if pending is not None:
        state.setdefault(pending[0], {"-"}).add(pending[1])
    return state


def _reader(store: Store, stop: threading.Event, seed: int, out: list[str]) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        key = rng.choice(KEYS)
        try:
            reader = store.open_object("pacs", key)
        except NoSuchKey:
            continue
        try:
            time.sleep(rng.random() * 0.3)  # slow: the version is replaced and collected meanwhile
            chunks = []
            for chunk in reader.iter_range():
                chunks.append(chunk)
                time.sleep(rng.random() * 0.03)
            verify(b"".join(chunks))
            out.append("OK")
        except Exception as exc:  # noqa: BLE001 - any failure of an opened version is a finding
            out.append(f"BAD {key} {type(exc).__name__} {exc}")
        finally:
            reader.close()


def _check(store: Store, histories: list[list[str]]) -> None:
    """Every key is in an acknowledged state (or the one its killed writer was making) and reads back exactly."""
    expected = {key: tags for lines in histories for key, tags in _acceptable(lines).items()}
    for key, tags in expected.items():
        try:
            data = store.get_object_bytes("pacs", key)
        except NoSuchKey:
            assert "-" in tags, f"{key} lost (expected one of {tags})"
            continue
        verify(data)
        assert any(data == body(t, len(data)) for t in tags if t != "-"), f"{key}: not an acknowledged state"


def test_sigkill_of_writers_and_collector_while_readers_stream(tmp_path: Path) -> None:
    path = tmp_path / "store"
    init_store(path, segment_size=64 * 1024).close()  # several segments per packed object: reads take a while
    with Store.open(path) as setup:
        setup.create_bucket("pacs")
    rng = random.Random(1010)
    histories: list[list[str]] = [[], []]
    reads: list[str] = []
    stop = threading.Event()
    store = Store.open(path)
    readers = [threading.Thread(target=_reader, args=(store, stop, 7 + i, reads)) for i in range(3)]
    for thread in readers:
        thread.start()
    try:
        for round_ in range(6):
            mutators = [
                _Proc(_MUTATOR, str(path), str(round_ * 10 + i), str(Path(__file__).parent), str(4 * i)) for i in range(2)
            ]
            collector = _Proc(_COLLECTOR, str(path), str(round_))
            victims = [*mutators, collector]
            time.sleep(0.8 + rng.random() * 1.2)
            rng.shuffle(victims)
            for victim in victims:  # killed at unrelated moments
                errors = victim.kill()
                assert b"Traceback" not in errors, errors.decode()
                time.sleep(rng.random() * 0.15)
            for slot, mutator in enumerate(mutators):  # one history per writer slot (disjoint keys)
                histories[slot] += mutator.lines
            assert not [line for line in collector.lines if line.startswith("BAD")]
            _check(store, histories)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    try:
        bad = [r for r in reads if r.startswith("BAD")]
        assert not bad, bad[:5]
        assert reads.count("OK") > 20 and sum(1 for h in histories for line in h if line.startswith("ACK")) > 30
        report = store.scrub()
        assert report.index_trusted and not report.lost and report.unreferenced_fragments == 0
        time.sleep(2 * RELEASE_LAG)  # the readers' last leases are unpublished by now
        gc = store.collect_garbage(min_age=0)
        assert store.gc_pending() == 0 and gc.volume_bytes_kept == 0
    finally:
        store.close()
    with Store.open(path) as fresh:  # every process that wrote is gone: their emptied volumes may go too
        fresh.collect_garbage(min_age=0)
        _check(fresh, histories)
        assert fresh.scrub().unreferenced_fragments == 0
