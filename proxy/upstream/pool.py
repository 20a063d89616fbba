"""The pool of keep-alive connections to the storage server, shared fairly between callers.

It hands out a `Connection` per exchange (a kept-alive one when it has one,
the newest first), takes it back when the exchange ends (keeping it only if
`Connection.reusable`), closes connections idle too long, and bounds how many
exchanges are in flight in all and per peer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from urllib.parse import urlsplit

from proxy.config import UpstreamConfig
from proxy.errors import SlowDown, UpstreamFailure, UpstreamTimeout
from proxy.upstream.connection import READ_BUFFER, Connection
from proxy.upstream.tls import check_pins, client_context, refused

# A kept-alive connection unused this long is closed, so a burst of concurrency does
# not leave hundreds of sockets behind, and the proxy lets go of a connection before
# storage servers do (S3 closes idle ones after about 20 s), which keeps stale reuse rare.
IDLE_SECONDS = 15.0


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
        # Verified always, against the configured CA bundle or the system's roots (`proxy.upstream.tls`).
        self._ssl = client_context(config) if parts.scheme == "https" else None
        self._pins = frozenset(config.pin_sha256)
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
                if not conn.is_closed():
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
        except ssl.SSLError as exc:
            raise refused(exc, self.netloc) from exc
        except OSError as exc:
            raise UpstreamFailure("the storage server could not be reached") from exc
        if self._ssl is not None:
            try:
                transport = conn.transport
                check_pins(transport.get_extra_info("ssl_object") if transport is not None else None, self._pins,
                           self.netloc)
            except BaseException:
                conn.abort()
                raise
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
