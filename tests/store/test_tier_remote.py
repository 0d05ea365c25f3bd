"""The remote S3 tier: versions move to a second, real objfs S3 server on loopback and are read back from it.

Bytes identical through the engine's ordinary reader (full and ranged), the
remote holds ciphertext for encrypted versions, locks travel (and are refused
by a bucket without object lock), deletes reach the remote only through gc,
and rebuild-index from the local drives alone restores remote-tier records.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fragmenthelpers import blob_fragments
from tierhelpers import tiered_store, unlock_tree
from trusthelpers import body, live_state, verify

from objfs.admin.app import readiness
from objfs.store import Encryption, Store, init_store
from objfs.store.rebuild import rebuild_index
from objfs.store.remotes import add_remote
from objfs.store.remotetier import RemoteLockUnsupported, RemoteUnavailable, remote_key
from objfs.store.tiers import add_remote_tier

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "s3"))
from s3helpers import REGION, create_key, make_client, start_server  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from ports import free_port  # noqa: E402

DAY = 86400


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory: pytest.TempPathFactory):
    """A second objfs, serving S3 on loopback: the remote of the tier. Buckets ``archive`` and ``archive-lock``."""
    root = tmp_path_factory.mktemp("remote") / "store"
    init_store(root).close()
    server = start_server(root)
    try:
        key = create_key(root, "--name", "tiering", "--retention", "--legal-hold")
        client = make_client(server.url, key)
        client.create_bucket(Bucket="archive")
        client.create_bucket(Bucket="archive-lock", ObjectLockEnabledForBucket=True)
        yield server, key, client
    finally:
        server.stop()
        unlock_tree(root.parent)


@pytest.fixture
def store3(tmp_path: Path, remote_server):
    """hot and warm on directory drives, ``archive`` on the remote (object lock, promotes on read), ``cold`` (no lock)."""
    server, key, _ = remote_server
    root = tiered_store(tmp_path / "store")
    add_remote(root, "peer", endpoint=server.url, access_key=key.access_key, secret_key=key.secret_key, region=REGION)
    add_remote_tier(root, "archive", "peer", "archive-lock", prefix=tmp_path.name, promote_on_read=True)
    add_remote_tier(root, "cold", "peer", "archive", prefix=tmp_path.name)
    yield root
    unlock_tree(tmp_path)


def _fragments(root: Path, blob_id: str) -> list[str]:
    return blob_fragments(root.parent, blob_id)  # every tier's drives lie beside the store


def _remote_bytes(client, desc: dict) -> bytes:
    args = {"VersionId": desc["rversion"]} if desc.get("rversion") else {}
    return client.get_object(Bucket=desc["bucket"], Key=desc["rkey"], **args)["Body"].read()


def _remote_exists(client, desc: dict) -> bool:
    args = {"VersionId": desc["rversion"]} if desc.get("rversion") else {}
    try:
        client.head_object(Bucket=desc["bucket"], Key=desc["rkey"], **args)
        return True
    except client.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NoSuchVersion"):
            return False
        raise


def test_tier_add_s3_reaches_the_remote_and_leaves_the_config_alone_when_it_cannot(tmp_path: Path, remote_server) -> None:
    server, key, _ = remote_server
    root = tiered_store(tmp_path / "store")
    add_remote(root, "peer", endpoint=server.url, access_key=key.access_key, secret_key=key.secret_key, region=REGION)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def objfs(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "objfs.cli", *args], capture_output=True, text=True, env=env, timeout=60)

    before = (root / "objfs.toml").read_text()
    for bad in (["--s3", "nobody/archive"], ["--s3", "peer/no-such-bucket"], ["--s3", "peer"]):
        done = objfs("tier", "add", str(root), "archive", *bad)
        assert done.returncode != 0 and "objfs:" in done.stderr
        assert (root / "objfs.toml").read_text() == before
    done = objfs("tier", "add", str(root), "archive", "--s3", "peer/archive-lock", "--prefix", "t1", "--promote-on-read")
    assert done.returncode == 0, done.stderr
    assert "object lock enabled" in done.stdout and key.secret_key not in done.stdout + done.stderr
    assert key.secret_key not in (root / "objfs.toml").read_text()
    done = objfs("tier", "add", str(root), "cold", "--s3", "peer", "--bucket", "archive")
    assert done.returncode == 0 and "no object lock" in done.stdout
    with Store.open(root) as store:
        archive = store.config.tier("archive")
        assert (archive.remote, archive.bucket, archive.prefix, archive.promote_on_read) == ("peer", "archive-lock", "t1", True)
        assert store.config.storage_classes["GLACIER_IR"] == "archive"
    listed = objfs("tier", "list", str(root))
    assert listed.returncode == 0 and "s3://peer/archive-lock/t1" in listed.stdout
    status = objfs("status", str(root), "--json")  # a tier without drives of ours is not a degraded tier
    assert status.returncode == 0, status.stdout + status.stderr
    shown = {t["name"]: t for t in json.loads(status.stdout)["tiers"]}
    assert shown["archive"]["ec"] == "remote" and shown["archive"]["reachable"] is True
    assert (shown["archive"]["remote"], shown["archive"]["bucket"], shown["archive"]["endpoint"]) == (
        "peer",
        "archive-lock",
        server.url,
    )
    text = objfs("status", str(root))
    assert f"tier archive: remote s3://peer/archive-lock/t1 at {server.url}, reachable" in text.stdout
    assert "EC 1+0" not in text.stdout and key.secret_key not in text.stdout
    with Store.open(root) as store:
        assert readiness(store, None) == []
    removed = objfs("remote", "remove", str(root), "peer")  # its tiers would become unreadable
    assert removed.returncode != 0 and "archive" in removed.stderr


def test_tier_add_s3_endpoint_defines_its_remote_with_a_private_secret(tmp_path: Path, remote_server) -> None:
    """The issue's form: ``--s3 ENDPOINT --bucket B --access-key AK --secret-key SK [--region R]``."""
    server, key, _ = remote_server
    root = tiered_store(tmp_path / "store")
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def objfs(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "objfs.cli", *args], capture_output=True, text=True, env=env, timeout=60, input=stdin
        )

    before = (root / "objfs.toml").read_text()
    creds = ["--access-key", key.access_key, "--secret-key", key.secret_key, "--region", REGION]
    wrong = objfs("tier", "add", str(root), "archive", "--s3", server.url, "--bucket", "no-such-bucket", *creds)
    assert wrong.returncode != 0 and "objfs:" in wrong.stderr and key.secret_key not in wrong.stdout + wrong.stderr
    assert (root / "objfs.toml").read_text() == before and not (root / "remotes" / "tier-archive.json").exists()
    bad_key = ["--access-key", key.access_key, "--secret-key", "not-the-secret"]
    refused = objfs("tier", "add", str(root), "archive", "--s3", server.url, "--bucket", "archive-lock", *bad_key)
    assert refused.returncode != 0 and (root / "objfs.toml").read_text() == before
    assert not (root / "remotes" / "tier-archive.json").exists()
    done = objfs("tier", "add", str(root), "archive", "--s3", server.url, "--bucket", "archive-lock", *creds)
    assert done.returncode == 0, done.stderr
    assert "object lock enabled" in done.stdout and key.secret_key not in done.stdout + done.stderr
    secret_file = root / "remotes" / "tier-archive.json"
    assert secret_file.stat().st_mode & 0o777 == 0o600 and key.secret_key not in (root / "objfs.toml").read_text()
    listed = objfs("remote", "list", str(root))
    assert "tier-archive" in listed.stdout and server.url in listed.stdout and key.secret_key not in listed.stdout
    # '-' reads the secret from stdin, out of ps and shell history.
    piped = ["--access-key", key.access_key, "--secret-key", "-"]
    done = objfs("tier", "add", str(root), "cold", "--s3", server.url, "--bucket", "archive", *piped, stdin=key.secret_key + "\n")
    assert done.returncode == 0 and "no object lock" in done.stdout, done.stderr
    with Store.open(root) as store:
        archive, cold = store.config.tier("archive"), store.config.tier("cold")
        assert (archive.remote, archive.bucket, cold.remote, cold.bucket) == (
            "tier-archive",
            "archive-lock",
            "tier-cold",
            "archive",
        )
        store.create_bucket("bkt")
        data = body("endpoint-tier", 300_000)
        store.put_object("bkt", "k", data)
        moved = store.move_version("bkt", "k", tier="archive")
        assert moved.record["parts"][0]["remote"] == "tier-archive" and store.get_object_bytes("bkt", "k") == data
    mixed = objfs("tier", "add", str(root), "x", "--s3", "tier-archive/archive", "--access-key", "AK")
    assert mixed.returncode == 2 and "ENDPOINT" in mixed.stderr


