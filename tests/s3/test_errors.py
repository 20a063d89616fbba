"""Refusals rendered as S3 XML errors that S3 clients parse into their usual exceptions."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.parsers import RestXMLParser
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import (
    AccessDenied,
    BadRequest,
    PayloadTooLarge,
    RequestRefused,
    Unauthenticated,
    UpstreamFailure,
    UpstreamTimeout,
)
from proxy.s3.errors import render_error


def botocore_parse(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = RestXMLParser().parse(
        {"status_code": status, "headers": headers, "body": body}, None
    )
    return parsed


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (AccessDenied("IE data may not be read from US"), 403, "AccessDenied"),
        (Unauthenticated("no token"), 403, "InvalidToken"),
        (Unauthenticated("token expired", code="ExpiredToken"), 403, "ExpiredToken"),
        (BadRequest("bad path", code="InvalidURI"), 400, "InvalidURI"),
        (BadRequest("bad"), 400, "InvalidRequest"),
        (PayloadTooLarge("too big"), 413, "EntityTooLarge"),
        (UpstreamFailure("unreachable"), 502, "BadGateway"),
        (UpstreamTimeout("slow"), 504, "GatewayTimeout"),
    ],
)
def test_status_headers_and_body(error: RequestRefused, status: int, code: str) -> None:
    got_status, headers, body = render_error(error, "dec-123")
    assert got_status == status
    assert headers == {"Content-Type": "application/xml", "x-amz-request-id": "dec-123",
                       "X-Bailiwick-Error-Code": code, "X-Bailiwick-Reason": error.message}
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error>')
    parsed = botocore_parse(status, headers, body)
    assert parsed["Error"]["Code"] == code
    assert parsed["Error"]["Message"] == error.message
    assert parsed["ResponseMetadata"]["RequestId"] == "dec-123"
    assert parsed["ResponseMetadata"]["HTTPStatusCode"] == status


def test_exact_body() -> None:
    _, _, body = render_error(AccessDenied("denied", resource="/bkt/k"), "id-1")
    assert body == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b"<Error><Code>AccessDenied</Code><Message>denied</Message>"
        b"<Resource>/bkt/k</Resource><RequestId>id-1</RequestId></Error>"
    )


def test_a_botocore_client_raises_its_usual_client_error() -> None:
    status, headers, body = render_error(
        AccessDenied("IE data may not be read from US", resource="/mail-eu-dublin/alice"), "dec-42"
    )

    class Raw:
        def stream(self, **_: Any) -> Any:
            yield body

    def answer(**_: Any) -> AWSResponse:
        return AWSResponse("http://s3.example.test/", status, headers, Raw())

    s3 = botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url="http://s3.example.test",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 0}),
    )
    s3.meta.events.register("before-send", answer)
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="mail-eu-dublin", Key="alice")
    response = caught.value.response
    assert response["Error"]["Code"] == "AccessDenied"
    assert response["Error"]["Message"] == "IE data may not be read from US"
    assert response["ResponseMetadata"]["RequestId"] == "dec-42"


def test_markup_in_values_is_escaped() -> None:
    error = BadRequest('</Message><Code>Evil</Code> & "quoted"', resource="/bkt/<key>&")
    _, _, body = render_error(error, "id")
    root = ET.fromstring(body)  # noqa: S314 - our own output
    assert [child.tag for child in root] == ["Code", "Message", "Resource", "RequestId"]
    assert root.findtext("Code") == "InvalidRequest"
    assert root.findtext("Message") == '</Message><Code>Evil</Code> & "quoted"'
    assert root.findtext("Resource") == "/bkt/<key>&"


def test_characters_xml_cannot_carry_are_replaced() -> None:
    # A refused raw target may hold control bytes or surrogate-escaped non-UTF-8 bytes.
    error = BadRequest("bad \x00 \x1b \udcff \ufffe end", resource="/bkt/\udcff\x7f")
    status, headers, body = render_error(error, "id")
    parsed = botocore_parse(status, headers, body)
    assert parsed["Error"]["Message"] == "bad \ufffd \ufffd \ufffd \ufffd end"
    assert parsed["Error"]["Resource"] == "/bkt/\ufffd\x7f"


def test_request_id_cannot_split_headers() -> None:
    _, headers, body = render_error(AccessDenied("no"), "id\r\nSet-Cookie: x=1")
    assert headers["x-amz-request-id"] == "idSet-Cookie:x=1"
    assert b"<RequestId>idSet-Cookie:x=1</RequestId>" in body


@given(st.text(), st.text(), st.text())
def test_any_values_render_to_xml_botocore_parses(message: str, resource: str, request_id: str) -> None:
    status, headers, body = render_error(AccessDenied(message, resource=resource), request_id)
    parsed = botocore_parse(status, headers, body)
    assert parsed["Error"]["Code"] == "AccessDenied"
    assert all(0x21 <= ord(c) <= 0x7E for c in headers["x-amz-request-id"])


_XML_SAFE = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufffe\uffff")


@given(st.text(alphabet=_XML_SAFE, min_size=1).filter(str.strip))
def test_any_printable_message_reaches_the_client_unchanged(message: str) -> None:
    status, headers, body = render_error(AccessDenied(message), "id")
    assert botocore_parse(status, headers, body)["Error"]["Message"] == message
