"""Encryption at rest: AES-256-GCM per segment, a random data key per object, keys kept off the drives.

Guarantee: the bytes of an encrypted object never reach a drive in the
clear. A blob is encrypted segment by segment *before* erasure coding, so
healing, scrub and degraded reads work on ciphertext unchanged, and every
segment a reader decodes (from data fragments or rebuilt from parity) is
authenticated by its GCM tag: wrong bytes raise :class:`DataLoss`, never
reach the caller.

* Each object (or multipart upload) has a random 256-bit *data key*. Each
  blob derives its own segment key from it (HKDF-SHA256 over the blob id),
  and segment ``n`` uses the nonce ``n``: blob ids are never reused, so no
  (key, nonce) pair ever repeats, and a copy or a re-upload is a new blob.
* The data key is stored only wrapped (AES-256-GCM key wrap) in the record's
  ``sse`` field, and therefore in the fragment footers and meta files, so
  ``rebuild-index`` restores it. It is wrapped by the store's master key
  (SSE-S3), by a version of a named local KMS key (SSE-KMS), or by the
  customer's own key (SSE-C), which is never stored: the record keeps a
  salted HMAC of it to tell a wrong key from a right one.
* The master key and KMS keys live in the key file named by ``[encryption]
  key_file`` in ``objfs.toml`` (mode 0600, outside the drives; created by
  ``objfs init``). Rotating a KMS key adds a version; old versions still
  unwrap the data keys they wrapped. A store without a key file refuses
  encrypted writes (:class:`EncryptionNotConfigured`).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import (
    DataLoss,
    EncryptionKeyMismatch,
    EncryptionKeyRequired,
    EncryptionNotConfigured,
    InvalidArgument,
    NoSuchEncryptionKey,
)

ALGORITHM = "AES256-GCM"
TAG_BYTES = 16  # GCM tag added to every encrypted segment
KEY_BYTES = 32
MODES = ("S3", "KMS", "C")
DEFAULT_KMS_KEY = "aws/s3"  # used by SSE-KMS requests that name no key, as AWS does
_KMS_NAME = re.compile(r"^[A-Za-z0-9/_.-]{1,128}$")


@dataclass(frozen=True)
class Encryption:
    """What a writer asks for: ``mode`` S3, KMS (with ``kms_key``, or the default) or C (with ``customer_key``)."""

    mode: str
    kms_key: str | None = None
    customer_key: bytes | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidArgument(f"unknown encryption mode {self.mode!r}")
        if self.mode == "C" and (self.customer_key is None or len(self.customer_key) != KEY_BYTES):
            raise InvalidArgument("SSE-C needs a 256-bit customer key")


class SegmentCipher:
    """Seals and opens the segments of one blob (key derived from the data key and the blob id)."""

    def __init__(self, data_key: bytes, blob_id: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"objfs segment " + blob_id.encode()).derive(
            data_key
        )
        self._aead = AESGCM(key)
        self._aad = blob_id.encode()

    def seal(self, segment: int, plain: bytes) -> bytes:
        return self._aead.encrypt(segment.to_bytes(12, "big"), plain, self._aad)

    def open(self, segment: int, sealed: bytes) -> bytes:
        """The plaintext; raises DataLoss when the segment is not exactly what was sealed."""
        try:
            return self._aead.decrypt(segment.to_bytes(12, "big"), bytes(sealed), self._aad)
        except InvalidTag:
            raise DataLoss(f"segment {segment} failed authentication (damaged, or the wrong key)") from None


def _wrap(kek: bytes, data_key: bytes, context: bytes) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(kek).encrypt(nonce, data_key, context)


def _unwrap(kek: bytes, wrapped: bytes, context: bytes) -> bytes | None:
    try:
        return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], context)
    except (InvalidTag, ValueError):
        return None


def customer_key_check(salt: bytes, customer_key: bytes) -> bytes:
    """The salted HMAC a record keeps to recognise the customer's key (never the key itself)."""
    return hmac.new(salt, b"objfs sse-c " + customer_key, hashlib.sha256).digest()


