"""The upstream hop: send the request on exactly as checked, and hand back the answer.

The raw request-target is forwarded byte for byte and ``Host`` is kept, so the
storage server reads the same path, query and host that the proxy decided on,
and a caller's own SigV4 or SharedKey signature still verifies. No redirects
are followed, nothing is decompressed, nothing is added but the body's framing
(`proxy.upstream.request`). A GET or HEAD that finds its kept-alive connection
closed before any answer is sent once more, on the next connection the pool
hands out (another kept-alive one, if it has one); nothing else is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from multidict import CIMultiDict

from proxy.config import UpstreamConfig
from proxy.errors import BadRequest, InternalError, RequestRefused, UpstreamFailure, UpstreamTimeout
from proxy.metrics import Metrics
from proxy.upstream.body import BodyStream, StreamedBody
from proxy.upstream.connection import Connection, ResponseHead
from proxy.upstream.pool import Pool
from proxy.upstream.relay import Answered, Relay, Transfer
from proxy.upstream.request import send_body, serialise_head

# Safe to send again when a stale kept-alive connection lost them unanswered.
RETRYABLE = frozenset({"GET", "HEAD"})
# `isinstance` against a union written in place builds the union at every call.
_BYTES = (bytes, bytearray)


class Upstream:
    """The storage server, reached through a pool of keep-alive connections (`proxy.upstream.pool`)."""

    def __init__(self, config: UpstreamConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self._pool: Pool | None = None
        self._relay = Relay(metrics)

    def send_timed_out(self, connection: object, too_slow: bool = False) -> None:
        """The server is cutting `connection` because its caller stopped reading (or reads too slowly):
        say so in its exchange."""
        transfer = self._relay.streaming_to(connection)
        if transfer is not None:
            transfer.send_timed_out = True
            transfer.send_too_slow = too_slow

    def handed(self, connection: object) -> int | None:
        """Answer bytes handed to `connection` so far, if an answer is being streamed on it."""
        transfer = self._relay.streaming_to(connection)
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
        body: bytes | bytearray | StreamedBody | None,
        transfer: Transfer,
        rewrite: Callable[[bytes], bytes] | None = None,
        peer: str = "",
        *,
        target: str | None = None,
        answered: Callable[[Answered], Awaitable[web.StreamResponse]] | None = None,
        method: str | None = None,
    ) -> web.StreamResponse:
        """Send the request upstream and stream the answer back to the caller.

        `peer` is whose share of the connection pool the exchange takes
        (`proxy.peers.peer_key` of the caller's address). `target`: the
        request-target to send (re-sign mode's path-style one); the caller's by default.

        With `rewrite` (an account listing, or the sizes of an object listing on an encrypted
        dataset), a 200 answer is read whole (at most `MAX_REWRITTEN_BYTES`) and its body
        replaced by what `rewrite` makes of it.
        With `answered` (an encrypted object), the answer's head is handed to it, and what it
        returns is the caller's response; only then may `method` differ from the caller's (a
        copy the proxy carries out reads its source with a GET).

        Raises `UpstreamFailure` / `UpstreamTimeout` only while nothing has been
        sent to the caller; after that, a failure aborts the caller's connection
        so that a truncated body is never mistaken for a whole one.
        """
        pool = self._pool
        if pool is None:
            raise UpstreamFailure("the proxy is not connected to its storage server")
        if method is None:
            method = request.method
        elif answered is None and method != request.method:
            raise InternalError("a request of another method than the caller's must have its answer handled")
        length: int | None = None
        if isinstance(body, _BYTES):
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
            if not (stale and body is None and method in RETRYABLE):
                raise
            # A kept-alive connection the storage server had just closed: nothing was
            # read and a GET or HEAD changes nothing, so it is sent once more (once only).
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
            transfer.up_bytes = len(body) if isinstance(body, _BYTES) else body.received
            self.metrics.upstream_bytes.inc(transfer.up_bytes)
        if answered is not None:
            handle = Answered(self._relay, request, pool, conn, answer, transfer)
            try:
                return await answered(handle)
            finally:
                # An answer not handed on (a failure, or one the proxy read itself, as a copy's source):
                # its connection goes, and its place in the pool comes back. A no-op once it was ended.
                handle.discard()
        if rewrite is not None:
            return await self._relay.rewritten(pool, conn, answer, transfer, rewrite, method == "HEAD")
        return await self._relay.answer(request, pool, conn, answer, transfer)

    async def _exchange(
        self, conn: Connection, head: bytes, body: bytes | bytearray | StreamedBody | None, length: int | None,
        head_only: bool,
    ) -> ResponseHead:
        answered = conn.begin(head_only)
        if body is None or isinstance(body, _BYTES):
            conn.write(head + body if body else head)
            conn.arm()
            return await answered
        if length is not None and isinstance(body, BodyStream):
            whole = body.arrived(length)
            if whole is not None:
                conn.write(head + whole)
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
            refusal = body.refusal()
            if refusal is not None:
                raise refusal from failure
            if isinstance(failure, RequestPayloadError):
                raise BadRequest("the request body is malformed (its framing could not be read)") from failure
            if isinstance(failure, RequestRefused):
                raise failure   # the storage server failed, or the body failed its check (never completed upstream)
            raise UpstreamFailure("the request body could not be sent to the storage server") from failure
        conn.arm()
        return await answered
