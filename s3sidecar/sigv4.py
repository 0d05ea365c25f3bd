"""AWS Signature Version 4 verification for S3 (server side).

Covers the ``Authorization`` header, presigned query URLs, and every
``x-amz-content-sha256`` mode S3 accepts with SigV4: a hex SHA-256,
``UNSIGNED-PAYLOAD`` and the three ``STREAMING-*`` aws-chunked modes (decoded
and verified by :class:`ChunkedDecoder`).

Guarantees of :func:`verify_request`:

* It returns only if the signature is valid for the secret returned by
  ``lookup_secret``; signatures are compared with ``hmac.compare_digest``.
* It never trusts the payload: for a hex ``x-amz-content-sha256`` the caller
  must hash the body (:class:`PayloadHasher`) and for ``STREAMING-*`` decode
  it with :class:`ChunkedDecoder`; :attr:`SignedRequest.payload_hash` tells
  which applies.
* Header-auth requests more than 15 minutes from ``now`` fail with
  ``RequestTimeTooSkewed``; presigned URLs fail with ``AccessDenied``
  ("Request has expired") after ``X-Amz-Date + X-Amz-Expires`` (at most
  604800 s) and with ``AccessDenied`` if dated more than 15 minutes ahead.
* Errors are the S3 errors real S3 returns (see the module's raises).

Canonicalisation follows botocore's S3 signer: the path is not normalised
(no ``.``/``..``/``//`` collapsing) and each byte outside ``A-Za-z0-9-_.~/``
is percent-encoded from the *decoded* path; query keys and values are
decoded then re-encoded (``-_.~`` safe) and sorted; header values are
whitespace-trimmed and inner whitespace runs collapsed. Because clients
differ in how they percent-encode what they send, the raw path / raw query
as sent are tried as a second canonical form; both forms denote the same
resource, so this widens no authorisation.

Header values must be given as text decoded from the wire as ISO-8859-1
(``bytes`` pairs, as ASGI provides, are decoded that way here), which is
what botocore signs. The ``host`` header must be signed; for HTTP/2 the
caller maps ``:authority`` to ``host``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote_from_bytes, unquote_to_bytes

# The decoder lives in its own module; re-exported here because callers
# reach it through SignedRequest.chunk_decoder() and this namespace.
from s3sidecar.awschunked import (
    EMPTY_SHA256,
    STREAMING_MODES,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    ChunkedDecoder,
)
from s3sidecar.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidRequest,
    RequestExpired,
    RequestTimeTooSkewed,
    S3NotImplemented,
    SignatureDoesNotMatch,
    XAmzContentSHA256Mismatch,
)

__all__ = [
    "ALGORITHM",
    "UNSIGNED_PAYLOAD",
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "STREAMING_MODES",
    "EMPTY_SHA256",
    "MAX_SKEW_SECONDS",
    "MAX_PRESIGN_EXPIRES",
    "SignedRequest",
    "verify_request",
    "derive_signing_key",
    "PayloadHasher",
    "ChunkedDecoder",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_SKEW_SECONDS = 15 * 60
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_AMZ_DATE_FMT = "%Y%m%dT%H%M%SZ"

Headers = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]


# ---------------------------------------------------------------------------
# Small helpers


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


# Four HMACs per request otherwise; a key signs every request of its day.
@functools.lru_cache(maxsize=1024)
def derive_signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    """SigV4 signing key for ``date`` (``YYYYMMDD``), ``region``, ``service``."""
    k_date = _hmac(("AWS4" + secret).encode("utf-8"), date)
    return _hmac(_hmac(_hmac(k_date, region), service), "aws4_request")


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_CANONICAL_AMZ_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")


def _parse_amz_date(text: str) -> float | None:
    match = _CANONICAL_AMZ_DATE.fullmatch(text)
    if match is not None:  # what every client sends: no strptime (slow) needed
        try:
            return _dt.datetime(*map(int, match.groups()), tzinfo=_dt.UTC).timestamp()
        except ValueError:
            return None
    try:
        when = _dt.datetime.strptime(text, _AMZ_DATE_FMT)
    except ValueError:
        return None
    return when.replace(tzinfo=_dt.UTC).timestamp()


def _parse_http_date(text: str) -> float | None:
    import email.utils

    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.UTC)
    return parsed.timestamp()


def _header_map(headers: Headers) -> dict[str, list[str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    result: dict[str, list[str]] = {}
    for name, value in items:
        # HTTP header bytes are ISO-8859-1 on the wire; botocore signs the
        # same code points, so decoding this way reproduces its canonical form.
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        result.setdefault(name.strip().lower(), []).append(value)
    return result


def _first(hmap: dict[str, list[str]], name: str) -> str | None:
    values = hmap.get(name)
    return values[0] if values else None


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _split_query(query: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for part in query.split(b"&"):
        if part:
            key, _, value = part.partition(b"=")
            pairs.append((key, value))
    return pairs


def _canonical_query(pairs: list[tuple[bytes, bytes]]) -> list[str]:
    """Candidate canonical query strings: re-encoded form first, raw second."""
    encoded = sorted(
        (quote_from_bytes(unquote_to_bytes(k), safe="-_.~"), quote_from_bytes(unquote_to_bytes(v), safe="-_.~")) for k, v in pairs
    )
    first = "&".join(f"{k}={v}" for k, v in encoded)
    raw = "&".join(f"{k}={v}" for k, v in sorted((k.decode("latin-1"), v.decode("latin-1")) for k, v in pairs))
    return [first] if raw == first else [first, raw]


def _canonical_paths(raw_path: bytes) -> list[str]:
    """Candidate canonical URIs: AWS's encoding of the decoded path, then raw."""
    path = raw_path.split(b"?", 1)[0] or b"/"
    first = quote_from_bytes(unquote_to_bytes(path), safe="/~")
    raw = path.decode("latin-1")
    return [first] if raw == first else [first, raw]


