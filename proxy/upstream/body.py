"""The caller's request body as the proxy forwards it: streamed, and cut off if it stalls or trickles.

The pieces are forwarded as they were read from the caller's socket, never
joined into one; a caller that stops sending, or sends slower than the minimum
rate, is answered 400 ``RequestTimeout`` (`BodyStream.refusal`) rather than
the storage server being blamed for the abandoned upload.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from aiohttp import web

from proxy.errors import BadRequest, RequestRefused, UpstreamFailure


class StreamedBody(Protocol):
    """A body forwarded as it streams: the caller's (`BodyStream`), or one the proxy makes (an encrypted copy)."""

    @property
    def received(self) -> int:
        """Bytes of the caller's body so far."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def refusal(self) -> RequestRefused | None:
        """What to answer the caller if the body could not be sent for a reason of its own, else None."""
        ...


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

    def then(self, transform: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]) -> None:
        """What the pieces go through after the check (if any), before they are forwarded (encryption)."""
        check = self._check
        self._check = transform if check is None else (lambda pieces: transform(check(pieces)))

    def arrived(self, length: int) -> bytes | None:
        """The whole body of declared `length`, if all of it is already here and nothing checks it as it
        streams (else None, and nothing is taken): a small upload is then sent with its head in one write,
        without a task, a timer or a wait per piece. The bytes are the ones streaming would send."""
        content = self._content
        if self._check is not None or self.received or not content.is_eof() or content.exception() is not None \
                or content.total_bytes != length:
            return None
        data = content.read_nowait(-1)
        if len(data) != length:   # a part of it was read by someone else: never send a partial body
            raise UpstreamFailure("the request body is shorter than its Content-Length")
        self.received = length
        return data

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

    def refusal(self) -> BadRequest | None:
        """The answer to the caller if the upload was abandoned because the caller stalled, else None."""
        if self.too_slow:
            return BadRequest(f"the request body arrived slower than the minimum rate of {self.min_rate:g} bytes/s "
                              f"over {self.window:g}s; the upload was abandoned", code="RequestTimeout")
        if self.timed_out:
            return BadRequest("the request body stopped arriving; the upload was abandoned", code="RequestTimeout")
        return None
