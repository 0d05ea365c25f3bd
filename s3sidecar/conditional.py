"""HTTP conditions and byte ranges as S3 evaluates them (RFC 7232/7233 with S3's precedence)."""

from __future__ import annotations

import re

from objfs.store import ObjectInfo, etag_condition_holds

from . import errors as S3
from .xmlio import http_date

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


#: True if any entity tag in an If-Match / If-None-Match list is ``etag`` (or ``*``): the engine's rule.
etag_matches = etag_condition_holds


def check_read_conditions(
    info: ObjectInfo,
    if_match: str | None,
    if_none_match: str | None,
    if_modified_since: float | None,
    if_unmodified_since: float | None,
) -> None:
    """Raise PreconditionFailed (412) or NotModified (304) as S3 does for GET/HEAD.

    S3's precedence: a true If-Match makes If-Unmodified-Since irrelevant, and
    a present If-None-Match makes If-Modified-Since irrelevant.
    """
    # HTTP dates carry whole seconds; compare at that precision.
    modified = int(info.modified)
    if if_match is not None:
        if not etag_matches(if_match, info.etag):
            raise S3.PreconditionFailed(Condition="If-Match")
    elif if_unmodified_since is not None and modified > if_unmodified_since:
        raise S3.PreconditionFailed(Condition="If-Unmodified-Since")
    not_modified_headers = {"etag": f'"{info.etag}"', "last-modified": http_date(info.modified)}
    if if_none_match is not None:
        if etag_matches(if_none_match, info.etag):
            raise S3.NotModified(headers=not_modified_headers)
    elif if_modified_since is not None and modified <= if_modified_since:
        raise S3.NotModified(headers=not_modified_headers)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range`` -> ``[start, end)`` within the object, None for "whole object".

    Syntactically invalid or multi-range headers are ignored (S3 serves the
    whole object); a range that starts past the end is InvalidRange (416).
    """
    if header is None:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:
        suffix = int(m[2])
        if suffix == 0 or size == 0:
            raise invalid_range(header, size)
        return max(size - suffix, 0), size
    start = int(m[1])
    if m[2] and int(m[2]) < start:
        return None
    if start >= size:
        raise invalid_range(header, size)
    end = min(int(m[2]) + 1, size) if m[2] else size
    return start, end


def invalid_range(header: str, size: int) -> S3.InvalidRange:
    return S3.InvalidRange(headers={"content-range": f"bytes */{size}"}, RangeRequested=header, ActualObjectSize=size)


def parse_copy_range(header: str | None, size: int) -> tuple[int, int]:
    """``x-amz-copy-source-range`` (``bytes=first-last``, both required) -> ``[start, end)``."""
    if header is None:
        return 0, size
    m = _RANGE.fullmatch(header.strip())
    if m is None or not m[1] or not m[2] or int(m[2]) < int(m[1]):
        raise S3.InvalidArgument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the "
            "zero-based offsets of the first and last bytes to copy",
            ArgumentName="x-amz-copy-source-range",
            ArgumentValue=header,
        )
    start, last = int(m[1]), int(m[2])
    if last >= size:
        raise S3.InvalidRange(
            f"The requested range is not satisfiable: bytes={start}-{last} of a {size} byte object",
            RangeRequested=header,
            ActualObjectSize=size,
        )
    return start, last + 1
