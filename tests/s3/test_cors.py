"""CORS through boto3 and raw HTTP (a browser's preflight is unsigned) against a real server."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from s3helpers import error_code, http

RULES = {
    "CORSRules": [
        {
            "ID": "viewer",
            "AllowedOrigins": ["https://viewer.example.org", "https://*.pacs.example.org"],
            "AllowedMethods": ["GET", "HEAD"],
            "AllowedHeaders": ["Range", "x-amz-*"],
            "ExposeHeaders": ["ETag", "Content-Range"],
            "MaxAgeSeconds": 600,
        },
        {"AllowedOrigins": ["*"], "AllowedMethods": ["PUT"]},
    ]
}


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def preflight(server, bucket: str, origin: str | None, method: str | None, headers: str | None = None, key: str = "k"):
    sent = {}
    if origin is not None:
        sent["Origin"] = origin
    if method is not None:
        sent["Access-Control-Request-Method"] = method
    if headers is not None:
        sent["Access-Control-Request-Headers"] = headers
    return http("OPTIONS", f"{server.url}/{bucket}/{key}", None, sent)


def test_put_get_delete_bucket_cors(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_cors(Bucket=bucket)
    assert code(exc) == "NoSuchCORSConfiguration"
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    got = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert got[0] == {**RULES["CORSRules"][0]}
    assert got[1] == {"AllowedOrigins": ["*"], "AllowedMethods": ["PUT"]}
    s3.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_cors(Bucket=bucket)
    assert code(exc) == "NoSuchCORSConfiguration"


def test_bad_cors_configurations_are_refused(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_cors(
            Bucket=bucket, CORSConfiguration={"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]}
        )
    assert code(exc) == "InvalidRequest"
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_cors(
            Bucket=bucket, CORSConfiguration={"CORSRules": [{"AllowedOrigins": ["*.*"], "AllowedMethods": ["GET"]}]}
        )
    assert code(exc) == "InvalidRequest"


def test_preflight_is_answered_from_the_rules(s3, server, bucket):
    reply = preflight(server, bucket, "https://viewer.example.org", "GET")
    assert (reply.status, error_code(reply.content)) == (403, "AccessForbidden")  # no configuration yet
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    reply = preflight(server, bucket, "https://viewer.example.org", "GET", "range, X-Amz-Date")
    assert reply.status == 200
    h = reply.headers
    assert h["access-control-allow-origin"] == "https://viewer.example.org"
    assert h["access-control-allow-methods"] == "GET, HEAD"
    assert h["access-control-allow-headers"] == "range, x-amz-date"
    assert h["access-control-expose-headers"] == "ETag, Content-Range"
    assert h["access-control-max-age"] == "600"
    assert h["access-control-allow-credentials"] == "true"
    # A wildcard origin rule, on the bucket itself as well as a key.
    assert preflight(server, bucket, "https://ct.pacs.example.org", "HEAD", key="").status == 200
    anyone = preflight(server, bucket, "https://elsewhere.example", "PUT")
    assert (anyone.status, anyone.headers["access-control-allow-origin"]) == (200, "*")
    # No rule: wrong origin, method or header.
    for origin, method, headers in [
        ("https://evil.example", "GET", None),
        ("https://viewer.example.org", "DELETE", None),
        ("https://viewer.example.org", "GET", "authorization"),
    ]:
        reply = preflight(server, bucket, origin, method, headers)
        assert (reply.status, error_code(reply.content)) == (403, "AccessForbidden"), (origin, method, headers)
    assert preflight(server, bucket, None, "GET").status == 400
    assert preflight(server, bucket, "https://viewer.example.org", None).status == 400


def test_actual_responses_carry_cors_headers(s3, server, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"image")
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    seen = {}

    def add_origin(request, **kwargs):
        request.headers["Origin"] = "https://viewer.example.org"

    def keep(http_response, **kwargs):
        seen.update(http_response.headers)

    s3.meta.events.register("before-sign.s3.GetObject", add_origin)
    s3.meta.events.register("after-call.s3.GetObject", keep)
    try:
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"image"
    finally:
        s3.meta.events.unregister("before-sign.s3.GetObject", add_origin)
        s3.meta.events.unregister("after-call.s3.GetObject", keep)
    headers = {k.lower(): v for k, v in seen.items()}
    assert headers["access-control-allow-origin"] == "https://viewer.example.org"
    assert headers["access-control-expose-headers"] == "ETag, Content-Range"
    # Without a matching rule (no Origin sent at all here) there are none.
    plain = s3.get_object(Bucket=bucket, Key="k")
    assert "access-control-allow-origin" not in plain["ResponseMetadata"]["HTTPHeaders"]
