"""Lifecycle tiering end to end: a real ``objfs serve`` moves objects hot -> warm -> a remote S3 archive on its own.

Three tiers: hot and warm on local directory drives, ``archive`` a bucket
with object lock on a second objfs started here as a real S3 server (added
with ``objfs tier add --s3 ENDPOINT ...``). With ``[lifecycle] day_seconds =
1`` and a bucket rule put through the S3 front (warm after 2 days, archive
after 8), the lifecycle loop of ``objfs serve`` moves each object no earlier
than its rule says; the bytes read back identical through S3 and the mount,
HEAD and listings show the storage class of each step, an object outside
the rule's prefix stays hot, a locked object keeps its lock on the archive
(the remote refuses to delete it), and ``rebuild-index`` with the service
stopped knows each object's tier.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ports import free_port
from test_appliance import serve_command, stop_serve, wait_ready

from objfs.appliance import prepare
from objfs.store import Store, init_store

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "s3"))
sys.path.insert(0, str(REPO / "tests" / "store"))
from s3helpers import REGION, Key, create_key, make_client, start_server  # noqa: E402
from tierhelpers import tiered_store, unlock_tree  # noqa: E402

WARM_DAYS, ARCHIVE_DAYS = 2, 8
RULES = {
    "Rules": [
        {
            "ID": "studies-age",
            "Status": "Enabled",
            "Filter": {"Prefix": "studies/"},
            "Transitions": [
                {"Days": WARM_DAYS, "StorageClass": "STANDARD_IA"},
                {"Days": ARCHIVE_DAYS, "StorageClass": "GLACIER_IR"},
            ],
        }
    ]
}
STEPS = ["STANDARD", "STANDARD_IA", "GLACIER_IR"]


def _objfs(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "objfs.cli", *args], capture_output=True, text=True, env=env, timeout=120, input=stdin
    )


def _body(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def _class(head: dict) -> str:
    return head.get("StorageClass", "STANDARD")  # S3 omits STANDARD


def test_serve_moves_objects_through_three_tiers_on_time_and_keeps_bytes_locks_and_tiers(tmp_path: Path) -> None:
    remote_root = tmp_path / "remote" / "store"
    remote_root.parent.mkdir()
    init_store(remote_root).close()
    remote = start_server(remote_root)
    proc = None
    try:
        remote_key = create_key(remote_root, "--name", "tiering", "--retention", "--legal-hold")
        remote_client = make_client(remote.url, remote_key)
        remote_client.create_bucket(Bucket="archive", ObjectLockEnabledForBucket=True)

        root = tiered_store(tmp_path / "site" / "store", day_seconds=1)
        added = _objfs(
            "tier", "add", str(root), "archive", "--s3", remote.url, "--bucket", "archive",
            "--access-key", remote_key.access_key, "--secret-key", "-", "--region", REGION,
            stdin=remote_key.secret_key + "\n",
        )  # fmt: skip
        assert added.returncode == 0 and "object lock enabled" in added.stdout, added.stderr
        admin = prepare(root)
        assert admin is not None

        mnt = tmp_path / "mnt"
        s3_port = free_port()
        proc = subprocess.Popen(
            serve_command(root, mnt, s3_port, free_port()),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            text=True,
        )
        output = wait_ready(proc)
        s3 = make_client(f"http://127.0.0.1:{s3_port}", Key(admin["access_key"], admin["secret_key"]))
        s3.create_bucket(Bucket="images", ObjectLockEnabledForBucket=True)
        s3.put_bucket_lifecycle_configuration(Bucket="images", LifecycleConfiguration=RULES)
        bodies = {
            "studies/plain.dcm": _body("plain", 700_000),  # more than one stripe
            "studies/locked.dcm": _body("locked", 120_000),
            "other/stays-hot.dcm": _body("hot", 50_000),
        }
        until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
        put_at = time.time()
        for key, data in bodies.items():
            lock = {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until} if "locked" in key else {}
            s3.put_object(Bucket="images", Key=key, Body=data, **lock)

        # Watch each object's storage class on HEAD: each step no earlier than its rule says, none skipped.
        seen: dict[str, dict[str, float]] = {key: {} for key in bodies}
        deadline = put_at + ARCHIVE_DAYS + 30
        while time.time() < deadline:
            for key in bodies:
                cls = _class(s3.head_object(Bucket="images", Key=key))
                seen[key].setdefault(cls, time.time())
            if all("GLACIER_IR" in seen[k] for k in bodies if k.startswith("studies/")):
                break
            time.sleep(0.2)
        for key in ("studies/plain.dcm", "studies/locked.dcm"):
            assert list(seen[key]) == STEPS, (key, seen[key], "".join(output))
            assert seen[key]["STANDARD_IA"] >= put_at + WARM_DAYS
            assert seen[key]["GLACIER_IR"] >= put_at + ARCHIVE_DAYS
        assert list(seen["other/stays-hot.dcm"]) == ["STANDARD"]

        listed = {o["Key"]: o.get("StorageClass", "STANDARD") for o in s3.list_objects_v2(Bucket="images")["Contents"]}
        assert listed == {
            "studies/plain.dcm": "GLACIER_IR",
            "studies/locked.dcm": "GLACIER_IR",
            "other/stays-hot.dcm": "STANDARD",
        }
        versions = s3.list_object_versions(Bucket="images")["Versions"]
        assert {v["Key"]: v["StorageClass"] for v in versions}["studies/locked.dcm"] == "GLACIER_IR"
        for key, data in bodies.items():  # the archive streams back through every front
            assert s3.get_object(Bucket="images", Key=key)["Body"].read() == data
            assert (mnt / "images" / key).read_bytes() == data
        ranged = s3.get_object(Bucket="images", Key="studies/plain.dcm", Range="bytes=300000-300099")["Body"].read()
        assert ranged == bodies["studies/plain.dcm"][300000:300100]
        locked = s3.head_object(Bucket="images", Key="studies/locked.dcm")
        assert locked["ObjectLockMode"] == "GOVERNANCE" and locked["ObjectLockRetainUntilDate"] == until
        with pytest.raises(s3.exceptions.ClientError, match="AccessDenied"):
            s3.delete_object(Bucket="images", Key="studies/locked.dcm", VersionId=locked["VersionId"])
    finally:
        if proc is not None:
            rest = stop_serve(proc, tmp_path / "mnt")
    try:
        assert proc.returncode == 0, "".join(output) + rest
        assert "Traceback" not in rest and "WARNING" not in rest, rest

        # On the remote: the locked object is an object-lock version with the same retention.
        with Store.open(root) as store:
            record = store.head_object("images", "studies/locked.dcm").record
            desc = record["parts"][0]
            assert desc["remote"] == "tier-archive" and desc["drives"] == []
            tiers = {key: store.tier_of(store.head_object("images", key).record) for key in bodies}
        assert tiers == {"studies/plain.dcm": "archive", "studies/locked.dcm": "archive", "other/stays-hot.dcm": "hot"}
        retention = remote_client.get_object_retention(Bucket="archive", Key=desc["rkey"], VersionId=desc["rversion"])
        assert retention["Retention"]["Mode"] == "GOVERNANCE" and retention["Retention"]["RetainUntilDate"] >= until
        with pytest.raises(remote_client.exceptions.ClientError, match="AccessDenied"):
            remote_client.delete_object(Bucket="archive", Key=desc["rkey"], VersionId=desc["rversion"])

        # The index lost with the service stopped: rebuilt from the local drives, it knows each object's tier.
        shutil.rmtree(root / "index")
        rebuilt = _objfs("rebuild-index", str(root))
        assert rebuilt.returncode == 0, rebuilt.stderr
        with Store.open(root) as store:
            assert {key: store.tier_of(store.head_object("images", key).record) for key in bodies} == tiers
            for key, data in bodies.items():
                assert store.get_object_bytes("images", key) == data
            assert store.head_object("images", "studies/locked.dcm").retention["mode"] == "GOVERNANCE"
    finally:
        remote.stop()
        unlock_tree(tmp_path)
