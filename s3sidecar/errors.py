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
        self.fields: dict[str, str] = {k: str(v) for k, v in fields.items() if v is not None}
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


class AccessDenied(S3Error):
    code = "AccessDenied"
    status = 403
    message = "Access Denied"


class AccountProblem(S3Error):
    code = "AccountProblem"
    status = 403
    message = "There is a problem with your AWS account that prevents the action from completing successfully."


class AuthorizationHeaderMalformed(S3Error):
    code = "AuthorizationHeaderMalformed"
    status = 400
    message = "The authorization header is malformed."


class BadDigest(S3Error):
    code = "BadDigest"
    status = 400
    message = "The Content-MD5 you specified did not match what we received."


class BadRequest(S3Error):
    code = "BadRequest"
    status = 400
    message = "Bad Request"


class BucketAlreadyExists(S3Error):
    code = "BucketAlreadyExists"
    status = 409
    message = (
        "The requested bucket name is not available. The bucket namespace is "
        "shared by all users of the system. Please select a different name and "
        "try again."
    )


class BucketAlreadyOwnedByYou(S3Error):
    code = "BucketAlreadyOwnedByYou"
    status = 409
    message = "Your previous request to create the named bucket succeeded and you already own it."


class BucketNotEmpty(S3Error):
    code = "BucketNotEmpty"
    status = 409
    message = "The bucket you tried to delete is not empty"


class EntityTooLarge(S3Error):
    code = "EntityTooLarge"
    status = 400
    message = "Your proposed upload exceeds the maximum allowed size"


class EntityTooSmall(S3Error):
    code = "EntityTooSmall"
    status = 400
    message = "Your proposed upload is smaller than the minimum allowed size"


class ExpiredToken(S3Error):
    code = "ExpiredToken"
    status = 400
    message = "The provided token has expired."


class IllegalLocationConstraintException(S3Error):
    code = "IllegalLocationConstraintException"
    status = 400
    message = "The specified location-constraint is not valid."


class IllegalVersioningConfigurationException(S3Error):
    code = "IllegalVersioningConfigurationException"
    status = 400
    message = "The versioning configuration specified in the request is invalid."


class IncompleteBody(S3Error):
    code = "IncompleteBody"
    status = 400
    message = "You did not provide the number of bytes specified by the Content-Length HTTP header"


class InternalError(S3Error):
    code = "InternalError"
    status = 500
    message = "We encountered an internal error. Please try again."


class InvalidAccessKeyId(S3Error):
    code = "InvalidAccessKeyId"
    status = 403
    message = "The AWS Access Key Id you provided does not exist in our records."


class InvalidArgument(S3Error):
    code = "InvalidArgument"
    status = 400
    message = "Invalid Argument"


# AWS answers malformed presign parameters with this code; subclassing
# InvalidArgument lets callers treat both as "bad argument".
class AuthorizationQueryParametersError(InvalidArgument):
    code = "AuthorizationQueryParametersError"
    status = 400
    message = (
        "Query-string authentication version 4 requires the X-Amz-Algorithm, "
        "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
        "and X-Amz-Expires parameters."
    )


class InvalidBucketName(S3Error):
    code = "InvalidBucketName"
    status = 400
    message = "The specified bucket is not valid."


class InvalidBucketState(S3Error):
    code = "InvalidBucketState"
    status = 409
    message = "The request is not valid with the current state of the bucket."


class InvalidChunkSizeError(S3Error):
    code = "InvalidChunkSizeError"
    status = 403
    message = "Only the last chunk is allowed to have a size less than 8192 bytes"


class InvalidDigest(S3Error):
    code = "InvalidDigest"
    status = 400
    message = "The Content-MD5 you specified is not valid."


class InvalidObjectState(S3Error):
    code = "InvalidObjectState"
    status = 403
    message = "The operation is not valid for the current state of the object."


class InvalidPart(S3Error):
    code = "InvalidPart"
    status = 400
    message = (
        "One or more of the specified parts could not be found.  The part may "
        "not have been uploaded, or the specified entity tag may not match the "
        "part's entity tag."
    )


class InvalidPartOrder(S3Error):
    code = "InvalidPartOrder"
    status = 400
    message = "The list of parts was not in ascending order. The parts list must be specified in order by part number."


