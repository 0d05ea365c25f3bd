"""CORS as S3 applies a bucket's rules: preflight answers and the headers of actual responses.

A bucket's configuration is a list of rules (``AllowedOrigin`` with at most
one ``*`` wildcard each, ``AllowedMethod`` among GET PUT POST DELETE HEAD,
``AllowedHeader`` with wildcards, ``ExposeHeader``, ``MaxAgeSeconds``), kept
in the bucket's settings (``cors``). The first rule that matches the
origin, the method and every requested header decides; none matching is a
403 for a preflight and no CORS headers on an actual response. Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Any

from . import errors as S3
from .xmlio import build, find_all, find_text, parse_xml

METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
MAX_RULES = 100


def parse_cors(body: bytes) -> list[dict[str, Any]]:
    """A ``CORSConfiguration`` document -> rules; MalformedXML / InvalidRequest as S3 says."""
    root = parse_xml(body)
    if root.tag != "CORSConfiguration":
        raise S3.MalformedXML()
    rules = []
    for rule in find_all(root, "CORSRule"):
        origins = [(e.text or "").strip() for e in find_all(rule, "AllowedOrigin")]
        methods = [(e.text or "").strip() for e in find_all(rule, "AllowedMethod")]
        if not origins or not methods:
            raise S3.MalformedXML()
        for method in methods:
            if method not in METHODS:
                raise S3.InvalidRequest(f"Found unsupported HTTP method in CORS config. Unsupported method is {method}")
        for origin in origins:
            if origin.count("*") > 1:
                raise S3.InvalidRequest(f'AllowedOrigin "{origin}" can not have more than one wildcard.')
        headers = [(e.text or "").strip() for e in find_all(rule, "AllowedHeader")]
        for header in headers:
            if header.count("*") > 1:
                raise S3.InvalidRequest(f'AllowedHeader "{header}" can not have more than one wildcard.')
        max_age = find_text(rule, "MaxAgeSeconds", strip=True)
        if max_age is not None and not re.fullmatch(r"[0-9]{1,10}", max_age):
            raise S3.MalformedXML()
        entry: dict[str, Any] = {
            "origins": origins,
            "methods": methods,
            "headers": headers,
            "expose": [(e.text or "").strip() for e in find_all(rule, "ExposeHeader")],
        }
        if max_age is not None:
            entry["max_age"] = int(max_age)
        rule_id = find_text(rule, "ID", strip=True)
        if rule_id:
            entry["id"] = rule_id
        rules.append(entry)
    if not rules or len(rules) > MAX_RULES:
        raise S3.MalformedXML()
    return rules


def render_cors(rules: list[dict[str, Any]]) -> bytes:
    out = []
    for rule in rules:
        fields: list[tuple[str, Any]] = [("ID", rule.get("id"))]
        fields += [("AllowedHeader", h) for h in rule["headers"]]
        fields += [("AllowedMethod", m) for m in rule["methods"]]
        fields += [("AllowedOrigin", o) for o in rule["origins"]]
        fields += [("ExposeHeader", h) for h in rule["expose"]]
        fields.append(("MaxAgeSeconds", rule.get("max_age")))
        out.append(("CORSRule", fields))
    return build("CORSConfiguration", out)


def _wildcard(pattern: str, value: str, *, fold: bool) -> bool:
    if fold:
        pattern, value = pattern.lower(), value.lower()
    if "*" not in pattern:
        return pattern == value
    head, _, tail = pattern.partition("*")
    return len(value) >= len(head) + len(tail) and value.startswith(head) and value.endswith(tail)


def matching_rule(rules: list[dict[str, Any]], origin: str, method: str, request_headers: list[str]) -> dict[str, Any] | None:
    """The first rule allowing ``origin`` to use ``method`` with ``request_headers``."""
    for rule in rules:
        if method not in rule["methods"]:
            continue
        if not any(_wildcard(o, origin, fold=False) for o in rule["origins"]):
            continue
        if all(any(_wildcard(a, h, fold=True) for a in rule["headers"]) for h in request_headers):
            return rule
    return None


def response_headers(rule: dict[str, Any], origin: str, request_headers: list[str] | None = None) -> dict[str, str]:
    """The Access-Control-* headers a matching rule gives (preflight when ``request_headers`` is not None)."""
    wildcard = "*" in rule["origins"]
    headers = {
        "access-control-allow-origin": "*" if wildcard else origin,
        "access-control-allow-methods": ", ".join(rule["methods"]),
        "vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    }
    if not wildcard:
        headers["access-control-allow-credentials"] = "true"
    if rule["expose"]:
        headers["access-control-expose-headers"] = ", ".join(rule["expose"])
    if "max_age" in rule:
        headers["access-control-max-age"] = str(rule["max_age"])
    if request_headers:
        headers["access-control-allow-headers"] = ", ".join(h.lower() for h in request_headers)
    return headers


def requested_headers(value: str | None) -> list[str]:
    return [h.strip() for h in (value or "").split(",") if h.strip()]