def test_versions_move_to_the_remote_and_stream_back_through_the_ordinary_reader(store3: Path, remote_server) -> None:
    _, _, client = remote_server
    with Store.open(store3) as store:
        store.create_bucket("bkt")
        store.min_part_size = 1
        plain = body("plain", 9 * (1 << 20) + 4321)  # more than one upload part and many segments
        info = store.put_object("bkt", "plain", plain)
        upload = store.create_multipart("bkt", "mp")
        parts = [store.upload_part(upload, n, body(f"p{n}", 70000 + n)) for n in (1, 2, 3)]
        store.complete_multipart(upload, [(p["number"], p["etag"]) for p in parts])
        whole = store.get_object_bytes("bkt", "mp")
        secret = body("enc", 2 * (1 << 20) + 77)
        store.put_object("bkt", "enc", secret, encryption=Encryption("S3"))
        old_blob = info.record["parts"][0]["id"]
        with store.open_object("bkt", "plain") as early:  # opened before the move: finishes on the old blob
            moved = store.move_version("bkt", "plain", tier="archive")
            assert store.collect_garbage(min_age=0).leased == 1
            assert early.readall() == plain
        for key in ("mp", "enc"):
            store.move_version("bkt", key, tier="cold")
        assert store.collect_garbage(min_age=0).collected == 5  # every local blob left behind
        assert _fragments(store3, old_blob) == []
        desc = moved.record["parts"][0]
        assert desc["remote"] == "peer" and desc["drives"] == [] and store.storage_class_of(moved.record) == "GLACIER_IR"
        assert moved.etag == info.etag and moved.version_id == info.version_id
        assert _remote_bytes(client, desc) == plain  # a plain version is stored as its bytes
        enc = store.head_object("bkt", "enc").record
        stored = _remote_bytes(client, enc["parts"][0])
        assert len(stored) == len(secret) + 3 * 16 and secret[1000:1100] not in stored  # sealed segments only
        verify(store.get_object_bytes("bkt", "plain"))
        assert store.get_object_bytes("bkt", "mp") == whole
        verify(store.get_object_bytes("bkt", "enc"))
        for key, data in (("plain", plain), ("enc", secret)):
            with store.open_object("bkt", key) as reader:  # ranged and random reads, across segment boundaries
                for lo, hi in (
                    (0, 10),
                    ((1 << 20) - 5, (1 << 20) + 5),
                    (len(data) - 7, len(data)),
                    (12345, 12345 + 3 * (1 << 20)),
                ):
                    assert b"".join(reader.iter_range(lo, hi)) == data[lo:hi]
                    assert reader.read(lo, hi - lo) == data[lo:hi]
        assert {t["name"]: t["versions"] for t in store.tier_usage()} == {"hot": 0, "warm": 0, "archive": 1, "cold": 2}
        # A write naming the remote tier's class lands on the first tier: bytes reach a remote only through the mover.
        direct = store.put_object("bkt", "direct", b"x" * 10, tier=store.tier_for_class("GLACIER_IR"))
        assert store.tier_of(direct.record) == "hot"
        store.delete_object("bkt", "direct")
        assert store.scrub().lost == []
        # And back again: a remote version moves to local drives like any other.
        back = store.move_version("bkt", "enc", tier="warm")
        assert store.tier_of(back.record) == "warm"
        assert store.collect_garbage(min_age=0).collected == 2  # the remote copy, and "direct"
        assert not _remote_exists(client, enc["parts"][0])
        verify(store.get_object_bytes("bkt", "enc"))