def _canonical_header_value(values: list[str]) -> str:
    # Same trimming as botocore: strip and collapse every whitespace run.
    return ",".join(" ".join(v.split()) for v in values)


# ---------------------------------------------------------------------------
# Result and payload helpers


@dataclass(frozen=True)
class SignedRequest:
    """What a successfully verified request proved.

    ``signing_key`` and ``seed_signature`` are what chunk signatures chain
    from; ``content_sha256`` is the client's ``x-amz-content-sha256`` (or
    ``UNSIGNED-PAYLOAD`` for presigned URLs without that header).
    """

    access_key: str
    signing_key: bytes = field(repr=False)
    scope: str
    amz_date: str
    timestamp: float
    region: str
    content_sha256: str
    seed_signature: str
    signed_headers: tuple[str, ...]
    presigned: bool

    @property
    def is_streaming(self) -> bool:
        """True if the body is aws-chunked and must go through :class:`ChunkedDecoder`."""
        return self.content_sha256 in STREAMING_MODES

    @property
    def payload_hash(self) -> str | None:
        """Lower-case hex SHA-256 the body must match, or None if not signed that way."""
        if _HEX64.fullmatch(self.content_sha256):
            return self.content_sha256.lower()
        return None

    def payload_hasher(self) -> PayloadHasher | None:
        """A hasher to feed the body through, or None if no hash is promised."""
        expected = self.payload_hash
        return PayloadHasher(expected) if expected is not None else None

    def chunk_decoder(
        self,
        *,
        expected_trailers: Iterable[str] | None = None,
        decoded_length: int | None = None,
        max_chunk_size: int | None = None,
    ) -> ChunkedDecoder:
        """A :class:`ChunkedDecoder` bound to this request's signing material."""
        if not self.is_streaming:
            raise InvalidRequest("x-amz-content-sha256 does not announce an aws-chunked body")
        kwargs = {} if max_chunk_size is None else {"max_chunk_size": max_chunk_size}
        return ChunkedDecoder(
            self.content_sha256,
            signing_key=self.signing_key,
            amz_date=self.amz_date,
            scope=self.scope,
            seed_signature=self.seed_signature,
            expected_trailers=expected_trailers,
            decoded_length=decoded_length,
            **kwargs,
        )


class PayloadHasher:
    """Hashes a body incrementally and checks it against ``x-amz-content-sha256``."""

    def __init__(self, expected_hex: str) -> None:
        self.expected = expected_hex.lower()
        self._hash = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def verify(self) -> None:
        """Raise ``XAmzContentSHA256Mismatch`` unless the body hashed to the expected value."""
        computed = self._hash.hexdigest()
        if not hmac.compare_digest(computed, self.expected):
            raise XAmzContentSHA256Mismatch(ClientComputedContentSHA256=self.expected, S3ComputedContentSHA256=computed)


# ---------------------------------------------------------------------------
# Request verification


@dataclass
class _Auth:
    access_key: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: list[str]
    signature: str


def _parse_credential(credential: str, err: type[InvalidArgument] | type[AuthorizationHeaderMalformed]) -> list[str]:
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts):
        raise err('The Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".')
    return parts


