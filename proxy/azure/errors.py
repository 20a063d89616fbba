"""Refusals in Azure Storage's own error format, so Azure clients raise their usual errors (docs/storage-apis.md).

Azure answers an error with an XML body, ``<Error><Code>…</Code><Message>…
RequestId:…\\nTime:…</Message></Error>``, and the same code in the
``x-ms-error-code`` header, which is what the SDKs read first
(azure-storage-blob raises ``HttpResponseError`` with ``error_code`` set
from it). The proxy's error codes are S3's names (`proxy.errors`); one table
maps them to Azure's. A code the table does not know is passed on as it is.

A refusal's message may echo what the caller sent, so every value is made
safe as XML text (`proxy.storage.xmltext`), as on the S3 side; the code and
message also go in two headers (`proxy.storage.refusal`), since an answer to
HEAD has no body.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from proxy.errors import RequestRefused
from proxy.storage.refusal import refusal_headers
from proxy.storage.xmltext import header_token, xml_text

# The proxy's code (S3's vocabulary) -> Azure's; the status is the refusal's own.
CODES: dict[str, str] = {
    "AccessDenied": "AuthorizationFailure",
    "AccessForbidden": "CorsPreflightFailure",   # a CORS preflight no rule allows (proxy.cors)
    "InvalidToken": "AuthenticationFailed",
    "ExpiredToken": "AuthenticationFailed",
    "InvalidClientCertHeader": "AuthenticationFailed",
    "AmbiguousIdentity": "AuthenticationFailed",
    "InvalidRequest": "InvalidInput",
    # The codes S3 itself gives for what the shared reading refuses (docs/storage-apis.md, "Errors before the
    # storage server"), each as Azure names the same refusal.
    "InvalidURI": "InvalidUri",
    "InvalidBucketName": "InvalidResourceName",
    "KeyTooLongError": "OutOfRangeInput",
    "MethodNotAllowed": "UnsupportedHttpVerb",
    "MalformedXML": "InvalidXmlDocument",
    "IncompleteBody": "InvalidInput",
    "EntityTooLarge": "RequestBodyTooLarge",
    "RequestTimeout": "OperationTimedOut",
    "InternalError": "InternalError",
    "ServiceUnavailable": "ServerBusy",
    "SlowDown": "ServerBusy",
    "BadGateway": "BadGateway",
    "GatewayTimeout": "OperationTimedOut",
}

_TEMPLATE = (
    '<?xml version="1.0" encoding="utf-8"?>'
    "<Error><Code>{code}</Code><Message>{message}\nRequestId:{request_id}\nTime:{time}</Message></Error>"
)


def _azure_time() -> str:
    # Azure's form: seven digits of fractions of a second.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def azure_code(code: str) -> str:
    """The Azure error code for one of the proxy's codes."""
    return CODES.get(code, code)


def render_error(
    err: RequestRefused, request_id: str, *, now: Callable[[], str] = _azure_time,
) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of the Azure error response for `err`."""
    safe_id = header_token(request_id)
    code = header_token(azure_code(err.code)) or "InternalError"
    body = _TEMPLATE.format(code=xml_text(code), message=xml_text(err.message), request_id=xml_text(safe_id),
                            time=now())
    headers = {"Content-Type": "application/xml", "x-ms-error-code": code, "x-ms-request-id": safe_id,
               **refusal_headers(code, err.message)}
    return err.status, headers, body.encode("utf-8")

