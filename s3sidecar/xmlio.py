"""XML request parsing and response building for the S3 API.

Parsing guarantees:

* No DTD is ever processed: a document type declaration, entity declaration
  or external entity reference aborts parsing with ``MalformedXML``. This is
  enforced by expat handlers (so it holds whatever the document's declared
  encoding is) and by a byte pre-scan, which together rule out billion-laughs
  expansion and XXE file/network access.
* Bodies larger than ``max_bytes`` (default 1 MiB), nested deeper than
  ``MAX_DEPTH``, not well-formed, or with elements in a namespace other than
  the S3 one are rejected with ``MalformedXML``.
* Element tags in the returned tree are namespace-stripped, so callers see
  ``Part`` whether the client sent ``<Part>`` or ``<s3:Part>``.
* Request-body parsers validate what S3 validates (counts, ranges, enums) and
  raise the error S3 would raise.

Building guarantees: ``build`` returns UTF-8 bytes with an XML declaration and
the S3 namespace on the root, and refuses (``ValueError``) text that XML 1.0
cannot carry rather than emitting a document the client cannot parse.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import email.utils
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any
from xml.parsers import expat

from objfs.store import RETENTION_MODES
from s3sidecar.errors import InvalidArgument, InvalidPartOrder, InvalidRetentionPeriod, InvalidTag, MalformedXML

__all__ = [
    "S3_NS",
    "MAX_BODY",
    "MAX_DEPTH",
    "parse_xml",
    "find_text",
    "find_all",
    "parse_complete_multipart",
    "parse_delete_objects",
    "parse_part_checksums",
    "CHECKSUM_ELEMENTS",
    "parse_tagging",
    "parse_versioning",
    "parse_object_lock_config",
    "parse_retention",
    "parse_legal_hold",
    "parse_create_bucket",
    "build",
    "iso8601",
    "http_date",
    "parse_iso8601",
]

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
# Some hand-written clients drop the trailing slash; it is still clearly S3.
_ACCEPTED_NS = {"", S3_NS, S3_NS.rstrip("/")}
MAX_BODY = 1024 * 1024
MAX_DEPTH = 32
MAX_PARTS = 10000
MAX_DELETE_KEYS = 1000
MAX_TAGS = 10

# Pre-scan patterns; the expat handlers are the real guard, this just fails
# fast on the common attack shapes before any parser state exists.
_DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY", b"<!doctype", b"<!entity")


class _Forbidden(Exception):
    pass


def _forbid(*_args: object) -> None:
    raise _Forbidden("DTDs and entity declarations are not allowed")


def _local(name: str) -> str:
    # expat with namespace_separator="}" reports "uri}local" for namespaced
    # names and plain "local" otherwise.
    uri, sep, local = name.rpartition("}")
    if sep and uri not in _ACCEPTED_NS:
        raise _Forbidden(f"unexpected namespace {uri!r}")
    return local


def parse_xml(body: bytes, max_bytes: int = MAX_BODY) -> ET.Element:
    """Parse an untrusted request body into a namespace-stripped tree.

    Raises ``MalformedXML`` for empty, oversized, malformed or DTD-bearing
    input and for elements outside the S3 namespace. Attribute names are
    reduced to their local part (``xsi:type`` -> ``type``).
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError("body must be bytes")
    body = bytes(body)
    if len(body) > max_bytes:
        raise MalformedXML("The XML you provided was larger than the maximum allowed size")
    if not body.strip():
        raise MalformedXML()
    if any(marker in body for marker in _DTD_MARKERS):
        raise MalformedXML()

    builder = ET.TreeBuilder()
    depth = 0

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise _Forbidden("document nested too deeply")
        builder.start(_local(name), {n.rpartition("}")[2]: v for n, v in attrs.items()})

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(_local(name))

    parser = expat.ParserCreate(namespace_separator="}")
    # Without a DTD nothing legitimate needs parameter entities; NEVER keeps
    # expat from fetching or expanding them even if a check above were missed.
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _forbid
    parser.EntityDeclHandler = _forbid
    parser.UnparsedEntityDeclHandler = _forbid
    parser.ExternalEntityRefHandler = _forbid
    parser.NotationDeclHandler = _forbid
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(body, True)
        root = builder.close()
    except (_Forbidden, expat.ExpatError, ValueError, AssertionError, RecursionError) as exc:
        raise MalformedXML() from exc
    return root


