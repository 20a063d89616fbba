"""Refusals in S3's own error format, so S3 clients raise their usual errors (docs/storage-apis.md).

A refusal's message and resource may echo what the caller sent (a bucket, a
key, the raw target), so every value is made safe as XML text
(`proxy.storage.xmltext`). The code and message also go in two headers
(`proxy.storage.refusal`), since an answer to HEAD has no body.
"""

from __future__ import annotations

from proxy.errors import RequestRefused
from proxy.storage.refusal import refusal_headers
from proxy.storage.xmltext import header_token, xml_text

_TEMPLATE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message>"
    "<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>"
)


def render_error(err: RequestRefused, request_id: str) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of the S3 error response for `err`."""
    safe_id = header_token(request_id)
    body = _TEMPLATE.format(
        code=xml_text(err.code),
        message=xml_text(err.message),
        resource=xml_text(err.resource),
        request_id=xml_text(safe_id),
    )
    headers = {"Content-Type": "application/xml", "x-amz-request-id": safe_id, **refusal_headers(err.code, err.message)}
    return err.status, headers, body.encode("utf-8")

