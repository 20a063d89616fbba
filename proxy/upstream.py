"""A lean pooled HTTP/1.1 client for the one storage server behind the proxy.

Why not aiohttp's client: on this hop the proxy needs none of what makes a
general client (cookies, redirects, proxies, DNS caching, tracing, URL
handling), and its per-request objects cost more CPU than every check the
proxy makes. This module keeps only the exchange itself, on asyncio protocols
with llhttp (through httptools) parsing the answers, so that:

* the request head is exactly the bytes the proxy decided on: the raw
  request-target and the caller's headers, serialised here, with nothing added
  but the framing of the body (``Content-Length`` or chunked encoding);
* answers are framed by llhttp in strict mode (conflicting lengths, bad chunk
  sizes and obsolete line folding are errors), never decompressed, and a
  redirect is just an answer;
* bodies stream both ways with flow control: reading from the storage server
  pauses while the caller is slow, writing to it waits while its socket is full;
* a connection is reused only after a complete exchange that both sides agreed
  to keep alive; anything unusual closes it.

Errors raised here are the proxy's own (`UpstreamFailure`, `UpstreamTimeout`);
turning them into responses is `proxy.gateway`'s job.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import UpstreamConfig
from proxy.errors import InternalError, SlowDown, UpstreamFailure, UpstreamTimeout

# Reads land in one buffer per pool (see `Connection.get_buffer`): a body arrives in
# pieces of at most this size, whatever the object's size.
READ_BUFFER = 256 * 1024
# Reading from the storage server pauses when this much of an answer waits for a
# slow caller, and resumes when the caller has taken all but LOW of it.
_HIGH_WATER = 512 * 1024
_LOW_WATER = 128 * 1024
# A kept-alive connection unused this long is closed, so a burst of concurrency does
# not leave hundreds of sockets behind, and the proxy lets go of a connection before
# storage servers do (S3 closes idle ones after about 20 s), which keeps stale reuse rare.
IDLE_SECONDS = 15.0
_RETRYABLE = frozenset({"GET", "HEAD"})


class _HeadComplete(Exception):
    """Raised from the parser's callback to stop at the end of a HEAD answer's header."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    # Declared length of the body; None when chunked or delimited by the connection's end.
    length: int | None


