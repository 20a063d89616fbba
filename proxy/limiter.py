"""The data port's server: aiohttp's low-level `web.Server` with caps on connections and on unread answers.

The caps are applied per connection, by the server, before and around any
request: the gateway's handler never sees a connection over a cap, and one
timer for the whole server watches every connection's unsent answer bytes.
A connection is counted from its accept to its close; with ``listen_tls``,
that includes its TLS handshake (`proxy.handshake` puts each connection to the
same `ConnectionCaps`), so half-open handshakes cannot hold places beyond a cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

from proxy.handshake import Handshakes
from proxy.metrics import Metrics
from proxy.peers import peer_key

# Unsent bytes the kernel holds for a caller's connection when a minimum send rate is set
# (TCP_NOTSENT_LOWAT): what leaves the proxy's buffer then follows what the caller reads,
# in steps of at most about this much, instead of in steps of a third of a multi-MiB
# autotuned send buffer. 16 KiB, as large HTTP/2 front ends use it: on loopback a streamed
# answer goes at about 1 GB/s with it as without it.
_NOTSENT_LOWAT = 16 * 1024
_TCP_NOTSENT_LOWAT: int | None = getattr(socket, "TCP_NOTSENT_LOWAT", None)   # Linux, macOS


class ConnectionCaps:
    """Connections held at once, in all and by peer (`proxy.peers.peer_key` of the socket's address).

    Each connection is counted by `admit` when it is accepted, over a cap or not (one over a cap is closed
    by the caller, and counted until then), and given back by `release` once, when it is lost.
    """

    def __init__(self, max_connections: int, max_per_peer: int, metrics: Metrics) -> None:
        closed = metrics.connections_closed
        self._closed_over_cap = closed.labels("max_connections")
        self._closed_over_peer_cap = closed.labels("max_connections_per_peer")
        self._max_connections = max_connections
        self._max_per_peer = max_per_peer
        self.held = 0   # connections counted now
        self.per_peer: dict[str, int] = {}   # connections held, by peer (absent: none)

    def admit(self, host: str) -> str | None:
        """Count a connection from `host`; None if it may stay, else the cap it is over (it is closed as such)."""
        peer = peer_key(host)
        self.held += 1
        held = self.per_peer.get(peer, 0) + 1
        self.per_peer[peer] = held
        if self.held > self._max_connections:
            self._closed_over_cap.inc()
            return "max_connections"
        if held > self._max_per_peer:
            self._closed_over_peer_cap.inc()
            return "max_connections_per_peer"
        return None

    def release(self, host: str) -> None:
        """Give back the place of a connection from `host` that `admit` counted."""
        peer = peer_key(host)
        self.held -= 1
        held = self.per_peer[peer] - 1
        if held:
            self.per_peer[peer] = held
        else:
            del self.per_peer[peer]


class LimitedServer(web.Server):
    """aiohttp's low-level server with caps on connections held at once, and a deadline on unread answers.

    Connections are capped in all and per peer (`proxy.peers.peer_key` of the
    socket's address), so that one address cannot take every place; a connection
    over either cap is answered 503 and closed as soon as it is accepted, before
    anything of it is read. With ``listen_tls``, the handshakes count it
    (`proxy.handshake`): one over a cap is closed before its handshake, without
    an answer (none could be read before it).

    Send deadline: a connection whose answer bytes wait in the proxy, unsent,
    without moving for `send_idle_timeout` seconds (its caller stopped reading)
    is cut. One timer for the whole server looks at every connection's write
    buffer a few times per deadline: nothing is added per request, and a
    paused reader can hold neither an exchange with the storage server nor a
    connection for ever (streamed answers, small ones written after the
    handler, pipelined ones). `on_send_timeout` is told first, so that the
    exchange is audited as cut for that reason.

    Send rate: a caller that reads, but a trickle (a byte now and then, which
    resets no idle deadline), is cut the same way. While answer bytes wait
    unsent, a connection has a credit of bytes: it starts at
    `min_rate_window` seconds' worth of `min_send_rate` plus `_NOTSENT_LOWAT`
    (what leaves moves in steps about that large), loses `min_send_rate` a
    second, gains what leaves the proxy, never exceeds where it started (no
    banking a fast start for a later trickle), and the connection is cut when
    it runs out. What left is what was handed to the connection (`handed`,
    the streamed answer's count) less what still waits; the same timer
    measures it, so the cost per request stays nil.
    """

    _REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: 39\r\n\r\nbailiwick: too many connections, retry\n")
    _PEER_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"Content-Length: 57\r\n\r\nbailiwick: too many connections from your address, retry\n")

    def __init__(
        self, handler: Any, *, max_connections: int, max_connections_per_peer: int, send_idle_timeout: float,
        on_send_timeout: Callable[[object, bool], None], metrics: Metrics,
        min_send_rate: float = 0.0, min_rate_window: float = 5.0,
        handed: Callable[[object], int | None] = lambda connection: None, handshakes: Handshakes | None = None,
        **kwargs: Any,
    ) -> None:
        """`handshakes`: with ``listen_tls``, the proxy's own TLS handshakes (`proxy.handshake`); they count each
        connection against the caps from its accept, and hand it to a request handler once its handshake passed."""
        super().__init__(handler, **kwargs)
        self.caps = ConnectionCaps(max_connections, max_connections_per_peer, metrics)
        self._handshakes = handshakes
        if handshakes is not None:
            handshakes.gate = self.caps
        self._closed_send_timeout = metrics.connections_closed.labels("send_timeout")
        self._open: dict[object, tuple[str, asyncio.Transport]] = {}   # protocol -> (host, transport)
        self._send_idle = send_idle_timeout
        self._on_send_timeout = on_send_timeout
        # A stall is seen at most this late: cut between the deadline and the deadline plus this.
        self._sweep_every = min(1.0, send_idle_timeout / 4, min_rate_window / 4)
        self._sweeper: asyncio.TimerHandle | None = None
        self._stuck: dict[object, tuple[int, float]] = {}   # protocol -> (bytes waiting, since when)
        self._min_rate = min_send_rate
        self._handed = handed
        self._allowance = min_send_rate * min_rate_window + _NOTSENT_LOWAT
        # protocol -> (when measured, bytes handed then (None: not a streamed answer), bytes waiting then, credit)
        self._pace: dict[object, tuple[float, int | None, int, float]] = {}

    def __call__(self) -> Any:
        handler = super().__call__()
        return handler if self._handshakes is None else self._handshakes.protocol(handler)

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        peername = transport.get_extra_info("peername")
        host = str(peername[0]) if peername else ""
        # Over TLS, the handshake counted it at its accept (and closed it there if over a cap).
        over = None if self._handshakes is not None else self.caps.admit(host)
        self._open[handler] = (host, transport)
        if self._min_rate and _TCP_NOTSENT_LOWAT is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError, AttributeError):
                    sock.setsockopt(socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, _NOTSENT_LOWAT)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)
        if over is not None:
            transport.write(self._REFUSAL if over == "max_connections" else self._PEER_REFUSAL)
            transport.close()

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        entry = self._open.pop(handler, None)
        if entry is not None:
            if self._handshakes is None:   # over TLS, the handshake gives its place back
                self.caps.release(entry[0])
            self._stuck.pop(handler, None)
            self._pace.pop(handler, None)
        super().connection_lost(handler, exc)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self._loop.time()
        stuck = self._stuck
        pace = self._pace
        rate = self._min_rate
        cut: list[tuple[object, asyncio.Transport, bool]] = []
        for handler, (_, transport) in self._open.items():
            waiting = transport.get_write_buffer_size()
            if not waiting:
                if stuck:
                    stuck.pop(handler, None)
                    pace.pop(handler, None)
                continue
            seen = stuck.get(handler)
            if seen is None or seen[0] != waiting:
                stuck[handler] = (waiting, now)   # new, or it moved: the caller reads
            elif now - seen[1] >= self._send_idle:
                cut.append((handler, transport, False))
                continue
            if rate and self._too_slow(handler, waiting, now):
                cut.append((handler, transport, True))
        for handler, transport, slow in cut:
            stuck.pop(handler, None)
            pace.pop(handler, None)
            self._on_send_timeout(handler, slow)
            transport.abort()
            self._closed_send_timeout.inc()
        if self._open:
            self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)

    def _too_slow(self, handler: object, waiting: int, now: float) -> bool:
        """Whether the caller of `handler`, with `waiting` bytes unsent, has run out of send-rate credit."""
        handed = self._handed(handler)
        seen = self._pace.get(handler)
        credit = self._allowance
        if seen is not None:
            then, handed_then, waiting_then, credit = seen
            if (handed is None) != (handed_then is None) or (handed or 0) < (handed_then or 0):
                pass   # another answer on the connection: what left cannot be told, so measuring starts again
            elif handed is None and waiting > waiting_then:
                pass   # bytes of an answer written whole were added: likewise
            else:
                left = (handed or 0) - (handed_then or 0) - (waiting - waiting_then)
                credit = min(self._allowance, credit + left - self._min_rate * (now - then))
                if credit < 0:
                    return True
        self._pace[handler] = (now, handed, waiting, credit)
        return False

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp's signature
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await super().shutdown(timeout)
        if self._handshakes is not None:
            await self._handshakes.close()
