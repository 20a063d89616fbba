"""What the proxy writes to the storage server for one request: its head, then its body.

The head is exactly the bytes the proxy decided on: the raw request-target and
the caller's headers, serialised here, with nothing added but the framing of
the body (``Content-Length`` or chunked encoding, set by `proxy.upstream.client`).
"""

from __future__ import annotations

from collections.abc import AsyncIterable

from multidict import CIMultiDict

from proxy.errors import InternalError, UpstreamFailure
from proxy.upstream.connection import Connection


def serialise_head(method: str, target: str, headers: CIMultiDict[str]) -> bytes:
    """The request line and header block, exactly as given.

    A CR, LF or NUL inside a name or value would split or end the head; llhttp
    refuses them from callers, and this refuses them from anything else (a tag
    value, a future code path) instead of forwarding a second request.
    """
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend([f"{name}: {value}" for name, value in headers.items()])
    text = "\r\n".join(lines)
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1 or "\0" in text:
        raise InternalError("a header could not be forwarded intact, so the request was not forwarded")
    return (text + "\r\n\r\n").encode("utf-8", "surrogateescape")


async def send_body(conn: Connection, body: AsyncIterable[bytes], length: int | None) -> None:
    """Stream a body to the storage server: as-is when its length was declared, else chunked."""
    sent = 0
    async for chunk in body:
        if not chunk:
            continue   # chunked, an empty piece would be the end of the body: the rest would smuggle
        if length is None:
            conn.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        else:
            sent += len(chunk)
            if sent > length:
                raise UpstreamFailure("the request body is longer than its Content-Length")
            conn.write(chunk)
        await conn.drain()
    if length is None:
        conn.write(b"0\r\n\r\n")
    elif sent != length:
        raise UpstreamFailure("the request body is shorter than its Content-Length")