def find_all(elem: ET.Element, tag: str) -> list[ET.Element]:
    """Direct children of ``elem`` named ``tag`` (namespace-stripped tree)."""
    return [child for child in elem if child.tag == tag]


def find_text(elem: ET.Element, path: str, default: str | None = None, *, strip: bool = False) -> str | None:
    """Text of the first element at slash-separated ``path`` below ``elem``.

    Returns ``default`` if the element is absent, ``""`` if it is present but
    empty. Whitespace is preserved unless ``strip`` is set, because S3 keys
    may legitimately begin or end with spaces.
    """
    node: ET.Element | None = elem
    for part in path.split("/"):
        if node is None:
            break
        node = next((child for child in node if child.tag == part), None)
    if node is None:
        return default
    text = node.text or ""
    return text.strip() if strip else text


def _root(body: bytes, tag: str, max_bytes: int = MAX_BODY) -> ET.Element:
    root = parse_xml(body, max_bytes)
    if root.tag != tag:
        raise MalformedXML()
    return root


def _int(text: str | None, lo: int, hi: int) -> int:
    if text is None:
        raise MalformedXML()
    text = text.strip()
    # int() accepts "+5", "5_0" and non-ASCII digits; S3 does not.
    if not re.fullmatch(r"[0-9]{1,10}", text):
        raise MalformedXML()
    value = int(text)
    if not lo <= value <= hi:
        raise MalformedXML()
    return value


def parse_complete_multipart(body: bytes) -> list[tuple[int, str]]:
    """Parse ``CompleteMultipartUpload`` into ``[(part_number, etag), ...]``.

    Guarantees 1..10000 parts, part numbers 1..10000 in strictly ascending
    order (else ``InvalidPartOrder``), non-empty ETags (whitespace-stripped,
    quotes kept as sent). Per-part checksum elements are ignored here.
    """
    root = _root(body, "CompleteMultipartUpload")
    parts: list[tuple[int, str]] = []
    for part in find_all(root, "Part"):
        number = _int(find_text(part, "PartNumber"), 1, MAX_PARTS)
        etag = find_text(part, "ETag", strip=True)
        if not etag:
            raise MalformedXML()
        if parts and number <= parts[-1][0]:
            raise InvalidPartOrder()
        parts.append((number, etag))
        if len(parts) > MAX_PARTS:
            raise MalformedXML()
    if not parts:
        raise MalformedXML()
    return parts


CHECKSUM_ELEMENTS = {
    "ChecksumCRC32": "crc32",
    "ChecksumCRC32C": "crc32c",
    "ChecksumCRC64NVME": "crc64nvme",
    "ChecksumSHA1": "sha1",
    "ChecksumSHA256": "sha256",
}


def parse_part_checksums(body: bytes) -> dict[int, dict[str, str]]:
    """The per-part checksums of a ``CompleteMultipartUpload`` body: ``{part: {header name: base64}}``."""
    out: dict[int, dict[str, str]] = {}
    for part in find_all(_root(body, "CompleteMultipartUpload"), "Part"):
        number = _int(find_text(part, "PartNumber"), 1, MAX_PARTS)
        for element, algorithm in CHECKSUM_ELEMENTS.items():
            value = find_text(part, element, strip=True)
            if value:
                out.setdefault(number, {})["x-amz-checksum-" + algorithm] = value
    return out


def parse_delete_objects(body: bytes) -> tuple[list[tuple[str, str | None, str | None]], bool]:
    """Parse a ``Delete`` (DeleteObjects) body.

    Returns ``([(key, version_id_or_None, etag_or_None), ...], quiet)``. Guarantees 1..1000
    objects, each with a non-empty key (whitespace preserved); anything else
    is ``MalformedXML``, as in S3.
    """
    root = _root(body, "Delete")
    objects: list[tuple[str, str | None, str | None]] = []
    for obj in find_all(root, "Object"):
        key = find_text(obj, "Key")
        if not key:
            raise MalformedXML()
        version = find_text(obj, "VersionId", strip=True)
        etag = find_text(obj, "ETag", strip=True)
        objects.append((key, version or None, etag or None))
        if len(objects) > MAX_DELETE_KEYS:
            raise MalformedXML()
    if not objects:
        raise MalformedXML()
    quiet_text = (find_text(root, "Quiet", "false", strip=True) or "false").lower()
    if quiet_text not in ("true", "false"):
        raise MalformedXML()
    return objects, quiet_text == "true"


