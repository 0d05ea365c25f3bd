"""`objfs upgrade` on a store made by the objfs before volumes (commit 7c698fe): format 3, small blobs packed.

The old store is made at run time by the old code itself (its tree taken
from git), through its own CLI; the upgrade, the collector and every read
are today's. A killed upgrade (SIGKILL, twice, at different points) leaves
every version readable with its exact bytes and ETag, and a rerun finishes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from objfs.store import Store
from objfs.store.config import STORE_FORMAT
from objfs.store.upgrade import BATCH, PACK_POSITION
from objfs.store.volumes import list_volumes, scan

REPO = Path(__file__).resolve().parents[2]
OLD_COMMIT = "7c698fe260852a1b13f1c45f5df3c2a83643b829"  # main before volumes: format 2, one fragment file per fragment
PACK_MAX = 1 << 20


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The objfs package as it was at OLD_COMMIT, extracted from git."""
    # git is a test dependency (scripts/install-system-deps.sh); a clone without the old commit fetches it.
    known = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{OLD_COMMIT}^{{commit}}"], capture_output=True)
    if known.returncode != 0:
        subprocess.run(["git", "-C", str(REPO), "fetch", "-q", "--depth", "1", "origin", OLD_COMMIT], check=True)
    tree = tmp_path_factory.mktemp("objfs-7c698fe")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", OLD_COMMIT, "objfs"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    assert (tree / "objfs" / "cli").is_dir()
    return tree


