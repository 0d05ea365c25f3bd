"""The engine owns every policy: rights of principals, lock rights, denials in the audit, audit pins.

Real stores on real drive directories; the CLI runs as a subprocess.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from objfs.store import COMPLIANCE, GOVERNANCE, Principal, Store
from objfs.store.errors import AccessDenied, InvalidArgument, NoSuchKey, ObjectLocked

DAY = 86400
WRITER = Principal("s3:writer")
VIEWER = Principal("s3:viewer", read_only=True)
SCOPED = Principal("s3:scoped", buckets=("mine",))
LOCKER = Principal("s3:locker", legal_hold=True, retention=True)
OFFICER = Principal("s3:officer", legal_hold=True, retention=True, bypass_governance=True)


def denials(store: Store, who: str) -> list[tuple[str, str | None]]:
    """(action, bucket) of every ``denied`` line naming ``who``."""
    return [(e["action"], e.get("bucket")) for e in store.audit.show(who=who) if e["outcome"] == "denied"]


@pytest.fixture
def locked(store: Store) -> Store:
    store.create_bucket("worm", object_lock=True)
    return store


def test_read_only_principal_reads_but_every_change_is_refused_and_audited(store: Store) -> None:
    store.create_bucket("pacs")
    store.put_object("pacs", "k", b"x", principal=WRITER)
    assert store.head_object("pacs", "k", principal=VIEWER).size == 1
    with store.open_object("pacs", "k", principal=VIEWER) as reader:
        assert reader.readall() == b"x"
    assert [o.key for o in store.list_objects("pacs", principal=VIEWER).objects] == ["k"]
    attempts = {
        "write": lambda: store.put_object("pacs", "k", b"overwritten", principal=VIEWER),
        "delete": lambda: store.delete_object("pacs", "k", principal=VIEWER),
        "copy": lambda: store.copy_object("pacs", "k", "pacs", "k2", principal=VIEWER),
        "rename": lambda: store.rename_object("pacs", "k", "k3", principal=VIEWER),
        "setattr": lambda: store.update_object("pacs", "k", tags={"a": "b"}, principal=VIEWER),
        "upload": lambda: store.create_multipart("pacs", "m", principal=VIEWER),
        "create-bucket": lambda: store.create_bucket("other", principal=VIEWER),
        "delete-bucket": lambda: store.delete_bucket("pacs", principal=VIEWER),
        "bucket-settings": lambda: store.update_bucket("pacs", versioning="Enabled", principal=VIEWER),
    }
    for attempt in attempts.values():
        with pytest.raises(AccessDenied):
            attempt()
    assert store.get_object_bytes("pacs", "k") == b"x" and store.list_uploads("pacs") == []
    assert sorted(action for action, _ in denials(store, "s3:viewer")) == sorted(attempts)
    line = next(e for e in store.audit.show(who="s3:viewer") if e["action"] == "write")
    assert line["outcome"] == "denied" and line["bucket"] == "pacs" and line["key"] == "k" and "write right" in line["detail"]


def test_bucket_limited_principal_is_refused_elsewhere_and_audited(store: Store) -> None:
    for name in ("mine", "other"):
        store.create_bucket(name)
    store.put_object("other", "secret", b"s")
    store.put_object("mine", "k", b"ok", principal=SCOPED)
    assert [b["name"] for b in store.list_buckets(principal=SCOPED)] == ["mine"]
    assert [b["name"] for b in store.list_buckets()] == ["mine", "other"]
    for attempt in (
        lambda: store.open_object("other", "secret", principal=SCOPED),
        lambda: store.head_object("other", "secret", principal=SCOPED),
        lambda: store.list_objects("other", principal=SCOPED),
        lambda: store.put_object("other", "x", b"x", principal=SCOPED),
        lambda: store.delete_object("other", "secret", principal=SCOPED),
        lambda: store.copy_object("other", "secret", "mine", "stolen", principal=SCOPED),
    ):
        with pytest.raises(AccessDenied):
            attempt()
    assert [b for _, b in denials(store, "s3:scoped")] == ["other"] * 5 + ["mine"]  # a copy names its destination
    with pytest.raises(NoSuchKey):
        store.head_object("mine", "stolen")  # refused before a byte was copied
    upload = store.create_multipart("other", "m")
    with pytest.raises(AccessDenied):  # an upload's bucket is its record's
        store.upload_part(upload, 1, b"x", principal=SCOPED)
    with pytest.raises(AccessDenied):
        store.complete_multipart(upload, [(1, "x")], principal=SCOPED)


def test_legal_hold_needs_its_own_right(locked: Store) -> None:
    with pytest.raises(AccessDenied):
        locked.put_object("worm", "h", b"x", legal_hold=True, principal=WRITER)
    version = locked.put_object("worm", "h", b"x", legal_hold=True, principal=LOCKER).version_id
    with pytest.raises(AccessDenied):  # a writer cannot lift the hold, and so cannot delete the version
        locked.set_legal_hold("worm", "h", False, version_id=version, principal=WRITER)
    with pytest.raises(ObjectLocked):
        locked.delete_object("worm", "h", version, principal=WRITER)
    assert locked.head_object("worm", "h", version).legal_hold
    assert ("legal-hold", "worm") in denials(locked, "s3:writer")
    locked.set_legal_hold("worm", "h", False, version_id=version, principal=LOCKER)
    locked.delete_object("worm", "h", version, principal=WRITER)


def test_retention_needs_its_own_right(locked: Store) -> None:
    until = locked.clock.now() + DAY
    with pytest.raises(AccessDenied):
        locked.put_object("worm", "r", b"x", retention={"mode": COMPLIANCE, "until": until}, principal=WRITER)
    with pytest.raises(AccessDenied):
        locked.create_multipart("worm", "m", retention={"mode": GOVERNANCE, "until": until}, principal=WRITER)
    version = locked.put_object("worm", "r", b"x", principal=WRITER).version_id
    with pytest.raises(AccessDenied):
        locked.set_retention("worm", "r", GOVERNANCE, until, version_id=version, principal=WRITER)
    with pytest.raises(AccessDenied):
        locked.put_lock_configuration("worm", COMPLIANCE, years=7, principal=WRITER)
    assert locked.head_bucket("worm")["lock_default"] is None
    assert {a for a, _ in denials(locked, "s3:writer")} == {"write", "upload", "retention", "lock-config"}
    locked.set_retention("worm", "r", GOVERNANCE, until, version_id=version, principal=LOCKER)
    locked.set_retention("worm", "r", GOVERNANCE, until + DAY, version_id=version, principal=LOCKER)  # extending
    with pytest.raises(InvalidArgument):  # the engine decides what "in the future" is, for every front
        locked.put_object("worm", "p", b"x", retention={"mode": GOVERNANCE, "until": locked.clock.now() - 1}, principal=LOCKER)


def test_governance_to_compliance_needs_bypass_and_compliance_only_extends(locked: Store) -> None:
    until = locked.clock.now() + DAY
    version = locked.put_object("worm", "g", b"x", retention={"mode": GOVERNANCE, "until": until}, principal=LOCKER).version_id
    harden = dict(version_id=version, bypass_governance=True)
    with pytest.raises(ObjectLocked, match="bypass-governance"):
        locked.set_retention("worm", "g", COMPLIANCE, until + DAY, principal=LOCKER, **harden)
    with pytest.raises(ObjectLocked):  # the right, but not asked for
        locked.set_retention("worm", "g", COMPLIANCE, until + DAY, version_id=version, principal=OFFICER)
    assert locked.head_object("worm", "g").retention["mode"] == GOVERNANCE
    assert ("retention", "worm") in denials(locked, "s3:locker")
    locked.set_retention("worm", "g", COMPLIANCE, until + DAY, principal=OFFICER, **harden)
    assert locked.head_object("worm", "g").retention["mode"] == COMPLIANCE
    for mode, when in ((COMPLIANCE, until), (GOVERNANCE, until + 2 * DAY), (None, None)):
        with pytest.raises(ObjectLocked):
            locked.set_retention("worm", "g", mode, when, principal=OFFICER, **harden)
    locked.set_retention("worm", "g", COMPLIANCE, until + 3 * DAY, version_id=version, principal=LOCKER)
    assert locked.head_object("worm", "g").retention["until"] == until + 3 * DAY


def test_system_principals_hold_every_right(locked: Store) -> None:
    for role in ("heal", "gc", "scrub", "gateway", "lifecycle", "replication", "cli"):
        principal = Principal.system(role)
        assert principal.is_system and principal.name == role
        locked.put_object("worm", role, b"x", legal_hold=True, principal=principal)
    assert Principal.system("cli", who="root").name == "cli:root"
    with pytest.raises(InvalidArgument):
        Principal.system("root")
    with pytest.raises(ObjectLocked):  # rights are not WORM: a hold still blocks the system
        locked.delete_object("worm", "heal", locked.head_object("worm", "heal").version_id, principal=Principal.system("gc"))


def test_authorize_for_fronts_audits_refusals_and_passes_internal_calls(store: Store) -> None:
    store.authorize(None, "delete", "any")
    store.authorize(WRITER, "delete", "any", "k")
    assert store.access_denial(VIEWER, "read", "any") is None
    with pytest.raises(AccessDenied):
        store.authorize(VIEWER, "delete", "any", "k")
    with pytest.raises(AccessDenied):
        store.authorize(WRITER, "write", "any", "k", retention=True)
    with pytest.raises(AccessDenied, match="no such action"):
        store.authorize(Principal.system("cli"), "erase", "any")
    lines = [e for e in store.audit.show() if e["outcome"] == "denied"]
    assert [(e["who"], e["action"], e["key"]) for e in lines[:2]] == [("s3:viewer", "delete", "k"), ("s3:writer", "write", "k")]
    store.create_bucket("pacs")
    info = store.put_object("pacs", "f", b"x")
    with pytest.raises(AccessDenied):  # the mount's staged changes pass the same check
        store.check_change(info, "truncate", principal=VIEWER)


def test_keys_carry_their_rights_and_old_keys_load_without_the_new_ones(store_path: Path, cli) -> None:
    made = json.loads(cli("key", "create", str(store_path), "--name", "locks", "--legal-hold", "--retention").stdout)
    plain = json.loads(cli("key", "create", str(store_path), "--name", "plain", "--read-only").stdout)
    listing = cli("key", "list", str(store_path)).stdout.decode()
    assert f"{made['access_key']}\tlocks\taccount=objfs\tbuckets=*\trights=read,write,legal-hold,retention\n" in listing
    assert f"{plain['access_key']}\tplain\taccount=objfs\tbuckets=*\trights=read\n" in listing
    refused = cli("key", "create", str(store_path), "--read-only", "--legal-hold", check=False)
    assert refused.returncode != 0 and b"read-only key cannot hold a lock right" in refused.stderr
    keys = store_path / "keys.json"
    raw = json.loads(keys.read_text())
    for entry in raw.values():  # a keys file written before the lock rights existed
        del entry["legal_hold"], entry["retention"]
    keys.write_text(json.dumps(raw))
    with Store.open(store_path) as store:
        old = store.access_key(made["access_key"])
        assert old is not None and not old.legal_hold and not old.retention and old.rights() == ["write"]
        assert store.access_key("OBJFSNOSUCHKEY000000") is None


# -- audit pins (finding 12) ----------------------------------------------------------------


def verify(cli, store_path: Path) -> tuple[int, str]:
    proc = cli("audit", "verify", str(store_path), check=False)
    return proc.returncode, proc.stdout.decode()


def test_empty_store_verifies_ok(store_path: Path, cli) -> None:
    assert verify(cli, store_path)[0] == 0
    assert not (store_path / "audit" / "audit.log").exists() and not (store_path / "audit.pin").exists()


def test_removing_the_head_and_the_last_line_is_detected(store_path: Path, cli) -> None:
    cli("mb", str(store_path), "pacs")
    for name in ("a", "b"):
        cli("put", str(store_path), f"pacs/{name}", "-", input=b"x")
    assert verify(cli, store_path)[0] == 0
    log = store_path / "audit" / "audit.log"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]))
    os.unlink(store_path / "audit" / "head")
    code, out = verify(cli, store_path)
    assert code == 1 and "audit.pin records line 3: lines were cut off the end" in out


def test_removing_the_whole_log_and_its_head_is_detected(store_path: Path, cli) -> None:
    cli("mb", str(store_path), "pacs")
    for name in ("audit/audit.log", "audit/head"):
        os.unlink(store_path / name)
    code, out = verify(cli, store_path)
    assert code == 1 and "the log is empty or missing, but audit.pin records line 1: the log was removed" in out
    (store_path / "audit" / "audit.log").write_text("")  # an empty log in its place
    assert "the log was removed" in verify(cli, store_path)[1]


def test_denials_are_durable_chained_lines(store: Store, cli) -> None:
    with pytest.raises(AccessDenied):
        store.put_object("nobucket", "k", b"x", principal=VIEWER)
    problems, head = store.audit.verify()
    assert problems == [] and head["seq"] == 1
    pin = json.loads((store.root / "audit.pin").read_text())
    assert pin == {"seq": 1, "hash": head["hash"]}


def test_lines_cut_off_stay_visible_after_later_appends(store_path: Path, cli) -> None:
    cli("mb", str(store_path), "pacs")
    cli("put", str(store_path), "pacs/a", "-", input=b"x")
    log = store_path / "audit" / "audit.log"
    log.write_text(log.read_text().splitlines(keepends=True)[0])
    os.unlink(store_path / "audit" / "head")
    cli("put", str(store_path), "pacs/b", "-", input=b"y")  # the pins move on, the gap stays
    code, out = verify(cli, store_path)
    assert code == 1 and "line 2: sequence 3 where 2 was expected" in out
    for name in ("audit/audit.log", "audit/head"):
        os.unlink(store_path / name)
    cli("put", str(store_path), "pacs/c", "-", input=b"z")  # a fresh log after the old one was removed
    code, out = verify(cli, store_path)
    assert code == 1 and "line 1: sequence 4 where 1 was expected" in out
