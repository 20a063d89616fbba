"""The upstream hop: send the request on exactly as checked, stream both bodies.

The raw request-target is forwarded byte for byte (``URL(..., encoded=True)``)
and ``Host`` is kept, so the storage server reads the same path, query and host
that the proxy decided on, and a caller's own SigV4 or SharedKey signature
still verifies. No redirects are followed, nothing is decompressed, no header
is added by the client library (``skip_auto_headers``), and bodies stream in
both directions in bounded chunks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.config import UpstreamConfig
from proxy.errors import BadRequest, StreamInterrupted, UpstreamFailure, UpstreamTimeout
from proxy.tags import response_headers

log = logging.getLogger("bailiwick.forward")

# aiohttp's client would otherwise add these; the caller's request must pass unchanged.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_READ_CHUNK = 256 * 1024
# Bodies up to this size are read whole and sent with the headers in one write:
# most S3 responses (errors, listings, small objects) are this small.
_SMALL_BODY = 64 * 1024


class BodyStream:
    """The caller's body as it arrives, chunk by chunk, never whole.

    A caller that sends nothing for `idle_timeout` seconds is cut off: the
    stream raises, which aborts the upstream request, and `timed_out` lets the
    proxy answer 400 RequestTimeout instead of blaming the storage server.
    """

    def __init__(self, request: web.BaseRequest, idle_timeout: float) -> None:
        self._content = request.content
        self._idle = idle_timeout
        self.timed_out = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self._idle):
                    chunk = await self._content.readany()
            except TimeoutError:
                self.timed_out = True
                raise
            if not chunk:
                return
            yield chunk


def _blame_stalled_caller(body: object, exc: BaseException) -> None:
    if isinstance(body, BodyStream) and body.timed_out:
        raise BadRequest("the request body stopped arriving; the upload was abandoned",
                         code="RequestTimeout") from exc


class Upstream:
    """A pooled HTTP client for one storage server."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self._base = config.url
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections, limit_per_host=self.config.max_connections,
            ttl_dns_cache=60, enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self.config.connect_timeout_seconds,
                sock_read=self.config.read_timeout_seconds,
            ),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            read_bufsize=_READ_CHUNK,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(
        self,
        request: web.BaseRequest,
        headers: CIMultiDict[str],
        body: bytes | BodyStream | None,
    ) -> web.StreamResponse:
        """Send the request upstream and stream the answer back to the caller.

        Raises `UpstreamFailure` / `UpstreamTimeout` only while nothing has been
        sent to the caller; after that, a failure aborts the caller's connection
        so that a truncated body is never mistaken for a whole one.
        """
        if self._session is None:
            raise UpstreamFailure("the proxy is not connected to its storage server")
        url = URL(self._base + request.raw_path, encoded=True)
        try:
            upstream = await self._session.request(
                request.method, url, headers=headers, data=body,
                allow_redirects=False, skip_auto_headers=_SKIP_AUTO_HEADERS,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            _blame_stalled_caller(body, exc)
            raise UpstreamTimeout("the storage server did not answer in time") from exc
        except aiohttp.ClientError as exc:
            _blame_stalled_caller(body, exc)
            # The class only: some client errors carry the URL, and a presigned URL's query is a secret.
            log.warning("upstream request failed: %s", type(exc).__name__)
            raise UpstreamFailure("the storage server could not be reached") from exc
        length = upstream.content_length
        if length is not None and length <= _SMALL_BODY and request.method != "HEAD":
            return await self._small(upstream, length)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        try:
            response.headers.extend(response_headers(upstream.headers))
            await response.prepare(request)
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            await response.write_eof()
            return response
        except Exception as exc:
            # Part of the answer may be on its way to the caller already: whatever went
            # wrong, cut the connection rather than end the body cleanly or start a second
            # response on it.
            log.info("stream aborted: %s", type(exc).__name__)
            if request.transport is not None:
                request.transport.abort()
            upstream.close()
            raise StreamInterrupted(str(exc) or type(exc).__name__, response) from exc
        finally:
            upstream.release()


    @staticmethod
    async def _small(upstream: aiohttp.ClientResponse, length: int) -> web.Response:
        """A response small enough to hold: read it whole, then answer in one piece.

        Nothing has been sent to the caller yet, so a short body is a clean 502.
        """
        try:
            body = await upstream.read()
        except aiohttp.ClientError as exc:
            raise UpstreamFailure("the storage server's answer was cut short") from exc
        finally:
            upstream.release()
        if len(body) != length:
            raise UpstreamFailure("the storage server's answer was cut short")
        headers = response_headers(upstream.headers)
        headers.popall("Content-Length", None)
        return web.Response(status=upstream.status, reason=upstream.reason, body=body, headers=headers)