def old_cli(tree: Path, *args: str, input: bytes | None = None) -> str:
    """The old objfs's CLI (run from its tree: ``-m`` puts the working directory first on the path)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, "-m", "objfs.cli", *args], input=input, capture_output=True, env=env, cwd=tree, timeout=120
    )
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode()


def old_puts(tree: Path, store: Path, bucket: str, bodies: dict[str, bytes | list[bytes]], *, sse: bool = False) -> None:
    """Many small puts by the old engine in one process (one CLI process per object would take minutes).

    A list of bodies is one multipart upload of those parts; ``sse`` first
    makes the bucket encrypt new objects (SSE-S3).
    """
    script = textwrap.dedent(
        """
        import pickle, sys
        import objfs.store.config
        from objfs.stores import Store
        assert objfs.store.config.STORE_FORMAT == 2, objfs.store.config.__file__  # the old code, not today's
        bodies = pickle.load(sys.stdin.buffer)
        with Store.open(sys.argv[1]) as store:
            store.min_part_size = 1  # small parts, so the multipart version is small too
            if sys.argv[3] == "sse":
                store.update_bucket(sys.argv[2], encryption={"mode": "S3"})
            for key, body in bodies.items():
                if isinstance(body, list):
                    upload = store.create_multipart(sys.argv[2], key)
                    done = [store.upload_part(upload, n + 1, part) for n, part in enumerate(body)]
                    store.complete_multipart(upload, [(p["number"], p["etag"]) for p in done])
                else:
                    store.put_object(sys.argv[2], key, body)
        """
    )
    import pickle

    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, "-c", script, str(store), bucket, "sse" if sse else "plain"],
        input=pickle.dumps(bodies),
        capture_output=True,
        env=env,
        cwd=tree,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr.decode()


def body(tag: str, size: int) -> bytes:
    seed = tag.encode() + b"|"
    return (seed * (size // len(seed) + 1))[:size]


def versions(store: Store) -> list[dict[str, Any]]:
    with store.index.read() as txn:
        return [r for db in ("objects", "versions") for _, r in txn.scan(db) if not r.get("delete_marker")]


def readback(store_path: Path) -> dict[tuple[str, str, str], tuple[str, bytes]]:
    """Every version's (ETag, bytes), read through today's engine."""
    out = {}
    with Store.open(store_path) as store:
        for r in versions(store):
            info = store.head_object(r["bucket"], r["key"], r["version"])
            out[(r["bucket"], r["key"], r["version"])] = (info.etag, store.get_object_bytes(r["bucket"], r["key"], r["version"]))
    return out


def fragment_files(store_path: Path) -> list[Path]:
    return sorted(p for p in (store_path / "drives").glob("*/blobs/*/*/*") if re.search(r"\.f\d+$", p.name))


def packed_entries(store: Store) -> set[tuple[str, int]]:
    return {(e.blob_id, e.index) for d in store.all_drives() for v in list_volumes(d.path) for e in scan(v)}


def upgrade(store_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "objfs.cli", "upgrade", str(store_path), *args], capture_output=True, env=env, timeout=300
    )


def test_upgrade_packs_a_store_made_before_volumes(old_tree: Path, tmp_path: Path, cli) -> None:
    store_path = tmp_path / "st"
    st = str(store_path)
    old_cli(old_tree, "init", st, "--drives", "6")
    assert "format = 2" in (store_path / "objfs.toml").read_text()
    old_cli(old_tree, "mb", st, "pacs", "--object-lock")  # versioned, no default retention
    old_cli(old_tree, "mb", st, "worm", "--object-lock", "--retention-days", "1", "--retention-mode", "GOVERNANCE")
    old_cli(old_tree, "put", st, "pacs/ct/1.dcm", "-", input=body("ct1", 4096))
    old_cli(old_tree, "put", st, "pacs/ct/1.dcm", "-", input=body("ct1-v2", 5000))  # the first becomes noncurrent
    old_cli(old_tree, "put", st, "pacs/ct/2.dcm", "-", input=body("ct2", 1))
    old_cli(old_tree, "put", st, "pacs/empty", "-", input=b"")
    old_cli(old_tree, "put", st, "pacs/big.bin", "-", input=body("big", PACK_MAX + 4096))  # stays fragment files
    old_cli(old_tree, "put", st, "worm/locked.dcm", "-", input=body("locked", 3000))  # locked: stays files
    old_puts(old_tree, store_path, "pacs", {f"mr/{i}.dcm": body(f"mr{i}", 1000 + 97 * i) for i in range(19)})
    old_puts(old_tree, store_path, "pacs", {"mp/series.zip": [body("p1", 7000), body("p2", 3000)]})  # two small blobs
    old_cli(old_tree, "mb", st, "sealed")
    old_puts(old_tree, store_path, "sealed", {"a.dcm": body("sa", 4000), "b.dcm": body("sb", 100)}, sse=True)
    before = readback(store_path)
    assert before[next(k for k in before if k[1] == "mp/series.zip")][0].endswith("-2")  # a multipart ETag
    with Store.open(store_path) as store:
        assert {r["bucket"] for r in versions(store) if r.get("sse")} == {"sealed"}  # encrypted at rest
    files_before = fragment_files(store_path)
    assert len(before) == 28 and len(files_before) >= 28 * 6 - 6  # the empty object may have no blob

    out = upgrade(store_path, "--json")
    assert out.returncode == 0, out.stderr.decode()
    report = json.loads(out.stdout)
    assert (report["from"], report["to"], report["changed"]) == (2, STORE_FORMAT, True)
    assert report["pack"]["kept"] == {"large": 1, "locked": 1}
    small = 28 - 2  # all but the large and the locked one
    assert (report["pack"]["packed"], report["pack"]["already_packed"]) == (small, 0)
    assert f"format = {STORE_FORMAT}" in (store_path / "objfs.toml").read_text()

    # Every version reads back byte-identical, with its ETag, before and after the collector ran.
    assert readback(store_path) == before
    cli("gc", st, "--min-age", "0")
    assert readback(store_path) == before

    with Store.open(store_path) as store:
        assert store.config.format == STORE_FORMAT
        entries = packed_entries(store)
        left = set()
        for r in versions(store):
            for part in r.get("parts") or []:
                name = f"{r['bucket']}/{r['key']}"
                if name in ("pacs/big.bin", "worm/locked.dcm"):
                    assert not part.get("vols"), name
                    left |= {(part["id"], i) for i in range(part["k"] + part["m"])}
                else:
                    assert part.get("vols") and all(part["vols"]), name
                    assert {(part["id"], i) for i in range(part["k"] + part["m"])} <= entries, name
            assert len(r.get("parts") or []) == (2 if r["key"] == "mp/series.zip" else 1) or r["key"] == "empty"
        snapshot = {(r["id"], r["gen"]) for r in versions(store)}
    # The small objects' fragment files are gone (retired through gc); the large and locked ones remain.
    remaining = {(p.name.split(".")[0], int(p.name.rsplit(".f", 1)[1])) for p in fragment_files(store_path)}
    assert remaining == left

    # A rerun changes nothing.
    toml = (store_path / "objfs.toml").read_text()
    again = upgrade(store_path, "--json")
    assert again.returncode == 0, again.stderr.decode()
    rerun = json.loads(again.stdout)
    assert rerun["changed"] is False and rerun["pack"]["packed"] == 0 and rerun["pack"]["already_packed"] == small
    assert (store_path / "objfs.toml").read_text() == toml
    with Store.open(store_path) as store:
        assert {(r["id"], r["gen"]) for r in versions(store)} == snapshot
    assert readback(store_path) == before

    # Served again by today's objfs, the upgraded store takes new small objects into volumes.
    cli("put", st, "pacs/new.dcm", "-", input=body("new", 4096))
    assert cli("get", st, "pacs/new.dcm").stdout == body("new", 4096)
    assert {(p.name.split(".")[0], int(p.name.rsplit(".f", 1)[1])) for p in fragment_files(store_path)} == left


def test_no_pack_records_the_format_only(old_tree: Path, tmp_path: Path) -> None:
    store_path = tmp_path / "st"
    old_cli(old_tree, "init", str(store_path), "--drives", "6")
    old_cli(old_tree, "mb", str(store_path), "pacs")
    old_cli(old_tree, "put", str(store_path), "pacs/a", "-", input=body("a", 4096))
    files = fragment_files(store_path)
    out = upgrade(store_path, "--no-pack")
    assert out.returncode == 0 and f"from format 2 to format {STORE_FORMAT}" in out.stdout.decode(), out.stderr
    assert fragment_files(store_path) == files
    with Store.open(store_path) as store:
        assert store.config.format == STORE_FORMAT and not packed_entries(store)
        assert store.get_object_bytes("pacs", "a") == body("a", 4096)


def _kill_during_packing(store_path: Path, after: int) -> None:
    """Start an upgrade and SIGKILL it once its progress says ``after`` versions were looked at."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OBJFS_PROGRESS_INTERVAL="0.01")
    proc = subprocess.Popen(
        [sys.executable, "-m", "objfs.cli", "upgrade", str(store_path), "--progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            found = re.search(rb"upgrade: (\d+)/\d+", line)
            if found and int(found.group(1)) >= after:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the upgrade ended before it was killed"


def test_killed_upgrade_loses_nothing_and_a_rerun_completes(old_tree: Path, tmp_path: Path, cli) -> None:
    store_path = tmp_path / "st"
    old_cli(old_tree, "init", str(store_path), "--drives", "6")
    old_cli(old_tree, "mb", str(store_path), "pacs", "--object-lock")
    # More versions than one batch of the pass (BATCH), so a killed pass resumes after a saved position.
    bodies = {f"s/{i}.dcm": body(f"s{i}", 2000 + 13 * i) for i in range(250)}
    old_puts(old_tree, store_path, "pacs", bodies)
    old_puts(old_tree, store_path, "pacs", {k: body(k + "-v2", 3000) for k in list(bodies)[:50]})
    before = readback(store_path)
    total = len(before)
    assert total == 300 > BATCH

    for after, resumes in ((5, False), (BATCH + 10, True)):
        _kill_during_packing(store_path, after)
        assert readback(store_path) == before  # killed mid-pass: every version exact
        with Store.open(store_path) as store:
            assert store.config.format == STORE_FORMAT
            packed = sum(1 for r in versions(store) if r["parts"][0].get("vols"))
            with store.index.read() as txn:
                assert (txn.get("settings", PACK_POSITION) is not None) == resumes
        assert 0 < packed < total

    out = upgrade(store_path, "--json")
    assert out.returncode == 0, out.stderr.decode()
    report = json.loads(out.stdout)["pack"]
    assert report["packed"] > 0 and report["kept"] == {}
    assert readback(store_path) == before
    with Store.open(store_path) as store:
        assert all(all(r["parts"][0]["vols"]) for r in versions(store))
    cli("gc", str(store_path), "--min-age", "0")
    assert fragment_files(store_path) == []
    assert readback(store_path) == before
    again = json.loads(upgrade(store_path, "--json").stdout)["pack"]
    assert again["packed"] == 0 and again["already_packed"] == total
    with Store.open(store_path) as store, store.index.read() as txn:
        assert txn.get("settings", PACK_POSITION) is None  # the pass finished: a rerun starts from the beginning
