"""S3 error responses as exception classes.

Every class knows its S3 error ``code``, HTTP ``status`` and default
``message``. Raising one anywhere in the sidecar and rendering it with
:meth:`S3Error.to_xml` yields the body AWS itself would send, so SDKs map it
to the same exception types they raise against real S3.

Guarantees:

* ``to_xml`` always returns a complete, well-formed XML document (or ``b""``
  for statuses that must not carry a body, i.e. 304), whatever characters the
  message or fields contain: text that XML 1.0 cannot represent is replaced
  rather than emitted, so a hostile key name can never break the response.
* ``ERRORS_BY_CODE`` maps each code to exactly one class (the canonical one
  when several classes share a code, e.g. ``RequestExpired`` is an
  ``AccessDenied``).
* Pure module: no I/O, no engine imports.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

__all__ = [
    "S3Error",
    "ERRORS_BY_CODE",
    "error_class_for_code",
]

# XML 1.0 forbids most C0 controls even as character references; replace them
# so a response never becomes unparseable for the client.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(value: object) -> str:
    return _XML_INVALID.sub("\ufffd", str(value))


class S3Error(Exception):
    """Base class of every S3 error response.

    ``fields`` become extra child elements of ``<Error>`` in the order given
    (e.g. ``BucketName``, ``Key``, ``ArgumentName``). ``headers`` may carry
    response headers the error implies (e.g. ``Allow`` for 405); the HTTP
    layer is expected to copy them onto the response.
    """

    code: str = "InternalError"
    status: int = 500
    message: str = "We encountered an internal error. Please try again."
    #: False for statuses where HTTP forbids a body (304).
    has_body: bool = True

    def __init__(
        self,
        message: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **fields: object,
    ) -> None:
        self.message = message if message is not None else type(self).message
        self.fields: dict[str, str] = {
            k: str(v) for k, v in fields.items() if v is not None
        }
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, {self.fields!r})"

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_xml(self, resource: str = "", request_id: str = "") -> bytes:
        """Render the standard S3 ``<Error>`` document.

        Element order is Code, Message, extra fields, Resource, RequestId,
        matching AWS. A field named ``Resource`` or ``RequestId`` overrides
        the corresponding argument instead of producing a duplicate element.
        Returns ``b""`` when the status forbids a body.
        """
        if not self.has_body:
            return b""
        root = ET.Element("Error")
        ET.SubElement(root, "Code").text = self.code
        ET.SubElement(root, "Message").text = _xml_text(self.message)
        fields = dict(self.fields)
        resource = fields.pop("Resource", resource)
        request_id = fields.pop("RequestId", request_id)
        for name, value in fields.items():
            ET.SubElement(root, name).text = _xml_text(value)
        ET.SubElement(root, "Resource").text = _xml_text(resource)
        ET.SubElement(root, "RequestId").text = _xml_text(request_id)
        body = ET.tostring(root, encoding="unicode")
        return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode("utf-8")


def _err(code: str, status: int, message: str, base: type[S3Error] = S3Error) -> type[S3Error]:
    # Built programmatically because ~60 hand-written three-line classes add
    # nothing but noise; names stay importable via module globals below.
    return type(code, (base,), {"code": code, "status": status, "message": message,
                                "__doc__": f"S3 ``{code}`` ({status}): {message}",
                                "__module__": __name__})


AccessDenied = _err("AccessDenied", 403, "Access Denied")
AccountProblem = _err(
    "AccountProblem", 403,
    "There is a problem with your AWS account that prevents the action from "
    "completing successfully.")
AuthorizationHeaderMalformed = _err(
    "AuthorizationHeaderMalformed", 400, "The authorization header is malformed.")
BadDigest = _err(
    "BadDigest", 400, "The Content-MD5 you specified did not match what we received.")
BadRequest = _err("BadRequest", 400, "Bad Request")
BucketAlreadyExists = _err(
    "BucketAlreadyExists", 409,
    "The requested bucket name is not available. The bucket namespace is shared "
    "by all users of the system. Please select a different name and try again.")
BucketAlreadyOwnedByYou = _err(
    "BucketAlreadyOwnedByYou", 409,
    "Your previous request to create the named bucket succeeded and you already own it.")
BucketNotEmpty = _err("BucketNotEmpty", 409, "The bucket you tried to delete is not empty")
EntityTooLarge = _err(
    "EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed size")
EntityTooSmall = _err(
    "EntityTooSmall", 400, "Your proposed upload is smaller than the minimum allowed size")
ExpiredToken = _err("ExpiredToken", 400, "The provided token has expired.")
IllegalLocationConstraintException = _err(
    "IllegalLocationConstraintException", 400,
    "The specified location-constraint is not valid.")
IllegalVersioningConfigurationException = _err(
    "IllegalVersioningConfigurationException", 400,
    "The versioning configuration specified in the request is invalid.")
IncompleteBody = _err(
    "IncompleteBody", 400,
    "You did not provide the number of bytes specified by the Content-Length HTTP header")
InternalError = _err(
    "InternalError", 500, "We encountered an internal error. Please try again.")
InvalidAccessKeyId = _err(
    "InvalidAccessKeyId", 403,
    "The AWS Access Key Id you provided does not exist in our records.")
InvalidArgument = _err("InvalidArgument", 400, "Invalid Argument")
# AWS answers malformed presign parameters with this code; it subclasses
# InvalidArgument so callers can treat both as "bad argument".
AuthorizationQueryParametersError = _err(
    "AuthorizationQueryParametersError", 400,
    "Query-string authentication version 4 requires the X-Amz-Algorithm, "
    "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
    "and X-Amz-Expires parameters.", InvalidArgument)
InvalidBucketName = _err("InvalidBucketName", 400, "The specified bucket is not valid.")
InvalidBucketState = _err(
    "InvalidBucketState", 409, "The request is not valid with the current state of the bucket.")
InvalidChunkSizeError = _err(
    "InvalidChunkSizeError", 403,
    "Only the last chunk is allowed to have a size less than 8192 bytes")
InvalidDigest = _err("InvalidDigest", 400, "The Content-MD5 you specified is not valid.")
InvalidObjectState = _err(
    "InvalidObjectState", 403, "The operation is not valid for the current state of the object.")
InvalidPart = _err(
    "InvalidPart", 400,
    "One or more of the specified parts could not be found.  The part may not have "
    "been uploaded, or the specified entity tag may not match the part's entity tag.")
InvalidPartOrder = _err(
    "InvalidPartOrder", 400,
    "The list of parts was not in ascending order. The parts list must be "
    "specified in order by part number.")
InvalidRange = _err("InvalidRange", 416, "The requested range is not satisfiable")
InvalidRequest = _err("InvalidRequest", 400, "Invalid Request")
InvalidStorageClass = _err(
    "InvalidStorageClass", 400, "The storage class you specified is not valid")
InvalidTag = _err("InvalidTag", 400, "The TagValue you have provided is invalid")
InvalidURI = _err("InvalidURI", 400, "Couldn't parse the specified URI.")
KeyTooLongError = _err("KeyTooLongError", 400, "Your key is too long")
MalformedPOSTRequest = _err(
    "MalformedPOSTRequest", 400,
    "The body of your POST request is not well-formed multipart/form-data.")
MalformedTrailerError = _err(
    "MalformedTrailerError", 400,
    "The request contained trailing data that was not well-formed or did not "
    "conform to our published schema.")
MalformedXML = _err(
    "MalformedXML", 400,
    "The XML you provided was not well-formed or did not validate against our "
    "published schema")
MetadataTooLarge = _err(
    "MetadataTooLarge", 400,
    "Your metadata headers exceed the maximum allowed metadata size.")
MethodNotAllowed = _err(
    "MethodNotAllowed", 405, "The specified method is not allowed against this resource.")
MissingContentLength = _err(
    "MissingContentLength", 411, "You must provide the Content-Length HTTP header.")
MissingRequestBodyError = _err("MissingRequestBodyError", 400, "Request Body is empty")
MissingSecurityHeader = _err(
    "MissingSecurityHeader", 400, "Your request was missing a required header")
NoSuchBucket = _err("NoSuchBucket", 404, "The specified bucket does not exist")
NoSuchKey = _err("NoSuchKey", 404, "The specified key does not exist.")
NoSuchObjectLockConfiguration = _err(
    "NoSuchObjectLockConfiguration", 404,
    "The specified object does not have a ObjectLock configuration")
NoSuchTagSet = _err("NoSuchTagSet", 404, "The TagSet does not exist")
NoSuchUpload = _err(
    "NoSuchUpload", 404,
    "The specified multipart upload does not exist. The upload ID may be invalid, "
    "or the upload may have been aborted or completed.")
NoSuchVersion = _err(
    "NoSuchVersion", 404,
    "The specified version does not exist.")
NotModified = _err("NotModified", 304, "Not Modified")
NotModified.has_body = False
# Named S3NotImplemented so the builtin ``NotImplemented`` is never shadowed.
S3NotImplemented = _err(
    "NotImplemented", 501, "A header you provided implies functionality that is not implemented")
S3NotImplemented.__name__ = S3NotImplemented.__qualname__ = "S3NotImplemented"
ObjectLockConfigurationNotFoundError = _err(
    "ObjectLockConfigurationNotFoundError", 404,
    "Object Lock configuration does not exist for this bucket")
OperationAborted = _err(
    "OperationAborted", 409,
    "A conflicting conditional operation is currently in progress against this "
    "resource. Please try again.")
PreconditionFailed = _err(
    "PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold")
RequestHeaderSectionTooLarge = _err(
    "RequestHeaderSectionTooLarge", 400,
    "Your request header section exceeds the maximum allowed size.")
RequestTimeTooSkewed = _err(
    "RequestTimeTooSkewed", 403,
    "The difference between the request time and the current time is too large.")
RequestTimeout = _err(
    "RequestTimeout", 400,
    "Your socket connection to the server was not read from or written to within "
    "the timeout period.")
ServiceUnavailable = _err("ServiceUnavailable", 503, "Please reduce your request rate.")
SignatureDoesNotMatch = _err(
    "SignatureDoesNotMatch", 403,
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method.")
SlowDown = _err("SlowDown", 503, "Please reduce your request rate.")
XAmzContentSHA256Mismatch = _err(
    "XAmzContentSHA256Mismatch", 400,
    "The provided 'x-amz-content-sha256' header does not match what was computed.")

# Expired presigned URL: AWS answers AccessDenied with this message (and the
# X-Amz-Expires / Expires / ServerTime fields), not ExpiredToken.
RequestExpired = _err("AccessDenied", 403, "Request has expired", AccessDenied)
RequestExpired.__name__ = RequestExpired.__qualname__ = "RequestExpired"


def _collect() -> dict[str, type[S3Error]]:
    table: dict[str, type[S3Error]] = {"InternalError": InternalError}
    for obj in list(globals().values()):
        if isinstance(obj, type) and issubclass(obj, S3Error) and obj is not S3Error:
            # A subclass that reuses its parent's code (RequestExpired) must
            # not displace the canonical class for that code.
            if obj.code in table and table[obj.code] is not obj:
                if issubclass(obj, table[obj.code]):
                    continue
            table[obj.code] = obj
    return table


ERRORS_BY_CODE: dict[str, type[S3Error]] = _collect()
__all__ += sorted({cls.__name__ for cls in ERRORS_BY_CODE.values()} | {"RequestExpired"})


def error_class_for_code(code: str) -> type[S3Error]:
    """Return the class for ``code``; unknown codes map to ``InternalError``."""
    return ERRORS_BY_CODE.get(code, InternalError)
