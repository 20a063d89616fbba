"""`SmallAnswer` writes exactly what `web.Response` writes: the same bytes, the same keep-alive, on every row.

Each row is served twice by the data port's kind of server (aiohttp's low-level
`web.Server` with `proxy.cors.make_request`), once as `web.Response(status,
reason, body, headers)` (what the relay sent before) and once as `SmallAnswer`,
to the same raw request over a raw socket; what the client receives, and
whether the connection stays open, must be identical.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

import proxy.upstream.answer as answer_module
from proxy.cors import CorsAnswer, answer_with, make_request
from proxy.tags import response_headers
from proxy.upstream.answer import SmallAnswer
from proxy.upstream.connection import ResponseHead

NGINX = [("Server", "nginx/1.22.1"), ("Date", "Mon, 07 Dec 2026 05:00:00 GMT"),
         ("Content-Type", "application/octet-stream"), ("Last-Modified", "Mon, 07 Dec 2026 04:00:00 GMT"),
         ("ETag", '"6575e0a0-400"'), ("Accept-Ranges", "bytes")]
FIXED_DATE = "Tue, 08 Dec 2026 09:00:00 GMT"
GET = b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n"

# (name, status, reason, headers, body, request, cors answer set by the handler)
ROWS: list[tuple[str, int, str, list[tuple[str, str]], bytes, bytes, CorsAnswer | None]] = [
    ("nginx 1 KiB", 200, "OK", NGINX, b"x" * 1024, GET, None),
    ("caller asks to close", 200, "OK", NGINX, b"x" * 1024,
     b"GET /b/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", None),
    ("HTTP/1.0", 200, "OK", NGINX, b"x" * 10, b"GET /b/k HTTP/1.0\r\nHost: x\r\n\r\n", None),
    ("HTTP/1.0 keep-alive", 200, "OK", NGINX, b"x" * 10,
     b"GET /b/k HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", None),
    ("no date, server or type", 200, "OK", [("ETag", '"e"')], b"abc", GET, None),
    ("empty body, no type", 200, "OK", [("x-amz-request-id", "1")], b"", GET, None),
    ("error", 404, "Not Found", [("Content-Type", "application/xml"), ("Server", "AmazonS3")],
     b"<Error><Code>NoSuchKey</Code></Error>", GET, None),
    ("empty reason", 200, "", NGINX, b"y", GET, None),
    ("odd reason", 299, "Fine Thanks", NGINX, b"y", GET, None),
    ("repeated and metadata headers", 200, "OK",
     [("x-amz-meta-a", "1"), ("X-Amz-Meta-A", "2"), ("x-amz-meta-b", ""), *NGINX], b"z" * 100, GET, None),
    ("control byte in a value", 200, "OK", [("x-amz-meta-c", "a\x01b"), *NGINX], b"z", GET, None),
    ("storage server's CORS headers", 200, "OK", [("Access-Control-Allow-Origin", "*"), *NGINX], b"z", GET, None),
    ("storage server's CORS headers, no CORS answer", 200, "OK",
     [("Access-Control-Allow-Origin", "*"), ("access-control-expose-headers", "ETag"), *NGINX], b"z", GET,
     CorsAnswer(())),
    ("CORS answer", 200, "OK", [("Vary", "Accept"), *NGINX], b"z", GET,
     CorsAnswer((("Access-Control-Allow-Origin", "https://a.example"), ("Vary", "Origin")))),
    ("non-ASCII value", 200, "OK", [("x-amz-meta-n", "caf\udce9"), *NGINX], b"z", GET, None),
    ("transfer-encoding given", 200, "OK", [("Transfer-Encoding", "chunked"), *NGINX], b"z", GET, None),
    ("content-length given", 200, "OK", [("Content-Length", "1"), *NGINX], b"zz", GET, None),
    ("nginx keep-alive", 200, "OK", [*NGINX, ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5")], b"z", GET,
     None),
    ("connection close", 200, "OK", [("Connection", "close"), *NGINX], b"z", GET, None),
    ("connection names headers", 200, "OK",
     [("Connection", "X-Secret, , close"), ("X-Secret", "s"), ("x-other", "o"), ("Close", "c"), *NGINX], b"z", GET,
     None),
    ("hop-by-hop headers", 200, "OK",
     [("Proxy-Connection", "x"), ("TE", "trailers"), ("Trailer", "x"), ("Upgrade", "h2c"), *NGINX], b"z", GET, None),
    ("HEAD", 200, "OK", NGINX, b"zzz", b"HEAD /b/k HTTP/1.1\r\nHost: x\r\n\r\n", None),
    ("204", 204, "No Content", NGINX, b"", GET, None),
    ("304", 304, "Not Modified", NGINX, b"", GET, None),
    ("500", 500, "Internal Server Error", [("Content-Type", "application/xml")], b"<Error/>", GET, None),
]
# Rows whose head aiohttp will not write (the connection is closed without an answer).
UNWRITABLE = {"control byte in a value"}


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch: pytest.MonkeyPatch) -> None:
    """The date both paths add when the answer has none, fixed so that two runs can be compared."""
    monkeypatch.setattr("aiohttp.web_response.rfc822_formatted_time", lambda: FIXED_DATE)
    monkeypatch.setattr(answer_module, "rfc822_formatted_time", lambda: FIXED_DATE)


def _exchange(port: int, raw: bytes) -> tuple[bytes, bool]:
    """What the server sends back to `raw`, read until it has sent nothing for a moment, and whether it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        got = b""
        sock.settimeout(0.3)
        closed = False
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                closed = True
                break
            got += data
        return got, closed


