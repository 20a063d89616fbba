"""The upstream hop: send the request on exactly as checked, stream both bodies.

The raw request-target is forwarded byte for byte and ``Host`` is kept, so the
storage server reads the same path, query and host that the proxy decided on,
and a caller's own SigV4 or SharedKey signature still verifies. No redirects
are followed, nothing is decompressed, nothing is added but the body's framing
(`proxy.upstream` serialises the head), and bodies stream in both directions
with flow control. Small answers are read whole and sent in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from multidict import CIMultiDict

from proxy.config import UpstreamConfig
from proxy.errors import BadRequest, InternalError, RequestRefused, StreamInterrupted, UpstreamFailure, UpstreamTimeout
from proxy.metrics import Metrics
from proxy.tags import response_headers
from proxy.upstream import _RETRYABLE, Connection, Pool, ResponseHead, send_body, serialise_head

log = logging.getLogger("bailiwick.forward")

# Bodies up to this size are read whole and sent with the headers in one write:
# most S3 responses (errors, listings, small objects) are this small.
_SMALL_BODY = 64 * 1024
_BODILESS = frozenset({204, 304})
# An answer the proxy rewrites (an account listing) is held whole, up to this size.
MAX_REWRITTEN_BYTES = 16 * 1024 * 1024


class BodyStream:
    """The caller's body as it arrives, chunk by chunk, never whole.

    A caller that sends nothing for `idle_timeout` seconds is cut off: the
    stream raises, which aborts the upstream request, and `timed_out` lets the
    proxy answer 400 RequestTimeout instead of blaming the storage server.
    So is one that trickles (a byte now and then resets no idle deadline):
    over each `window` seconds that the proxy waits for the body (not the time
    the storage server makes it wait), at least `min_rate` bytes per second
    must arrive; the first window is the grace period.
    """

    def __init__(
        self, request: web.BaseRequest, idle_timeout: float,
        check: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]] | None = None,
        *, min_rate: float = 0.0, window: float = 5.0,
    ) -> None:
        """`check`: what the pieces go through before they are forwarded (a signed body's verification)."""
        self._content = request.content
        self._idle = idle_timeout
        self._check = check
        self.min_rate = min_rate
        self.window = window
        self.timed_out = False
        self.too_slow = False   # timed out for arriving slower than `min_rate`
        self.received = 0   # bytes so far

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks() if self._check is None else self._check(self._chunks())

    async def _chunks(self) -> AsyncIterator[bytes]:
        content = self._content
        clock = asyncio.get_running_loop().time
        rate, window = self.min_rate, self.window
        quiet = 0.0    # waited since the last byte
        waited = 0.0   # waited in this window of the rate
        got = 0        # bytes in this window
        while True:
            limit = self._idle - quiet
            if rate:
                limit = min(limit, window - waited)
            started = clock()
            try:
                async with asyncio.timeout(limit):
                    # The pieces as they were read from the socket: readany() would join
                    # everything buffered into one more copy (up to ~750 KB a stream).
                    chunk, end_of_http_chunk = await content.readchunk()
            except TimeoutError:
                spent = max(clock() - started, limit)
                quiet += spent
                waited += spent
                if quiet >= self._idle:
                    self.timed_out = True
                    raise
                self._pace(got, waited)
                waited, got = 0.0, 0
                continue
            waited += clock() - started
            if chunk:
                quiet = 0.0
                got += len(chunk)
            if rate and waited >= window:
                self._pace(got, waited)
                waited, got = 0.0, 0
            if not chunk:
                # The boundary of a chunk of the caller's chunked encoding: more may follow. At the
                # end of the body, never: aiohttp's one shared empty body answers (b"", True) for
                # ever once any request has read it, and "continue" would spin the event loop.
                if end_of_http_chunk and not content.at_eof():
                    continue
                return
            self.received += len(chunk)
            yield chunk

    def _pace(self, got: int, waited: float) -> None:
        """At the end of a window: raise if what arrived in it is under the minimum rate."""
        if got < self.min_rate * waited:
            self.timed_out = self.too_slow = True
            raise TimeoutError(f"the request body arrived slower than {self.min_rate:g} bytes/s")


def _blame_stalled_caller(body: object, exc: BaseException) -> None:
    if isinstance(body, BodyStream) and body.too_slow:
        raise BadRequest(f"the request body arrived slower than the minimum rate of {body.min_rate:g} bytes/s "
                         f"over {body.window:g}s; the upload was abandoned", code="RequestTimeout") from exc
    if isinstance(body, BodyStream) and body.timed_out:
        raise BadRequest("the request body stopped arriving; the upload was abandoned",
                         code="RequestTimeout") from exc


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


class Upstream:
    """The storage server, reached through a pool of keep-alive connections (`proxy.upstream`)."""

    def __init__(self, config: UpstreamConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self._pool: Pool | None = None
        # Answers being streamed now, by the caller's connection (its aiohttp protocol).
        self._streaming: dict[object, Transfer] = {}

    def send_timed_out(self, connection: object, too_slow: bool = False) -> None:
        """The server is cutting `connection` because its caller stopped reading (or reads too slowly):
        say so in its exchange."""
        transfer = self._streaming.get(connection)
        if transfer is not None:
            transfer.send_timed_out = True
            transfer.send_too_slow = too_slow

    def handed(self, connection: object) -> int | None:
        """Answer bytes handed to `connection` so far, if an answer is being streamed on it."""
        transfer = self._streaming.get(connection)
        return None if transfer is None else transfer.handed

    async def start(self) -> None:
        self._pool = Pool(self.config)

    async def probe(self, seconds: float) -> str | None:
        """Whether the storage server answers HTTP: None if it does, else why not.

        A ``HEAD /`` on a connection of its own; any status counts as an
        answer (an S3 server refuses it unsigned, and that is an answer).
        """
        pool = self._pool
        if pool is None:
            return "the proxy is not connected to its storage server"
        try:
            async with asyncio.timeout(seconds):
                conn = await pool.connect()
                try:
                    answered = conn.begin(head_only=True)
                    conn.write(f"HEAD / HTTP/1.1\r\nHost: {pool.netloc}\r\nConnection: close\r\n\r\n".encode())
                    await answered
                finally:
                    conn.abort()
        except TimeoutError:
            return f"the storage server did not answer within {seconds:g}s"
        except UpstreamFailure as exc:
            return exc.message
        return None

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def forward(
        self,
        request: web.BaseRequest,
        headers: CIMultiDict[str],
        body: bytes | bytearray | BodyStream | None,
        transfer: Transfer,
        rewrite: Callable[[bytes], bytes] | None = None,
        peer: str = "",
        *,
        target: str | None = None,
    ) -> web.StreamResponse:
        """Send the request upstream and stream the answer back to the caller.

        `peer` is whose share of the connection pool the exchange takes
        (`proxy.peers.peer_key` of the caller's address). `target`: the
        request-target to send (re-sign mode's path-style one); the caller's by default.

        With `rewrite` (an account listing), a 200 answer is read whole (at most
        `MAX_REWRITTEN_BYTES`) and its body replaced by what `rewrite` makes of it.

        Raises `UpstreamFailure` / `UpstreamTimeout` only while nothing has been
        sent to the caller; after that, a failure aborts the caller's connection
        so that a truncated body is never mistaken for a whole one.
        """
        pool = self._pool
        if pool is None:
            raise UpstreamFailure("the proxy is not connected to its storage server")
        method = request.method
        length: int | None = None
        if isinstance(body, bytes | bytearray):
            headers["Content-Length"] = str(len(body))
        elif body is not None:
            declared = headers.get("Content-Length")
            if declared is None:
                headers["Transfer-Encoding"] = "chunked"
            else:
                length = int(declared)   # aiohttp's parser has checked it is one decimal number
        if "Host" not in headers:
            # Every API refuses a request without Host before its decision; the host the
            # storage server reads must be the one decided on, so none is ever made up here.
            raise InternalError("the request has no Host header, so it was not forwarded")
        head = serialise_head(method, request.raw_path if target is None else target, headers)
        sent = time.perf_counter()
        conn, reused = await pool.acquire(peer)
        try:
            answer = await self._exchange(conn, head, body, length, method == "HEAD")
        except UpstreamFailure as exc:
            pool.release(conn)
            stale = reused and not conn.received_anything and not isinstance(exc, UpstreamTimeout)
            if not (stale and body is None and method in _RETRYABLE):
                raise
            # A kept-alive connection the storage server had just closed: nothing was
            # read and a GET or HEAD changes nothing, so it is sent once more, fresh.
            conn, _ = await pool.acquire(peer)
            try:
                answer = await self._exchange(conn, head, None, None, method == "HEAD")
            except BaseException:
                pool.release(conn)
                raise
        except BaseException:
            pool.release(conn)
            raise
        transfer.upstream_seconds = time.perf_counter() - sent
        self.metrics.upstream(answer.status, transfer.upstream_seconds)
        if body is not None:
            transfer.up_bytes = len(body) if isinstance(body, bytes | bytearray) else body.received
            self.metrics.upstream_bytes.inc(transfer.up_bytes)
        if rewrite is not None:
            return await self._rewritten(pool, conn, answer, transfer, rewrite, method == "HEAD")
        return await self._answer(request, pool, conn, answer, transfer)

    async def _exchange(
        self, conn: Connection, head: bytes, body: bytes | bytearray | BodyStream | None, length: int | None,
        head_only: bool,
    ) -> ResponseHead:
        answered = conn.begin(head_only)
        if not isinstance(body, BodyStream):
            conn.write(head + body if body else head)
            conn.arm()
            return await answered
        conn.write(head)
        sender = asyncio.ensure_future(send_body(conn, body, length))
        try:
            await asyncio.wait((sender, answered), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            sender.cancel()
            raise
        if not sender.done():
            # The storage server answered before it had the whole body (an error, as a
            # rule): pass that answer on, and never reuse a connection left mid-request.
            sender.cancel()
            conn.spoil()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            conn.arm()
            return answered.result()
        failure = sender.exception()
        if failure is not None:
            conn.abort()
            _blame_stalled_caller(body, failure)
            if isinstance(failure, RequestPayloadError):
                raise BadRequest("the request body is malformed (its framing could not be read)") from failure
            if isinstance(failure, RequestRefused):
                raise failure   # the storage server failed, or the body failed its check (never completed upstream)
            raise UpstreamFailure("the request body could not be sent to the storage server") from failure
        conn.arm()
        return await answered

    async def _answer(
        self, request: web.BaseRequest, pool: Pool, conn: Connection, answer: ResponseHead, transfer: Transfer,
    ) -> web.StreamResponse:
        length = answer.length
        # A 204 or 304 never has a body, whatever Content-Length it carries (for a 304, the
        # length of the representation it stands for): llhttp has framed it so already.
        bodiless = request.method == "HEAD" or answer.status in _BODILESS
        if not bodiless and length is not None and length <= _SMALL_BODY:
            return await self._small(pool, conn, answer, length, transfer)
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        # The server's send deadline finds this exchange by its caller's connection.
        caller = request.protocol
        self._streaming[caller] = transfer
        ended = False
        try:
            response.headers.extend(response_headers(answer.headers))
            await response.prepare(request)
            if not bodiless:
                sent = 0
                try:
                    while chunk := await conn.read_chunk():
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

    async def _rewritten(
        self, pool: Pool, conn: Connection, answer: ResponseHead, transfer: Transfer,
        rewrite: Callable[[bytes], bytes], head_only: bool,
    ) -> web.Response:
        """An answer the proxy must change before the caller sees it: read whole, rewritten, sent."""
        try:
            body = b"" if head_only or answer.status in _BODILESS else await conn.read_all(MAX_REWRITTEN_BYTES)
        except UpstreamFailure as exc:
            raise UpstreamFailure(f"the storage server's answer was cut short or over {MAX_REWRITTEN_BYTES} bytes"
                                  ) from exc
        finally:
            pool.release(conn)
        if answer.length is not None and len(body) != answer.length and not head_only \
                and answer.status not in _BODILESS:
            raise UpstreamFailure("the storage server's answer was cut short")
        if 200 < answer.status < 300:
            # A partial or otherwise odd success (206 for a Range) would pass the filter by.
            raise UpstreamFailure(f"the storage server answered an account listing with {answer.status}; "
                                  "only a whole listing (200) can be filtered")
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
    ) -> web.Response:
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
        headers = response_headers(answer.headers)
        headers.popall("Content-Length", None)
        return web.Response(status=answer.status, reason=answer.reason, body=body, headers=headers)
