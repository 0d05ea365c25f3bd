"""Get/Put/DeleteBucketLifecycleConfiguration: S3's lifecycle XML <-> the engine's rules.

The engine keeps the rules in boto3's JSON shape and decides everything
(validation, storage classes, when rules apply: :mod:`objfs.store.lifecycle`);
this module only translates the XML. Guarantees: a document that does not
parse is ``MalformedXML``; a rule the engine refuses is ``InvalidArgument``
(``InvalidStorageClass`` for a class no tier answers to); a bucket without
rules of its own answers ``NoSuchLifecycleConfiguration`` (it follows the
store-wide default, which is not a bucket configuration).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from starlette.responses import Response

from objfs.store import errors as E

from .. import errors as S3
from ..context import S3Request, empty_response, xml_response
from ..xmlio import build, find_all, find_text, parse_xml
from .restore import restore_headers

INTS = ("Days", "NoncurrentDays", "DaysAfterInitiation", "ObjectSizeGreaterThan", "ObjectSizeLessThan", "NewerNoncurrentVersions")


def _value(tag: str, text: str) -> Any:
    if tag in INTS:
        try:
            return int(text)
        except ValueError:
            raise S3.MalformedXML() from None
    if tag == "ExpiredObjectDeleteMarker":
        return text.strip().lower() == "true"
    return text.strip() if tag in ("Date", "StorageClass", "Status") else text


def _tag(elem: ET.Element) -> dict[str, str]:
    return {"Key": find_text(elem, "Key", "") or "", "Value": find_text(elem, "Value", "") or ""}


def _simple(elem: ET.Element) -> dict[str, Any]:
    return {child.tag: _value(child.tag, child.text or "") for child in elem}


def _filter(elem: ET.Element) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for child in elem:
        if child.tag == "Tag":
            out["Tag"] = _tag(child)
        elif child.tag == "And":
            both: dict[str, Any] = {}
            for part in child:
                if part.tag == "Tag":
                    both.setdefault("Tags", []).append(_tag(part))
                else:
                    both[part.tag] = _value(part.tag, part.text or "")
            out["And"] = both
        else:
            out[child.tag] = _value(child.tag, child.text or "")
    return out


def parse_lifecycle(body: bytes) -> dict[str, Any]:
    """A LifecycleConfiguration document as the engine's rules (boto3 shape)."""
    root = parse_xml(body)
    if root.tag != "LifecycleConfiguration":
        raise S3.MalformedXML()
    rules = []
    for elem in find_all(root, "Rule"):
        rule: dict[str, Any] = {}
        for child in elem:
            if child.tag == "Filter":
                rule["Filter"] = _filter(child)
            elif child.tag in ("Transition", "NoncurrentVersionTransition"):
                rule.setdefault(child.tag + "s", []).append(_simple(child))
            elif child.tag in ("Expiration", "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload"):
                rule[child.tag] = _simple(child)
            elif child.tag in ("ID", "Status", "Prefix"):
                rule[child.tag] = (child.text or "").strip() if child.tag == "Status" else child.text or ""
            else:
                raise S3.MalformedXML()
        rules.append(rule)
    if not rules:
        raise S3.MalformedXML()
    return {"Rules": rules}


def _filter_xml(filt: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name, value in filt.items():
        if name == "And":
            out.append(("And", [(k, v) for k, v in value.items() if k != "Tags"] + [("Tag", t) for t in value.get("Tags", [])]))
        else:
            out.append((name, value))
    return out


def render_lifecycle(rules: dict[str, Any]) -> bytes:
    items = []
    for rule in rules["Rules"]:
        spec: list[tuple[str, Any]] = [("ID", rule.get("ID"))]
        if "Filter" in rule:
            spec.append(("Filter", _filter_xml(rule["Filter"]) or ""))
        elif "Prefix" in rule:
            spec.append(("Prefix", rule["Prefix"]))
        spec.append(("Status", rule["Status"]))
        for tr in rule.get("Transitions") or []:
            spec.append(("Transition", dict(tr)))
        if rule.get("Expiration"):
            spec.append(("Expiration", dict(rule["Expiration"])))
        for tr in rule.get("NoncurrentVersionTransitions") or []:
            spec.append(("NoncurrentVersionTransition", dict(tr)))
        for name in ("NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload"):
            if rule.get(name):
                spec.append((name, dict(rule[name])))
        items.append(("Rule", spec))
    return build("LifecycleConfiguration", items)


async def get_lifecycle(req: S3Request) -> Response:
    rules = await req.engine.run(lambda: req.store.get_lifecycle(req.bucket, principal=req.principal))
    if not rules:
        raise S3.NoSuchLifecycleConfiguration(BucketName=req.bucket)
    return xml_response(render_lifecycle(rules))


async def put_lifecycle(req: S3Request) -> Response:
    rules = parse_lifecycle(await req.small_body())
    await req.engine.run(lambda: req.store.put_lifecycle(req.bucket, rules, principal=req.principal))
    return empty_response(200)


async def delete_lifecycle(req: S3Request) -> Response:
    await req.engine.run(lambda: req.store.put_lifecycle(req.bucket, None, principal=req.principal))
    return empty_response(204)


# -- storage classes on object writes and reads -----------------------------------

STORAGE_CLASS_HEADER = "x-amz-storage-class"


def storage_tier(req: S3Request) -> str | None:
    """The tier a write's ``x-amz-storage-class`` names (None: the first tier); InvalidStorageClass otherwise."""
    name = req.headers.get(STORAGE_CLASS_HEADER)
    if not name:
        return None
    try:
        return req.store.tier_for_class(name.strip())
    except E.InvalidStorageClass as exc:
        raise S3.InvalidStorageClass(str(exc)) from exc


def storage_class_headers(req: S3Request, record: dict[str, Any]) -> dict[str, str]:
    """``x-amz-storage-class`` of a HEAD or GET (omitted for STANDARD, as S3 does), and ``x-amz-restore``."""
    name = req.store.storage_class_of(record)
    return ({} if name == "STANDARD" else {STORAGE_CLASS_HEADER: name}) | restore_headers(req, record)
