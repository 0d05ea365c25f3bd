"""Lifecycle rules with a one-second day: versions move to the right tier at the right time, locked ones never expire."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tierhelpers import tiered_store, unlock_tree
from trusthelpers import body, verify

from objfs.store import InvalidArgument, Store
from objfs.store.tiers import InvalidStorageClass

TO_WARM = {
    "Rules": [
        {
            "ID": "warm",
            "Status": "Enabled",
            "Filter": {"Prefix": "img/"},
            "Transitions": [{"Days": 2, "StorageClass": "STANDARD_IA"}],
        }
    ]
}


@pytest.fixture
def tiered(tmp_path: Path):
    root = tiered_store(tmp_path / "store")
    yield root
    unlock_tree(tmp_path)


def test_objects_move_to_warm_when_their_rule_is_due_and_only_then(tiered: Path) -> None:
    with Store.open(tiered) as store:
        store.create_bucket("pacs")
        store.put_lifecycle("pacs", TO_WARM)
        data = {k: body(k, 3000 + i) for i, k in enumerate(("img/a", "img/b", "other/c"))}
        for key, value in data.items():
            store.put_object("pacs", key, value)
        assert store.run_lifecycle().moved == []  # day 0: nothing due
        store.clock.advance(2.1)  # two lifecycle days
        report = store.run_lifecycle()
        assert sorted(report.moved) == ["pacs/img/a@null -> warm", "pacs/img/b@null -> warm"]
        for key, value in data.items():
            info = store.head_object("pacs", key)
            assert store.storage_class_of(info.record) == ("STANDARD" if key.startswith("other") else "STANDARD_IA")
            assert store.get_object_bytes("pacs", key) == value
        assert store.run_lifecycle().moved == []  # already there: nothing moves twice
        assert [e["who"] for e in store.audit.show(key="img/a") if e["action"] == "transition"] == ["lifecycle"]


def test_the_store_default_applies_to_buckets_without_rules(tmp_path: Path) -> None:
    root = tiered_store(tmp_path / "store", default_rules=True)
    with Store.open(root) as store:
        assert store.default_lifecycle()["Rules"][0]["Transitions"] == [{"Days": 90, "StorageClass": "STANDARD_IA"}]
        store.create_bucket("pacs")
        store.put_object("pacs", "x", body("x", 100))
        store.clock.advance(89)
        assert store.run_lifecycle().moved == []
        store.clock.advance(1.5)
        assert store.run_lifecycle().moved == ["pacs/x@null -> warm"]


def test_expiration_never_deletes_a_locked_version(tiered: Path) -> None:
    with Store.open(tiered) as store:
        store.create_bucket("worm", object_lock=True)
        store.put_lifecycle(
            "worm",
            {
                "Rules": [
                    {"ID": "exp", "Status": "Enabled", "Filter": {}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1}},
                    {"ID": "cur", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 1}},
                ]
            },
        )
        held = store.put_object("worm", "study", body("v1", 500), legal_hold=True)
        free = store.put_object("worm", "study", body("v2", 500))
        store.put_object("worm", "study", body("v3", 500))
        kept = store.put_object(
            "worm", "tmp/x", body("t", 50), retention={"mode": "GOVERNANCE", "until": store.clock.now() + 86400}
        )
        store.clock.advance(3)
        report = store.run_lifecycle()
        assert report.expired == [f"worm/study@{free.version_id}"]
        assert sorted(report.kept_locked) == sorted([f"worm/study@{held.version_id}", f"worm/tmp/x@{kept.version_id}"])
        verify(store.get_object_bytes("worm", "study", held.version_id))
        verify(store.get_object_bytes("worm", "tmp/x"))


def test_noncurrent_transitions_uploads_and_resumable_passes(tiered: Path) -> None:
    with Store.open(tiered) as store:
        store.create_bucket("ver")
        store.update_bucket("ver", versioning="Enabled")
        store.put_lifecycle(
            "ver",
            {
                "Rules": [
                    {
                        "ID": "old",
                        "Status": "Enabled",
                        "Filter": {
                            "And": {"Prefix": "", "Tags": [{"Key": "keep", "Value": "warm"}], "ObjectSizeGreaterThan": 10}
                        },
                        "NoncurrentVersionTransitions": [{"NoncurrentDays": 1, "StorageClass": "STANDARD_IA"}],
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                    }
                ]
            },
        )
        olds = [store.put_object("ver", f"k{i}", body(f"old{i}", 100), tags={"keep": "warm"}) for i in range(5)]
        for i in range(5):
            store.put_object("ver", f"k{i}", body(f"new{i}", 100), tags={"keep": "warm"})
        store.put_object("ver", "untagged", body("u0", 100))
        store.put_object("ver", "untagged", body("u1", 100))
        upload = store.create_multipart("ver", "big")
        store.clock.advance(1.5)
        first = store.run_lifecycle(max_actions=2)
        assert len(first.moved) == 2 and not first.finished
        rest = store.run_lifecycle()  # resumes from the cursor in the index
        assert len(rest.moved) == 3 and rest.finished and rest.aborted == [f"ver/big upload {upload}"]
        for old in olds:
            rec = store.head_object("ver", old.key, old.version_id).record
            assert store.tier_of(rec) == "warm"
            verify(store.get_object_bytes("ver", old.key, old.version_id))
        assert all(store.tier_of(store.head_object("ver", f"k{i}").record) == "hot" for i in range(5))


def test_rules_are_validated(tiered: Path) -> None:
    with Store.open(tiered) as store:
        store.create_bucket("pacs")
        with pytest.raises(InvalidStorageClass):
            store.put_lifecycle(
                "pacs", {"Rules": [{"Status": "Enabled", "Transitions": [{"Days": 1, "StorageClass": "GLACIER_IR"}]}]}
            )
        with pytest.raises(InvalidArgument):
            store.put_lifecycle("pacs", {"Rules": [{"Status": "Enabled"}]})
        with pytest.raises(InvalidArgument):
            store.put_lifecycle("pacs", {"Rules": [{"Status": "On", "Expiration": {"Days": 1}}]})
        assert store.get_lifecycle("pacs") is None


def test_cli_tier_and_lifecycle_commands(tiered: Path, cli, tmp_path: Path) -> None:
    out = cli(
        "tier", "add", str(tiered), "archive", "--ec", "2+1", *[f"--drive={tmp_path}/arch{i}" for i in range(3)]
    ).stdout.decode()
    assert "added tier archive: EC 2+1 on 3 drives" in out and "GLACIER_IR" in out
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            {
                "Rules": [
                    {"ID": "a", "Status": "Enabled", "Filter": {}, "Transitions": [{"Days": 1, "StorageClass": "GLACIER_IR"}]}
                ]
            }
        )
    )
    with Store.open(tiered) as store:
        store.create_bucket("pacs")
        store.put_object("pacs", "x", body("x", 1234))
    cli("lifecycle", "set", str(tiered), "pacs", str(rules))
    assert json.loads(cli("lifecycle", "show", str(tiered), "pacs").stdout)["Rules"][0]["ID"] == "a"
    time.sleep(1.2)
    out = cli("lifecycle", "run", str(tiered)).stdout.decode()
    assert "moved    pacs/x@null -> archive" in out
    tiers = {t["name"]: t for t in json.loads(cli("tier", "list", str(tiered), "--json").stdout)}
    assert (tiers["archive"]["versions"], tiers["archive"]["bytes"], tiers["hot"]["versions"]) == (1, 1234, 0)
    assert tiers["archive"]["classes"] == ["GLACIER_IR"]
    bad = cli("lifecycle", "set", str(tiered), "pacs", "-", input=b'{"Rules": [{"Status": "Enabled"}]}', check=False)
    assert bad.returncode == 1 and b"no action" in bad.stderr
