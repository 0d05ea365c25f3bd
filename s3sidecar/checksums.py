"""Incremental S3 additional checksums (``x-amz-checksum-*``).

Supported algorithms: ``crc32``, ``crc32c``, ``crc64nvme``, ``sha1``,
``sha256``. Values are exchanged as AWS sends them: base64 of the big-endian
digest.

Guarantees:

* Every algorithm is always available and always correct: accelerated
  backends are used when importable (``crc32c`` or ``google-crc32c`` for
  CRC32C, ``awscrt`` for both CRCs), otherwise a pure-Python table-driven
  implementation is used. The pure CRC64/NVME and CRC32C paths are slow
  (a few MB/s); ``BACKENDS`` says which one is active.
* ``verify`` raises ``InvalidRequest`` for a value that is not a well-formed
  base64 digest of the right length, and ``BadDigest`` for a mismatch - the
  codes AWS returns in those two cases.
* Unknown algorithm names raise ``InvalidRequest`` (as AWS does for a bad
  ``x-amz-checksum-algorithm`` / ``x-amz-sdk-checksum-algorithm``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import zlib
from collections.abc import Callable
from typing import Protocol

from s3sidecar.errors import BadDigest, InvalidRequest

__all__ = [
    "ALGORITHMS",
    "BACKENDS",
    "Checksum",
    "make_checksum",
    "normalize_algorithm",
    "header_name",
    "verify",
    "crc32c_pure",
    "crc64nvme_pure",
    "composite",
    "full_object",
    "FULL_OBJECT_ALGORITHMS",
]

ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
_DIGEST_SIZE = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}
_PURE_BLOCK = 16 * 1024


def _reflected_table(poly: int, width: int) -> list[int]:
    mask = (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc & mask)
    return table


# Reflected polynomials: CRC-32C (Castagnoli) and CRC-64/NVME.
_POLYNOMIALS = {"crc32": (0xEDB88320, 32), "crc32c": (0x82F63B78, 32), "crc64nvme": (0x9A6C9329AC4BC9B5, 64)}
#: Algorithms whose whole-object value can be derived from the parts' values (CRCs combine).
FULL_OBJECT_ALGORITHMS = tuple(_POLYNOMIALS)
_CRC32C_TABLE = _reflected_table(0x82F63B78, 32)
_CRC64NVME_TABLE = _reflected_table(0x9A6C9329AC4BC9B5, 64)
_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF


def _pure_update(table: list[int], mask: int, data: bytes, value: int) -> int:
    crc = value ^ mask
    view = memoryview(data)
    # Work in slices so a huge buffer never becomes one giant bytes copy.
    for start in range(0, len(view), _PURE_BLOCK):
        for byte in bytes(view[start : start + _PURE_BLOCK]):
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ mask


def crc32c_pure(data: bytes, value: int = 0) -> int:
    """CRC-32C of ``data`` continuing from ``value`` (pure Python)."""
    return _pure_update(_CRC32C_TABLE, _M32, data, value)


def crc64nvme_pure(data: bytes, value: int = 0) -> int:
    """CRC-64/NVME of ``data`` continuing from ``value`` (pure Python)."""
    return _pure_update(_CRC64NVME_TABLE, _M64, data, value)


def _pick_crc32c() -> tuple[str, Callable[[bytes, int], int]]:
    try:
        import crc32c as _crc32c_mod  # ICRAR "crc32c": hardware where possible

        return "crc32c", lambda data, value: _crc32c_mod.crc32c(data, value)
    except ImportError:
        pass
    try:
        import google_crc32c  # type: ignore[import-not-found]

        return "google-crc32c", lambda data, value: google_crc32c.extend(value, bytes(data))
    except ImportError:
        pass
    try:
        from awscrt import checksums as _crt  # type: ignore[import-not-found]

        return "awscrt", lambda data, value: _crt.crc32c(data, value)
    except ImportError:
        pass
    return "pure-python", crc32c_pure


def _pick_crc64nvme() -> tuple[str, Callable[[bytes, int], int]]:
    try:
        from awscrt import checksums as _crt  # type: ignore[import-not-found]

        return "awscrt", lambda data, value: _crt.crc64nvme(data, value)
    except ImportError:
        return "pure-python", crc64nvme_pure


_CRC32C_BACKEND, _crc32c = _pick_crc32c()
_CRC64_BACKEND, _crc64nvme = _pick_crc64nvme()

#: Which implementation each algorithm uses in this process.
BACKENDS = {
    "crc32": "zlib",
    "crc32c": _CRC32C_BACKEND,
    "crc64nvme": _CRC64_BACKEND,
    "sha1": "hashlib",
    "sha256": "hashlib",
}


class Checksum(Protocol):
    """What every checksum object offers."""

    algorithm: str

    def update(self, data: bytes) -> None: ...

    def digest(self) -> bytes: ...

    def b64digest(self) -> str: ...

    def verify(self, expected_b64: str) -> None: ...


class _Base:
    algorithm = ""

    def digest(self) -> bytes:
        raise NotImplementedError

    def b64digest(self) -> str:
        """Base64 of the big-endian digest, as in ``x-amz-checksum-*``."""
        return base64.b64encode(self.digest()).decode("ascii")

    def verify(self, expected_b64: str) -> None:
        """Raise ``InvalidRequest`` if malformed, ``BadDigest`` if different."""
        verify(self, expected_b64)


class _Crc(_Base):
    def __init__(self, algorithm: str, fn: Callable[[bytes, int], int], size: int) -> None:
        self.algorithm = algorithm
        self._fn = fn
        self._size = size
        self._value = 0

    def update(self, data: bytes) -> None:
        if data:
            self._value = self._fn(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._size, "big")


class _Hash(_Base):
    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self._hash = hashlib.new(algorithm)

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()


def normalize_algorithm(name: str) -> str:
    """Map ``CRC32``, ``crc32`` or ``x-amz-checksum-crc32`` to ``crc32``.

    Raises ``InvalidRequest`` for anything not in ``ALGORITHMS``.
    """
    alg = name.strip().lower()
    if alg.startswith("x-amz-checksum-"):
        alg = alg[len("x-amz-checksum-") :]
    if alg not in ALGORITHMS:
        raise InvalidRequest(f"Value for x-amz-checksum-algorithm header is invalid: {name!r}")
    return alg


def header_name(algorithm: str) -> str:
    """``crc32`` -> ``x-amz-checksum-crc32``."""
    return "x-amz-checksum-" + normalize_algorithm(algorithm)


def make_checksum(algorithm: str) -> Checksum:
    """Fresh incremental checksum for ``algorithm`` (any accepted spelling)."""
    alg = normalize_algorithm(algorithm)
    if alg == "crc32":
        return _Crc(alg, lambda data, value: zlib.crc32(data, value), 4)
    if alg == "crc32c":
        return _Crc(alg, _crc32c, 4)
    if alg == "crc64nvme":
        return _Crc(alg, _crc64nvme, 8)
    return _Hash(alg)


def verify(checksum: Checksum, expected_b64: str) -> None:
    """Compare ``checksum`` with the client's base64 value.

    Raises ``InvalidRequest`` ("Value for x-amz-checksum-X header is invalid.")
    when ``expected_b64`` is not base64 of exactly the digest size, and
    ``BadDigest`` ("The X you specified did not match the calculated
    checksum.") when it decodes but differs.
    """
    alg = checksum.algorithm
    try:
        expected = base64.b64decode(expected_b64.strip(), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        expected = b""
    if len(expected) != _DIGEST_SIZE[alg]:
        raise InvalidRequest(f"Value for x-amz-checksum-{alg} header is invalid.")
    if not hmac.compare_digest(expected, checksum.digest()):
        raise BadDigest(f"The {alg.upper()} you specified did not match the calculated checksum.")


def _gf2_times(matrix: list[int], vector: int) -> int:
    out = 0
    row = 0
    while vector:
        if vector & 1:
            out ^= matrix[row]
        vector >>= 1
        row += 1
    return out


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


def crc_combine(algorithm: str, first: int, second: int, second_length: int) -> int:
    """The CRC of ``A + B`` from ``crc(A)``, ``crc(B)`` and ``len(B)`` (zlib's crc32_combine, any width).

    Holds for the reflected CRCs with all-ones initial value and final xor
    that S3 uses (CRC32, CRC32C, CRC64/NVME): ``crc(A)`` is advanced over
    ``len(B)`` zero bytes by repeated squaring of the one-zero-bit operator.
    """
    poly, width = _POLYNOMIALS[algorithm]
    if second_length == 0:
        return first
    op = [poly] + [1 << n for n in range(width - 1)]  # the operator of one zero bit
    for _ in range(3):
        op = _gf2_square(op)  # ... squared three times: one zero byte
    while second_length:
        if second_length & 1:
            first = _gf2_times(op, first)
        second_length >>= 1
        if second_length:
            op = _gf2_square(op)  # twice as many zero bytes
    return first ^ second


def _decode(algorithm: str, value_b64: str) -> bytes:
    try:
        raw = base64.b64decode(value_b64.strip(), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raw = b""
    if len(raw) != _DIGEST_SIZE[algorithm]:
        raise InvalidRequest(f"Value for x-amz-checksum-{algorithm} header is invalid.")
    return raw


def full_object(algorithm: str, parts: list[tuple[str, int]]) -> str:
    """The whole object's checksum (base64) from its parts' ``(checksum base64, size)``, in order (CRCs only)."""
    alg = normalize_algorithm(algorithm)
    if alg not in _POLYNOMIALS:
        raise InvalidRequest(f"The FULL_OBJECT checksum type cannot be used with the {alg} checksum algorithm.")
    size = _DIGEST_SIZE[alg]
    value = 0
    for index, (part_b64, length) in enumerate(parts):
        crc = int.from_bytes(_decode(alg, part_b64), "big")
        value = crc if index == 0 else crc_combine(alg, value, crc, length)
    return base64.b64encode(value.to_bytes(size, "big")).decode("ascii")


def composite(algorithm: str, parts: list[str]) -> str:
    """S3's composite checksum: the checksum of the parts' raw digests, base64, then ``-N``."""
    alg = normalize_algorithm(algorithm)
    checksum = make_checksum(alg)
    for part_b64 in parts:
        checksum.update(_decode(alg, part_b64))
    return f"{checksum.b64digest()}-{len(parts)}"
