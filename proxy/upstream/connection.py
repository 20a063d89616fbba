"""One HTTP/1.1 connection to the storage server: a protocol carrying one exchange at a time.

Built on asyncio protocols with llhttp (through httptools) parsing the answers,
so that answers are framed strictly (conflicting lengths, bad chunk sizes and
obsolete line folding are errors), never decompressed, and a redirect is just
an answer; reading pauses while the caller is slow, writing waits while the
socket is full.

Two kinds of state, kept apart as httpcore keeps them: the connection's
(`ConnectionState`: new, carrying an exchange, idle in the pool, closed) and
the exchange's (`ExchangeState`: the answer being read, its body pieces, its timer,
whether it ended cleanly). Each exchange gets a new `ExchangeState`, so nothing of
one answer is ever read as part of the next. A connection is reusable only
after a complete exchange that both sides agreed to keep alive; anything
unusual closes it.

Why one module of about 400 lines: the transport callbacks, llhttp's parser
callbacks and the exchange's timer are one state machine over the same
`ExchangeState`; split apart, each part would reach into the others' state.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from dataclasses import dataclass

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import UpstreamFailure, UpstreamTimeout

# Reads land in one buffer per pool (see `Connection.get_buffer`): a body arrives in
# pieces of at most this size, whatever the object's size.
READ_BUFFER = 256 * 1024
# Reading from the storage server pauses when this much of an answer waits for a
# slow caller, and resumes when the caller has taken all but LOW of it.
HIGH_WATER = 512 * 1024
LOW_WATER = 128 * 1024


class ConnectionState(enum.Enum):
    """Where a connection is in its life (httpcore's HTTPConnectionState)."""

    NEW = "new"          # connected, no exchange yet
    ACTIVE = "active"    # carrying an exchange
    IDLE = "idle"        # between exchanges, kept alive in the pool
    CLOSED = "closed"    # closed by either side; never used again


# The states the hot path checks, read once: on Python 3.11 reading a member off its Enum
# class costs about 0.4 µs, several times an exchange.
_ACTIVE, _IDLE, _CLOSED = ConnectionState.ACTIVE, ConnectionState.IDLE, ConnectionState.CLOSED


class _HeadComplete(Exception):
    """Raised from the parser's callback to stop at the end of a HEAD answer's header."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    # Declared length of the body; None when chunked or delimited by the connection's end.
    length: int | None


class ExchangeState:
    """One request's answer as it is read: all that starts again with the next request.

    `Connection.begin` makes a new one for each exchange, so nothing of one
    answer can survive into the next through a field a reset forgot. A plain
    slotted class rather than a dataclass: one is made per request, and a
    dataclass's generated ``__init__`` with default factories costs half as much again.
    """

    __slots__ = ("armed", "buffered", "chunks", "complete", "error", "head", "head_bytes", "head_only",
                 "interim", "keep_alive", "last_heard", "raw_headers", "reason", "received", "spoiled",
                 "until_close", "waiter")

    def __init__(self, head: asyncio.Future[ResponseHead], head_only: bool, *, complete: bool = False) -> None:
        self.head = head                # the answer's head, set once it is parsed
        self.head_only = head_only      # a HEAD request: the answer ends at its blank line
        self.complete = complete        # the answer ended (or, on a new connection, there is none)
        self.head_bytes = b""           # a head-only answer as received, to check it ends at its blank line
        self.reason = b""               # of the answer being parsed (a 1xx one, then the real one)
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.interim = False            # parsing a 1xx answer
        self.chunks: collections.deque[bytes] = collections.deque()   # body read, not yet taken
        self.buffered = 0               # bytes in `chunks`
        self.waiter: asyncio.Future[None] | None = None   # a reader waiting for body
        self.until_close = False        # the body ends where the connection does
        self.received = False           # any bytes of an answer arrived
        self.error: BaseException | None = None   # why the exchange failed
        self.keep_alive = False         # both sides keep the connection once the answer is complete
        self.spoiled = False            # the request was not sent whole: never reuse the connection
        self.armed = False              # the read timeout runs for this exchange (see `Connection.arm`)
        self.last_heard = 0.0           # loop time of the last bytes from the storage server


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
        self.state = ConnectionState.NEW
        self._parser = httptools.HttpResponseParser(self)
        # The exchange in flight, or the last one. A new connection starts with one that is
        # already complete, so "no answer is awaited" is always `self._exchange.complete`.
        self._exchange = ExchangeState(loop.create_future(), False, complete=True)
        self._reading_paused = False
        self._writing_paused = False
        self._drain: asyncio.Future[None] | None = None
        # The read timeout's timer, kept from one exchange to the next (see `arm`).
        self._timer: asyncio.TimerHandle | None = None
        self.peer = ""   # whose exchange this connection carries (see `Pool.acquire`)

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _CLOSED
        self._stop_timer()
        ex = self._exchange
        if not ex.complete:
            if ex.until_close and exc is None and ex.head.done():
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
        ex = self._exchange
        if ex.complete:
            # Bytes nobody asked for: the connection can no longer be trusted to frame answers.
            self.abort()
            return
        ex.received = True
        ex.last_heard = self._loop.time()
        if ex.head_only:
            ex.head_bytes += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if ex.head_only and ex.head.done():
                self._end_head_only()
            elif ex.error is None:
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
        ex = self._exchange
        if ex.complete:
            # A second answer to one request: the connection is out of step, never reuse it.
            raise UpstreamFailure("the storage server sent more than one answer")
        ex.raw_headers.clear()
        ex.reason = b""

    def on_status(self, reason: bytes) -> None:
        self._exchange.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._exchange.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self._exchange
        status = self._parser.get_status_code()
        if status == 101:
            raise UpstreamFailure("the storage server switched protocols, which the proxy never asks for")
        if status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            ex.interim = True
            return
        headers: CIMultiDict[str] = CIMultiDict()
        length: int | None = None
        chunked = False
        for raw_name, raw_value in ex.raw_headers:
            name = raw_name.decode("utf-8", "surrogateescape")
            value = raw_value.decode("utf-8", "surrogateescape")
            headers.add(name, value)
            lower = name.lower()
            if lower == "content-length":
                length = int(value)   # llhttp has checked it is one decimal number
            elif lower == "transfer-encoding":
                # Only chunked alone is understood: any other final coding would leave the body
                # delimited by the connection's end, a framing the proxy does not guess at, and a
                # coding under chunked (gzip, chunked) would reach the caller still encoded, with
                # the hop-by-hop header that said so dropped.
                if value.strip().lower() != "chunked":
                    raise UpstreamFailure("the storage server framed its answer with a Transfer-Encoding "
                                          "other than chunked")
                chunked = True
        no_body = ex.head_only or status in (204, 304)
        ex.until_close = not no_body and length is None and not chunked
        head = ResponseHead(status, ex.reason.decode("latin-1"), CIMultiDictProxy(headers), length)
        if ex.head.done():
            raise UpstreamFailure("an answer nobody waits for")   # e.g. the wait timed out
        ex.head.set_result(head)
        if ex.head_only:
            # llhttp would wait for the body a HEAD answer's Content-Length announces; stop it here.
            raise _HeadComplete

    def on_body(self, body: bytes) -> None:
        ex = self._exchange
        if ex.interim:
            # A 1xx answer has no body; one that does would be spliced into the real answer's.
            raise UpstreamFailure("the storage server sent a body with an interim (1xx) answer")
        ex.chunks.append(body)
        ex.buffered += len(body)
        if ex.buffered > HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        ex = self._exchange
        if ex.interim:
            ex.interim = False
            return
        ex.keep_alive = self._parser.should_keep_alive()
        self._finish()

    # -- the exchange ------------------------------------------------------

    def begin(self, head_only: bool) -> asyncio.Future[ResponseHead]:
        """Start an exchange; the future is the answer's head. `head_only`: the request is a HEAD."""
        if self.state is not _CLOSED:
            self.state = _ACTIVE
        self._exchange = ExchangeState(self._loop.create_future(), head_only)
        return self._exchange.head

    def idle(self) -> None:
        """The exchange is over and the connection waits in the pool for the next."""
        self.state = _IDLE

    def arm(self) -> None:
        """Start the read timeout: from now on the storage server owes an answer.

        One timer per connection rather than one per wait, or per exchange:
        reads only note the time, and when the timer fires it sets itself
        again for the rest of the timeout counted from the last bytes (or for
        a whole one while the caller is the slow side), so a healthy exchange
        costs no timer of its own whatever its size (a timer made and
        cancelled per request is a few µs) and a server silent for
        `read_timeout` is cut off. A timer that finds no exchange armed lapses;
        the next exchange starts another.
        """
        ex = self._exchange
        ex.last_heard = self._loop.time()
        ex.armed = True
        if self._timer is None:
            self._timer = self._loop.call_later(self._read_timeout, self._check_silence)

    def _check_silence(self) -> None:
        self._timer = None
        ex = self._exchange
        if not ex.armed or ex.complete or ex.error is not None:
            return
        if self._reading_paused:
            self.arm()
            return
        left = ex.last_heard + self._read_timeout - self._loop.time()
        if left > 0:
            self._timer = self._loop.call_later(left, self._check_silence)
            return
        waited = "stopped sending its answer" if ex.head.done() else "did not answer in time"
        self._fail(UpstreamTimeout(f"the storage server {waited}"))

    def is_closed(self) -> bool:
        """Whether either side closed the connection: then it carries nothing more."""
        return self.state is _CLOSED

    @property
    def received_anything(self) -> bool:
        """Whether any bytes of an answer arrived in this exchange."""
        return self._exchange.received

    @property
    def reusable(self) -> bool:
        """True once the exchange ended cleanly and both sides keep the connection alive.

        Not while reading is paused: that is an answer its caller left unread, and a
        paused transport would never read the next exchange's answer.
        """
        ex = self._exchange
        return ex.complete and ex.keep_alive and ex.error is None and self.state is not _CLOSED \
            and not ex.spoiled and not self._reading_paused

    def spoil(self) -> None:
        """Never reuse this connection (the request on it was not sent whole)."""
        self._exchange.spoiled = True

    def write(self, data: bytes) -> None:
        if self.transport is None or self.state is _CLOSED:
            raise UpstreamFailure("the connection to the storage server was lost")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the socket is full; a server that stops reading for `read_timeout` is cut off."""
        if self.state is _CLOSED:
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
        ex = self._exchange
        if not ex.chunks and not ex.complete and ex.error is None:
            # Silence is ended by the read timeout's timer (see `arm`), which fails the exchange.
            ex.waiter = self._loop.create_future()
            try:
                await ex.waiter
            finally:
                ex.waiter = None
        if ex.chunks:
            data = ex.chunks.popleft()
            ex.buffered -= len(data)
            if self._reading_paused and ex.buffered <= LOW_WATER and self.transport is not None \
                    and self.state is not _CLOSED:
                self._reading_paused = False
                self.transport.resume_reading()
            return data
        if ex.error is not None:
            raise ex.error
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
        self.state = _CLOSED
        self._disarm()
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()

    def _end_head_only(self) -> None:
        # Reusable only if the answer ended exactly at its blank line: anything after
        # it (a body, a second answer) would be read as the next request's answer.
        ex = self._exchange
        clean = ex.head_bytes.endswith(b"\r\n\r\n") and ex.head_bytes.count(b"\r\n\r\n") == 1
        ex.keep_alive = clean and self._parser.should_keep_alive()
        self._parser = httptools.HttpResponseParser(self)
        self._finish()

    def _finish(self) -> None:
        self._exchange.complete = True
        self._disarm()
        self._wake()

    def _disarm(self) -> None:
        self._exchange.armed = False   # the timer, if running, lapses or serves the next exchange

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, error: BaseException) -> None:
        ex = self._exchange
        ex.error = error
        self._disarm()
        if not ex.head.done():
            ex.head.set_exception(error)
            # Retrieved or not, this failure is reported through the exchange's own error.
            ex.head.exception()
        self._wake()
        self.abort()

    def _wake(self) -> None:
        waiter = self._exchange.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
