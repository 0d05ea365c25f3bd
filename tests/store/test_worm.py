"""WORM retention, legal holds, versioning and the audit trail, in the engine and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from fragmenthelpers import fragment_bytes, fragment_whole, is_immutable, is_packed, location, lose_fragment

from objfs.store import Principal, Store
from objfs.store.errors import InvalidArgument, NoSuchKey, NoSuchVersion, ObjectLocked

DAY = 86400
ADMIN = Principal("s3:admin", legal_hold=True, retention=True)
BYPASS = Principal("s3:records-officer", bypass_governance=True, legal_hold=True, retention=True)


@pytest.fixture
def locked(store: Store) -> Store:
    store.create_bucket("worm", object_lock=True, principal=ADMIN)
    return store


def test_versioning_keeps_every_version_and_delete_markers(store: Store) -> None:
    store.create_bucket("ver")
    store.update_bucket("ver", versioning="Enabled")
    v1 = store.put_object("ver", "k", b"one").version_id
    v2 = store.put_object("ver", "k", b"two").version_id
    assert v1 != v2 and "null" not in (v1, v2)
    assert store.get_object_bytes("ver", "k") == b"two"
    assert store.get_object_bytes("ver", "k", v1) == b"one"
    marker = store.delete_object("ver", "k")
    assert marker["delete_marker"]
    with pytest.raises(NoSuchKey):
        store.head_object("ver", "k")
    listing = store.list_object_versions("ver")
    assert [(e.version_id, e.delete_marker) for e in listing.versions] == [(marker["version_id"], True), (v2, False), (v1, False)]
    assert listing.latest == {listing.versions[0].object_id}
    assert store.list_objects("ver").objects == []
    store.delete_object("ver", "k", marker["version_id"])  # removing the marker restores v2
    assert store.get_object_bytes("ver", "k") == b"two"
    store.delete_object("ver", "k", v2)
    assert store.get_object_bytes("ver", "k") == b"one"
    with pytest.raises(NoSuchVersion):
        store.head_object("ver", "k", v2)
    page = store.list_object_versions("ver", max_keys=1)
    assert page.truncated is False and [e.version_id for e in page.versions] == [v1]


def test_suspended_versioning_replaces_the_null_version(store: Store) -> None:
    store.create_bucket("ver")
    store.update_bucket("ver", versioning="Enabled")
    v1 = store.put_object("ver", "k", b"one").version_id
    store.update_bucket("ver", versioning="Suspended")
    assert store.put_object("ver", "k", b"two").version_id == "null"
    assert store.put_object("ver", "k", b"three").version_id == "null"
    assert [e.version_id for e in store.list_object_versions("ver").versions] == ["null", v1]


def test_compliance_survives_everyone_until_it_ends(locked: Store) -> None:
    now = locked.clock.now()
    info = locked.put_object(
        "worm", "study/1.dcm", b"image", retention={"mode": "COMPLIANCE", "until": now + 7 * 365 * DAY}, principal=ADMIN
    )
    version = info.version_id
    for who in (ADMIN, BYPASS, Principal.system("cli", who="root")):
        with pytest.raises(ObjectLocked):
            locked.delete_object("worm", "study/1.dcm", version, principal=who, bypass_governance=True)
        with pytest.raises(ObjectLocked):
            locked.set_retention("worm", "study/1.dcm", "COMPLIANCE", now + DAY, principal=who, bypass_governance=True)
        with pytest.raises(ObjectLocked):
            locked.set_retention("worm", "study/1.dcm", "GOVERNANCE", now + 8 * 365 * DAY, principal=who, bypass_governance=True)
    with pytest.raises(ObjectLocked):
        locked.update_object("worm", "study/1.dcm", posix={"mode": 0o100600})
    # extension is allowed; a new version (overwrite) does not touch the locked one
    locked.set_retention("worm", "study/1.dcm", "COMPLIANCE", now + 8 * 365 * DAY, principal=ADMIN)
    locked.put_object("worm", "study/1.dcm", b"new", principal=ADMIN)
    assert locked.get_object_bytes("worm", "study/1.dcm", version) == b"image"
    locked.clock.advance(8 * 365 * DAY + 60)
    locked.delete_object("worm", "study/1.dcm", version, principal=ADMIN)
    with pytest.raises(NoSuchVersion):
        locked.head_object("worm", "study/1.dcm", version)


def test_governance_needs_the_bypass_permission(locked: Store) -> None:
    now = locked.clock.now()
    version = locked.put_object("worm", "g", b"x", retention={"mode": "GOVERNANCE", "until": now + 30 * DAY}).version_id
    with pytest.raises(ObjectLocked):
        locked.delete_object("worm", "g", version, principal=ADMIN, bypass_governance=True)  # no permission
    with pytest.raises(ObjectLocked):
        locked.delete_object("worm", "g", version, principal=BYPASS)  # permission, but not asked for
    with pytest.raises(ObjectLocked):
        locked.set_retention("worm", "g", "GOVERNANCE", now + DAY, principal=ADMIN, bypass_governance=True)
    locked.set_retention("worm", "g", "GOVERNANCE", now + DAY, principal=BYPASS, bypass_governance=True)
    locked.delete_object("worm", "g", version, principal=BYPASS, bypass_governance=True)


def test_legal_hold_blocks_deletion_regardless_of_dates(locked: Store) -> None:
    version = locked.put_object("worm", "h", b"x", legal_hold=True).version_id
    with pytest.raises(ObjectLocked):
        locked.delete_object("worm", "h", version, principal=BYPASS, bypass_governance=True)
    locked.clock.advance(100 * 365 * DAY)
    with pytest.raises(ObjectLocked):
        locked.delete_object("worm", "h", version, principal=ADMIN)
    locked.set_legal_hold("worm", "h", False, version_id=version, principal=ADMIN)
    locked.delete_object("worm", "h", version, principal=ADMIN)


def test_bucket_default_retention_applies_to_new_versions(locked: Store) -> None:
    locked.create_bucket("plain")
    with pytest.raises(InvalidArgument):
        locked.put_lock_configuration("plain", "COMPLIANCE", days=1)
    locked.put_lock_configuration("worm", "COMPLIANCE", years=7, principal=ADMIN)
    info = locked.put_object("worm", "default", b"x")
    assert info.retention["mode"] == "COMPLIANCE"
    assert info.retention["until"] == pytest.approx(locked.clock.now() + 7 * 365 * DAY, abs=5)


def test_locked_fragments_are_immutable_even_for_root(locked: Store) -> None:
    version = locked.put_object(
        "worm", "imm", b"x" * 10000, retention={"mode": "COMPLIANCE", "until": locked.clock.now() + DAY}
    ).version_id
    desc = locked.head_object("worm", "imm").record["parts"][0]
    assert not is_packed(desc, 0)  # locked at birth: fragment files of its own, not entries of a shared volume
    path = location(locked, desc, 0)[0]
    if not locked.immutable_supported(locked.drive_by_id(desc["drives"][0])):
        pytest.fail(f"the filesystem under {path} does not support FS_IMMUTABLE_FL; status must say so")
    rm = subprocess.run(["rm", "-f", str(path)], capture_output=True)
    assert rm.returncode != 0 and path.exists()
    locked.clock.advance(2 * DAY)
    locked.delete_object("worm", "imm", version, principal=ADMIN)
    assert locked.collect_garbage(min_age=0).collected == 1  # the collector lifts the flag: retention ended
    assert not path.exists()


def test_a_volume_holding_a_locked_version_is_immutable_even_for_root(locked: Store) -> None:
    version = locked.put_object("worm", "packed", b"p" * 3000).version_id  # not locked yet: packed
    desc = locked.head_object("worm", "packed").record["parts"][0]
    assert is_packed(desc, 0)
    path, offset, length = location(locked, desc, 0)
    if not locked.immutable_supported(locked.drive_by_id(desc["drives"][0])):
        pytest.fail(f"the filesystem under {path} does not support FS_IMMUTABLE_FL; status must say so")
    assert not is_immutable(path)
    locked.set_retention("worm", "packed", "COMPLIANCE", locked.clock.now() + DAY, version_id=version, principal=ADMIN)
    assert is_immutable(path)  # the whole volume: one of its entries is locked
    assert "i" in subprocess.run(["lsattr", str(path)], capture_output=True, text=True).stdout.split()[0]
    before = fragment_bytes(locked, desc, 0)
    overwrite = subprocess.run(
        ["dd", f"of={path}", "bs=1", f"seek={offset}", "count=16", "conv=notrunc", "if=/dev/zero"], capture_output=True
    )
    assert overwrite.returncode != 0 and fragment_bytes(locked, desc, 0) == before
    assert subprocess.run(["rm", "-f", str(path)], capture_output=True).returncode != 0 and path.exists()
    # Writers move on to a new volume; the locked version still reads.
    later = locked.put_object("worm", "later", b"l" * 3000).record["parts"][0]
    assert is_packed(later, 0) and location(locked, later, 0)[0] != path
    assert locked.get_object_bytes("worm", "packed") == b"p" * 3000
    assert locked.get_object_bytes("worm", "later") == b"l" * 3000


def test_retention_survives_rebuild_index(store_path: Path, cli) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("worm", object_lock=True)
        version = store.put_object("worm", "k", b"x").version_id
        store.set_retention("worm", "k", "COMPLIANCE", store.clock.now() + DAY, principal=ADMIN)
        store.set_legal_hold("worm", "k", True, principal=ADMIN)
    import shutil

    shutil.rmtree(store_path / "index")
    cli("rebuild-index", str(store_path))
    with Store.open(store_path) as store:
        info = store.head_object("worm", "k")
        assert info.version_id == version and info.retention["mode"] == "COMPLIANCE" and info.legal_hold
        assert store.head_bucket("worm")["object_lock"]


def test_cli_retention_rm_and_audit(store_path: Path, cli, tmp_path: Path) -> None:
    cli("mb", str(store_path), "worm", "--object-lock")
    src = tmp_path / "f"
    src.write_bytes(b"ct slice")
    cli("put", str(store_path), "worm/s/1.dcm", str(src))
    shown = json.loads(cli("retention", "set", str(store_path), "worm/s/1.dcm", "--mode", "COMPLIANCE", "--days", "30").stdout)
    assert shown["retention"]["mode"] == "COMPLIANCE"
    refused = cli("retention", "set", str(store_path), "worm/s/1.dcm", "--mode", "COMPLIANCE", "--days", "1", check=False)
    assert refused.returncode == 1 and b"can only be extended" in refused.stderr
    cli("retention", "extend", str(store_path), "worm/s/1.dcm", "--days", "60")
    version = shown["version_id"]
    denied = cli("rm", str(store_path), "worm/s/1.dcm", "--version", version, "--bypass-governance", check=False)
    assert denied.returncode == 1 and b"locked" in denied.stderr
    cli("retention", "legal-hold", str(store_path), "worm/s/1.dcm", "on")
    cli("get", str(store_path), "worm/s/1.dcm", str(tmp_path / "back"))

    verify = cli("audit", "verify", str(store_path))
    assert json.loads(verify.stdout.splitlines()[-1])["ok"] is True
    reads = [json.loads(x) for x in cli("audit", "show", str(store_path), "--key", "s/", "--reads-only").stdout.splitlines()]
    assert len(reads) == 1 and reads[0]["who"].startswith("cli:") and reads[0]["action"] == "read"
    actions = [
        json.loads(x)["action"] + ":" + json.loads(x)["outcome"]
        for x in cli("audit", "show", str(store_path), "--bucket", "worm").stdout.splitlines()
    ]
    assert actions[:2] == ["create-bucket:ok", "write:ok"] and "delete:denied" in actions and "retention:denied" in actions

    log = store_path / "audit" / "audit.log"
    lines = log.read_text().splitlines()
    edited = json.loads(lines[2])
    edited["who"] = "cli:somebody-else"
    log.write_text("\n".join(lines[:2] + [json.dumps(edited, sort_keys=True, separators=(",", ":"))] + lines[3:]) + "\n")
    tampered = cli("audit", "verify", str(store_path), check=False)
    assert tampered.returncode == 1 and b"line 3: its content does not match its hash" in tampered.stdout
    log.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # a line removed
    assert b"sequence" in cli("audit", "verify", str(store_path), check=False).stdout
    log.write_text("\n".join(lines[:-1]) + "\n")  # the tail cut off
    assert b"cut off the end" in cli("audit", "verify", str(store_path), check=False).stdout
    log.write_text("\n".join([lines[1], lines[0]] + lines[2:]) + "\n")  # reordered
    assert cli("audit", "verify", str(store_path), check=False).returncode == 1
    assert os.stat(log).st_mode & 0o077 == 0


def test_lock_headers_need_an_object_lock_bucket(store: Store) -> None:
    store.create_bucket("plain")
    with pytest.raises(InvalidArgument):
        store.put_object("plain", "k", b"x", retention={"mode": "COMPLIANCE", "until": store.clock.now() + DAY})
    with pytest.raises(InvalidArgument):
        store.put_object("plain", "k", b"x", legal_hold=True)
    assert store.list_objects("plain").objects == []


def test_directory_markers_do_not_take_the_default_retention(locked: Store) -> None:
    locked.put_lock_configuration("worm", "COMPLIANCE", days=1, principal=ADMIN)
    assert locked.put_object("worm", "study/", b"").retention is None
    assert locked.put_object("worm", "study/1.dcm", b"x").retention is not None


def test_version_listing_pages_through_prefixes_and_versions(store: Store) -> None:
    store.create_bucket("ver")
    store.update_bucket("ver", versioning="Enabled", principal=ADMIN)
    for key in ["a/1", "a/2", "b", "c/1"]:
        store.put_object("ver", key, b"1")
        store.put_object("ver", key, b"2")
    seen, key_marker, version_marker = [], "", ""
    while True:
        page = store.list_object_versions(
            "ver", delimiter="/", key_marker=key_marker, version_id_marker=version_marker, max_keys=1
        )
        seen += page.common_prefixes + [f"{e.key}@{e.version_id}" for e in page.versions]
        if not page.truncated:
            break
        key_marker, version_marker = page.next_key_marker, page.next_version_id_marker or ""
    assert seen[0] == "a/" and seen[-1] == "c/" and len(seen) == 4 and seen[1].startswith("b@") and seen[2].startswith("b@")


def test_commit_grace_lets_a_fresh_default_retained_file_be_renamed_not_changed(locked: Store) -> None:
    locked.put_lock_configuration("worm", "COMPLIANCE", days=1, principal=ADMIN)
    tmp = locked.put_object("worm", "study/.1.dcm.tmp", b"slice", principal=ADMIN)
    assert tmp.retention["source"] == "default"
    with pytest.raises(ObjectLocked):
        locked.delete_object("worm", "study/.1.dcm.tmp", tmp.version_id, principal=ADMIN)
    locked.update_object("worm", "study/.1.dcm.tmp", posix={"mtime_ns": 1}, principal=ADMIN)  # rsync sets times
    moved = locked.rename_object("worm", "study/.1.dcm.tmp", "study/1.dcm", principal=ADMIN)
    assert moved.retention["mode"] == "COMPLIANCE" and locked.get_object_bytes("worm", "study/1.dcm") == b"slice"
    locked.clock.advance(locked.config.worm_commit_grace + 1)
    with pytest.raises(ObjectLocked):
        locked.rename_object("worm", "study/1.dcm", "study/2.dcm", principal=ADMIN)
    with pytest.raises(ObjectLocked):
        locked.update_object("worm", "study/1.dcm", posix={"mtime_ns": 2}, principal=ADMIN)
    explicit = locked.put_object("worm", "x", b"x", retention={"mode": "COMPLIANCE", "until": locked.clock.now() + DAY})
    assert explicit.retention.get("source") is None
    with pytest.raises(ObjectLocked):
        locked.rename_object("worm", "x", "y", principal=ADMIN)  # explicit retention has no grace


@pytest.mark.parametrize("packed", [False, True], ids=["file", "volume-entry"])
def test_healed_fragments_of_a_locked_version_are_immutable_again(locked: Store, packed: bool) -> None:
    until = locked.clock.now() + DAY
    if packed:  # locked after the write: its fragments are entries of (now immutable) volumes
        version = locked.put_object("worm", "heal", b"h" * 50000).version_id
        locked.set_retention("worm", "heal", "COMPLIANCE", until, version_id=version, principal=ADMIN)
    else:  # locked at birth: fragment files
        locked.put_object("worm", "heal", b"h" * 50000, retention={"mode": "COMPLIANCE", "until": until})
    desc = locked.head_object("worm", "heal").record["parts"][0]
    assert is_packed(desc, 2) == packed
    drive = locked.drive_by_id(desc["drives"][2])
    if not locked.immutable_supported(drive):
        pytest.fail("the drive's filesystem has no FS_IMMUTABLE_FL; objfs status must report it")
    # An administrator's repair tool, or a disk that lost the file or a stretch of the volume.
    lose_fragment(locked, desc, 2)
    assert locked.scrub().fragments_repaired == 1
    desc = locked.head_object("worm", "heal").record["parts"][0]
    assert not is_packed(desc, 2)  # a repair is a fragment file, never a rewrite inside a volume
    path = location(locked, desc, 2)[0]
    assert fragment_whole(locked, desc, 2) and is_immutable(path)
    assert subprocess.run(["rm", "-f", str(path)], capture_output=True).returncode != 0 and path.exists()
    assert locked.get_object_bytes("worm", "heal") == b"h" * 50000
