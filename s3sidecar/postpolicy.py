"""Browser POST uploads: the multipart/form-data body and the SigV4-signed POST policy.

Guarantees:

* :func:`read_form` reads the form from the request body as it streams:
  fields before the ``file`` field are kept (each at most
  ``MAX_FIELD_BYTES``, all together ``MAX_FIELDS_BYTES``), the file goes to
  a spooled temporary file (bounded by the caller's limit); anything after
  the file is drained and ignored, as S3 does.
* :func:`check_policy` accepts a form only if its ``policy`` is signed by a
  known key (``x-amz-signature`` = HMAC-SHA256 of the base64 policy under
  the SigV4 signing key of ``x-amz-credential``'s scope), has not expired,
  every condition holds, and every form field (but ``file``, ``policy``,
  the signature's fields and ``x-ignore-*``) is named by a condition. Any
  failure is AccessDenied (403), as in S3; a file outside
  ``content-length-range`` is EntityTooSmall / EntityTooLarge.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import re
import tempfile
from dataclasses import dataclass, field
from typing import IO, Any

from . import errors as S3
from .bodies import BodySource
from .sigv4 import derive_signing_key

MAX_FIELD_BYTES = 20 * 1024
MAX_FIELDS_BYTES = 64 * 1024
MAX_PART_HEADER_BYTES = 8 * 1024
SPOOL_IN_MEMORY = 1 << 20
# Fields a policy need not name: the signature and what it is over, and the
# signature's own parameters (SDKs do not list them; S3 does not ask).
_UNCHECKED = ("x-amz-signature", "file", "policy", "x-amz-algorithm", "x-amz-credential", "x-amz-date")


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    file: IO[bytes] | None = None
    filename: str = ""
    size: int = 0


class _Reader:
    """Bytes from the request body with look-ahead, for the form parser."""

    def __init__(self, source: BodySource) -> None:
        self.source = source
        self.buf = b""
        self.ended = False

    async def fill(self) -> bool:
        chunk = await self.source.next()
        if not chunk:
            self.ended = True
            return False
        self.buf += chunk
        return True

    async def until(self, marker: bytes, limit: int) -> bytes:
        """The bytes before ``marker`` (consumed with it); MalformedPOSTRequest past ``limit`` or the end."""
        while True:
            pos = self.buf.find(marker)
            if pos >= 0:
                out, self.buf = self.buf[:pos], self.buf[pos + len(marker) :]
                return out
            if len(self.buf) > limit + len(marker) or not await self.fill():
                raise S3.MalformedPOSTRequest()

    async def stream_until(self, marker: bytes, sink: IO[bytes], limit: int) -> int:
        """Copy the bytes before ``marker`` to ``sink``; returns how many. EntityTooLarge past ``limit``."""
        written = 0
        while True:
            pos = self.buf.find(marker)
            if pos >= 0:
                sink.write(self.buf[:pos])
                self.buf = self.buf[pos + len(marker) :]
                return written + pos
            keep = len(marker) - 1
            if len(self.buf) > keep:
                out, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep :]
                sink.write(out)
                written += len(out)
                if written > limit:
                    raise S3.EntityTooLarge(MaxSizeAllowed=limit)
            if not await self.fill():
                raise S3.MalformedPOSTRequest()


def _boundary(content_type: str) -> bytes:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise S3.MalformedPOSTRequest("The body of your POST request is not well-formed multipart/form-data.")
    m = re.search(r'boundary="?([^";]+)"?', params)
    if not m:
        raise S3.MalformedPOSTRequest("The body of your POST request is not well-formed multipart/form-data.")
    return m.group(1).encode("latin-1")


def _disposition(headers: bytes) -> tuple[str, str | None]:
    for line in headers.decode("utf-8", "replace").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-disposition":
            field_name = re.search(r'\bname="([^"]*)"', value)
            filename = re.search(r'\bfilename="([^"]*)"', value)
            if field_name:
                return field_name.group(1), filename.group(1) if filename else None
    raise S3.MalformedPOSTRequest()


async def read_form(source: BodySource, content_type: str, max_file: int) -> Form:
    """The form's fields and its file (spooled); see the module's guarantees."""
    boundary = _boundary(content_type)
    reader = _Reader(source)
    form = Form()
    await reader.until(b"--" + boundary + b"\r\n", MAX_PART_HEADER_BYTES)
    delimiter = b"\r\n--" + boundary
    total = 0
    while True:
        part_headers = await reader.until(b"\r\n\r\n", MAX_PART_HEADER_BYTES)
        name, filename = _disposition(part_headers)
        if name.lower() == "file":
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
            try:
                form.size = await reader.stream_until(delimiter, spool, max_file)
            except BaseException:
                spool.close()
                raise
            spool.seek(0)
            form.file, form.filename = spool, filename or ""
            while not reader.ended:  # fields after the file are ignored
                reader.buf = b""
                await reader.fill()
            return form
        value = await reader.until(delimiter, MAX_FIELD_BYTES)
        total += len(value)
        if total > MAX_FIELDS_BYTES:
            raise S3.MaxPostPreDataLengthExceededError()
        form.fields[name.lower()] = value.decode("utf-8", "replace")
        if await reader.until(b"\r\n", 2) == b"--":  # the closing delimiter: no file came
            raise S3.InvalidArgument("POST requires exactly one file upload per request.", ArgumentName="file")


def _denied(message: str) -> S3.AccessDenied:
    return S3.AccessDenied(f"Invalid according to Policy: {message}")


def verify_signature(fields: dict[str, str], secret_of: Any, region: str) -> str:
    """The access key whose secret signed the policy; AccessDenied otherwise."""
    if fields.get("x-amz-algorithm") != "AWS4-HMAC-SHA256":
        raise S3.AccessDenied("Only AWS4-HMAC-SHA256 signed POST policies are accepted")
    credential = fields.get("x-amz-credential", "").split("/")
    if len(credential) != 5 or credential[3:] != ["s3", "aws4_request"]:
        raise S3.InvalidArgument("The credential is malformed", ArgumentName="x-amz-credential")
    access_key, date, scope_region = credential[0], credential[1], credential[2]
    if scope_region != region:
        raise S3.AuthorizationHeaderMalformed(f"the region '{scope_region}' is wrong; expecting '{region}'")
    if not fields.get("x-amz-date", "").startswith(date):
        raise S3.AccessDenied("x-amz-date does not match the credential's date")
    secret = secret_of(access_key)
    if secret is None:
        raise S3.InvalidAccessKeyId()
    expected = hmac.new(derive_signing_key(secret, date, region), fields["policy"].encode("ascii"), "sha256").hexdigest()
    if not hmac.compare_digest(expected, fields.get("x-amz-signature", "")):
        raise S3.SignatureDoesNotMatch()
    return access_key


def _value(fields: dict[str, str], bucket: str, name: str) -> str | None:
    return bucket if name == "bucket" else fields.get(name)


def check_policy(fields: dict[str, str], bucket: str, size: int, now: float) -> None:
    """Expiry, every condition, and that every field is named by one (see the module's guarantees)."""
    try:
        policy = json.loads(base64.b64decode(fields["policy"], validate=True))
        expiration = dt.datetime.fromisoformat(policy["expiration"])
        if expiration.tzinfo is None:
            raise ValueError("expiration without a time zone")
        conditions = policy["conditions"]
        if not isinstance(conditions, list):
            raise ValueError("conditions")
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
        raise S3.InvalidPolicyDocument() from None
    if expiration.timestamp() < now:
        raise _denied("Policy expired.")
    named = set()
    for condition in conditions:
        if isinstance(condition, dict) and len(condition) == 1:
            ((name, expected),) = condition.items()
            op, name = "eq", "$" + name
        elif isinstance(condition, list) and len(condition) == 3:
            op, name, expected = condition
            op = str(op).lower()
        else:
            raise S3.InvalidPolicyDocument("Invalid Policy: Invalid Condition.")
        if op == "content-length-range":
            low, high = int(name), int(expected)
            if size < low:
                raise S3.EntityTooSmall("Your proposed upload is smaller than the minimum allowed size")
            if size > high:
                raise S3.EntityTooLarge("Your proposed upload exceeds the maximum allowed size")
            continue
        if not isinstance(name, str) or not name.startswith("$"):
            raise S3.InvalidPolicyDocument("Invalid Policy: Invalid Condition.")
        field_name = name[1:].lower()
        named.add(field_name)
        actual = _value(fields, bucket, field_name)
        if op == "eq":
            ok = actual == str(expected)
        elif op == "starts-with":
            ok = actual is not None and all(v.strip().startswith(str(expected)) for v in actual.split(","))
        else:
            raise S3.InvalidPolicyDocument("Invalid Policy: Invalid Condition.")
        if not ok:
            raise _denied(f'Policy Condition failed: ["{op}", "{name}", "{expected}"]')
    for name in fields:
        if name not in _UNCHECKED and not name.startswith("x-ignore-") and name not in named:
            raise _denied(f"Extra input fields: {name}")