class InvalidRange(S3Error):
    code = "InvalidRange"
    status = 416
    message = "The requested range is not satisfiable"


class InvalidPartNumber(S3Error):
    code = "InvalidPartNumber"
    status = 416
    message = "The requested partnumber is not satisfiable"


class InvalidEncryptionAlgorithmError(S3Error):
    code = "InvalidEncryptionAlgorithmError"
    status = 400
    message = "The encryption request you specified is not valid. The valid value is AES256."


class KMSNotFound(S3Error):
    code = "KMS.NotFoundException"
    status = 400
    message = "Invalid keyId"


class ServerSideEncryptionConfigurationNotFoundError(S3Error):
    code = "ServerSideEncryptionConfigurationNotFoundError"
    status = 404
    message = "The server side encryption configuration was not found"


class InvalidRequest(S3Error):
    code = "InvalidRequest"
    status = 400
    message = "Invalid Request"


class InvalidStorageClass(S3Error):
    code = "InvalidStorageClass"
    status = 400
    message = "The storage class you specified is not valid"


class InvalidTag(S3Error):
    code = "InvalidTag"
    status = 400
    message = "The TagValue you have provided is invalid"


class InvalidURI(S3Error):
    code = "InvalidURI"
    status = 400
    message = "Couldn't parse the specified URI."


class KeyTooLongError(S3Error):
    code = "KeyTooLongError"
    status = 400
    message = "Your key is too long"


class MalformedPOSTRequest(S3Error):
    code = "MalformedPOSTRequest"
    status = 400
    message = "The body of your POST request is not well-formed multipart/form-data."


class MalformedTrailerError(S3Error):
    code = "MalformedTrailerError"
    status = 400
    message = "The request contained trailing data that was not well-formed or did not conform to our published schema."


class MalformedACLError(S3Error):
    code = "MalformedACLError"
    status = 400
    message = "The XML you provided was not well-formed or did not validate against our published schema"


class UnresolvableGrantByEmailAddress(S3Error):
    code = "UnresolvableGrantByEmailAddress"
    status = 400
    message = "The email address you provided does not match any account on record."


class MalformedXML(S3Error):
    code = "MalformedXML"
    status = 400
    message = "The XML you provided was not well-formed or did not validate against our published schema"


class MetadataTooLarge(S3Error):
    code = "MetadataTooLarge"
    status = 400
    message = "Your metadata headers exceed the maximum allowed metadata size."


class MethodNotAllowed(S3Error):
    code = "MethodNotAllowed"
    status = 405
    message = "The specified method is not allowed against this resource."


class MissingContentLength(S3Error):
    code = "MissingContentLength"
    status = 411
    message = "You must provide the Content-Length HTTP header."


class MissingRequestBodyError(S3Error):
    code = "MissingRequestBodyError"
    status = 400
    message = "Request Body is empty"


class MissingSecurityHeader(S3Error):
    code = "MissingSecurityHeader"
    status = 400
    message = "Your request was missing a required header"


class NoSuchBucket(S3Error):
    code = "NoSuchBucket"
    status = 404
    message = "The specified bucket does not exist"


class NoSuchLifecycleConfiguration(S3Error):
    code = "NoSuchLifecycleConfiguration"
    status = 404
    message = "The lifecycle configuration does not exist"


class ReplicationConfigurationNotFoundError(S3Error):
    code = "ReplicationConfigurationNotFoundError"
    status = 404
    message = "The replication configuration was not found"


class NoSuchKey(S3Error):
    code = "NoSuchKey"
    status = 404
    message = "The specified key does not exist."


class NoSuchObjectLockConfiguration(S3Error):
    code = "NoSuchObjectLockConfiguration"
    status = 404
    message = "The specified object does not have a ObjectLock configuration"


class InvalidRetentionPeriod(S3Error):
    code = "InvalidRetentionPeriod"
    status = 400
    message = "Default retention period must be a positive integer value."


class NoSuchCORSConfiguration(S3Error):
    code = "NoSuchCORSConfiguration"
    status = 404
    message = "The CORS configuration does not exist"


class CORSForbidden(S3Error):
    """A preflight no rule allows: S3 answers 403 AccessForbidden."""

    code = "AccessForbidden"
    status = 403
    message = "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec."