def test_locked_versions_go_only_to_a_bucket_with_object_lock_and_keep_their_lock_there(store3: Path, remote_server) -> None:
    _, _, client = remote_server
    with Store.open(store3) as store:
        store.create_bucket("worm", object_lock=True)
        until = store.clock.now() + 3 * DAY
        info = store.put_object(
            "worm", "study", body("s", 40000), retention={"mode": "COMPLIANCE", "until": until}, legal_hold=True
        )
        with pytest.raises(RemoteLockUnsupported):
            store.move_version("worm", "study", tier="cold")
        assert store.tier_of(store.head_object("worm", "study").record) == "hot"
        assert store.collect_garbage(min_age=0).collected == 0
        assert _fragments(store3, info.object_id)  # nothing left its drives
        moved = store.move_version("worm", "study", tier="archive")
        desc = moved.record["parts"][0]
        assert moved.retention["mode"] == "COMPLIANCE" and moved.legal_hold
        remote_retention = client.get_object_retention(Bucket=desc["bucket"], Key=desc["rkey"], VersionId=desc["rversion"])
        assert remote_retention["Retention"]["Mode"] == "COMPLIANCE"
        assert remote_retention["Retention"]["RetainUntilDate"] >= datetime.datetime.fromtimestamp(int(until), datetime.UTC)
        hold = client.get_object_legal_hold(Bucket=desc["bucket"], Key=desc["rkey"], VersionId=desc["rversion"])
        assert hold["LegalHold"]["Status"] == "ON"
        with pytest.raises(Exception, match="AccessDenied|ObjectLocked|locked"):  # the remote itself keeps it
            client.delete_object(Bucket=desc["bucket"], Key=desc["rkey"], VersionId=desc["rversion"])
        verify(store.get_object_bytes("worm", "study"))