# Characters S3 allows in tag keys and values: Unicode letters, digits,
# whitespace and + - = . _ : / @.
_TAG_CHARS = re.compile(r"[\w\s+\-=.:/@]*")


def parse_tagging(body: bytes) -> dict[str, str]:
    """Parse a ``Tagging`` body into ``{key: value}`` (insertion-ordered).

    Guarantees at most 10 tags, keys 1..128 and values 0..256 characters from
    S3's allowed set, no ``aws:`` prefix and no duplicate keys; violations
    raise ``InvalidTag``. Structural problems raise ``MalformedXML``.
    """
    root = _root(body, "Tagging")
    tag_sets = find_all(root, "TagSet")
    if len(tag_sets) != 1:
        raise MalformedXML()
    tags: dict[str, str] = {}
    for tag in find_all(tag_sets[0], "Tag"):
        key = find_text(tag, "Key")
        value = find_text(tag, "Value", "")
        if key is None or value is None:
            raise MalformedXML()
        if not 1 <= len(key) <= 128:
            raise InvalidTag("The TagKey you have provided is invalid")
        if len(value) > 256:
            raise InvalidTag("The TagValue you have provided is invalid")
        if not _TAG_CHARS.fullmatch(key) or key.lower().startswith("aws:"):
            raise InvalidTag("The TagKey you have provided is invalid")
        if not _TAG_CHARS.fullmatch(value):
            raise InvalidTag("The TagValue you have provided is invalid")
        if key in tags:
            raise InvalidTag("Cannot provide multiple Tags with the same key")
        tags[key] = value
        if len(tags) > MAX_TAGS:
            raise InvalidTag("Object tags cannot be greater than 10")
    return tags


def parse_versioning(body: bytes) -> str | None:
    """Parse ``VersioningConfiguration``; returns ``"Enabled"``, ``"Suspended"`` or None.

    ``MfaDelete`` is accepted only as ``Disabled`` (we have no MFA).
    """
    root = _root(body, "VersioningConfiguration")
    status = find_text(root, "Status", strip=True)
    if status not in (None, "Enabled", "Suspended"):
        raise MalformedXML()
    mfa = find_text(root, "MfaDelete", strip=True)
    if mfa not in (None, "Disabled"):
        raise InvalidArgument("MFA Delete is not supported", ArgumentName="MfaDelete")
    return status


def parse_object_lock_config(body: bytes) -> dict[str, Any]:
    """Parse ``ObjectLockConfiguration``.

    Returns ``{"enabled": bool, "mode": str|None, "days": int|None,
    "years": int|None}``. If a ``Rule`` is present it must hold a
    ``DefaultRetention`` with a valid mode and exactly one of ``Days`` /
    ``Years``, else ``MalformedXML``; a period that is not positive or over
    36500 days / 100 years is ``InvalidRetentionPeriod``, as in S3. A rule without ``ObjectLockEnabled=Enabled`` is
    ``MalformedXML`` as well.
    """
    root = _root(body, "ObjectLockConfiguration")
    enabled_text = find_text(root, "ObjectLockEnabled", strip=True)
    if enabled_text not in (None, "Enabled"):
        raise MalformedXML()
    result: dict[str, Any] = {"enabled": enabled_text == "Enabled", "mode": None, "days": None, "years": None}
    rule = next(iter(find_all(root, "Rule")), None)
    if rule is None:
        return result
    if not result["enabled"]:
        raise MalformedXML()
    retention = next(iter(find_all(rule, "DefaultRetention")), None)
    if retention is None:
        raise MalformedXML()
    mode = find_text(retention, "Mode", strip=True)
    if mode not in RETENTION_MODES:
        raise MalformedXML()
    days = find_text(retention, "Days")
    years = find_text(retention, "Years")
    if (days is None) == (years is None):
        raise MalformedXML()
    result["mode"] = mode
    if days is not None:
        result["days"] = _period(days, 36500)
    else:
        result["years"] = _period(years, 100)
    return result


def _period(text: str, most: int) -> int:
    """A default retention's Days or Years: a number (else MalformedXML), positive and not too large."""
    text = text.strip()
    if not re.fullmatch(r"-?[0-9]{1,10}", text):
        raise MalformedXML()
    value = int(text)
    if value <= 0:
        raise InvalidRetentionPeriod()
    if value > most:
        raise InvalidRetentionPeriod("Default retention period is too large.")
    return value


