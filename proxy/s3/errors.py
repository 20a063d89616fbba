"""Refusals in S3's own error format, so S3 clients raise their usual errors (docs/storage-apis.md).

A refusal's message and resource may echo what the caller sent (a bucket, a
key, the raw target), so every value is XML-escaped and stripped of
characters XML 1.0 cannot carry; a client must always be able to parse the
answer, and the answer must never carry markup the caller injected.
"""

from __future__ import annotations

import re

from proxy.errors import RequestRefused

# Everything outside the XML 1.0 Char production (and lone surrogates, which
# cannot be encoded): C0 controls other than tab, newline, carriage return, U+FFFE/U+FFFF.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# A request id goes into a header too: visible ASCII only.
_NOT_HEADER_TOKEN = re.compile(r"[^\x21-\x7e]")

_TEMPLATE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message>"
    "<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>"
)


def render_error(err: RequestRefused, request_id: str) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of the S3 error response for `err`."""
    safe_id = _NOT_HEADER_TOKEN.sub("", request_id)
    body = _TEMPLATE.format(
        code=_text(err.code),
        message=_text(err.message),
        resource=_text(err.resource),
        request_id=_text(safe_id),
    )
    headers = {"Content-Type": "application/xml", "x-amz-request-id": safe_id}
    return err.status, headers, body.encode("utf-8")


def _text(value: str) -> str:
    # xml.sax.saxutils.escape, without importing xml.sax into every process.
    return _NOT_XML_CHAR.sub("\ufffd", value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