def test_lock_changes_after_a_move_reach_the_remote_object_before_the_index(store3: Path, remote_server) -> None:
    server, key, client = remote_server
    with Store.open(store3) as store:
        store.create_bucket("worm", object_lock=True)
        store.put_object("worm", "study", body("l", 30000))
        store.put_object("worm", "cold", body("c", 30000))
        desc = store.move_version("worm", "study", tier="archive").record["parts"][0]
        target = {"Bucket": desc["bucket"], "Key": desc["rkey"], "VersionId": desc["rversion"]}
        store.set_legal_hold("worm", "study", True)
        assert client.get_object_legal_hold(**target)["LegalHold"]["Status"] == "ON"
        until = store.clock.now() + 2 * DAY
        store.set_retention("worm", "study", "GOVERNANCE", until)
        store.set_retention("worm", "study", "GOVERNANCE", until + DAY)  # an extension
        remote = client.get_object_retention(**target)["Retention"]
        assert remote["Mode"] == "GOVERNANCE"
        assert remote["RetainUntilDate"] >= datetime.datetime.fromtimestamp(int(until + DAY), datetime.UTC)
        store.set_legal_hold("worm", "study", False)
        assert client.get_object_legal_hold(**target)["LegalHold"]["Status"] == "OFF"
        assert store.head_object("worm", "study").record["parts"][0]["locked"]  # gc deletes it with the bypass
        store.move_version("worm", "cold", tier="cold")  # a bucket without object lock cannot hold a lock
        with pytest.raises(RemoteLockUnsupported):
            store.set_legal_hold("worm", "cold", True)
        assert not store.head_object("worm", "cold").legal_hold
    # A remote that does not answer: the local change is refused, nothing changes.
    add_remote(
        store3,
        "peer",
        endpoint=f"http://127.0.0.1:{free_port()}",
        access_key=key.access_key,
        secret_key=key.secret_key,
        region=REGION,
        replace=True,
    )
    with Store.open(store3) as store:
        with pytest.raises(RemoteUnavailable):
            store.set_legal_hold("worm", "study", True)
        assert not store.head_object("worm", "study").legal_hold
        started = time.monotonic()
        status = store.status()  # objfs status shows it, without waiting long
        assert time.monotonic() - started < 20
        archive = next(t for t in status["tiers"] if t["name"] == "archive")
        assert archive["reachable"] is False and archive["problem"]
        assert any("remote peer bucket archive-lock does not answer" in d for d in status["degraded"])
    assert client.get_object_legal_hold(**target)["LegalHold"]["Status"] == "OFF"
    add_remote(
        store3, "peer", endpoint=server.url, access_key=key.access_key, secret_key=key.secret_key, region=REGION, replace=True
    )


def test_a_deleted_remote_version_leaves_the_remote_only_through_gc(store3: Path, remote_server) -> None:
    _, _, client = remote_server
    with Store.open(store3) as store:
        store.create_bucket("bkt")
        store.put_object("bkt", "gone", body("gone", 300000))
        desc = store.move_version("bkt", "gone", tier="cold").record["parts"][0]
        store.collect_garbage(min_age=0)
        with store.open_object("bkt", "gone") as reader:  # a reader holds the version across its delete
            store.delete_object("bkt", "gone")
            assert store.collect_garbage(min_age=3600).collected == 0  # too young
            assert store.collect_garbage(min_age=0).leased == 1
            assert _remote_exists(client, desc)
            verify(reader.readall())
        assert store.collect_garbage(min_age=0).collected == 1
        assert not _remote_exists(client, desc)


