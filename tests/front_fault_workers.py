"""Worker processes of the front fault-injection tests: ``python front_fault_workers.py MODE ARGS...``.

Every mutating worker prints ``BEGIN <key> <tag>`` before an operation and
``ACK <key> <tag>`` once the front acknowledged it (a ``close()`` or
``rename()`` on the mount returned 0, a C-STORE response had status 0, an S3
request returned 2xx); ``FAIL <key> <tag>`` when the front refused or went
away (the outcome is unknown), ``REFUSED <key> <tag>`` when the request
could not even be sent (nothing listened: no effect). A tag ``-`` is a deletion. Readers print
``OK`` for a read whose bytes proved themselves, ``ERR`` for a read that
failed visibly, and ``BAD <why>`` for wrong or silently short bytes.

Modes:

``fuse-write MNT SEED``          overwrite files of ``MNT/pacs`` (temp + rename,
                                 in-place rewrite, O_TRUNC rewrite); exits when
                                 the mount goes away
``engine-read STORE BUCKET KEY...`` stream those keys slowly through the engine
``dicom-store PORT DIR SEED``    C-STORE new instances (written to ``DIR`` first,
                                 sent as they are); exits when the gateway goes away
``s3-mutate URL AK SK SEED``     overwrite, delete and multipart-upload keys of
                                 bucket ``pacs``; carries on across sidecar restarts
``s3-read URL AK SK SEED``       GET keys of bucket ``pacs``, streaming slowly
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "store"), str(HERE / "s3")]

from trusthelpers import body, verify  # noqa: E402

FUSE_KEYS = [f"f{i}" for i in range(4)]
S3_KEYS = [f"s{i}" for i in range(4)]
MIB = 1 << 20


def say(*words: object) -> None:
    print(*words, flush=True)


def fuse_write(mnt: Path, seed: int) -> None:
    rng = random.Random(seed)
    folder = mnt / "pacs"
    for n in range(1, 10_000):
        key, tag = rng.choice(FUSE_KEYS), f"{seed}-{n}"
        data = body(tag, rng.choice([100, 70_000, 300_000, MIB + 5]))
        way = rng.choice(["rename", "inplace", "trunc"])
        say("BEGIN", key, tag, way)
        try:
            if way == "rename":  # what editors and rsync do
                tmp = folder / f".tmp-{tag}"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.rename(tmp, folder / key)
            elif way == "inplace":  # rewrite the bytes of the same inode, then cut the tail
                fd = os.open(folder / key, os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view[: 64 << 10]) :]
                    os.ftruncate(fd, len(data))
                finally:
                    os.close(fd)
            else:
                with open(folder / key, "wb") as f:
                    f.write(data)
        except OSError as exc:
            say("FAIL", key, tag, exc.errno)
            return
        say("ACK", key, tag)


def engine_read(root: str, bucket: str, keys: list[str]) -> None:
    from objfs.store import NoSuchBucket, NoSuchKey, NoSuchVersion
    from objfs.stores import open_store

    store = open_store(root)
    rng = random.Random(os.getpid())
    while True:
        key = rng.choice(keys)
        try:
            reader = store.open_object(bucket, key)
        except (NoSuchKey, NoSuchVersion, NoSuchBucket):
            time.sleep(0.02)
            continue
        try:
            chunks = []
            for chunk in reader.iter_range():
                chunks.append(chunk)
                time.sleep(rng.random() * 0.01)  # slow: the front replaces the key meanwhile
            verify(b"".join(chunks))
            say("OK", key)
        except AssertionError as exc:
            say("BAD", bucket, key, exc)
        except Exception as exc:  # noqa: BLE001 - a version that was opened must read back whole
            say("BAD", bucket, key, type(exc).__name__, exc)
        finally:
            reader.close()


def dicom_store(port: int, directory: Path, seed: int) -> None:
    from pydicom.uid import generate_uid
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import CTImageStorage

    from objfs.dicom.synth import make_instance

    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's dataset bytes go out unchanged
    rng = random.Random(seed)
    study, series = generate_uid(), generate_uid()
    say("STUDY", study, series)
    ae = AE(ae_title="TESTSCU")
    ae.network_timeout = ae.dimse_timeout = 30
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    n = 0
    while True:
        assoc = ae.associate("127.0.0.1", port, ae_title="OBJFS")
        if not assoc.is_established:
            say("GONE")
            return
        for _ in range(rng.randint(1, 6)):  # associations end at random points too
            n += 1
            sop = generate_uid()
            ds = make_instance(
                patient_id=f"FAULT{seed}",
                patient_name="Fault^Test",
                study_uid=study,
                series_uid=series,
                sop_uid=sop,
                number=n,
                size=rng.choice([32, 256, 512]),
                seed=n,
            )
            path = directory / f"{sop}.dcm"
            ds.save_as(path, enforce_file_format=True)
            say("BEGIN", sop, "+")
            try:
                status = assoc.send_c_store(path)
            except RuntimeError:  # the association died before this request went out
                status = None
            if status and int(status.Status) == 0:
                say("ACK", sop, "+")
            else:
                say("FAIL", sop, "+", status.Status if status else "no-response")
            if not assoc.is_established:
                say("GONE")
                return
        assoc.release()


def s3_client(url: str, access: str, secret: str):
    from s3helpers import Key, make_client

    return make_client(url, Key(access, secret))


def s3_mutate(url: str, access: str, secret: str, seed: int) -> None:
    from botocore.exceptions import EndpointConnectionError

    s3 = s3_client(url, access, secret)
    rng = random.Random(seed)
    for n in range(1, 100_000):
        key, tag = rng.choice(S3_KEYS), f"{seed}-{n}"
        op = rng.choices(["put", "delete", "multipart"], [5, 2, 3])[0]
        try:
            if op == "put":
                data = body(tag, rng.choice([100, 70_000, 400_000]))
                say("BEGIN", key, tag)
                s3.put_object(Bucket="pacs", Key=key, Body=data)
            elif op == "delete":
                say("BEGIN", key, "-")
                s3.delete_object(Bucket="pacs", Key=key)
            else:
                # parts but the last need 5 MiB: most uploads are one small part, some two
                data = body(tag, rng.choice([70_000, 5 * MIB + 1000]))
                cuts = [0, 5 * MIB, len(data)] if len(data) > 5 * MIB else [0, len(data)]
                upload = s3.create_multipart_upload(Bucket="pacs", Key=key)["UploadId"]
                parts = []
                for number, (lo, hi) in enumerate(zip(cuts, cuts[1:]), 1):
                    reply = s3.upload_part(Bucket="pacs", Key=key, UploadId=upload, PartNumber=number, Body=data[lo:hi])
                    parts.append({"PartNumber": number, "ETag": reply["ETag"]})
                say("BEGIN", key, tag)
                s3.complete_multipart_upload(Bucket="pacs", Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
        except EndpointConnectionError:  # nothing listens (sidecar down): the request never went out
            say("REFUSED", key, tag if op != "delete" else "-")
            time.sleep(0.1)
            continue
        except Exception as exc:  # noqa: BLE001 - the sidecar went away: outcome unknown, carry on
            say("FAIL", key, tag if op != "delete" else "-", type(exc).__name__)
            time.sleep(0.1)
            continue
        say("ACK", key, tag if op != "delete" else "-")


def s3_read(url: str, access: str, secret: str, seed: int) -> None:
    s3 = s3_client(url, access, secret)
    rng = random.Random(seed)
    while True:
        key = rng.choice(S3_KEYS)
        try:
            reply = s3.get_object(Bucket="pacs", Key=key)
        except Exception:  # noqa: BLE001 - absent, or the sidecar is down: nothing was returned
            time.sleep(0.05)
            continue
        stream = reply["Body"]
        chunks = []
        try:
            while True:
                chunk = stream.read(32 << 10)
                if not chunk:
                    break
                chunks.append(chunk)
                time.sleep(rng.random() * 0.01)  # slow: writers and kills happen meanwhile
        except Exception as exc:  # noqa: BLE001 - a visible failure is allowed
            say("ERR", key, type(exc).__name__)
            continue
        finally:
            stream.close()
        try:
            verify(b"".join(chunks))
        except AssertionError as exc:
            say("BAD", key, exc)
            continue
        say("OK", key)


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "fuse-write":
        fuse_write(Path(args[0]), int(args[1]))
    elif mode == "engine-read":
        engine_read(args[0], args[1], args[2:])
    elif mode == "dicom-store":
        dicom_store(int(args[0]), Path(args[1]), int(args[2]))
    elif mode == "s3-mutate":
        s3_mutate(args[0], args[1], args[2], int(args[3]))
    elif mode == "s3-read":
        s3_read(args[0], args[1], args[2], int(args[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
