"""Object tag rules shared by the tagging subresource and ``x-amz-tagging`` headers.

Pure module (no request, no engine): :mod:`s3sidecar.context` and
:mod:`s3sidecar.handlers.tagging` both use it, so neither imports the other.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from . import errors as S3

MAX_TAGS = 10
_TAG_CHARS = re.compile(r"[\w\s+\-=.:/@]*")


def parse_query_tags(text: str) -> dict[str, str]:
    """``x-amz-tagging: k1=v1&k2=v2`` (URL-encoded) -> dict; duplicate keys are InvalidTag."""
    tags: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in tags:
            raise S3.InvalidTag("Cannot provide multiple Tags with the same key")
        tags[key] = value
    return tags


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    """The same rules S3 (and :func:`s3sidecar.xmlio.parse_tagging`) applies to a TagSet."""
    if len(tags) > MAX_TAGS:
        raise S3.InvalidTag("Object tags cannot be greater than 10")
    for key, value in tags.items():
        if not 1 <= len(key) <= 128 or not _TAG_CHARS.fullmatch(key) or key.lower().startswith("aws:"):
            raise S3.InvalidTag("The TagKey you have provided is invalid")
        if len(value) > 256 or not _TAG_CHARS.fullmatch(value):
            raise S3.InvalidTag("The TagValue you have provided is invalid")
    return tags