def _parse_authorization(value: str) -> _Auth:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        if algorithm == "AWS":
            raise InvalidRequest("The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.")
        if algorithm == "AWS4-ECDSA-P256-SHA256":
            raise S3NotImplemented("SigV4a is not supported")
        raise InvalidArgument("Unsupported Authorization Type", ArgumentName="Authorization", ArgumentValue=value)
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, val = item.strip().partition("=")
        if not sep or name in fields:
            raise AuthorizationHeaderMalformed()
        fields[name] = val.strip()
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise AuthorizationHeaderMalformed()
    ak, date, region, service, term = _parse_credential(fields["Credential"], AuthorizationHeaderMalformed)
    return _Auth(ak, date, region, service, term, fields["SignedHeaders"].split(";"), fields["Signature"])


def _check_scope(
    auth: _Auth, amz_date: str, region: str | None, err: type[InvalidArgument] | type[AuthorizationHeaderMalformed]
) -> str:
    if auth.service != "s3" or auth.terminator != "aws4_request":
        raise err(f'The authorization header is malformed; incorrect service "{auth.service}". This endpoint belongs to "s3".')
    if region is not None and auth.region != region:
        raise err(
            f"The authorization header is malformed; the region '{auth.region}' is wrong; expecting '{region}'", Region=region
        )
    if auth.date != amz_date[:8]:
        raise err("Invalid credential date. Date is not the same as X-Amz-Date.")
    if "host" not in auth.signed_headers:
        raise err("The authorization header is malformed; SignedHeaders must include host.")
    if any(not h or h != h.strip().lower() for h in auth.signed_headers):
        raise err("The authorization header is malformed; SignedHeaders is mal-formed.")
    return auth.region


def _check_content_sha256(value: str) -> None:
    if value == UNSIGNED_PAYLOAD or value in STREAMING_MODES or _HEX64.fullmatch(value):
        return
    if value.startswith("STREAMING-AWS4-ECDSA-P256-SHA256"):
        raise S3NotImplemented("SigV4a streaming payloads are not supported")
    raise InvalidArgument(
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.",
        ArgumentName="x-amz-content-sha256",
        ArgumentValue=value,
    )


