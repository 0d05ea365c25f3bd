"""Drive loss, corruption, write quorum, crashes and index rebuilds, on real drive directories."""

from __future__ import annotations

import hashlib
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
from fragmenthelpers import corrupt_fragment, fragment_whole, is_packed, lose_fragment

from objfs.store import Store
from objfs.store.errors import DataLoss, InsufficientDrives

REPO = Path(__file__).resolve().parents[2]

SEG = 1 << 20


def fill(store: Store, count: int = 12) -> dict[str, bytes]:
    store.create_bucket("pacs")
    rng = random.Random(7)
    objects = {}
    for i in range(count):
        size = rng.choice([0, 1, 1000, SEG - 1, SEG, SEG + 1, 2 * SEG + 333])
        data = rng.randbytes(size)
        key = f"study{i % 3}/series/{i:04d}.dcm"
        store.put_object("pacs", key, data)
        objects[key] = data
    return objects


def test_m_drives_lost_reads_exact_then_m_plus_1_is_a_clear_error(store: Store) -> None:
    objects = fill(store)
    shutil.rmtree(store.root / "drives" / "d1")
    shutil.rmtree(store.root / "drives" / "d4")
    for key, data in objects.items():
        assert store.get_object_bytes("pacs", key) == data
    assert store.heal_queue(), "degraded reads must queue the objects for healing"
    shutil.rmtree(store.root / "drives" / "d2")
    lost = 0
    for key, data in objects.items():
        try:
            assert store.get_object_bytes("pacs", key) == data
        except DataLoss:
            lost += 1
    assert lost > 0  # with 3 of 6 drives gone most objects lost a 4th fragment holder


def _desc(store: Store, key: str) -> dict:
    return store.head_object("pacs", key).record["parts"][0]