class Connection(asyncio.BufferedProtocol):
    """One connection to the storage server, carrying one exchange at a time.

    A buffered protocol: the event loop reads straight into `buffer`, which
    all connections of a pool share. That is safe because each read is parsed
    whole in `buffer_updated` before the loop reads again, and llhttp hands
    over body pieces as new bytes objects; it keeps memory per connection
    small and flat, and saves the copy into a fresh bytes object per read.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float, buffer: memoryview) -> None:
        self._loop = loop
        self._buffer = buffer
        # The longest silence from the storage server while an answer is awaited.
        self._read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._active = False
        self._head_only = False
        self._head_bytes = bytearray()
        self._reason = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._interim = False
        self._head: asyncio.Future[ResponseHead] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._until_close = False
        self._received = False
        self._error: BaseException | None = None
        self._keep_alive = False
        self._writing_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._spoiled = False
        self._last_heard = 0.0   # loop time of the last bytes from the storage server
        self.peer = ""   # whose exchange this connection carries (see `Pool.acquire`)

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._active and not self._complete:
            if self._until_close and exc is None and self._head is not None and self._head.done():
                # The body was delimited by the end of the connection. Only an orderly end
                # (FIN) ends it: a reset (exc set) may have cut it anywhere.
                self._finish()
            else:
                self._fail(UpstreamFailure("the storage server closed the connection before its answer was complete"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(UpstreamFailure("the storage server closed the connection"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if not self._active or self._complete:
            # Bytes nobody asked for: the connection can no longer be trusted to frame answers.
            self.abort()
            return
        self._received = True
        self._last_heard = self._loop.time()
        if self._head_only:
            self._head_bytes += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if self._head_only and self._head is not None and self._head.done():
                self._end_head_only()
            elif self._error is None:
                # A callback refused the answer; its own exception says why.
                cause = exc.__context__
                self._fail(cause if isinstance(cause, UpstreamFailure)
                           else UpstreamFailure("the storage server's answer could not be read"))
        except Exception:   # HttpParserError, or HttpParserUpgrade for a protocol switch
            self._fail(UpstreamFailure("the storage server's answer is not valid HTTP/1.1"))

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    # -- httptools callbacks ----------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            # A second answer to one request: the connection is out of step, never reuse it.
            raise UpstreamFailure("the storage server sent more than one answer")
        self._raw_headers = []
        self._reason = b""

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 101:
            raise UpstreamFailure("the storage server switched protocols, which the proxy never asks for")
        if status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._interim = True
            return
        headers: CIMultiDict[str] = CIMultiDict()
        length: int | None = None
        chunked = False
        for raw_name, raw_value in self._raw_headers:
            name = raw_name.decode("utf-8", "surrogateescape")
            value = raw_value.decode("utf-8", "surrogateescape")
            headers.add(name, value)
            lower = name.lower()
            if lower == "content-length":
                length = int(value)   # llhttp has checked it is one decimal number
            elif lower == "transfer-encoding":
                # Only chunked framing is understood: any other final coding would leave the
                # body delimited by the connection's end, a framing the proxy does not guess at.
                if value.rpartition(",")[2].strip().lower() != "chunked":
                    raise UpstreamFailure("the storage server framed its answer with a Transfer-Encoding "
                                          "other than chunked")
                chunked = True
        no_body = self._head_only or status in (204, 304)
        self._until_close = not no_body and length is None and not chunked
        head = ResponseHead(status, self._reason.decode("latin-1"), CIMultiDictProxy(headers), length)
        if self._head is None or self._head.done():
            raise UpstreamFailure("an answer nobody waits for")   # e.g. the wait timed out
        self._head.set_result(head)
        if self._head_only:
            # llhttp would wait for the body a HEAD answer's Content-Length announces; stop it here.
            raise _HeadComplete

    def on_body(self, body: bytes) -> None:
        if self._interim:
            # A 1xx answer has no body; one that does would be spliced into the real answer's.
            raise UpstreamFailure("the storage server sent a body with an interim (1xx) answer")
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._finish()

    # -- the exchange ------------------------------------------------------

    def begin(self, head_only: bool) -> asyncio.Future[ResponseHead]:
        self._active = True
        self._head_only = head_only
        self._head_bytes.clear()
        self._complete = False
        self._until_close = False
        self._received = False
        self._keep_alive = False
        self._spoiled = False
        self._error = None
        self._interim = False
        self._chunks.clear()
        self._buffered = 0
        self._head = self._loop.create_future()
        return self._head

    def idle(self) -> None:
        self._active = False

    def arm(self) -> None:
        """Start the read timeout: from now on the storage server owes an answer.

        One timer per exchange rather than one per wait: reads only note the
        time, and when the timer fires it sets itself again for the rest of
        the timeout counted from the last bytes (or for a whole one while the
        caller is the slow side), so a healthy exchange costs one timer
        whatever its size and a server silent for `read_timeout` is cut off.
        """
        self._last_heard = self._loop.time()
        self._timer = self._loop.call_later(self._read_timeout, self._check_silence)

    def _check_silence(self) -> None:
        self._timer = None
        if not self._active or self._complete or self._error is not None:
            return
        if self._reading_paused:
            self.arm()
            return
        left = self._last_heard + self._read_timeout - self._loop.time()
        if left > 0:
            self._timer = self._loop.call_later(left, self._check_silence)
            return
        waited = "stopped sending its answer" if self._head is not None and self._head.done() else \
            "did not answer in time"
        self._fail(UpstreamTimeout(f"the storage server {waited}"))

    @property
    def received_anything(self) -> bool:
        return self._received

    @property
    def reusable(self) -> bool:
        """True once the exchange ended cleanly and both sides keep the connection alive."""
        return self._complete and self._keep_alive and self._error is None and not self.closed \
            and not self._spoiled

    def spoil(self) -> None:
        """Never reuse this connection (the request on it was not sent whole)."""
        self._spoiled = True

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise UpstreamFailure("the connection to the storage server was lost")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the socket is full; a server that stops reading for `read_timeout` is cut off."""
        if self.closed:
            raise UpstreamFailure("the connection to the storage server was lost")
        if self._writing_paused:
            if self._drain is None:
                self._drain = self._loop.create_future()
            try:
                async with asyncio.timeout(self._read_timeout):
                    await self._drain
            except TimeoutError:
                raise UpstreamTimeout("the storage server stopped reading the request body") from None

    async def read_chunk(self) -> bytes:
        """The next part of the body (all that has arrived), or b"" at its end."""
        if not self._chunks and not self._complete and self._error is None:
            # Silence is ended by the read timeout's timer (see `arm`), which fails the exchange.
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._chunks:
            data = self._chunks.popleft()
            self._buffered -= len(data)
            if self._reading_paused and self._buffered <= _LOW_WATER and self.transport is not None \
                    and not self.closed:
                self._reading_paused = False
                self.transport.resume_reading()
            return data
        if self._error is not None:
            raise self._error
        return b""

    async def read_all(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await self.read_chunk()
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > limit:
                raise UpstreamFailure("the storage server sent more than it announced")
            parts.append(chunk)

    def abort(self) -> None:
        self.closed = True
        self._disarm()
        if self.transport is not None:
            self.transport.abort()

    def _end_head_only(self) -> None:
        # Reusable only if the answer ended exactly at its blank line: anything after
        # it (a body, a second answer) would be read as the next request's answer.
        clean = self._head_bytes.endswith(b"\r\n\r\n") and self._head_bytes.count(b"\r\n\r\n") == 1
        self._keep_alive = clean and self._parser.should_keep_alive()
        self._parser = httptools.HttpResponseParser(self)
        self._finish()

    def _finish(self) -> None:
        self._complete = True
        self._disarm()
        self._wake()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._disarm()
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
            # Retrieved or not, this failure is reported through the exchange's own error.
            self._head.exception()
        self._wake()
        self.abort()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Pool:
    """Keep-alive connections to the storage server, at most `max_connections` busy at once.

    One peer (`proxy.peers.peer_key`) may have at most `max_connections_per_peer`
    of them busy: a caller that holds its exchanges open (by not reading its
    answers, say) takes its share and no more, and the rest stays for the others.
    """

    def __init__(self, config: UpstreamConfig) -> None:
        parts = urlsplit(config.url)
        assert parts.hostname is not None   # validated by proxy.config
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.netloc = parts.netloc.rpartition("@")[2]
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._connect_timeout = config.connect_timeout_seconds
        self._read_timeout = config.read_timeout_seconds
        self._max_connections = config.max_connections
        self._slots = asyncio.Semaphore(config.max_connections)
        # At or above max_connections a share would change nothing: none is counted.
        self._share = config.max_connections_per_peer if config.max_connections_per_peer < config.max_connections \
            else 0
        self._busy: dict[str, int] = {}   # exchanges in flight, by peer (absent: none)
        # Requests of a peer at its share, first come first served: a finished exchange
        # of that peer hands its place straight to the first of them.
        self._queued: dict[str, collections.deque[asyncio.Future[None]]] = {}
        # Oldest first; reuse takes the newest, and the oldest are closed once idle too long.
        self._idle: collections.deque[tuple[float, Connection]] = collections.deque()
        self._buffer = memoryview(bytearray(READ_BUFFER))

    def busy(self, peer: str) -> int:
        """How many exchanges `peer` has in flight."""
        return self._busy.get(peer, 0)

    async def acquire(self, peer: str = "") -> tuple[Connection, bool]:
        """A connection for one exchange of `peer`, and whether it was used before (then it may have gone stale).

        A peer at its share waits for one of its own exchanges to end, at most
        the connect timeout, then is refused with `SlowDown`. When all
        `max_connections` are busy, a request waits for one at most the connect
        timeout too: waiting for a free connection is part of connecting.
        """
        share = self._share
        if share:
            busy = self._busy.get(peer, 0)
            if busy < share:
                self._busy[peer] = busy + 1
            else:
                await self._wait_for_share(peer)
        try:
            if self._slots.locked():
                try:
                    async with asyncio.timeout(self._connect_timeout):
                        await self._slots.acquire()
                except TimeoutError:
                    raise UpstreamTimeout(
                        f"all {self._max_connections} connections to the storage server stayed busy for "
                        f"{self._connect_timeout:g}s") from None
            else:
                await self._slots.acquire()   # free: returns at once, without a timer
        except BaseException:
            self._leave(peer)
            raise
        try:
            while self._idle:
                _, conn = self._idle.pop()
                if not conn.closed:
                    conn.peer = peer
                    return conn, True
            conn = await self.connect()
        except BaseException:
            self._slots.release()
            self._leave(peer)
            raise
        conn.peer = peer
        return conn, False

    async def _wait_for_share(self, peer: str) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queued.get(peer)
        if queue is None:
            queue = self._queued[peer] = collections.deque()
        queue.append(waiter)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # The place was handed over just as the wait ended: give it on.
                self._leave(peer)
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
                if not queue and self._queued.get(peer) is queue:
                    del self._queued[peer]
            if isinstance(exc, TimeoutError):
                raise SlowDown(
                    f"this caller already has {self._share} requests in flight to the storage server, as many as "
                    f"one caller may; none of them ended within {self._connect_timeout:g}s, so this one was not "
                    "forwarded: retry later") from None
            raise

    def _leave(self, peer: str) -> None:
        """One exchange of `peer` is over: its place goes to that peer's next waiting request, if any."""
        if not self._share:
            return
        if self._queued:   # rarely: only while some peer is at its share
            queue = self._queued.get(peer)
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    if not queue:
                        del self._queued[peer]
                    return
            if queue is not None:
                del self._queued[peer]
        busy = self._busy[peer] - 1
        if busy:
            self._busy[peer] = busy
        else:
            del self._busy[peer]

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(loop, self._read_timeout, self._buffer), self.host, self.port, ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                )
        except TimeoutError:
            raise UpstreamTimeout("the storage server did not accept a connection in time") from None
        except OSError as exc:
            raise UpstreamFailure("the storage server could not be reached") from exc
        return conn

    def release(self, conn: Connection) -> None:
        now = time.monotonic()
        if conn.reusable:
            conn.idle()
            self._idle.append((now, conn))
        else:
            conn.abort()
        while self._idle and now - self._idle[0][0] > IDLE_SECONDS:
            self._idle.popleft()[1].abort()
        self._slots.release()
        self._leave(conn.peer)

    def close(self) -> None:
        for _, conn in self._idle:
            conn.abort()
        self._idle.clear()


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
