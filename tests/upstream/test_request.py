"""What is written upstream: the head exactly as decided, the body framed so that nothing can be smuggled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest
from multidict import CIMultiDict

from proxy.errors import InternalError, UpstreamFailure
from proxy.upstream.connection import Connection
from proxy.upstream.request import send_body, serialise_head


class _Wire:
    """What `send_body` wrote, in order."""

    def __init__(self) -> None:
        self.sent = b""

    def write(self, data: bytes) -> None:
        self.sent += data

    async def drain(self) -> None:
        return None


async def _pieces(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


@pytest.mark.parametrize(("pieces", "length", "wire"), [
    # "0\r\n\r\n" in the middle would end the body there, and "2\r\ncd..." would be read as a request.
    ((b"ab", b"", b"cd"), None, b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"),
    ((b"ab", b"cd"), 4, b"abcd"),
    ((), None, b"0\r\n\r\n"),
    ((), 0, b""),
], ids=["chunked-empty-piece", "declared", "chunked-empty", "declared-empty"])
async def test_a_body_is_framed_as_declared(pieces: tuple[bytes, ...], length: int | None, wire: bytes) -> None:
    written = _Wire()
    await send_body(cast(Connection, written), _pieces(*pieces), length)
    assert written.sent == wire


@pytest.mark.parametrize(("pieces", "length", "message"), [
    ((b"abc",), 2, "longer than its Content-Length"),
    ((b"a",), 2, "shorter than its Content-Length"),
])
async def test_a_body_unlike_its_declared_length_is_not_sent_as_whole(
    pieces: tuple[bytes, ...], length: int, message: str,
) -> None:
    written = _Wire()
    with pytest.raises(UpstreamFailure, match=message):
        await send_body(cast(Connection, written), _pieces(*pieces), length)
    assert len(written.sent) <= length   # never a byte past the declared length


def test_a_head_is_the_request_line_and_headers_exactly_as_given() -> None:
    headers = CIMultiDict([("Host", "bucket.example"), ("x-amz-meta-a", "1"), ("X-Amz-Meta-A", "2")])
    assert serialise_head("GET", "/k%2Fey?list-type=2", headers) == (
        b"GET /k%2Fey?list-type=2 HTTP/1.1\r\nHost: bucket.example\r\nx-amz-meta-a: 1\r\nX-Amz-Meta-A: 2\r\n\r\n")


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\0b"], ids=["crlf", "lf", "cr", "nul"])
def test_a_header_that_would_split_the_head_stops_the_request(value: str) -> None:
    with pytest.raises(InternalError, match="could not be forwarded intact"):
        serialise_head("GET", "/", CIMultiDict([("Host", "h"), ("X-Tag", value)]))