def test_rebuild_index_from_the_local_drives_restores_remote_tier_records(store3: Path, remote_server) -> None:
    with Store.open(store3) as store:
        store.create_bucket("bkt")
        store.update_bucket("bkt", versioning="Enabled")
        for i in range(3):
            store.put_object("bkt", f"k{i}", body(f"k{i}", 5000 + i), encryption=Encryption("S3") if i == 2 else None)
        old = store.put_object("bkt", "k0", body("k0-new", 100))
        store.move_version("bkt", "k0", old.version_id, tier="cold")
        store.move_version("bkt", "k1", tier="cold")
        store.move_version("bkt", "k2", tier="archive")
        store.put_object("bkt", "k3", body("k3", 10))
        store.move_version("bkt", "k3", tier="cold")
        store.delete_object("bkt", "k3", store.head_object("bkt", "k3").version_id)  # its tombstone stays on the drives
        assert store.collect_garbage(min_age=0).collected == 5  # four local blobs moved away, k3's remote object
        before = live_state(store)
        tiers = {f"{k}": store.tier_of(store.head_object("bkt", k).record) for k in ("k1", "k2")}
    shutil.rmtree(store3 / "index")
    with Store.open(store3) as store:
        rebuild_index(store)
        assert live_state(store) == before
        assert (
            {k: store.tier_of(store.head_object("bkt", k).record) for k in ("k1", "k2")}
            == tiers
            == {"k1": "cold", "k2": "archive"}
        )
        verify(store.get_object_bytes("bkt", "k0", old.version_id))
        verify(store.get_object_bytes("bkt", "k1"))
        verify(store.get_object_bytes("bkt", "k2"))
        assert store.scrub().lost == []


def test_a_read_of_an_archived_version_promotes_it_from_the_remote_in_the_background(store3: Path, remote_server) -> None:
    _, _, client = remote_server
    with Store.open(store3) as store:
        store.create_bucket("bkt")
        data = body("prior", 3 * (1 << 20) + 5)
        store.put_object("bkt", "prior", data)
        desc = store.move_version("bkt", "prior", tier="archive").record["parts"][0]
        store.put_object("bkt", "colder", body("colder", 1000))
        store.move_version("bkt", "colder", tier="cold")  # cold does not promote on read
        verify(store.get_object_bytes("bkt", "colder"))
        assert store.queued_moves() == []
        with store.open_object("bkt", "prior") as reader:  # streams from the remote while the mover promotes it
            chunks = reader.iter_range()
            got = [next(chunks)]
            assert [e["key"] for e in store.queued_moves()] == ["prior"]
            assert store.run_queued_moves()["moved"]
            assert store.tier_of(store.head_object("bkt", "prior").record) == "hot"
            gc = store.collect_garbage(min_age=0)  # the blobs colder and prior left on hot go; the remote copy stays
            assert (gc.collected, gc.leased) == (2, 1) and _remote_exists(client, desc)
            got += list(chunks)
        assert b"".join(got) == data
        assert store.collect_garbage(min_age=0).collected == 1
        assert not _remote_exists(client, desc)
        assert store.get_object_bytes("bkt", "prior") == data


def test_the_s3_front_reads_a_remote_tier_version_with_ranges_and_its_storage_class(store3: Path, remote_server) -> None:
    data = body("front", 2 * (1 << 20) + 17)
    with Store.open(store3) as store:
        store.create_bucket("bkt")
        store.put_object("bkt", "study", data, encryption=Encryption("S3"))
        store.move_version("bkt", "study", tier="cold")
    front = start_server(store3)
    try:
        client = make_client(front.url, create_key(store3, "--name", "reader"))
        head = client.head_object(Bucket="bkt", Key="study")
        assert head["ContentLength"] == len(data) and head.get("StorageClass") == "COLD"  # a tier without a class shows its name
        assert client.get_object(Bucket="bkt", Key="study")["Body"].read() == data
        part = client.get_object(Bucket="bkt", Key="study", Range="bytes=1048570-1048600")["Body"].read()
        assert part == data[1048570:1048601]
    finally:
        front.stop()


