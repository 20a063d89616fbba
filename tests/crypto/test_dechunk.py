"""The aws-chunked framing of an upload read back to its plaintext (`proxy.crypto.dechunk`), as pure code."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import zlib
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.crypto.dechunk import Chunked, Dechunker, chunked_upload, dechunked, without_framing
from proxy.errors import BadRequest, LengthRequired, NotImplementedHere, RequestRefused

_DIGESTS: dict[str, Callable[[bytes], bytes]] = {
    "x-amz-checksum-crc32": lambda data: zlib.crc32(data).to_bytes(4, "big"),
    "x-amz-checksum-sha1": lambda data: hashlib.sha1(data, usedforsecurity=False).digest(),
    "x-amz-checksum-sha256": lambda data: hashlib.sha256(data).digest(),
}


def framed(chunks: list[bytes], trailer: str = "x-amz-checksum-crc32", value: bytes | None = None) -> bytes:
    """An unsigned aws-chunked body as botocore writes it."""
    data = b"".join(chunks)
    digest = value if value is not None else _DIGESTS[trailer](data)
    body = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for chunk in chunks if chunk)
    return body + f"0\r\n{trailer}:".encode() + base64.b64encode(digest) + b"\r\n\r\n"


def read(body: bytes, cuts: list[int], chunked: Chunked, largest: int) -> bytes:
    """`body` fed in the pieces `cuts` makes of it; never more held than one chunk (`largest`) and its framing."""
    reader = Dechunker(chunked)
    out = []
    at = 0
    for cut in [*sorted({min(c, len(body)) for c in cuts}), len(body)]:
        out.append(reader.feed(body[at:cut]))
        assert reader.held_bytes <= largest + 200
        at = cut
    reader.finish()
    return b"".join(out)


@settings(max_examples=150, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
       trailer=st.sampled_from(sorted(_DIGESTS)))
def test_any_framing_in_any_split_reads_back_to_its_data(chunks: list[bytes], cuts: list[int], trailer: str) -> None:
    data = b"".join(chunks)
    largest = max(map(len, chunks), default=0)
    assert read(framed(chunks, trailer), cuts, Chunked(len(data), trailer), largest) == data


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=4),
       cut=st.integers(min_value=0, max_value=10_000))
def test_a_body_cut_anywhere_is_incomplete(chunks: list[bytes], cut: int) -> None:
    body = framed(chunks)
    cut = cut % len(body)
    reader = Dechunker(Chunked(len(b"".join(chunks)), "x-amz-checksum-crc32"))
    reader.feed(body[:cut])
    with pytest.raises(BadRequest) as refused:
        reader.finish()
    assert refused.value.code == "IncompleteBody"


def test_the_data_of_a_chunk_is_handed_back_only_once_the_chunk_is_whole() -> None:
    body = framed([b"a" * 10, b"b" * 5])
    reader = Dechunker(Chunked(15, "x-amz-checksum-crc32"))
    assert reader.feed(body[:12]) == b""            # "a\r\n" and 9 of its 10 bytes
    assert reader.feed(body[12:15]) == b"a" * 10    # its last byte and CRLF
    assert reader.feed(body[15:]) == b"b" * 5


@pytest.mark.parametrize(
    ("why", "body", "chunked", "code"),
    [
        ("a wrong checksum", framed([b"abc"], value=b"\0\0\0\0"), Chunked(3, "x-amz-checksum-crc32"), "BadDigest"),
        ("another checksum than announced", framed([b"abc"], "x-amz-checksum-sha1"),
         Chunked(3, "x-amz-checksum-crc32"), "InvalidRequest"),
        ("more data than announced", framed([b"abcd"]), Chunked(3, "x-amz-checksum-crc32"), "IncompleteBody"),
        ("less data than announced", framed([b"ab"]), Chunked(3, "x-amz-checksum-crc32"), "IncompleteBody"),
        ("a signed chunk line", b"3;chunk-signature=" + b"0" * 64 + b"\r\nabc\r\n", Chunked(3, "x-amz-checksum-crc32"),
         "InvalidRequest"),
        ("a bare LF", b"3\nabc\r\n", Chunked(3, "x-amz-checksum-crc32"), "InvalidRequest"),
        ("bytes after the end", framed([b"abc"]) + b"x", Chunked(3, "x-amz-checksum-crc32"), "InvalidRequest"),
    ],
)
def test_a_body_not_exactly_as_framed_is_refused(why: str, body: bytes, chunked: Chunked, code: str) -> None:
    with pytest.raises(BadRequest) as refused:
        _whole(Dechunker(chunked), body)
    assert refused.value.code == code, why


def _whole(reader: Dechunker, body: bytes) -> bytes:
    data = reader.feed(body)
    reader.finish()
    return data


def test_the_async_reader_raises_in_place_of_its_end() -> None:
    async def pieces(body: bytes) -> AsyncIterator[bytes]:
        for at in range(0, len(body), 7):
            yield body[at:at + 7]

    async def collect(body: bytes) -> bytes:
        return b"".join([piece async for piece in dechunked(pieces(body), Chunked(6, "x-amz-checksum-sha256"))])

    good = framed([b"abc", b"def"], "x-amz-checksum-sha256")
    assert asyncio.run(collect(good)) == b"abcdef"
    with pytest.raises(BadRequest):
        asyncio.run(collect(framed([b"abc", b"deF"], "x-amz-checksum-sha256", hashlib.sha256(b"abcdef").digest())))
    with pytest.raises(BadRequest) as refused:   # every chunk whole, the trailer missing: refused at the end
        asyncio.run(collect(good.rsplit(b"0\r\n", 1)[0]))
    assert refused.value.code == "IncompleteBody"


TRAILED = {"X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "Content-Encoding": "aws-chunked",
           "X-Amz-Decoded-Content-Length": "100", "x-amz-trailer": "x-amz-checksum-crc32"}


def _with(**changes: str | None) -> CIMultiDict[str]:
    headers = CIMultiDict(TRAILED)
    for name, value in changes.items():
        name = name.replace("_", "-")
        headers.popall(name, None)
        if value is not None:
            headers[name] = value
    return headers


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (CIMultiDict({"Content-Length": "5"}), None),
        (CIMultiDict({"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}), None),
        (_with(), Chunked(100, "x-amz-checksum-crc32")),
        (_with(Content_Encoding="gzip, aws-chunked"), Chunked(100, "x-amz-checksum-crc32")),
        (_with(x_amz_trailer="X-Amz-Checksum-SHA256"), Chunked(100, "x-amz-checksum-sha256")),
        (_with(X_Amz_Decoded_Content_Length="0"), Chunked(0, "x-amz-checksum-crc32")),
    ],
)
def test_the_framing_read_from_the_headers(headers: CIMultiDict[str], expected: Chunked | None) -> None:
    assert chunked_upload(headers) == expected


@pytest.mark.parametrize(
    ("headers", "refusal", "code"),
    [
        (_with(X_Amz_Content_SHA256="STREAMING-AWS4-HMAC-SHA256-PAYLOAD"), NotImplementedHere, "NotImplemented"),
        (_with(X_Amz_Content_SHA256="STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"), NotImplementedHere,
         "NotImplemented"),
        (_with(X_Amz_Content_SHA256="UNSIGNED-PAYLOAD"), NotImplementedHere, "NotImplemented"),
        (_with(X_Amz_Content_SHA256=None), NotImplementedHere, "NotImplemented"),
        (_with(Content_Encoding=None), BadRequest, "InvalidArgument"),
        (_with(Content_Encoding="aws-chunked,aws-chunked"), BadRequest, "InvalidArgument"),
        (_with(X_Amz_Decoded_Content_Length=None), LengthRequired, "MissingContentLength"),
        (_with(X_Amz_Decoded_Content_Length="-1"), BadRequest, "InvalidArgument"),
        (_with(X_Amz_Decoded_Content_Length="1e3"), BadRequest, "InvalidArgument"),
        (_with(X_Amz_Decoded_Content_Length="0x10"), BadRequest, "InvalidArgument"),
        (_with(x_amz_trailer=None), BadRequest, "InvalidRequest"),
        (_with(x_amz_trailer="x-amz-checksum-crc32c"), NotImplementedHere, "NotImplemented"),
        (_with(x_amz_trailer="x-amz-checksum-crc64nvme"), NotImplementedHere, "NotImplemented"),
        (_with(x_amz_trailer="x-amz-meta-anything"), BadRequest, "InvalidArgument"),
    ],
)
def test_any_other_framing_is_refused(headers: CIMultiDict[str], refusal: type[RequestRefused], code: str) -> None:
    with pytest.raises(refusal) as refused:
        chunked_upload(headers)
    assert type(refused.value) is refusal
    assert refused.value.code == code


def _plain_with(**sent: str) -> CIMultiDict[str]:
    return CIMultiDict({"Content-Length": "100", **{name.replace("_", "-"): value for name, value in sent.items()}})


@pytest.mark.parametrize(
    ("headers", "refusal", "code"),
    [
        # One sign of the framing is enough: without the rest, it is refused, never read as a plain body.
        (_plain_with(X_Amz_Decoded_Content_Length="10"), NotImplementedHere, "NotImplemented"),
        (_plain_with(Content_Encoding="gzip, AWS-Chunked"), NotImplementedHere, "NotImplemented"),
        (_plain_with(X_Amz_Content_SHA256="streaming-unsigned-payload-trailer"), NotImplementedHere,
         "NotImplemented"),
        (_plain_with(x_amz_trailer="x-amz-checksum-crc32"), NotImplementedHere, "NotImplemented"),
        (_plain_with(X_Amz_Content_SHA256="UNSIGNED-PAYLOAD", x_amz_trailer="x-amz-checksum-crc32"),
         NotImplementedHere, "NotImplemented"),
        # A decoded length the wire body cannot hold with its framing.
        (_with(Content_Length="100"), BadRequest, "IncompleteBody"),
        (_with(Content_Length="99"), BadRequest, "IncompleteBody"),
    ],
)
def test_any_sign_of_the_framing_makes_it_framed(headers: CIMultiDict[str], refusal: type[RequestRefused],
                                                 code: str) -> None:
    with pytest.raises(refusal) as refused:
        chunked_upload(headers)
    assert type(refused.value) is refusal
    assert refused.value.code == code


def test_content_encodings_are_read_from_every_header() -> None:
    headers = _with(Content_Encoding="gzip", Content_Length="200")
    headers.add("Content-Encoding", "aws-chunked")
    assert chunked_upload(headers) == Chunked(100, "x-amz-checksum-crc32")
    headers.add("Content-Encoding", "AWS-CHUNKED")
    with pytest.raises(BadRequest) as refused:
        chunked_upload(headers)
    assert refused.value.code == "InvalidArgument"


def test_a_decoded_length_sent_twice_is_refused() -> None:
    headers = _with()
    headers.add("X-Amz-Decoded-Content-Length", "100")
    with pytest.raises(BadRequest):
        chunked_upload(headers)


@pytest.mark.parametrize(
    ("encoding", "left"),
    [
        ("aws-chunked", None),
        ("gzip,aws-chunked", "gzip"),
        ("aws-chunked, gzip", "gzip"),
        ("AWS-Chunked", None),
    ],
)
def test_the_forwarded_headers_lose_the_framing(encoding: str, left: str | None) -> None:
    headers = _with(Content_Encoding=encoding)
    without_framing(headers)
    assert "X-Amz-Decoded-Content-Length" not in headers
    assert headers.get("Content-Encoding") == left


def test_the_framing_is_taken_out_of_every_content_encoding_header() -> None:
    headers = _with(Content_Encoding="gzip")
    headers.add("Content-Encoding", "aws-chunked")
    without_framing(headers)
    assert headers.getall("Content-Encoding") == ["gzip"]
    headers = _with(Content_Encoding="Aws-Chunked")
    headers.add("Content-Encoding", "aws-chunked , ")
    without_framing(headers)
    assert "Content-Encoding" not in headers


def test_a_content_encoding_without_the_framing_is_left_as_sent() -> None:
    headers = CIMultiDict({"Content-Encoding": "gzip ,  br"})
    without_framing(headers)
    assert headers["Content-Encoding"] == "gzip ,  br"
