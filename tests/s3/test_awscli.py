"""The aws command line (awscli v1) against the sidecar: s3 cp/sync/ls/rm and s3api calls."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MiB = 1 << 20


def test_cp_ls_rm(aws, s3, bucket, tmp_path: Path):
    small = tmp_path / "small.dcm"
    small.write_bytes(b"DICM" * 300)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(10 * MiB))  # above the CLI's 8 MiB multipart threshold
    aws("s3", "cp", str(small), f"s3://{bucket}/study/small.dcm")
    aws("s3", "cp", str(big), f"s3://{bucket}/study/big.bin")
    assert s3.head_object(Bucket=bucket, Key="study/big.bin")["ETag"].endswith('-2"')
    listing = aws("s3", "ls", f"s3://{bucket}/study/").stdout.decode()
    assert "small.dcm" in listing and "big.bin" in listing
    assert "PRE study/" in aws("s3", "ls", f"s3://{bucket}").stdout.decode()
    out = tmp_path / "back.bin"
    aws("s3", "cp", f"s3://{bucket}/study/big.bin", str(out))
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
    assert aws("s3", "cp", f"s3://{bucket}/study/small.dcm", "-").stdout == small.read_bytes()
    aws("s3", "rm", f"s3://{bucket}/study/small.dcm")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["study/big.bin"]
    aws("s3", "rm", "--recursive", f"s3://{bucket}/")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    missing = aws("s3", "cp", f"s3://{bucket}/nope", str(tmp_path / "nope"), check=False)
    assert missing.returncode != 0 and b"404" in missing.stderr


def test_sync_both_ways(aws, bucket, tmp_path: Path):
    src = tmp_path / "src"
    for i in range(6):
        (src / f"series{i % 2}").mkdir(parents=True, exist_ok=True)
        (src / f"series{i % 2}" / f"img{i}.dcm").write_bytes(os.urandom(1000 + i))
    aws("s3", "sync", str(src), f"s3://{bucket}/pacs")
    again = aws("s3", "sync", str(src), f"s3://{bucket}/pacs").stdout.decode()
    assert "upload" not in again  # nothing changed, nothing sent
    dst = tmp_path / "dst"
    aws("s3", "sync", f"s3://{bucket}/pacs", str(dst))
    for path in src.rglob("*.dcm"):
        assert (dst / path.relative_to(src)).read_bytes() == path.read_bytes()


def test_mb_rb_and_s3api(aws, tmp_path: Path):
    name = "cli-" + os.urandom(6).hex()
    aws("s3", "mb", f"s3://{name}")
    body = tmp_path / "f.txt"
    body.write_bytes(b"hello from the cli")
    put = json.loads(
        aws("s3api", "put-object", "--bucket", name, "--key", "a/f.txt", "--body", str(body), "--metadata", "site=north").stdout
    )
    assert put["ETag"] == f'"{hashlib.md5(b"hello from the cli").hexdigest()}"'
    head = json.loads(aws("s3api", "head-object", "--bucket", name, "--key", "a/f.txt").stdout)
    assert head["ContentLength"] == 18 and head["Metadata"] == {"site": "north"}
    listing = json.loads(aws("s3api", "list-objects-v2", "--bucket", name, "--prefix", "a/").stdout)
    assert [o["Key"] for o in listing["Contents"]] == ["a/f.txt"]
    aws("s3api", "put-object-tagging", "--bucket", name, "--key", "a/f.txt", "--tagging", "TagSet=[{Key=k,Value=v}]")
    tags = json.loads(aws("s3api", "get-object-tagging", "--bucket", name, "--key", "a/f.txt").stdout)
    assert tags["TagSet"] == [{"Key": "k", "Value": "v"}]
    ranged = tmp_path / "range.out"
    aws("s3api", "get-object", "--bucket", name, "--key", "a/f.txt", "--range", "bytes=6-9", str(ranged))
    assert ranged.read_bytes() == b"from"
    url = aws("s3", "presign", f"s3://{name}/a/f.txt").stdout.decode().strip()
    from s3helpers import http

    assert http("GET", url).content == b"hello from the cli"
    notempty = aws("s3", "rb", f"s3://{name}", check=False)
    assert notempty.returncode != 0 and b"BucketNotEmpty" in notempty.stderr
    aws("s3", "rb", "--force", f"s3://{name}")
    assert name not in aws("s3", "ls").stdout.decode()