def new_key_file(path: Path) -> None:
    """Create the key file with a fresh master key (0600); refuses to overwrite one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = {"format": 1, "master": _b64(secrets.token_bytes(KEY_BYTES)), "kms": {}}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class KeyService:
    """The store's key file: wraps and unwraps data keys, manages the local KMS keys. Thread- and process-safe."""

    def __init__(self, key_file: Path | None) -> None:
        self.path = key_file
        self._cache: tuple[float, int, dict[str, Any]] | None = None

    @property
    def configured(self) -> bool:
        return self.path is not None and self.path.exists()

    def _load(self) -> dict[str, Any]:
        if self.path is None:
            raise EncryptionNotConfigured(
                "this store has no key file ([encryption] key_file in objfs.toml): encryption at rest is unavailable"
            )
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise EncryptionNotConfigured(f"the store's key file {self.path} is missing: encryption is unavailable") from None
        if self._cache is not None and self._cache[:2] == (st.st_mtime, st.st_size):
            return self._cache[2]
        if st.st_mode & 0o077:
            raise EncryptionNotConfigured(f"the key file {self.path} is readable by others; chmod 600 it")
        data = json.loads(self.path.read_text())
        self._cache = (st.st_mtime, st.st_size, data)
        return data

    def _update(self, change) -> Any:
        """Apply ``change(data)`` to the key file under an exclusive lock (atomic replace)."""
        self._load()
        assert self.path is not None
        lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(lock_fd, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._cache = None
            data = json.loads(self.path.read_text())
            result = change(data)
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path)
            dirfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
            self._cache = None
            return result

    # -- local KMS -------------------------------------------------------------

    def kms_create(self, name: str) -> dict[str, Any]:
        """Create the KMS key ``name`` (version 1); raises InvalidArgument if it exists."""
        if not _KMS_NAME.match(name):
            raise InvalidArgument(f"bad KMS key name {name!r}: letters, digits and / _ . - only")

        def change(data: dict[str, Any]) -> dict[str, Any]:
            if name in data["kms"]:
                raise InvalidArgument(f"KMS key {name!r} exists already")
            data["kms"][name] = {"versions": [{"key": _b64(secrets.token_bytes(KEY_BYTES)), "created": time.time()}]}
            return {"name": name, "version": 1}

        return self._update(change)

    def kms_rotate(self, name: str) -> dict[str, Any]:
        """Add a new version of ``name``: new data keys are wrapped by it; older versions still unwrap."""

        def change(data: dict[str, Any]) -> dict[str, Any]:
            if name not in data["kms"]:
                raise NoSuchEncryptionKey(f"no KMS key named {name!r}")
            versions = data["kms"][name]["versions"]
            versions.append({"key": _b64(secrets.token_bytes(KEY_BYTES)), "created": time.time()})
            return {"name": name, "version": len(versions)}

        return self._update(change)

    def kms_list(self) -> list[dict[str, Any]]:
        keys = self._load()["kms"]
        return [
            {"name": name, "versions": len(entry["versions"]), "created": entry["versions"][0]["created"]}
            for name, entry in sorted(keys.items())
        ]

    def kms_exists(self, name: str) -> bool:
        return name in self._load()["kms"]

    def _kms_key(self, name: str, version: int | None) -> tuple[bytes, int]:
        entry = self._load()["kms"].get(name)
        if entry is None and name == DEFAULT_KMS_KEY and version is None:
            try:
                self.kms_create(name)
            except InvalidArgument:
                pass  # created meanwhile by another process
            entry = self._load()["kms"].get(name)
        if entry is None:
            raise NoSuchEncryptionKey(f"no KMS key named {name!r}")
        versions = entry["versions"]
        number = len(versions) if version is None else version
        if not 1 <= number <= len(versions):
            raise NoSuchEncryptionKey(f"KMS key {name!r} has no version {number}")
        return base64.b64decode(versions[number - 1]["key"]), number

    # -- data keys ---------------------------------------------------------------

    def new_data_key(self, enc: Encryption) -> tuple[dict[str, Any], bytes]:
        """A fresh data key and the record field describing it (wrapped)."""
        data_key = secrets.token_bytes(KEY_BYTES)
        sse: dict[str, Any] = {"mode": enc.mode, "alg": ALGORITHM}
        if enc.mode == "S3":
            sse["wrapped"] = _wrap(self._master(), data_key, b"S3")
        elif enc.mode == "KMS":
            name = enc.kms_key or DEFAULT_KMS_KEY
            kek, version = self._kms_key(name, None)
            sse.update(kms_key=name, kms_version=version)
            sse["wrapped"] = _wrap(kek, data_key, f"KMS {name} {version}".encode())
        else:
            assert enc.customer_key is not None
            salt = secrets.token_bytes(16)
            sse.update(salt=salt, check=customer_key_check(salt, enc.customer_key))
            sse["wrapped"] = _wrap(enc.customer_key, data_key, b"C")
        return sse, data_key

    def _master(self) -> bytes:
        return base64.b64decode(self._load()["master"])

    def data_key(self, sse: dict[str, Any], customer_key: bytes | None = None) -> bytes:
        """Unwrap the data key of a record's ``sse`` field.

        SSE-C: raises EncryptionKeyRequired without ``customer_key`` and
        EncryptionKeyMismatch with the wrong one.
        """
        mode = sse["mode"]
        if mode == "C":
            verify_customer_key(sse, customer_key)
            assert customer_key is not None
            kek, context = customer_key, b"C"
        elif mode == "S3":
            kek, context = self._master(), b"S3"
        elif mode == "KMS":
            kek, _ = self._kms_key(sse["kms_key"], sse["kms_version"])
            context = f"KMS {sse['kms_key']} {sse['kms_version']}".encode()
        else:
            raise DataLoss(f"unknown encryption mode {mode!r} in a record")
        data_key = _unwrap(kek, sse["wrapped"], context)
        if data_key is None:
            raise DataLoss("the object's data key does not unwrap with the store's keys")
        return data_key