class InvalidPolicyDocument(S3Error):
    code = "InvalidPolicyDocument"
    status = 400
    message = "Invalid Policy: Invalid JSON."


class MaxPostPreDataLengthExceededError(S3Error):
    code = "MaxPostPreDataLengthExceededError"
    status = 400
    message = "Your POST request fields preceding the upload file were too large."


class MalformedPolicy(S3Error):
    code = "MalformedPolicy"
    status = 400
    message = "Policies must be valid JSON and the first byte must be '{'"


class NoSuchBucketPolicy(S3Error):
    code = "NoSuchBucketPolicy"
    status = 404
    message = "The bucket policy does not exist"


class NoSuchPublicAccessBlockConfiguration(S3Error):
    code = "NoSuchPublicAccessBlockConfiguration"
    status = 404
    message = "The public access block configuration was not found"


class NoSuchTagSet(S3Error):
    code = "NoSuchTagSet"
    status = 404
    message = "The TagSet does not exist"


class NoSuchUpload(S3Error):
    code = "NoSuchUpload"
    status = 404
    message = (
        "The specified multipart upload does not exist. The upload ID may be "
        "invalid, or the upload may have been aborted or completed."
    )


class NoSuchVersion(S3Error):
    code = "NoSuchVersion"
    status = 404
    message = "The specified version does not exist."


class NotModified(S3Error):
    code = "NotModified"
    status = 304
    message = "Not Modified"
    has_body = False


# Named S3NotImplemented so the builtin ``NotImplemented`` is never shadowed.
class S3NotImplemented(S3Error):
    code = "NotImplemented"
    status = 501
    message = "A header you provided implies functionality that is not implemented"


class ObjectLockConfigurationNotFoundError(S3Error):
    code = "ObjectLockConfigurationNotFoundError"
    status = 404
    message = "Object Lock configuration does not exist for this bucket"


class OperationAborted(S3Error):
    code = "OperationAborted"
    status = 409
    message = "A conflicting conditional operation is currently in progress against this resource. Please try again."


class PreconditionFailed(S3Error):
    code = "PreconditionFailed"
    status = 412
    message = "At least one of the pre-conditions you specified did not hold"


class RequestHeaderSectionTooLarge(S3Error):
    code = "RequestHeaderSectionTooLarge"
    status = 400
    message = "Your request header section exceeds the maximum allowed size."


class RequestTimeTooSkewed(S3Error):
    code = "RequestTimeTooSkewed"
    status = 403
    message = "The difference between the request time and the current time is too large."


class RestoreAlreadyInProgress(S3Error):
    code = "RestoreAlreadyInProgress"
    status = 409
    message = "Object restore is already in progress."


class RequestTimeout(S3Error):
    code = "RequestTimeout"
    status = 400
    message = "Your socket connection to the server was not read from or written to within the timeout period."


class ServiceUnavailable(S3Error):
    code = "ServiceUnavailable"
    status = 503
    message = "Please reduce your request rate."


class SignatureDoesNotMatch(S3Error):
    code = "SignatureDoesNotMatch"
    status = 403
    message = "The request signature we calculated does not match the signature you provided. Check your key and signing method."


class SlowDown(S3Error):
    code = "SlowDown"
    status = 503
    message = "Please reduce your request rate."


class XAmzContentSHA256Mismatch(S3Error):
    code = "XAmzContentSHA256Mismatch"
    status = 400
    message = "The provided 'x-amz-content-sha256' header does not match what was computed."


# Expired presigned URL: AWS answers AccessDenied with this message (plus
# X-Amz-Expires / Expires / ServerTime fields), not ExpiredToken.
class RequestExpired(AccessDenied):
    code = "AccessDenied"
    status = 403
    message = "Request has expired"


# A read the engine could not complete (too few intact fragments): still
# AWS's InternalError, with a message that says what happened.
class DataUnreadable(InternalError):
    code = "InternalError"
    status = 500
    message = "The object's stored data could not be read: too few of its fragments are intact."


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
__all__ += sorted({cls.__name__ for cls in ERRORS_BY_CODE.values()} | {"RequestExpired", "DataUnreadable"})


def error_class_for_code(code: str) -> type[S3Error]:
    """Return the class for ``code``; unknown codes map to ``InternalError``."""
    return ERRORS_BY_CODE.get(code, InternalError)