def test_s3_restore_object_on_an_archived_version_is_its_promotion(store3: Path, remote_server) -> None:
    data = body("restore", 70000)
    with Store.open(store3) as store:
        store.create_bucket("bkt")
        store.put_object("bkt", "prior", data)
        store.put_object("bkt", "hot", body("hot", 100))
        store.move_version("bkt", "prior", tier="cold")
    front = start_server(store3)
    try:
        client = make_client(front.url, create_key(store3, "--name", "writer"))
        reader = make_client(front.url, create_key(store3, "--name", "viewer", "--read-only"))
        assert "Restore" not in client.head_object(Bucket="bkt", Key="prior")  # nothing asked yet
        with pytest.raises(reader.exceptions.ClientError, match="AccessDenied"):
            reader.restore_object(Bucket="bkt", Key="prior", RestoreRequest={"Days": 1})
        asked = client.restore_object(Bucket="bkt", Key="prior", RestoreRequest={"Days": 2})
        assert asked["ResponseMetadata"]["HTTPStatusCode"] == 202
        assert client.head_object(Bucket="bkt", Key="prior")["Restore"] == 'ongoing-request="true"'
        with pytest.raises(client.exceptions.ClientError) as again:  # still queued: as S3 answers
            client.restore_object(Bucket="bkt", Key="prior", RestoreRequest={"Days": 2})
        assert again.value.response["Error"]["Code"] == "RestoreAlreadyInProgress"
        assert again.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
        with Store.open(store3) as store:
            (entry,) = store.queued_moves()
            assert (entry["key"], entry["reason"]) == ("prior", "restore")
            assert store.run_queued_moves()["moved"]  # the moves loop of objfs serve
        head = client.head_object(Bucket="bkt", Key="prior")
        assert head["Restore"].startswith('ongoing-request="false", expiry-date="') and "StorageClass" not in head
        done = client.restore_object(Bucket="bkt", Key="prior", RestoreRequest={"Days": 2})
        assert done["ResponseMetadata"]["HTTPStatusCode"] == 200
        hot = client.restore_object(Bucket="bkt", Key="hot", RestoreRequest={"Days": 2})
        assert hot["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert client.get_object(Bucket="bkt", Key="prior")["Body"].read() == data
    finally:
        front.stop()


def test_orphans_on_the_remote_are_swept_only_when_old_unlocked_and_the_index_trusted(store3: Path, remote_server) -> None:
    _, _, client = remote_server
    with Store.open(store3) as store:
        store.create_bucket("bkt")
        store.put_object("bkt", "kept", body("kept", 20000))
        kept = store.move_version("bkt", "kept", tier="cold").record["parts"][0]
        store.collect_garbage(min_age=0)
        archive, cold = store.config.tier("archive"), store.config.tier("cold")
        # What a mover killed after its upload and before the switch leaves behind.
        orphan_key = remote_key(cold, store.config.store_id, "ab" + "0" * 30)
        client.put_object(Bucket=cold.bucket, Key=orphan_key, Body=b"never switched")
        held_key = remote_key(archive, store.config.store_id, "cd" + "0" * 30)
        client.put_object(Bucket=archive.bucket, Key=held_key, Body=b"held", ObjectLockLegalHoldStatus="ON")
        client.put_object(Bucket=cold.bucket, Key="someone-else/" + orphan_key, Body=b"not under our prefix")
        assert store.sweep_remote_orphans()["young"] == 2  # [gc] min_age_seconds
        assert store.scrub().remote_orphans == 2
        assert client.head_object(Bucket=cold.bucket, Key=orphan_key)
        # An index that is not the one the drives know: nothing is judged by it.
        seen = store.all_drives()[0].path / ".objfs-index"
        good = seen.read_text()
        seen.write_text(json.dumps(dict(json.loads(good), index_id="another")))
        report = store.sweep_remote_orphans(min_age=0)
        assert report["deleted"] == 0 and "index" in report["index_problem"]
        assert client.head_object(Bucket=cold.bucket, Key=orphan_key)
        seen.write_text(good)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "gc", str(store3), "--json", "--min-age", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    swept = json.loads(done.stdout)["remote_orphans"]
    assert (swept["orphans"], swept["deleted"], swept["locked"]) == (2, 1, 1)
    with pytest.raises(client.exceptions.ClientError):
        client.head_object(Bucket=cold.bucket, Key=orphan_key)
    assert client.head_object(Bucket=archive.bucket, Key=held_key)["ObjectLockLegalHoldStatus"] == "ON"
    assert client.head_object(Bucket=cold.bucket, Key="someone-else/" + orphan_key)
    assert _remote_exists(client, kept)
    with Store.open(store3) as store:
        verify(store.get_object_bytes("bkt", "kept"))