async def _serve(make: Callable[[web.BaseRequest], web.StreamResponse], raw: bytes) -> tuple[bytes, bool]:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return make(request)

    server = web.Server(handler, request_factory=make_request, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        return await asyncio.to_thread(_exchange, port, raw)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("name", "status", "reason", "headers", "body", "raw", "cors"), ROWS, ids=[r[0] for r in ROWS])
async def test_small_answer_sends_what_web_response_sends(
    name: str, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, raw: bytes,
    cors: CorsAnswer | None,
) -> None:
    upstream = CIMultiDictProxy(CIMultiDict(headers))

    def plain(request: web.BaseRequest) -> web.StreamResponse:   # what the relay sent before
        if cors is not None:
            answer_with(request, cors)
        passed = response_headers(upstream)
        passed.popall("Content-Length", None)
        return web.Response(status=status, reason=reason, body=body, headers=passed)

    def lean(request: web.BaseRequest) -> web.StreamResponse:
        if cors is not None:
            answer_with(request, cors)
        return SmallAnswer(ResponseHead(status, reason, upstream, len(body)), body)

    before = await _serve(plain, raw)
    after = await _serve(lean, raw)
    # aiohttp refuses to write a control character and cuts the connection instead; every other row is answered.
    assert bool(before[0]) is (name not in UNWRITABLE), name
    assert after == before, name


@pytest.mark.parametrize("extra", [[], [("Connection", "keep-alive")]], ids=["plain", "keep-alive"])
async def test_the_common_answer_is_written_in_one_piece(extra: list[tuple[str, str]]) -> None:
    """The lean path is taken for the common answer (one write of head and body), not the fallback."""
    written: list[bytes] = []
    made: list[SmallAnswer] = []

    def lean(request: web.BaseRequest) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        original = transport.write

        def write(data: bytes | bytearray | memoryview) -> None:
            written.append(bytes(data))
            original(data)

        transport.write = write  # type: ignore[method-assign]
        upstream = CIMultiDictProxy(CIMultiDict([*NGINX, *extra]))
        made.append(SmallAnswer(ResponseHead(200, "OK", upstream, 1024), b"x" * 1024))
        return made[0]

    got, closed = await _serve(lean, GET)
    assert written == [got]
    assert not closed
    assert made[0]._fallback is None
    assert got.startswith(b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n")
    assert got.endswith(b"\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024)


async def test_headers_changed_before_the_answer_is_sent_are_sent() -> None:
    """Whoever changes the headers of the answer gets them sent as changed, as web.Response would send them."""
    upstream = CIMultiDictProxy(CIMultiDict(NGINX))

    def plain(request: web.BaseRequest) -> web.StreamResponse:
        passed = response_headers(upstream)
        passed.popall("Content-Length", None)
        response = web.Response(status=200, reason="OK", body=b"abc", headers=passed)
        response.headers["X-Added"] = "1"
        del response.headers["ETag"]
        return response

    def lean(request: web.BaseRequest) -> web.StreamResponse:
        response = SmallAnswer(ResponseHead(200, "OK", upstream, 3), b"abc")
        response.headers["X-Added"] = "1"
        del response.headers["ETag"]
        return response

    before = await _serve(plain, GET)
    assert b"\r\nX-Added: 1\r\n" in before[0]
    assert b"ETag" not in before[0]
    assert await _serve(lean, GET) == before
