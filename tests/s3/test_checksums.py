"""Additional-checksum objects agree with known vectors and with botocore."""

from __future__ import annotations

import base64
import hashlib

import pytest
from botocore.httpchecksum import Crc32Checksum, Sha1Checksum, Sha256Checksum

from s3sidecar import checksums, errors

CHECK = b"123456789"
# 64 KiB deterministic buffer; CRC values cross-checked against awscrt.
BLOB = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(2048))


@pytest.mark.parametrize(
    "algorithm, digest_hex",
    [
        ("crc32", "cbf43926"),
        ("crc32c", "e3069283"),
        ("crc64nvme", "ae8b14860a799888"),
        ("sha1", "f7c3bc1d808e04732adf679965ccc34ca7ae3441"),
        ("sha256", "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225"),
    ],
)
def test_check_values_incrementally(algorithm, digest_hex):
    checksum = checksums.make_checksum(algorithm.upper())
    for byte in CHECK:
        checksum.update(bytes([byte]))
    assert checksum.digest().hex() == digest_hex
    assert checksum.b64digest() == base64.b64encode(bytes.fromhex(digest_hex)).decode()
    checksum.verify(checksum.b64digest())


def test_pure_python_fallbacks_match_vectors():
    assert checksums.crc32c_pure(CHECK) == 0xE3069283
    assert checksums.crc64nvme_pure(CHECK) == 0xAE8B14860A799888
    assert checksums.crc32c_pure(BLOB) == 0x37382887
    assert checksums.crc64nvme_pure(BLOB) == 0xE1D024EDED810CFA
    assert checksums.crc64nvme_pure(BLOB[777:], checksums.crc64nvme_pure(BLOB[:777])) == 0xE1D024EDED810CFA
    assert checksums.crc64nvme_pure(b"") == 0


def test_active_backends_match_vectors():
    for algorithm, value, size in (("crc32c", 0x37382887, 4), ("crc64nvme", 0xE1D024EDED810CFA, 8)):
        checksum = checksums.make_checksum(algorithm)
        checksum.update(BLOB[:1000])
        checksum.update(BLOB[1000:])
        assert checksum.digest() == value.to_bytes(size, "big"), checksums.BACKENDS[algorithm]


@pytest.mark.parametrize("ours, theirs", [("crc32", Crc32Checksum), ("sha1", Sha1Checksum), ("sha256", Sha256Checksum)])
def test_agrees_with_botocore(ours, theirs):
    a, b = checksums.make_checksum(ours), theirs()
    for start in range(0, len(BLOB), 5000):
        a.update(BLOB[start : start + 5000])
        b.update(BLOB[start : start + 5000])
    assert a.b64digest() == b.b64digest()


def test_verify_errors():
    checksum = checksums.make_checksum("x-amz-checksum-crc32")
    checksum.update(b"hello")
    with pytest.raises(errors.BadDigest):
        checksum.verify("AAAAAA==")
    for malformed in ("", "not base64!", "AAAA", "AAAAAAAAAAA=", "ü"):
        with pytest.raises(errors.InvalidRequest):
            checksums.verify(checksum, malformed)


def test_names():
    assert checksums.header_name("CRC64NVME") == "x-amz-checksum-crc64nvme"
    assert checksums.normalize_algorithm("x-amz-checksum-sha256") == "sha256"
    with pytest.raises(errors.InvalidRequest):
        checksums.make_checksum("md5")
