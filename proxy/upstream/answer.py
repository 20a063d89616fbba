"""A small answer passed on to the caller in one write: its head rendered here, not by aiohttp's response.

Most answers are small (errors, listings, small objects: `proxy.upstream.relay`
reads anything up to 64 KiB whole). For them, aiohttp's `web.Response` costs
more than the bytes it writes: a copy of the headers, then on the way out a
chain of coroutines (prepare, two ``_start``s, header preparation, the response
hook, header serialisation, the end of the body) for a head that is, on the
common path, the storage server's headers passed on plus ``Content-Length``.

`SmallAnswer` writes exactly the bytes aiohttp's `web.Response` would, in one
``write`` with the body, for the case it understands: HTTP/1.1, a body of a
known size, headers that are plain ASCII without CR or LF, no ``Connection`` or
``Transfer-Encoding`` header among them, and no CORS headers to add (the
response hook of `proxy.cors.HookedRequest` would only drop the storage
server's ``Access-Control-*``, which is done here). Anything else is handed,
unchanged, to the `web.Response` the proxy always made, so an unusual answer
goes exactly the way it went before (tests/upstream/test_answer.py compares the
two byte for byte).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from multidict import CIMultiDict

from proxy.tags import HOP_BY_HOP, response_headers
from proxy.upstream.connection import ResponseHead

if TYPE_CHECKING:
    from aiohttp.web_request import BaseRequest

_NOTHING: frozenset[str] = frozenset()
_CORS_PREFIX = "access-control-"
_NOT_HOOKED = object()
# Control characters but HTAB, CR and LF (the line breaks are counted apart).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class SmallAnswer(web.StreamResponse):
    """The storage server's answer, its body whole in memory, passed on as the relay passes a small answer on.

    That is: `web.Response(status, reason, body, headers)` with the storage server's headers less the
    hop-by-hop ones (`proxy.tags.response_headers`) and its ``Content-Length``. The common case is rendered
    here, in one pass over the storage server's headers; anything else makes exactly that `web.Response`.
    """

    def __init__(self, answer: ResponseHead, body: bytes) -> None:
        # The status and reason are checked exactly as web.Response checks them (a CR or LF in the reason raises).
        super().__init__(status=answer.status, reason=answer.reason)
        self._answer = answer
        self._answer_body = body
        self._fallback: web.Response | None = None

    @property
    def keep_alive(self) -> bool | None:
        # Written here (`_eof_sent`): this object's own; else that of the web.Response it hands over to, if any.
        return self._fallback.keep_alive if self._fallback is not None and not self._eof_sent else self._keep_alive

    def force_close(self) -> None:
        if self._fallback is not None:
            self._fallback.force_close()
        super().force_close()

    @property
    def headers(self) -> CIMultiDict[str]:
        """The headers passed on. Whoever asks before the answer is sent may change them: it then takes aiohttp's
        path, which sends them as changed (after, a copy: what was sent is sent)."""
        if self._eof_sent:
            return self._passed_on()
        return self._aiohttp_response().headers

    @property
    def body_length(self) -> int:
        return len(self._answer_body)

    def _passed_on(self) -> CIMultiDict[str]:
        headers = response_headers(self._answer.headers)
        headers.popall("Content-Length", None)
        return headers

    def _aiohttp_response(self) -> web.Response:
        """The `web.Response` the relay would have made (made once; then every call is handed to it)."""
        if self._fallback is None:
            self._fallback = web.Response(status=self._status, reason=self._reason, body=self._answer_body,
                                          headers=self._passed_on())
            if self._keep_alive is False:
                self._fallback.force_close()
        return self._fallback

    def _head(self, request: BaseRequest) -> bytes | None:
        """The head aiohttp would write for this answer, or None where its own path must decide."""
        if request.version != HttpVersion11 or self._keep_alive is not None or request.method == "HEAD" \
                or self._status < 200 or self._status in (204, 304):
            return None   # aiohttp's rules for bodiless answers and other versions: its own path
        # The data port's requests (`proxy.cors.HookedRequest`, known here by its ``cors``, not imported: it
        # would import this package back) pass every answer through a hook that drops the storage server's
        # Access-Control-* headers and adds the CORS ones (here: only when there are none to add).
        cors: Any = getattr(request, "cors", _NOT_HOOKED)
        if cors is _NOT_HOOKED or (cors is not None and cors.headers):
            return None
        upstream = self._answer.headers
        # What `response_headers` drops: the hop-by-hop headers, and those the Connection header names.
        named = upstream.getall("Connection", ())
        extra = {t.strip().lower() for v in named for t in v.split(",")} - HOP_BY_HOP if named else _NOTHING
        lines = [f"HTTP/1.1 {self._status} {self._reason}"]
        has_type = has_date = has_server = False
        for name, value in upstream.items():
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in extra or lower == "content-length" or lower.startswith(_CORS_PREFIX):
                continue
            if lower == "content-type":
                has_type = True
            elif lower == "date":
                has_date = True
            elif lower == "server":
                has_server = True
            lines.append(f"{name}: {value}")
        # What web.Response adds, in its order: the length, a default type for a body, the date, the server.
        size = len(self._answer_body)
        lines.append(f"Content-Length: {size}")
        if size and not has_type:
            lines.append("Content-Type: application/octet-stream")
        if not has_date:
            lines.append(f"Date: {rfc822_formatted_time()}")
        if not has_server:
            lines.append(f"Server: {SERVER_SOFTWARE}")
        keep_alive = request.keep_alive
        if not keep_alive:
            lines.append("Connection: close")
        text = "\r\n".join(lines)
        breaks = len(lines) - 1
        # aiohttp refuses control characters (CR and LF above all) inside a name or value, and encodes anything
        # but ASCII its own way: such a head is its to refuse or write.
        if text.count("\r") != breaks or text.count("\n") != breaks or not text.isascii() \
                or _CONTROL.search(text) is not None:
            return None
        self._keep_alive = keep_alive
        return (text + "\r\n\r\n").encode("ascii")

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        if self._fallback is not None:
            return await self._fallback.prepare(request)
        head = self._head(request)
        if head is None:
            return await self._aiohttp_response().prepare(request)
        writer = self._payload_writer = request.writer
        self._eof_sent = True
        await writer.write_eof(head + self._answer_body)
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        if self._fallback is not None and not self._eof_sent:
            await self._fallback.write_eof(data)

    def __repr__(self) -> str:
        return f"<SmallAnswer {self._status} {self._reason}>"