def parse_retention(body: bytes) -> dict[str, Any]:
    """Parse an object ``Retention`` body.

    Returns ``{"mode": str|None, "until_iso": str|None, "until": float|None}``
    with ``until_iso`` normalised to :func:`iso8601` form. Both elements absent
    means "remove retention"; exactly one absent is ``MalformedXML``.
    """
    root = _root(body, "Retention")
    mode = find_text(root, "Mode", strip=True)
    until_text = find_text(root, "RetainUntilDate", strip=True)
    if mode is None and until_text is None:
        return {"mode": None, "until_iso": None, "until": None}
    if mode not in RETENTION_MODES or not until_text:
        raise MalformedXML()
    until = parse_iso8601(until_text)
    return {"mode": mode, "until_iso": iso8601(until), "until": until}


def parse_legal_hold(body: bytes) -> bool:
    """Parse a ``LegalHold`` body; True for ``ON``, False for ``OFF``."""
    root = _root(body, "LegalHold")
    status = find_text(root, "Status", strip=True)
    if status not in ("ON", "OFF"):
        raise MalformedXML()
    return status == "ON"


def parse_create_bucket(body: bytes) -> str | None:
    """Parse an optional ``CreateBucketConfiguration``; returns LocationConstraint or None.

    An empty body is valid (no constraint).
    """
    if not body or not bytes(body).strip():
        return None
    root = _root(body, "CreateBucketConfiguration")
    location = find_text(root, "LocationConstraint", strip=True)
    return location or None


# ---------------------------------------------------------------------------
# Building

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

Spec = Mapping[str, Any] | Sequence[tuple[str, Any]]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, bytes):
        text = value.decode("utf-8")
    else:
        text = str(value)
    if _XML_INVALID.search(text):
        raise ValueError("text contains characters XML 1.0 cannot represent; url-encode it")
    return text


def _is_pairs(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, tuple) and len(item) == 2 for item in value)


def _add(parent: ET.Element, tag: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, list) and not _is_pairs(value):
        for item in value:
            _add(parent, tag, item)
        return
    child = ET.SubElement(parent, tag)
    if isinstance(value, Mapping) or _is_pairs(value):
        _fill(child, value)
    else:
        child.text = _scalar(value)


def _fill(elem: ET.Element, spec: Spec) -> None:
    items = spec.items() if isinstance(spec, Mapping) else spec
    for tag, value in items:
        _add(elem, tag, value)


def build(root_tag: str, children: Spec | None = None, *, namespace: bool = True) -> bytes:
    """Serialise an S3 response document.

    ``children`` is a mapping (insertion order kept) or a list of
    ``(tag, value)`` pairs; the list form allows interleaved repeated tags
    (e.g. ``Version`` / ``DeleteMarker``). Values:

    * ``None`` - element omitted; ``""`` - empty element;
    * ``bool`` - ``true``/``false``; other scalars - ``str(value)``;
    * a mapping, or a non-empty list of 2-tuples - nested element content;
    * any other list - the element repeated once per item (empty list: none).

    The root carries ``xmlns`` = S3 namespace unless ``namespace`` is False.
    """
    root = ET.Element(root_tag, {"xmlns": S3_NS} if namespace else {})
    if children is not None:
        _fill(root, children)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")).encode("utf-8")


def iso8601(ts: float) -> str:
    """UTC timestamp as S3 writes it in XML: ``2026-11-28T23:26:58.000Z``."""
    # Integer milliseconds first: formatting the float directly can round
    # 58.9999 up to "59.1000"-style artefacts.
    ms = int(round(ts * 1000))
    secs, millis = divmod(ms, 1000)
    when = _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=secs)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def http_date(ts: float) -> str:
    """RFC 7231 IMF-fixdate, e.g. ``Sat, 28 Nov 2026 23:26:58 GMT`` (seconds truncated)."""
    return email.utils.formatdate(int(ts), usegmt=True)


_ISO_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})")


def parse_iso8601(text: str) -> float:
    """Parse an ISO 8601 timestamp with explicit zone (``Z`` or ``+hh:mm``) to epoch seconds.

    Raises ``MalformedXML`` for anything else, because S3 rejects naive times.
    """
    m = _ISO_RE.fullmatch(text.strip())
    if not m:
        raise MalformedXML()
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = float("0." + m.group(7)) if m.group(7) else 0.0
    zone = m.group(8)
    try:
        base = calendar.timegm(_dt.datetime(year, month, day, hour, minute, second).timetuple())
    except ValueError as exc:
        raise MalformedXML() from exc
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        base -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return base + frac