@pytest.mark.parametrize("size", [3 * SEG, 3000], ids=["files", "packed"])
def test_flipped_bytes_detected_read_exact_and_scrub_repairs(store: Store, size: int) -> None:
    objects = fill(store)
    key = "flip/target.dcm"
    data = os.urandom(size)
    store.put_object("pacs", key, data)
    desc = _desc(store, key)
    assert is_packed(desc, 0) == (size <= store.config.pack_max)
    corrupt_fragment(store, desc, 0, 10)
    corrupt_fragment(store, desc, 3, min(SEG // 4 + 50, size // 8))  # inside the frames either way
    assert store.get_object_bytes("pacs", key) == data
    assert any(item["key"] == key for item in store.heal_queue())
    report = store.scrub()
    assert report.fragments_repaired == 2 and not report.lost
    again = store.scrub()
    assert again.fragments_repaired == 0 and again.temp_removed == 0 and not again.lost
    desc = _desc(store, key)
    assert all(fragment_whole(store, desc, i) for i in range(6))  # every fragment is whole again
    for other, body in list(objects.items()) + [(key, data)]:
        assert store.get_object_bytes("pacs", other) == body
    assert store.heal_queue() == []


@pytest.mark.parametrize("size", [SEG + 5, 5000], ids=["files", "packed"])
def test_scrub_rewrites_lost_fragments(store: Store, size: int) -> None:
    fill(store, 4)
    data = os.urandom(size)
    store.put_object("pacs", "x", data)
    desc = _desc(store, "x")
    lose_fragment(store, desc, 1)
    lose_fragment(store, desc, 5)
    report = store.scrub()
    assert report.fragments_repaired == 2
    desc = _desc(store, "x")
    assert all(fragment_whole(store, desc, i) for i in range(6))
    # the rebuilt fragments carry the data: lose two others and read through them
    lose_fragment(store, desc, 0)
    lose_fragment(store, desc, 4)
    assert store.get_object_bytes("pacs", "x") == data


def test_write_quorum(store: Store) -> None:
    store.create_bucket("pacs")
    shutil.rmtree(store.root / "drives" / "d0")
    info = store.put_object("pacs", "degraded", b"d" * 5000)  # 5 drives = k+1: accepted
    assert store.get_object_bytes("pacs", "degraded") == b"d" * 5000
    assert any(i["key"] == "degraded" for i in store.heal_queue())
    assert len(info.record["parts"][0]["written"]) == 5
    shutil.rmtree(store.root / "drives" / "d5")
    with pytest.raises(InsufficientDrives):
        store.put_object("pacs", "refused", b"r" * 5000)
    assert [o.key for o in store.list_objects("pacs").objects] == ["degraded"]


def test_rebuild_index_from_drives_alone(store_path: Path, cli) -> None:
    with Store.open(store_path) as store:
        objects = fill(store, 15)
        store.create_bucket("empty-bucket")
        store.rename_object("pacs", "study0/series/0000.dcm", "renamed/first.dcm")
        objects["renamed/first.dcm"] = objects.pop("study0/series/0000.dcm")
        store.delete_object("pacs", "study1/series/0001.dcm")
        del objects["study1/series/0001.dcm"]
        store.put_object("pacs", "study2/series/0002.dcm", b"overwritten")
        objects["study2/series/0002.dcm"] = b"overwritten"
        store.min_part_size = 1
        upload = store.create_multipart("pacs", "multi/part")
        e1 = store.upload_part(upload, 1, b"a" * (SEG + 1))["etag"]
        e2 = store.upload_part(upload, 2, b"b" * 10)["etag"]
        store.complete_multipart(upload, [(1, e1), (2, e2)])
        objects["multi/part"] = b"a" * (SEG + 1) + b"b" * 10
        before = [(o.key, o.size, o.etag) for o in store.list_objects("pacs").objects]
    shutil.rmtree(store_path / "index")
    out = cli("rebuild-index", str(store_path))
    assert json.loads(out.stdout)["objects"] == len(objects)
    with Store.open(store_path) as store:
        assert [(o.key, o.size, o.etag) for o in store.list_objects("pacs").objects] == before
        assert {b["name"] for b in store.list_buckets()} == {"pacs", "empty-bucket"}
        for key, data in objects.items():
            assert store.get_object_bytes("pacs", key) == data
        assert store.scrub().lost == []
    refused = cli("rebuild-index", str(store_path), check=False)
    assert refused.returncode == 2 and b"not empty" in refused.stderr


WRITER = textwrap.dedent(
    """
    import hashlib, os, sys
    from objfs.store import Store
    store = Store.open(sys.argv[1])
    start = int(sys.argv[2])
    for i in range(start, start + 10000):
        size = (i * 7919) % (3 << 20)
        data = hashlib.sha256(str(i).encode()).digest() * (size // 32 + 1)
        store.put_object("pacs", f"obj/{i:06d}", data[:size])
        print(i, flush=True)  # acknowledged: durable from here on
    """
)


def expected_body(i: int) -> bytes:
    size = (i * 7919) % (3 << 20)
    return (hashlib.sha256(str(i).encode()).digest() * (size // 32 + 1))[:size]


def test_sigkill_during_puts_loses_nothing_acknowledged(store_path: Path) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    acknowledged: list[int] = []
    rng = random.Random(11)
    start = 0
    for _round in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(store_path), str(start)], stdout=subprocess.PIPE, env=env)
        lines: list[int] = []
        reader = threading.Thread(target=lambda lines=lines, proc=proc: lines.extend(int(x) for x in proc.stdout))
        reader.start()
        time.sleep(0.6 + rng.random() * 0.8)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
        acknowledged += lines
        start += 10000
    assert len(acknowledged) > 4
    with Store.open(store_path) as store:
        listed = {o.key: o for o in store.list_objects("pacs", max_keys=100000).objects}
        for i in acknowledged:
            assert store.get_object_bytes("pacs", f"obj/{i:06d}") == expected_body(i)
        for key in listed:  # whatever is listed is whole (at most one unacknowledged per round)
            assert store.get_object_bytes("pacs", key) == expected_body(int(key.split("/")[1]))
        assert len(listed) - len(acknowledged) <= 4
        report = store.scrub()
        # Each killed writer left temp files or renamed fragments of a blob it never
        # committed; its intent journal is the evidence that lets scrub remove them.
        assert report.temp_removed + report.intents_collected > 0, "the killed writers must have left temp or fragment files"
        assert not report.lost and report.index_trusted
        assert report.unreferenced_fragments == 0
        again = store.scrub()
        assert again.temp_removed == 0 and again.intents_collected == 0 and again.unreferenced_fragments == 0
        leftovers = [n for d in store.all_drives() for n in os.listdir(d.tmp_dir)]
        assert leftovers == []


def test_concurrent_writers_two_processes_eight_threads(store_path: Path) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
    script = textwrap.dedent(
        """
        import sys, threading
        from objfs.store import Store
        store = Store.open(sys.argv[1]); proc = sys.argv[2]
        def work(t):
            for i in range(12):
                store.put_object("pacs", f"{proc}/{t}/{i}", f"{proc}-{t}-{i}".encode() * (i * 3000))
                store.put_object("pacs", f"shared/{i}", f"{proc}-{t}".encode())
        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        [t.start() for t in threads]; [t.join() for t in threads]
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(store_path), p], env=env) for p in ("p0", "p1")]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    with Store.open(store_path) as store:
        for proc in ("p0", "p1"):
            for t in range(8):
                for i in range(12):
                    assert store.get_object_bytes("pacs", f"{proc}/{t}/{i}") == f"{proc}-{t}-{i}".encode() * (i * 3000)
        for i in range(12):
            assert store.get_object_bytes("pacs", f"shared/{i}").decode().startswith(("p0-", "p1-"))
        report = store.scrub()
        assert report.unreferenced_fragments == 0 and not report.lost  # overwritten objects are queued for gc
        assert report.gc["waiting"] > 0  # ... and wait their minimum age
        assert store.collect_garbage(min_age=0).collected == report.gc["waiting"]
        assert store.gc_pending() == 0


def test_memory_stays_bounded_for_a_large_object(store_path: Path, tmp_path: Path) -> None:
    """A 256 MiB object in and out through the CLI (2 GiB runs in the benchmark)."""
    source = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with open(source, "wb") as f:
        for _ in range(256):
            f.write(block)
    # VmHWM is the peak of this process's own address space. ru_maxrss is not:
    # Linux carries it across execve, so a child spawned (vfork+exec) by a
    # large test process would report the parent's peak.
    script = textwrap.dedent(
        """
        import sys
        from objfs.cli import main

        def peak_kib():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

        main(["put", sys.argv[1], "pacs/big", sys.argv[2]])
        print("after put", peak_kib())
        main(["get", sys.argv[1], "pacs/big", sys.argv[3]])
        print(peak_kib())
        """
    )
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", script, str(store_path), str(source), str(tmp_path / "back.bin")],
        env=env,
        capture_output=True,
        check=True,
    )
    max_rss_kib = int(out.stdout.split()[-1])
    assert max_rss_kib < 200 * 1024, f"peak RSS {max_rss_kib} KiB ({out.stdout.decode().strip()})"
    with open(source, "rb") as a, open(tmp_path / "back.bin", "rb") as b:
        assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest()


def test_replace_a_lost_drive_and_heal(store_path: Path, cli) -> None:
    with Store.open(store_path) as store:
        objects = fill(store, 10)
    shutil.rmtree(store_path / "drives" / "d3")
    status = json.loads(cli("status", str(store_path), "--json", check=False).stdout)  # exits 1: degraded
    assert [d["healthy"] for d in status["drives"]].count(False) == 1
    refused = cli("replace-drive", str(store_path), "hot-0", check=False)
    assert refused.returncode == 2 and b"is ok" in refused.stderr
    out = cli("replace-drive", str(store_path), "hot-3")
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["fragments_repaired"] > 0 and report["lost"] == []
    shutil.rmtree(store_path / "drives" / "d0")
    shutil.rmtree(store_path / "drives" / "d5")  # two more lost: the rebuilt drive must carry its share
    with Store.open(store_path) as store:
        for key, data in objects.items():
            assert store.get_object_bytes("pacs", key) == data
