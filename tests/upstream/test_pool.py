"""The pool's shares, without sockets: each exchange gets a fresh `Connection` that is never opened.

A peer at its share waits in turn for one of its own exchanges to end, is told
to slow down when none does in time, and leaves nothing behind either way;
kept-alive connections are reused newest first, and closed ones never.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from proxy.config import UpstreamConfig
from proxy.errors import SlowDown, UpstreamTimeout
from proxy.upstream.connection import Connection, ConnectionState
from proxy.upstream.pool import Pool


def _pool(share: int, *, wait: float = 5.0, size: int = 8) -> Pool:
    """A pool whose connections are never opened: each exchange gets a fresh unconnected `Connection`.

    `size` connections in all; a `share` of `size` or more counts no share per peer."""
    pool = Pool(UpstreamConfig(max_connections=size, max_connections_per_peer=share, connect_timeout_seconds=wait))
    loop = asyncio.get_running_loop()

    async def connect() -> Connection:
        return Connection(loop, 60.0, memoryview(bytearray(16)))

    pool.connect = connect   # type: ignore[method-assign]
    return pool


async def test_a_peer_at_its_share_waits_in_turn_for_its_own_exchanges() -> None:
    pool = _pool(share=2)
    first, _ = await pool.acquire("a")
    await pool.acquire("a")
    third = asyncio.ensure_future(pool.acquire("a"))
    fourth = asyncio.ensure_future(pool.acquire("a"))
    await asyncio.sleep(0.01)
    assert not third.done()
    assert not fourth.done()
    other, _ = await pool.acquire("b")   # another peer is not held up
    pool.release(other)
    assert not third.done()
    pool.release(first)                  # a's place goes to a's first waiting request, not to the next
    conn, _ = await asyncio.wait_for(third, 1)
    assert not fourth.done()
    assert pool.busy("a") == 2
    fourth.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await fourth
    pool.release(conn)
    assert pool.busy("a") == 1


async def test_a_peer_at_its_share_is_told_to_slow_down_and_leaves_nothing_behind() -> None:
    pool = _pool(share=1, wait=0.05)
    held, _ = await pool.acquire("a")
    with pytest.raises(SlowDown, match="retry later"):
        await pool.acquire("a")
    waiting = asyncio.ensure_future(pool.acquire("a"))
    await asyncio.sleep(0.01)
    waiting.cancel()                      # the caller went away while it waited
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    pool.release(held)
    assert pool.busy("a") == 0
    assert (pool._busy, pool._queued) == ({}, {})


async def test_a_share_as_large_as_the_pool_is_not_counted() -> None:
    pool = _pool(share=8)
    conn, _ = await pool.acquire("a")
    assert pool.busy("a") == 0
    pool.release(conn)


async def test_a_connection_released_without_a_clean_exchange_is_closed_not_kept() -> None:
    pool = _pool(share=0)
    conn, reused = await pool.acquire("a")
    assert (conn.state, reused) == (ConnectionState.NEW, False)
    pool.release(conn)   # no exchange ended cleanly on it: it cannot be trusted to frame the next answer
    assert conn.state is ConnectionState.CLOSED
    again, reused = await pool.acquire("a")
    assert again is not conn
    assert not reused


def _served(conn: Connection) -> None:
    """An exchange on `conn` that ends cleanly and kept alive, its answer played into the connection's buffer."""
    conn.begin(head_only=False)
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    buffer = conn.get_buffer(-1)
    while data:
        size = min(len(buffer), len(data))
        buffer[:size] = data[:size]
        conn.buffer_updated(size)
        data = data[size:]
    assert conn.reusable


async def test_the_newest_open_kept_alive_connection_is_reused_and_a_closed_one_never() -> None:
    pool = _pool(share=0)
    first, second, third = [(await pool.acquire("a"))[0] for _ in range(3)]
    for conn in (first, second, third):
        _served(conn)
        pool.release(conn)
    third.abort()   # closed by the storage server while it waited in the pool
    taken = [await pool.acquire("a") for _ in range(3)]
    assert [(conn is second, conn is first, reused) for conn, reused in taken] == \
        [(True, False, True), (False, True, True), (False, False, False)]
    assert taken[2][0] is not third


async def test_when_every_connection_is_busy_requests_wait_in_turn_and_places_are_never_lost() -> None:
    pool = _pool(share=2, size=2)
    first, _ = await pool.acquire("a")
    second, _ = await pool.acquire("b")
    waiting = [asyncio.ensure_future(pool.acquire(peer)) for peer in ("c", "d", "e")]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiting)
    waiting[1].cancel()                  # a request that goes away leaves its turn, and no place behind
    with contextlib.suppress(asyncio.CancelledError):
        await waiting[1]
    pool.release(first)                  # the first still waiting gets the place, not a newcomer
    third, _ = await asyncio.wait_for(waiting[0], 1)
    assert not waiting[2].done()
    pool.release(second)
    fifth, _ = await asyncio.wait_for(waiting[2], 1)
    pool.release(third)
    pool.release(fifth)
    # Both places are free again, and taken at once.
    got = [await asyncio.wait_for(pool.acquire("f"), 1) for _ in range(2)]
    blocked = asyncio.ensure_future(pool.acquire("g"))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    blocked.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await blocked
    for conn, _ in got:
        pool.release(conn)


async def test_when_every_connection_stays_busy_a_request_is_refused_and_leaves_nothing_behind() -> None:
    pool = _pool(share=1, size=1, wait=0.05)
    held, _ = await pool.acquire("a")
    with pytest.raises(UpstreamTimeout, match="stayed busy"):
        await pool.acquire("b")
    pool.release(held)
    conn, _ = await asyncio.wait_for(pool.acquire("b"), 1)   # the refused request took no place with it
    pool.release(conn)
