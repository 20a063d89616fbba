"""Refusals rendered as Azure Storage XML errors, with x-ms-error-code: what Azure clients read."""

from __future__ import annotations

import re

import pytest
from defusedxml.ElementTree import fromstring
from hypothesis import given
from hypothesis import strategies as st

from proxy.azure.errors import render_error
from proxy.errors import (
    AccessDenied,
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotReady,
    PayloadTooLarge,
    RequestRefused,
    SlowDown,
    Unauthenticated,
    UpstreamFailure,
    UpstreamTimeout,
)

TIME = "2026-12-06T03:14:05.1234560Z"


def fixed_time() -> str:
    return TIME


@pytest.mark.parametrize(("error", "status", "code"), [
    (AccessDenied("read access to data held in Ireland (IE) is not allowed for callers in US"), 403,
     "AuthorizationFailure"),
    (Unauthenticated("no token"), 403, "AuthenticationFailed"),
    (Unauthenticated("token expired", code="ExpiredToken"), 403, "AuthenticationFailed"),
    (BadRequest("bad"), 400, "InvalidInput"),
    # S3's codes from the reading both APIs share, in Azure's words for the same refusal.
    (BadRequest("bad path", code="InvalidURI"), 400, "InvalidUri"),
    (BadRequest("bad bucket", code="InvalidBucketName"), 400, "InvalidResourceName"),
    (BadRequest("long name", code="KeyTooLongError"), 400, "OutOfRangeInput"),
    (MethodNotAllowed("no such method"), 405, "UnsupportedHttpVerb"),
    (BadRequest("not XML", code="MalformedXML"), 400, "InvalidXmlDocument"),
    (BadRequest("short body", code="IncompleteBody"), 400, "InvalidInput"),
    (BadRequest("bad header", code="InvalidHeaderValue"), 400, "InvalidHeaderValue"),
    (BadRequest("stalled", code="RequestTimeout"), 400, "OperationTimedOut"),
    (PayloadTooLarge("too big"), 413, "RequestBodyTooLarge"),
    (InternalError("oops"), 500, "InternalError"),
    (NotReady("no policy"), 503, "ServerBusy"),
    (SlowDown("too many bodies being read"), 503, "ServerBusy"),
    (UpstreamFailure("unreachable"), 502, "BadGateway"),
    (UpstreamTimeout("slow"), 504, "OperationTimedOut"),
])
def test_status_headers_and_body(error: RequestRefused, status: int, code: str) -> None:
    got_status, headers, body = render_error(error, "dec-123", now=fixed_time)
    assert got_status == status
    assert headers == {"Content-Type": "application/xml", "x-ms-error-code": code, "x-ms-request-id": "dec-123",
                       "X-Bailiwick-Error-Code": code, "X-Bailiwick-Reason": error.message}
    assert body == (
        f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
        f"<Message>{error.message}\nRequestId:dec-123\nTime:{TIME}</Message></Error>"
    ).encode()
    root = fromstring(body)
    assert root.findtext("Code") == code
    assert (root.findtext("Message") or "").split("\n") == [error.message, "RequestId:dec-123", f"Time:{TIME}"]


def test_the_time_is_azures_form() -> None:
    _, _, body = render_error(AccessDenied("no"), "id")
    assert re.search(rb"\nTime:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z</Message>", body)


@given(st.text(), st.text())
def test_any_message_and_id_give_parseable_xml_and_clean_headers(message: str, request_id: str) -> None:
    _, headers, body = render_error(BadRequest(message, code="InvalidURI"), request_id, now=fixed_time)
    root = fromstring(body)
    assert root.tag == "Error"
    assert [child.tag for child in root] == ["Code", "Message"]
    assert all(0x21 <= ord(char) <= 0x7E for char in headers["x-ms-request-id"])
    assert headers["x-ms-error-code"] == "InvalidUri"


def test_markup_in_a_message_is_escaped() -> None:
    _, _, body = render_error(BadRequest("</Message><Code>AccessGranted</Code>&"), "x", now=fixed_time)
    root = fromstring(body)
    assert root.findtext("Code") == "InvalidInput"
    assert (root.findtext("Message") or "").startswith("</Message><Code>AccessGranted</Code>&")
