"""Encryption at rest in the engine (objfs/store/crypto.py): real drives, real key file, no mocks.

Ciphertext is what the drives hold (and what healing rebuilds); every
segment read back is authenticated; keys stay off the drives; the record's
encryption fields survive ``rebuild-index``; indexers still see plaintext.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fragmenthelpers import fragment_bytes, fragment_whole, lose_fragment, overwrite_fragment

from objfs.dicom.synth import make_instance
from objfs.store import (
    ConfigError,
    DataLoss,
    Encryption,
    EncryptionKeyMismatch,
    EncryptionKeyRequired,
    EncryptionNotConfigured,
    NoSuchEncryptionKey,
    Store,
)
from objfs.store.config import CONFIG_NAME
from objfs.store.fragments import frame_crcs
from objfs.store.rebuild import move_index_aside, rebuild_index
from objfs.stores import init_store, open_store

SEG = 64 * 1024


def pattern(tag: str, size: int) -> bytes:
    unit = (tag.encode() + b"|") * 8
    return (unit * (size // len(unit) + 1))[:size]


@pytest.fixture
def store(tmp_path: Path):
    with init_store(tmp_path / "store", ec="2+2", segment_size=SEG) as s:
        s.create_bucket("pacs")
        yield s


def drive_bytes(store: Store) -> bytes:
    out = bytearray()
    for drive in store.all_drives():
        for dirpath, _dirs, names in os.walk(drive.path):
            for name in names:
                out += (Path(dirpath) / name).read_bytes()
    return bytes(out)


def test_key_file_is_private_and_off_the_drives(store: Store) -> None:
    key_file = store.config.key_file
    assert key_file is not None and key_file.exists()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert all(d.path not in key_file.parents for d in store.all_drives())
    master = key_file.read_text()
    store.put_object("pacs", "a", pattern("secret", 200_000), encryption=Encryption("S3"))
    assert master.split('"master": "')[1].split('"')[0].encode() not in drive_bytes(store)


def test_key_file_on_a_drive_is_refused(tmp_path: Path) -> None:
    init_store(tmp_path / "s", ec="2+1").close()
    config = tmp_path / "s" / CONFIG_NAME
    config.write_text(config.read_text().replace('key_file = "keys/objfs-keys.json"', 'key_file = "drives/d0/keys.json"'))
    with pytest.raises(ConfigError, match="must not be on a drive"):
        Store.open(tmp_path / "s")


def test_store_without_key_file_refuses_encrypted_writes(tmp_path: Path) -> None:
    init_store(tmp_path / "s", ec="2+1").close()
    config = tmp_path / "s" / CONFIG_NAME
    text = config.read_text()
    config.write_text(text[: text.index("[encryption]")] + text[text.index("[dicom]") :])
    with Store.open(tmp_path / "s") as s:
        s.create_bucket("pacs")
        with pytest.raises(EncryptionNotConfigured, match="no key file"):
            s.put_object("pacs", "k", b"data", encryption=Encryption("S3"))
        with pytest.raises(EncryptionNotConfigured):
            s.update_bucket("pacs", encryption={"mode": "S3"})
        with pytest.raises(EncryptionNotConfigured):
            s.create_multipart("pacs", "k", encryption=Encryption("KMS"))
        s.put_object("pacs", "plain", b"data")  # plaintext still works
        assert s.list_objects("pacs").objects[0].key == "plain"


@pytest.mark.parametrize("mode", ["S3", "KMS", "C"])
def test_round_trip_ranges_and_degraded_reads(store: Store, mode: str) -> None:
    customer = os.urandom(32) if mode == "C" else None
    if mode == "KMS":
        store.encryption.kms_create("pacs-key")
    enc = Encryption(mode, kms_key="pacs-key" if mode == "KMS" else None, customer_key=customer)
    data = pattern("round-" + mode, 5 * SEG + 777)
    info = store.put_object("pacs", "obj", data, encryption=enc)
    desc = info.record["parts"][0]
    assert info.record["sse"]["mode"] == mode and desc["enc"] == 16 and info.size == len(data)
    assert b"round-" + mode.encode() not in drive_bytes(store)
    # m = 2 fragments gone: both data fragments, so every segment is rebuilt from parity and authenticated.
    for index in (0, 1):
        lose_fragment(store, desc, index)
    with store.open_object("pacs", "obj", customer_key=customer) as reader:
        assert reader.readall() == data
        for start, end in ((0, 1), (SEG - 3, SEG + 3), (2 * SEG, 4 * SEG + 5), (len(data) - 9, len(data))):
            assert b"".join(reader.iter_range(start, end)) == data[start:end]
            assert reader.read(start, end - start) == data[start:end]


def test_ssec_needs_the_right_key_and_never_stores_it(store: Store) -> None:
    customer = os.urandom(32)
    info = store.put_object("pacs", "c", b"x" * 1000, encryption=Encryption("C", customer_key=customer))
    with pytest.raises(EncryptionKeyRequired):
        store.open_object("pacs", "c")
    with pytest.raises(EncryptionKeyMismatch):
        store.open_object("pacs", "c", customer_key=os.urandom(32))
    assert customer not in drive_bytes(store)
    assert customer not in repr(info.record).encode()
    assert store.get_object_bytes("pacs", "c", customer_key=customer) == b"x" * 1000


@pytest.mark.parametrize("size", [3 * SEG + 5, 5000], ids=["files", "packed"])
def test_healing_rebuilds_ciphertext_and_corruption_is_caught_by_the_tag(store: Store, size: int) -> None:
    data = pattern("heal", size)
    info = store.put_object("pacs", "h", data, encryption=Encryption("S3"))
    desc = info.record["parts"][0]
    lose_fragment(store, desc, 0)
    report = store.scrub()
    assert report.fragments_repaired == 1 and not report.lost
    desc = store.head_object("pacs", "h").record["parts"][0]
    assert fragment_whole(store, desc, 0)
    assert store.get_object_bytes("pacs", "h") == data
    # Corrupt a data fragment's first frame *and* fix its CRC: only GCM can notice, and it does.
    fsz = desc["fsz"]
    raw = bytearray(fragment_bytes(store, desc, 0)[:fsz])
    raw[100] ^= 0xFF
    overwrite_fragment(store, desc, 0, 0, bytes(raw) + frame_crcs(raw, desc.get("cb", 0)))
    with store.open_object("pacs", "h") as reader, pytest.raises(DataLoss, match="authentication"):
        reader.read(0, 10)


def test_kms_rotation_and_unknown_keys(store: Store) -> None:
    store.encryption.kms_create("k1")
    old = store.put_object("pacs", "old", b"old bytes", encryption=Encryption("KMS", kms_key="k1"))
    assert store.encryption.kms_rotate("k1") == {"name": "k1", "version": 2}
    new = store.put_object("pacs", "new", b"new bytes", encryption=Encryption("KMS", kms_key="k1"))
    assert (old.record["sse"]["kms_version"], new.record["sse"]["kms_version"]) == (1, 2)
    assert store.get_object_bytes("pacs", "old") == b"old bytes"
    assert store.get_object_bytes("pacs", "new") == b"new bytes"
    with pytest.raises(NoSuchEncryptionKey):
        store.put_object("pacs", "x", b"x", encryption=Encryption("KMS", kms_key="nope"))
    with pytest.raises(NoSuchEncryptionKey):
        store.update_bucket("pacs", encryption={"mode": "KMS", "kms_key": "nope"})
    assert [k["name"] for k in store.encryption.kms_list()] == ["k1"]


def test_copies_between_modes(store: Store) -> None:
    src_key, dst_key = os.urandom(32), os.urandom(32)
    data = pattern("copy", 2 * SEG + 1)
    store.put_object("pacs", "src", data, encryption=Encryption("C", customer_key=src_key))
    with pytest.raises(EncryptionKeyRequired):
        store.copy_object("pacs", "src", "pacs", "dst")
    store.copy_object("pacs", "src", "pacs", "dst", source_customer_key=src_key, encryption=Encryption("C", customer_key=dst_key))
    assert store.get_object_bytes("pacs", "dst", customer_key=dst_key) == data
    store.copy_object("pacs", "dst", "pacs", "plain", source_customer_key=dst_key)
    plain = store.head_object("pacs", "plain")
    assert "sse" not in plain.record and store.get_object_bytes("pacs", "plain") == data


def test_bucket_default_applies_to_every_writer_and_indexers_see_plaintext(store: Store) -> None:
    store.update_bucket("pacs", encryption={"mode": "S3"})
    ds = make_instance(
        patient_id="ENC-PATIENT-42",
        patient_name="Doe^Jane",
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        sop_uid="1.2.3.4.5",
        number=1,
    )
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    info = store.put_object("pacs", "study/1.dcm", buf.getvalue())
    assert info.record["sse"]["mode"] == "S3"
    assert info.record["dicom"]["PatientID"] == "ENC-PATIENT-42"
    assert b"ENC-PATIENT-42" not in drive_bytes(store)
    # Multipart under the default: parts are encrypted with the upload's key, the head indexed from plaintext.
    store.min_part_size = 1
    upload = store.create_multipart("pacs", "study/2.dcm")
    body = buf.getvalue()
    e1 = store.upload_part(upload, 1, body[:1000])["etag"]
    e2 = store.upload_part(upload, 2, body[1000:])["etag"]
    done = store.complete_multipart(upload, [(1, e1), (2, e2)])
    assert done.record["sse"]["mode"] == "S3" and done.record["dicom"]["PatientID"] == "ENC-PATIENT-42"
    assert store.get_object_bytes("pacs", "study/2.dcm") == body
    # Renamed, tagged, deleted: footers, meta files and tombstones never name the patient or the key.
    store.rename_object("pacs", "study/2.dcm", "study/renamed-ENC-PATIENT-42.dcm")
    store.update_object("pacs", "study/renamed-ENC-PATIENT-42.dcm", tags={"patient": "ENC-PATIENT-42"})
    store.delete_object("pacs", "study/1.dcm")
    on_drives = drive_bytes(store)
    assert b"ENC-PATIENT-42" not in on_drives and b"study/" not in on_drives
    assert store.head_object("pacs", "study/renamed-ENC-PATIENT-42.dcm").tags["patient"] == "ENC-PATIENT-42"


def test_rebuild_index_keeps_encrypted_objects_and_uploads_readable(tmp_path: Path) -> None:
    root = tmp_path / "store"
    customer = os.urandom(32)
    data = pattern("rebuild", 2 * SEG + 3)
    with init_store(root, ec="2+2", segment_size=SEG) as s:
        s.create_bucket("pacs")
        s.encryption.kms_create("k")
        s.update_bucket("pacs", encryption={"mode": "KMS", "kms_key": "k"})
        s.put_object("pacs", "default", data)
        s.put_object("pacs", "c", data, encryption=Encryption("C", customer_key=customer))
        s.min_part_size = 1
        upload = s.create_multipart("pacs", "mp", encryption=Encryption("C", customer_key=customer))
        etag = s.upload_part(upload, 1, data, customer_key=customer)["etag"]
    move_index_aside(root)
    with open_store(root) as s:
        rebuild_index(s)
        assert s.head_bucket("pacs")["encryption"] == {"mode": "KMS", "kms_key": "k"}
        assert s.head_object("pacs", "default").record["sse"]["kms_key"] == "k"
        assert s.get_object_bytes("pacs", "default") == data
        assert s.get_object_bytes("pacs", "c", customer_key=customer) == data
        with pytest.raises(EncryptionKeyMismatch):
            s.complete_multipart(upload, [(1, etag)], customer_key=os.urandom(32))
        s.complete_multipart(upload, [(1, etag)])  # S3 does not require the key at completion
        assert s.get_object_bytes("pacs", "mp", customer_key=customer) == data


def _objfs(*args: str) -> subprocess.CompletedProcess:
    repo = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-m", "objfs.cli", *args], capture_output=True, env=dict(os.environ, PYTHONPATH=str(repo)), timeout=60
    )


def test_kms_init_gives_an_older_store_its_key_file(tmp_path: Path) -> None:
    root = tmp_path / "s"
    init_store(root, ec="2+1").close()
    config = root / CONFIG_NAME
    text = config.read_text()
    config.write_text(text[: text.index("[encryption]")] + text[text.index("[dicom]") :])
    (root / "keys" / "objfs-keys.json").unlink()
    refused = _objfs("kms", "init", str(root))
    assert refused.returncode != 0 and b"[encryption] key_file" in refused.stderr
    config.write_text(config.read_text() + '\n[encryption]\nkey_file = "secrets/keys.json"\n')
    assert _objfs("kms", "init", str(root)).returncode == 0
    assert (root / "secrets" / "keys.json").stat().st_mode & 0o777 == 0o600
    assert _objfs("kms", "init", str(root)).returncode != 0  # never overwrites a key file
    assert _objfs("kms", "create", str(root), "pacs").returncode == 0
    with Store.open(root) as s:
        s.create_bucket("pacs")
        s.put_object("pacs", "k", b"secret", encryption=Encryption("KMS", kms_key="pacs"))
        assert s.get_object_bytes("pacs", "k") == b"secret"
