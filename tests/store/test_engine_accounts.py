"""Accounts in the engine: a bucket is its owner account's; other accounts get only what its policy or ACLs grant.

Local principals (the mount, the DICOM gateway) act for the archive itself and are not bound by accounts.
"""

from __future__ import annotations

import json

import pytest

from objfs.store import Principal, Store
from objfs.store.errors import AccessDenied, MalformedPolicy


def denials(store: Store, who: str) -> list[tuple[str, str | None]]:
    return [(e["action"], e.get("bucket")) for e in store.audit.show(who=who) if e["outcome"] == "denied"]


def test_other_accounts_and_anonymous_are_refused_and_audited(store: Store) -> None:
    alice = Principal("s3:alice", account="clinic-a")
    bob = Principal("s3:bob", account="clinic-b")
    store.create_bucket("pacs", principal=alice)
    store.put_object("pacs", "study/1.dcm", b"DICM", principal=alice)
    assert [b["name"] for b in store.list_buckets(principal=alice)] == ["pacs"]
    assert store.list_buckets(principal=bob) == []
    with pytest.raises(AccessDenied):
        store.open_object("pacs", "study/1.dcm", principal=bob)
    with pytest.raises(AccessDenied):
        store.delete_object("pacs", "study/1.dcm", principal=bob)
    with pytest.raises(AccessDenied):
        store.list_objects("pacs", principal=Principal.anonymous_request())
    assert ("read", "pacs") in denials(store, "s3:bob") and ("delete", "pacs") in denials(store, "s3:bob")
    # The mount and the gateway are the archive's own.
    with store.open_object("pacs", "study/1.dcm", principal=Principal("fuse:uid=0,pid=1")) as reader:
        assert reader.readall() == b"DICM"


def test_policy_allow_and_deny(store: Store) -> None:
    alice = Principal("s3:alice", account="clinic-a")
    viewer = Principal("s3:viewer", account="radiology", read_only=True)
    store.create_bucket("pacs", principal=alice)
    store.put_object("pacs", "a/1", b"one", principal=alice)
    store.put_object("pacs", "b/2", b"two", principal=alice)
    document = {
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "radiology"}, "Action": "s3:Get*", "Resource": "arn:aws:s3:::pacs/*"},
            {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::pacs/b/*"},
        ]
    }
    store.put_bucket_policy("pacs", json.dumps(document), principal=alice)
    with store.open_object("pacs", "a/1", principal=viewer) as reader:
        assert reader.readall() == b"one"
    for who in (viewer, alice):  # an explicit Deny binds the owner too
        with pytest.raises(AccessDenied):
            store.open_object("pacs", "b/2", principal=who)
    with pytest.raises(AccessDenied):  # the policy cannot lend rights the key lacks
        store.put_object("pacs", "a/3", b"x", principal=viewer)
    with pytest.raises(AccessDenied):  # settings are the owner's alone
        store.put_bucket_policy("pacs", None, principal=viewer)
    with pytest.raises(MalformedPolicy):
        store.put_bucket_policy("pacs", json.dumps({"Statement": [{"Effect": "Allow"}]}), principal=alice)


def test_policy_condition_on_the_object_lock_mode(store: Store) -> None:
    officer = Principal("s3:officer", account="clinic-a", retention=True)
    store.create_bucket("worm", object_lock=True, principal=officer)
    no_compliance = {
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": "arn:aws:s3:::worm/*",
                "Condition": {"StringEquals": {"s3:object-lock-mode": "COMPLIANCE"}},
            }
        ]
    }
    store.put_bucket_policy("worm", json.dumps(no_compliance), principal=officer)
    until = store.clock.now() + 3600
    store.put_object("worm", "g", b"x", retention={"mode": "GOVERNANCE", "until": until}, principal=officer)
    with pytest.raises(AccessDenied):
        store.put_object("worm", "c", b"x", retention={"mode": "COMPLIANCE", "until": until}, principal=officer)
    assert [o.key for o in store.list_objects("worm").objects] == ["g"]
