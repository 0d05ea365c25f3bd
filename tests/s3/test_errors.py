"""S3 error classes render documents botocore maps to the right exceptions."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from s3sidecar import errors

REQUIRED = {
    "AccessDenied": 403,
    "AccountProblem": 403,
    "AuthorizationHeaderMalformed": 400,
    "BadDigest": 400,
    "BucketAlreadyExists": 409,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "ExpiredToken": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "InvalidStorageClass": 400,
    "KeyTooLongError": 400,
    "MalformedXML": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "MissingSecurityHeader": 400,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NoSuchVersion": 404,
    "NotImplemented": 501,
    "NoSuchTagSet": 404,
    "ObjectLockConfigurationNotFoundError": 404,
    "NoSuchObjectLockConfiguration": 404,
    "InvalidObjectState": 403,
    "PreconditionFailed": 412,
    "NotModified": 304,
    "RequestTimeTooSkewed": 403,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
    "XAmzContentSHA256Mismatch": 400,
    "InvalidTag": 400,
    "MalformedPOSTRequest": 400,
    "RequestHeaderSectionTooLarge": 400,
    "MetadataTooLarge": 400,
    "InvalidChunkSizeError": 403,
    "BadRequest": 400,
    "AuthorizationQueryParametersError": 400,
    "MalformedTrailerError": 400,
}


@pytest.mark.parametrize("code, status", sorted(REQUIRED.items()))
def test_required_codes(code, status):
    cls = errors.ERRORS_BY_CODE[code]
    assert cls.code == code and cls.status == status and cls.message
    assert issubclass(cls, errors.S3Error)
    assert errors.error_class_for_code(code) is cls


def test_table_is_consistent():
    for code, cls in errors.ERRORS_BY_CODE.items():
        assert cls.code == code
    assert errors.error_class_for_code("NoSuchThing") is errors.InternalError
    # RequestExpired shares AccessDenied's code without displacing it.
    assert errors.ERRORS_BY_CODE["AccessDenied"] is errors.AccessDenied
    assert issubclass(errors.RequestExpired, errors.AccessDenied)
    assert errors.RequestExpired().message == "Request has expired"
    assert errors.S3NotImplemented.code == "NotImplemented"
    assert issubclass(errors.AuthorizationQueryParametersError, errors.InvalidArgument)


def test_to_xml_document():
    err = errors.NoSuchKey(Key="dir/a&b<c>.dcm", BucketName="bucket")
    body = err.to_xml("/bucket/dir/a&b<c>.dcm", "req-1")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error>')
    root = ET.fromstring(body)
    assert [c.tag for c in root] == ["Code", "Message", "Key", "BucketName", "Resource", "RequestId"]
    assert root.findtext("Code") == "NoSuchKey"
    assert root.findtext("Message") == "The specified key does not exist."
    assert root.findtext("Key") == "dir/a&b<c>.dcm"
    assert root.findtext("Resource") == "/bucket/dir/a&b<c>.dcm"
    assert root.findtext("RequestId") == "req-1"


def test_custom_message_fields_and_headers():
    err = errors.MethodNotAllowed("nope", headers={"Allow": "GET"}, Method="POST", ResourceType="OBJECT", Skipped=None)
    assert str(err) == "MethodNotAllowed: nope"
    assert err.headers == {"Allow": "GET"}
    root = ET.fromstring(err.to_xml())
    assert root.findtext("Message") == "nope" and root.findtext("Method") == "POST"
    assert root.find("Skipped") is None
    # A RequestId field overrides the argument rather than duplicating it.
    root = ET.fromstring(errors.SlowDown(RequestId="mine").to_xml("/r", "arg"))
    assert [c.text for c in root.iter("RequestId")] == ["mine"]


def test_hostile_text_never_breaks_the_document():
    body = errors.NoSuchKey(Key="bad\x00\x01\x1bkey\ud800").to_xml("/b/bad\x02", "r")
    root = ET.fromstring(body)
    assert root.findtext("Key").startswith("bad")


def test_not_modified_has_no_body():
    assert errors.NotModified().to_xml("/b/k", "r") == b""


def test_botocore_maps_rendered_errors():
    from botocore.exceptions import ClientError
    from botocore.loaders import Loader
    from botocore.model import ServiceModel
    from botocore.parsers import RestXMLParser

    model = ServiceModel(Loader().load_service_model("s3", "service-2"), "s3")
    shape = model.operation_model("GetObject").output_shape
    err = errors.NoSuchKey(Key="k")
    parsed = RestXMLParser().parse({"body": err.to_xml("/b/k", "rid"), "headers": {}, "status_code": err.status}, shape)
    assert parsed["Error"]["Code"] == "NoSuchKey"
    assert parsed["Error"]["Message"] == err.message
    assert isinstance(ClientError(parsed, "GetObject"), Exception)
