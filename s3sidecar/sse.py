"""Server-side encryption as S3 clients speak it: request headers, response headers, bucket default encryption.

Guarantee: no SSE header is ever ignored. A request asking for SSE-S3
(``AES256``), SSE-KMS (``aws:kms``, local keys named in
``x-amz-server-side-encryption-aws-kms-key-id``) or SSE-C (the
``x-amz-server-side-encryption-customer-*`` triple) gets it, carried out by
the engine (:mod:`objfs.store.crypto`); anything else (DSSE-KMS, an
encryption context, S3 bucket keys, another algorithm, a malformed or
mismatched customer key) is refused with S3's error before any byte is
stored. Every response about an encrypted object (PUT, GET, HEAD, copy,
multipart) carries its SSE headers back. The encryption itself, the bucket
default and the key checks live in the engine; this module only translates.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from objfs.store import Encryption, Store

from . import errors as S3
from .context import S3Request, empty_response, xml_response
from .xmlio import _root, build, find_all, find_text

SSE = "x-amz-server-side-encryption"
KMS_KEY_ID = "x-amz-server-side-encryption-aws-kms-key-id"
CONTEXT = "x-amz-server-side-encryption-context"
BUCKET_KEY = "x-amz-server-side-encryption-bucket-key-enabled"
CUSTOMER = "x-amz-server-side-encryption-customer-"
COPY_CUSTOMER = "x-amz-copy-source-server-side-encryption-customer-"
ALGORITHMS = {"AES256": "S3", "aws:kms": "KMS"}


def _kms_name(key_id: str) -> str:
    """The local key name of a key id (an ARN's ``key/NAME`` part, or the name itself)."""
    if key_id.startswith("arn:") and ":key/" in key_id:
        return key_id.split(":key/", 1)[1]
    return key_id


def _customer_key(headers: Mapping[str, str], prefix: str) -> bytes | None:
    """The SSE-C key of the triple ``prefix`` + algorithm/key/key-MD5, checked as S3 checks it; None if absent."""
    algorithm, key, md5 = (headers.get(prefix + part) for part in ("algorithm", "key", "key-md5"))
    if algorithm is None and key is None and md5 is None:
        return None
    if algorithm is None:
        raise S3.InvalidArgument(
            "Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm.",
            ArgumentName=prefix + "algorithm",
        )
    if algorithm != "AES256":
        raise S3.InvalidEncryptionAlgorithmError(ArgumentName=prefix + "algorithm", ArgumentValue=algorithm)
    if key is None:
        raise S3.InvalidArgument(
            "Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key.",
            ArgumentName=prefix + "key",
        )
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise S3.InvalidArgument("The secret key was invalid for the specified algorithm.", ArgumentName=prefix + "key")
    if md5 is None:
        raise S3.InvalidArgument(
            "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated "
            "MD5 of the secret key.",
            ArgumentName=prefix + "key-MD5",
        )
    if md5 != key_md5(raw):
        raise S3.InvalidArgument(
            "The calculated MD5 hash of the key did not match the hash that was provided.", ArgumentName=prefix + "key-MD5"
        )
    return raw


def key_md5(raw: bytes) -> str:
    return base64.b64encode(hashlib.md5(raw).digest()).decode("ascii")


def write_encryption(headers: Mapping[str, str]) -> Encryption | None:
    """What a PUT, copy or CreateMultipartUpload asks for (None: the bucket's default applies)."""
    algorithm = headers.get(SSE)
    customer = _customer_key(headers, CUSTOMER)
    if headers.get(CONTEXT) is not None:
        raise S3.S3NotImplemented("SSE-KMS encryption contexts are not implemented by objfs")
    if (headers.get(BUCKET_KEY) or "false").lower() != "false":
        raise S3.S3NotImplemented("S3 Bucket Keys are not implemented by objfs")
    if customer is not None:
        if algorithm is not None:
            raise S3.InvalidArgument(
                "Server Side Encryption with Customer provided key is incompatible with the encryption method specified",
                ArgumentName=SSE,
                ArgumentValue=algorithm,
            )
        return Encryption("C", customer_key=customer)
    key_id = headers.get(KMS_KEY_ID)
    if algorithm is None:
        if key_id is not None:
            raise S3.InvalidArgument(
                "Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms",
                ArgumentName=SSE,
            )
        return None
    if algorithm == "aws:kms:dsse":
        raise S3.S3NotImplemented("Dual-layer SSE-KMS (aws:kms:dsse) is not implemented by objfs")
    mode = ALGORITHMS.get(algorithm)
    if mode is None:
        raise S3.InvalidArgument("The encryption method specified is not supported", ArgumentName=SSE, ArgumentValue=algorithm)
    if mode == "S3" and key_id is not None:
        raise S3.InvalidArgument(
            "Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms",
            ArgumentName=SSE,
            ArgumentValue=algorithm,
        )
    return Encryption(mode, kms_key=_kms_name(key_id) if key_id else None)


def read_customer_key(headers: Mapping[str, str]) -> bytes | None:
    """The SSE-C key a GET, HEAD or UploadPart gives; the other SSE headers do not belong on those requests."""
    if headers.get(SSE) is not None or headers.get(KMS_KEY_ID) is not None:
        raise S3.InvalidArgument("x-amz-server-side-encryption header is not supported for this operation.", ArgumentName=SSE)
    return _customer_key(headers, CUSTOMER)


def copy_source_customer_key(headers: Mapping[str, str]) -> bytes | None:
    """The SSE-C key of a copy's source (``x-amz-copy-source-server-side-encryption-customer-*``)."""
    return _customer_key(headers, COPY_CUSTOMER)


def refuse_needless_key(record: dict[str, Any], customer_key: bytes | None) -> None:
    """S3 refuses SSE-C headers for an object that is not encrypted with SSE-C."""
    if customer_key is not None and (record.get("sse") or {}).get("mode") != "C":
        raise S3.InvalidRequest("The encryption parameters are not applicable to this object.")


def response_headers(sse: dict[str, Any] | None, customer_key: bytes | None = None) -> dict[str, str]:
    """The SSE headers S3 returns for an object (or upload) encrypted as ``sse`` (a record's field)."""
    if not sse:
        return {}
    mode = sse["mode"]
    if mode == "S3":
        return {SSE: "AES256"}
    if mode == "KMS":
        return {SSE: "aws:kms", KMS_KEY_ID: sse["kms_key"]}
    out = {CUSTOMER + "algorithm": "AES256"}
    if customer_key is not None:
        out[CUSTOMER + "key-MD5"] = key_md5(customer_key)
    return out


# -- bucket default encryption (?encryption) ----------------------------------------


def _parse_configuration(body: bytes) -> dict[str, Any]:
    root = _root(body, "ServerSideEncryptionConfiguration")
    rules = find_all(root, "Rule")
    if len(rules) != 1:
        raise S3.MalformedXML()
    rule = rules[0]
    if (find_text(rule, "BucketKeyEnabled", "false", strip=True) or "").lower() != "false":
        raise S3.S3NotImplemented("S3 Bucket Keys are not implemented by objfs")
    algorithm = find_text(rule, "ApplyServerSideEncryptionByDefault/SSEAlgorithm", strip=True)
    key_id = find_text(rule, "ApplyServerSideEncryptionByDefault/KMSMasterKeyID", strip=True)
    if algorithm is None:
        raise S3.MalformedXML()
    if algorithm == "aws:kms:dsse":
        raise S3.S3NotImplemented("Dual-layer SSE-KMS (aws:kms:dsse) is not implemented by objfs")
    mode = ALGORITHMS.get(algorithm)
    if mode is None:
        raise S3.MalformedXML()
    if key_id and mode != "KMS":
        raise S3.InvalidArgument("a KMSMasterKeyID is only allowed with aws:kms", ArgumentName="KMSMasterKeyID")
    return {"mode": mode, **({"kms_key": _kms_name(key_id)} if key_id else {})}


async def get_bucket_encryption(req: S3Request) -> Response:
    settings = await req.engine.run(req.store.head_bucket, req.bucket)
    default = settings.get("encryption")
    if not default:
        raise S3.ServerSideEncryptionConfigurationNotFoundError(BucketName=req.bucket)
    apply: dict[str, Any] = {"SSEAlgorithm": "AES256" if default["mode"] == "S3" else "aws:kms"}
    if default.get("kms_key"):
        apply["KMSMasterKeyID"] = default["kms_key"]
    rule = {"ApplyServerSideEncryptionByDefault": apply, "BucketKeyEnabled": False}
    return xml_response(build("ServerSideEncryptionConfiguration", {"Rule": rule}))


async def put_bucket_encryption(req: S3Request) -> Response:
    default = _parse_configuration(await req.small_body())
    store: Store = req.store
    await req.engine.run(lambda: store.update_bucket(req.bucket, encryption=default, principal=req.principal))
    return empty_response(200)


async def delete_bucket_encryption(req: S3Request) -> Response:
    store: Store = req.store
    await req.engine.run(lambda: store.update_bucket(req.bucket, encryption=None, principal=req.principal))
    return empty_response(204)