def verify_request(
    method: str,
    raw_path: str | bytes,
    query_string: str | bytes,
    headers: Headers,
    lookup_secret: Callable[[str], str | None],
    region: str | None,
    now: float,
) -> SignedRequest:
    """Verify the SigV4 signature of an S3 request and return what it proves.

    ``raw_path`` / ``query_string`` are as received (percent-encoded, query
    without ``?``). ``region=None`` accepts whatever region the client signed
    for. ``now`` is the server's current epoch time.

    Raises ``AccessDenied`` (no credentials, presign expired or not yet
    valid), ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``,
    ``AuthorizationHeaderMalformed``, ``AuthorizationQueryParametersError``
    (an ``InvalidArgument``; bad presign parameters), ``InvalidArgument``,
    ``InvalidRequest`` (SigV2, missing x-amz-content-sha256),
    ``RequestTimeTooSkewed`` and ``NotImplemented`` (SigV4a).
    """
    hmap = _header_map(headers)
    pairs = _split_query(_as_bytes(query_string))
    query_names = {unquote_to_bytes(k).decode("utf-8", "replace") for k, _ in pairs}
    authorization = _first(hmap, "authorization")
    presigned = "X-Amz-Algorithm" in query_names
    if authorization is not None and presigned:
        raise InvalidArgument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string "
            "parameter or the Authorization header should be specified",
            ArgumentName="Authorization",
        )
    if authorization is None and not presigned:
        if "Signature" in query_names and "AWSAccessKeyId" in query_names:
            raise InvalidRequest("The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.")
        raise AccessDenied()

    if presigned:
        auth, amz_date, ts, signed_pairs = _presign_params(pairs, region, now)
        # Presigned URLs sign UNSIGNED-PAYLOAD unless the client pinned a
        # hash by also sending the header (botocore then signs its value).
        content = _first(hmap, "x-amz-content-sha256")
        payload = UNSIGNED_PAYLOAD if content is None else content.strip()
        _check_content_sha256(payload)
    else:
        assert authorization is not None
        auth = _parse_authorization(authorization)
        amz_date_text = _first(hmap, "x-amz-date")
        if amz_date_text is not None:
            parsed = _parse_amz_date(amz_date_text.strip())
        else:
            date_header = _first(hmap, "date")
            parsed = _parse_http_date(date_header) if date_header else None
        if parsed is None:
            raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
        ts = parsed
        amz_date = _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime(_AMZ_DATE_FMT)
        _check_scope(auth, amz_date, region, AuthorizationHeaderMalformed)
        if abs(now - ts) > MAX_SKEW_SECONDS:
            raise RequestTimeTooSkewed(
                RequestTime=amz_date_text or _first(hmap, "date"),
                ServerTime=_iso(now),
                MaxAllowedSkewMilliseconds=MAX_SKEW_SECONDS * 1000,
            )
        content = _first(hmap, "x-amz-content-sha256")
        if content is None:
            raise InvalidRequest("Missing required header for this request: x-amz-content-sha256")
        payload = content.strip()
        _check_content_sha256(payload)
        signed_pairs = pairs

    secret = lookup_secret(auth.access_key)
    if secret is None:
        raise InvalidAccessKeyId(AWSAccessKeyId=auth.access_key)
    scope = f"{auth.date}/{auth.region}/s3/aws4_request"
    signing_key = derive_signing_key(secret, auth.date, auth.region)

    canonical_headers = "".join(f"{name}:{_canonical_header_value(hmap.get(name, []))}\n" for name in auth.signed_headers)
    signed_header_line = ";".join(auth.signed_headers)
    provided = auth.signature.strip().lower()
    first_attempt: tuple[str, str] | None = None
    for path in _canonical_paths(_as_bytes(raw_path)):
        for query in _canonical_query(signed_pairs):
            canonical_request = "\n".join([method.upper(), path, query, canonical_headers, signed_header_line, payload])
            string_to_sign = "\n".join(
                [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
            )
            expected = hmac.new(signing_key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
            # compare_digest needs ASCII; a non-ASCII signature is simply wrong.
            if provided.isascii() and hmac.compare_digest(expected, provided):
                return SignedRequest(
                    access_key=auth.access_key,
                    signing_key=signing_key,
                    scope=scope,
                    amz_date=amz_date,
                    timestamp=ts,
                    region=auth.region,
                    content_sha256=payload,
                    seed_signature=expected,
                    signed_headers=tuple(auth.signed_headers),
                    presigned=presigned,
                )
            if first_attempt is None:
                first_attempt = (canonical_request, string_to_sign)
    assert first_attempt is not None
    raise SignatureDoesNotMatch(
        AWSAccessKeyId=auth.access_key,
        StringToSign=first_attempt[1],
        SignatureProvided=auth.signature,
        CanonicalRequest=first_attempt[0],
    )


def _presign_params(
    pairs: list[tuple[bytes, bytes]], region: str | None, now: float
) -> tuple[_Auth, str, float, list[tuple[bytes, bytes]]]:
    params: dict[str, str] = {}
    for key, value in pairs:
        name = unquote_to_bytes(key).decode("utf-8", "replace")
        if name.startswith("X-Amz-"):
            if name in params:
                raise AuthorizationQueryParametersError(f"Duplicate query parameter {name}")
            params[name] = unquote_to_bytes(value).decode("utf-8", "replace")
    required = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature")
    if any(name not in params for name in required):
        raise AuthorizationQueryParametersError()
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise AuthorizationQueryParametersError('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    ak, date, cred_region, service, term = _parse_credential(params["X-Amz-Credential"], AuthorizationQueryParametersError)
    amz_date = params["X-Amz-Date"]
    ts = _parse_amz_date(amz_date)
    if ts is None:
        raise AuthorizationQueryParametersError("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    expires_text = params["X-Amz-Expires"]
    if not re.fullmatch(r"[0-9]{1,10}", expires_text):
        raise AuthorizationQueryParametersError("X-Amz-Expires should be a number")
    expires = int(expires_text)
    if expires > MAX_PRESIGN_EXPIRES:
        raise AuthorizationQueryParametersError("X-Amz-Expires must be less than a week (in seconds) that is; 604800 seconds")
    auth = _Auth(ak, date, cred_region, service, term, params["X-Amz-SignedHeaders"].split(";"), params["X-Amz-Signature"])
    _check_scope(auth, amz_date, region, AuthorizationQueryParametersError)
    if ts - now > MAX_SKEW_SECONDS:
        raise AccessDenied("Request is not valid yet", ServerTime=_iso(now))
    if now > ts + expires:
        raise RequestExpired(**{"X-Amz-Expires": expires, "Expires": _iso(ts + expires), "ServerTime": _iso(now)})
    signed_pairs = [(k, v) for k, v in pairs if unquote_to_bytes(k) != b"X-Amz-Signature"]
    return auth, amz_date, ts, signed_pairs