def verify_customer_key(sse: dict[str, Any] | None, customer_key: bytes | None) -> None:
    """Refuse access to an SSE-C record without its customer key (or with another key).

    Objects not encrypted with SSE-C pass whatever is given (S3 refuses SSE-C
    headers on them; the fronts decide that).
    """
    if not sse or sse.get("mode") != "C":
        return
    if customer_key is None:
        raise EncryptionKeyRequired("the object is encrypted with a customer key (SSE-C); that key is needed to read it")
    if not hmac.compare_digest(customer_key_check(sse["salt"], customer_key), sse["check"]):
        raise EncryptionKeyMismatch("the customer key given is not the key the object was encrypted with")


def describe(sse: dict[str, Any] | None) -> dict[str, Any]:
    """What a front may tell about a record's encryption: mode and key id, never key material."""
    if not sse:
        return {}
    out: dict[str, Any] = {"mode": sse["mode"]}
    if sse["mode"] == "KMS":
        out["kms_key"] = sse["kms_key"]
    return out


def bucket_default(settings: dict[str, Any]) -> Encryption | None:
    """The encryption a bucket's default setting asks for (None: not encrypted by default)."""
    default = settings.get("encryption")
    if not default:
        return None
    return Encryption(default["mode"], kms_key=default.get("kms_key"))


def check_bucket_default(keys: KeyService, default: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate a bucket's default encryption (``{"mode": "S3"|"KMS", "kms_key"?}``) before it is stored."""
    if default is None:
        return None
    mode = default.get("mode")
    if mode not in ("S3", "KMS") or set(default) - {"mode", "kms_key"}:
        raise InvalidArgument("a bucket's default encryption is SSE-S3 or SSE-KMS")
    keys._load()  # a store without a key file refuses now, not at the first write
    if mode == "KMS" and default.get("kms_key") and not keys.kms_exists(default["kms_key"]):
        raise NoSuchEncryptionKey(f"no KMS key named {default['kms_key']!r}")
    return {"mode": mode, **({"kms_key": default["kms_key"]} if mode == "KMS" and default.get("kms_key") else {})}


def for_write(
    keys: KeyService, settings: dict[str, Any], requested: Encryption | None
) -> tuple[dict[str, Any] | None, bytes | None]:
    """(record ``sse`` field, data key) of a new object: what the writer asked, else the bucket's default."""
    enc = requested if requested is not None else bucket_default(settings)
    if enc is None:
        return None, None
    return keys.new_data_key(enc)


# -- records on the drives ------------------------------------------------------------

#: Fields of an encrypted object's record that say what it holds (its name, the
#: DICOM tags and S3 tags derived from its body, user metadata): on the drives
#: (fragment footers, meta files, tombstones) they are sealed by the store's
#: master key; the index (under STORE, off the drives) keeps them in the clear.
SEALED_FIELDS = ("key", "ctype", "meta", "headers", "tags", "xattrs", "dicom", "upload", "to")
SEALED_UPLOAD = "sealed"  # stands for an upload's sealed description, so readers still see an upload meta


def _is_encrypted(record: dict[str, Any]) -> bool:
    upload = record.get("upload")
    return bool(record.get("sse")) or (isinstance(upload, dict) and bool(upload.get("sse")))


def _record_aead(keys: KeyService) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"objfs record seal").derive(keys._master())
    return AESGCM(key)


def seal_record(keys: KeyService, record: dict[str, Any], *, like: dict[str, Any] | None = None) -> dict[str, Any]:
    """The form of a record that goes to the drives: for an encrypted object (or ``like`` one), its describing fields sealed.

    Everything rebuild-index, scrub and the collector decide on (id, bucket,
    version, seq, gen, deleted, parts, retention) stays readable.
    """
    if not _is_encrypted(like if like is not None else record):
        return record
    hidden = {f: record[f] for f in SEALED_FIELDS if f in record}
    out = {k: v for k, v in record.items() if k not in SEALED_FIELDS}
    if "sse" not in out and like is not None:
        out["sse"] = {"mode": like["sse"]["mode"] if like.get("sse") else "S3", "alg": ALGORITHM}
    nonce = secrets.token_bytes(12)
    out["sealed"] = nonce + _record_aead(keys).encrypt(nonce, msgpack.packb(hidden, use_bin_type=True), record["id"].encode())
    if "upload" in hidden:
        out["upload"] = SEALED_UPLOAD
    return out


def unseal_record(keys: KeyService, record: dict[str, Any]) -> dict[str, Any]:
    """A record read from the drives, with its sealed fields restored (needs the key file)."""
    sealed = record.get("sealed")
    if sealed is None:
        return record
    try:
        raw = _record_aead(keys).decrypt(sealed[:12], sealed[12:], record["id"].encode())
    except InvalidTag:
        raise DataLoss(f"the sealed record of {record['id']} does not open with the store's master key") from None
    out = {k: v for k, v in record.items() if k != "sealed"}
    out.update(msgpack.unpackb(raw, raw=False))
    return out
