"""The storage server's answer, handed on to the caller, and what each exchange moved.

Small answers are read whole and sent in one write; larger ones stream with
flow control in both directions. Once part of an answer may have reached the
caller, any failure cuts the caller's connection, so that a truncated body is
never mistaken for a whole one. An answer the proxy must change (an account
listing) is read whole, bounded, and rewritten.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import StreamInterrupted, UpstreamFailure
from proxy.metrics import Metrics
from proxy.tags import response_headers
from proxy.upstream.answer import SmallAnswer
from proxy.upstream.connection import Connection, ResponseHead
from proxy.upstream.pool import Pool

# The logger keeps the name it had when this was `proxy.forward`, so log lines read as before.
log = logging.getLogger("bailiwick.forward")

# Bodies up to this size are read whole and sent with the headers in one write:
# most S3 responses (errors, listings, small objects) are this small.
SMALL_BODY = 64 * 1024
BODILESS = frozenset({204, 304})
# An answer the proxy rewrites (an account listing, or an object listing's sizes on an encrypted dataset) is
# held whole, up to this size.
MAX_REWRITTEN_BYTES = 16 * 1024 * 1024


@dataclass(slots=True)
class Transfer:
    """What one exchange moved and how long the storage server took, for the access log."""

    up_bytes: int = 0          # request body bytes sent to the storage server
    down_bytes: int = 0        # answer body bytes sent to the caller
    upstream_seconds: float = 0.0
    # The caller stopped reading the answer for the send deadline, and the exchange was cut.
    send_timed_out: bool = False
    # ... or it read the answer slower than the minimum send rate.
    send_too_slow: bool = False
    # Answer body bytes handed to the caller's connection so far (sent or still waiting in it).
    handed: int = 0


class Answered:
    """An answer the proxy changes as it passes (an encrypted object's): its head is read, its body not yet.

    Whoever gets it must end it exactly once: `pass_on` (as it is), `stream`
    (what the proxy made of it), or `discard` (the connection is cut).
    """

    __slots__ = ("_ended", "_relay", "conn", "head", "pool", "request", "transfer")

    def __init__(self, relay: Relay, request: web.BaseRequest, pool: Pool, conn: Connection, head: ResponseHead,
                 transfer: Transfer) -> None:
        self._relay = relay
        self.request = request
        self.pool = pool
        self.conn = conn
        self.head = head
        self.transfer = transfer
        self._ended = False

    def _end(self) -> None:
        if self._ended:
            raise RuntimeError("this answer was already handed on or discarded")
        self._ended = True

    async def pass_on(self) -> web.StreamResponse:
        self._end()
        return await self._relay.answer(self.request, self.pool, self.conn, self.head, self.transfer)

    async def stream(self, status: int, headers: CIMultiDict[str], body: AsyncIterator[bytes] | None, *,
                     bodiless: bool = False) -> web.StreamResponse:
        """Answer with `headers` and `body`'s pieces (None: the answer's own body, unless `bodiless`)."""
        self._end()
        return await self._relay.stream(self.request, self.pool, self.conn, status, self.head.reason
                                        if status == self.head.status else "", headers, body, self.transfer,
                                        bodiless=bodiless)

    async def read_whole(self, limit: int) -> bytes:
        """The answer's body, read by the proxy itself (at most `limit` bytes); its connection goes back to the
        pool, kept alive if it was read whole. The answer is then ended: nothing of it goes to the caller."""
        self._end()
        try:
            return await self.conn.read_all(limit)
        finally:
            self.pool.release(self.conn)

    def discard(self) -> None:
        """Cut the connection (its answer unread) and give its place in the pool back; once only (then a no-op)."""
        if not self._ended:
            self._ended = True
            self.conn.abort()
            self.pool.release(self.conn)


class Relay:
    """Hands answers to callers, and knows which answers are streaming now (for the send deadline)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # Answers being streamed now, by the caller's connection (its aiohttp protocol).
        self._streaming: dict[object, Transfer] = {}

    def streaming_to(self, caller: object) -> Transfer | None:
        """The exchange whose answer is being streamed to `caller` (its connection) now, if any."""
        return self._streaming.get(caller)

    async def answer(
        self, request: web.BaseRequest, pool: Pool, conn: Connection, answer: ResponseHead, transfer: Transfer,
    ) -> web.StreamResponse:
        """Pass the answer on as it is, and give the connection back to `pool` once it is read."""
        length = answer.length
        # A 204 or 304 never has a body, whatever Content-Length it carries (for a 304, the
        # length of the representation it stands for): llhttp has framed it so already.
        bodiless = request.method == "HEAD" or answer.status in BODILESS
        if not bodiless and length is not None and length <= SMALL_BODY:
            return await self._small(pool, conn, answer, length, transfer)
        return await self.stream(request, pool, conn, answer.status, answer.reason,
                                 response_headers(answer.headers), None, transfer, bodiless=bodiless)

    async def stream(
        self, request: web.BaseRequest, pool: Pool, conn: Connection, status: int, reason: str,
        headers: CIMultiDict[str], body: AsyncIterator[bytes] | None, transfer: Transfer, *, bodiless: bool = False,
    ) -> web.StreamResponse:
        """Send `headers`, then the body: `body`'s pieces (what the proxy made of the answer), else the
        answer's own as it arrives; give the connection back to `pool` once it is read (else abort it)."""
        response = web.StreamResponse(status=status, reason=reason)
        # The server's send deadline finds this exchange by its caller's connection.
        caller = request.protocol
        self._streaming[caller] = transfer
        ended = False
        try:
            response.headers.extend(headers)
            await response.prepare(request)
            if not bodiless:
                sent = 0
                read = conn.read_chunk
                try:
                    while True:
                        chunk = await (read() if body is None else anext(body, b""))
                        if not chunk:
                            break
                        # Counted before the write puts it in the connection's buffer: the send rate's measure.
                        transfer.handed = sent + len(chunk)
                        await response.write(chunk)
                        sent += len(chunk)
                finally:
                    transfer.down_bytes = sent
                    self.metrics.downstream_bytes.inc(sent)
            await response.write_eof()
            ended = True
            return response
        except Exception as exc:
            # Part of the answer may be on its way to the caller already: whatever went
            # wrong, cut the connection rather than end the body cleanly or start a second
            # response on it.
            log.info("stream aborted: %s", type(exc).__name__)
            if request.transport is not None:
                request.transport.abort()
            raise StreamInterrupted(str(exc) or type(exc).__name__, response) from exc
        finally:
            self._streaming.pop(caller, None)
            if not ended:
                # Cut (a failure, a caller gone or cut for not reading): the connection goes,
                # whatever the storage server had sent, and never back to the pool.
                conn.abort()
            pool.release(conn)

    async def rewritten(
        self, pool: Pool, conn: Connection, answer: ResponseHead, transfer: Transfer,
        rewrite: Callable[[bytes], bytes], head_only: bool,
    ) -> web.Response:
        """An answer the proxy must change before the caller sees it: read whole, rewritten, sent."""
        try:
            body = b"" if head_only or answer.status in BODILESS else await conn.read_all(MAX_REWRITTEN_BYTES)
        except UpstreamFailure as exc:
            raise UpstreamFailure(f"the storage server's answer was cut short or over {MAX_REWRITTEN_BYTES} bytes"
                                  ) from exc
        finally:
            pool.release(conn)
        if answer.length is not None and len(body) != answer.length and not head_only \
                and answer.status not in BODILESS:
            raise UpstreamFailure("the storage server's answer was cut short")
        if 200 < answer.status < 300:
            # A partial or otherwise odd success (206 for a Range) would pass the filter by.
            raise UpstreamFailure(f"the storage server answered a listing the proxy rewrites with {answer.status}; "
                                  "only a whole listing (200) can be rewritten")
        headers = response_headers(answer.headers)
        if answer.status == 200 and not head_only:
            if any(v.strip().lower() not in ("", "identity") for v in answer.headers.getall("Content-Encoding", ())):
                raise UpstreamFailure("the storage server encoded an answer the proxy must filter")
            body = rewrite(body)
            for name in ("Content-MD5", "ETag", "Content-Range"):
                headers.popall(name, None)
        transfer.down_bytes = len(body)
        self.metrics.downstream_bytes.inc(len(body))
        headers.popall("Content-Length", None)
        return web.Response(status=answer.status, reason=answer.reason, body=body, headers=headers)

    async def _small(
        self, pool: Pool, conn: Connection, answer: ResponseHead, length: int, transfer: Transfer,
    ) -> web.StreamResponse:
        """A response small enough to hold: read it whole, then answer in one piece.

        Nothing has been sent to the caller yet, so a short body is a clean 502.
        """
        try:
            body = await conn.read_all(length)
        except UpstreamFailure as exc:
            raise UpstreamFailure("the storage server's answer was cut short") from exc
        finally:
            pool.release(conn)
        if len(body) != length:
            raise UpstreamFailure("the storage server's answer was cut short")
        transfer.down_bytes = length
        self.metrics.downstream_bytes.inc(length)
        # What web.Response(status, reason, body, the headers passed on) sends, in one write (`proxy.upstream.answer`).
        return SmallAnswer(answer, body)
