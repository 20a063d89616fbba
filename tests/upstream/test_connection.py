"""`Connection` against a scripted in-memory transport, as httpcore tests its HTTP/1.1 connection.

No sockets: `Wire` stands in for the transport, recording what the connection
writes and playing the storage server's answer into the connection's read
buffer a few bytes at a time, as the event loop would, so every answer is
parsed across many reads. Each case says what the caller reads (head, body or
error), whether the connection may carry the next exchange, and the state it
is left in. The same behaviours are tested end to end over sockets in
`tests/upstream/test_client.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest

from proxy.errors import UpstreamFailure, UpstreamTimeout
from proxy.upstream.connection import HIGH_WATER, LOW_WATER, Connection, ConnectionState
from proxy.upstream.request import send_body

REQUEST = b"GET /k HTTP/1.1\r\nHost: h\r\n\r\n"
OK_HELLO = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
FIN = "fin"        # the storage server closes its side in order
RESET = "reset"    # the connection is reset


class Wire(asyncio.Transport):
    """The transport under a `Connection`: what it wrote, and the storage server's side scripted.

    Like asyncio's transports, `abort` tells the protocol later (`connection_lost`
    on the next loop iteration), and a closed or paused transport reads nothing.
    """

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn
        self.written = bytearray()
        self.reading = True
        self.closed = False
        conn.connection_made(self)

    # -- what the connection calls --

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.conn.connection_lost, None)

    def close(self) -> None:
        self.abort()

    # -- the storage server's side --

    def play(self, script: Sequence[bytes | str]) -> None:
        """Answer with `script`: bytes read through the connection's buffer, then maybe a FIN or a reset."""
        for step in script:
            if step == FIN:
                self._lose(None)
            elif step == RESET:
                self._lose(ConnectionResetError())
            else:
                assert isinstance(step, bytes)
                self.feed(step)

    def feed(self, data: bytes) -> None:
        """Data arriving, read into the connection's own buffer as far as it holds, as the loop reads it."""
        while data and not self.closed:
            buffer = self.conn.get_buffer(len(data))
            size = min(len(buffer), len(data))
            buffer[:size] = data[:size]
            self.conn.buffer_updated(size)
            data = data[size:]

    def _lose(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.conn.connection_lost(exc)


def connect(read_timeout: float = 5.0, buffer: int = 16) -> tuple[Connection, Wire]:
    conn = Connection(asyncio.get_running_loop(), read_timeout, memoryview(bytearray(buffer)))
    return conn, Wire(conn)


@dataclass(frozen=True)
class Outcome:
    status: int | None          # the answer's status, if its head was read
    body: bytes                 # the body read, up to an error
    error: str | None           # the message of the error the exchange ended with
    reusable: bool
    state: ConnectionState      # when the exchange ended, before the pool takes the connection back


async def exchange(conn: Connection, wire: Wire, script: Sequence[bytes | str], *, head_only: bool = False) -> Outcome:
    """One exchange as `proxy.upstream.client` runs it: begin, write, arm, read the head and the body, release."""
    answered = conn.begin(head_only)
    conn.write(REQUEST)
    conn.arm()
    wire.play(script)
    status, body, error = None, b"", None
    try:
        status = (await answered).status
        while chunk := await conn.read_chunk():
            body += chunk
    except UpstreamFailure as exc:
        error = exc.message
    outcome = Outcome(status, body, error, conn.reusable, conn.state)
    # What `Pool.release` does with it.
    if outcome.reusable:
        conn.idle()
    else:
        conn.abort()
    await asyncio.sleep(0)   # let a pending connection_lost arrive
    return outcome


ACTIVE = ConnectionState.ACTIVE
CLOSED = ConnectionState.CLOSED
IDLE = ConnectionState.IDLE
BEFORE_END = "the storage server closed the connection before its answer was complete"

# (script, whether it answers a HEAD, what the caller reads and the state the exchange leaves: CLOSED when
# the connection closed itself, ACTIVE when it is left for the pool to keep or close)
CASES: dict[str, tuple[list[bytes | str], bool, Outcome]] = {
    "length": ([OK_HELLO], False,
        Outcome(200, b"hello", None, True, ACTIVE)),
    "empty-length": ([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], False,
        Outcome(200, b"", None, True, ACTIVE)),
    "chunked": ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"], False,
        Outcome(200, b"abcde", None, True, ACTIVE)),
    "chunked-with-trailer": ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\nX-T: 1\r\n\r\n"],
                             False,
        Outcome(200, b"z", None, True, ACTIVE)),
    "until-close": ([b"HTTP/1.1 200 OK\r\n\r\nEEEE", FIN], False,
        Outcome(200, b"EEEE", None, False, CLOSED)),
    "until-close-reset": ([b"HTTP/1.1 200 OK\r\n\r\nEEEE", RESET], False,
        Outcome(200, b"EEEE", BEFORE_END, False, CLOSED)),
    "connection-close": ([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"], False,
        Outcome(200, b"ok", None, False, ACTIVE)),
    "http-1.0": ([b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"], False,
        Outcome(200, b"ok", None, False, ACTIVE)),
    "interim": ([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], False,
        Outcome(200, b"ok", None, True, ACTIVE)),
    # Head only: the answer ends at its blank line, whatever length it announces.
    "head": ([b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"], True,
        Outcome(200, b"", None, True, ACTIVE)),
    "head-connection-close": ([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 9\r\n\r\n"], True,
        Outcome(200, b"", None, False, ACTIVE)),
    "head-then-bytes": ([b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"], True,
        Outcome(200, b"", None, False, ACTIVE)),
    # ... and what follows in later reads is bytes nobody asked for: the connection closes at once.
    "head-then-answer": ([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" + OK_HELLO], True,
        Outcome(200, b"", None, False, CLOSED)),
    "204": ([b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"], False,
        Outcome(204, b"", None, True, ACTIVE)),
    "304": ([b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\nETag: \"e\"\r\n\r\n"], False,
        Outcome(304, b"", None, True, ACTIVE)),
    # Early ends and answers that cannot be trusted.
    "closed-unanswered": ([FIN], False,
        Outcome(None, b"", BEFORE_END, False, CLOSED)),
    "closed-mid-head": ([b"HTTP/1.1 200 OK\r\nContent-Le", FIN], False,
        Outcome(None, b"", BEFORE_END, False, CLOSED)),
    "closed-mid-body": ([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", FIN], False,
        Outcome(200, b"abc", BEFORE_END, False, CLOSED)),
    "reset-mid-chunks": ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", RESET], False,
        Outcome(200, b"abc", BEFORE_END, False, CLOSED)),
    "second-answer": ([OK_HELLO + OK_HELLO], False,
        Outcome(200, b"hello", "the storage server sent more than one answer", False, CLOSED)),
    "not-http": ([b"NOT HTTP AT ALL\r\n\r\n"], False,
        Outcome(None, b"", "the storage server's answer is not valid HTTP/1.1", False, CLOSED)),
    "two-lengths": ([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"], False,
        Outcome(None, b"", "the storage server's answer is not valid HTTP/1.1", False, CLOSED)),
    "gzip-framed": ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx"], False,
        Outcome(None, b"", "the storage server framed its answer with a Transfer-Encoding other than chunked", False,
                CLOSED)),
    # Chunked over gzip: unchunked, the body would still be gzip, and nothing would say so once the
    # hop-by-hop Transfer-Encoding is dropped: the caller would take it for the object's bytes.
    "gzip-then-chunked": ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nxx\r\n0\r\n\r\n"],
                          False,
        Outcome(None, b"", "the storage server framed its answer with a Transfer-Encoding other than chunked", False,
                CLOSED)),
    "switch": ([b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"], False,
        Outcome(None, b"", "the storage server switched protocols, which the proxy never asks for", False, CLOSED)),
    # llhttp reads no body after a 1xx head, so "abc" starts an answer that is not HTTP.
    "interim-body": ([b"HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\n\r\n"], False,
        Outcome(None, b"", "the storage server's answer is not valid HTTP/1.1", False, CLOSED)),
}


@pytest.mark.parametrize(("script", "head_only", "expected"), CASES.values(), ids=CASES.keys())
async def test_an_answer_is_read_as_framed_and_the_connection_kept_only_after_a_clean_end(
    script: list[bytes | str], head_only: bool, expected: Outcome,
) -> None:
    conn, wire = connect()
    assert await exchange(conn, wire, script, head_only=head_only) == expected
    assert bytes(wire.written) == REQUEST   # the request went out as given, and nothing else
    assert conn.state is (IDLE if expected.reusable else CLOSED)
    assert wire.closed is not expected.reusable


@pytest.mark.parametrize("buffer", [16, 4096], ids=["across-reads", "one-read"])
async def test_a_head_answer_followed_by_a_second_head_never_leaves_the_connection_reusable(buffer: int) -> None:
    # In one read the bytes still end at a blank line: only counting the heads tells them apart.
    conn, wire = connect(buffer=buffer)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
    outcome = await exchange(conn, wire, [head + head], head_only=True)
    assert (outcome.status, outcome.error, outcome.reusable, conn.state) == (200, None, False, CLOSED)


# (the first answer, whether it answers a HEAD)
REUSE: dict[str, tuple[bytes, bool]] = {
    "length": (OK_HELLO, False),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", False),
    "head": (b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", True),
    "304": (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n", False),
    "interim": (b"HTTP/1.1 100 Continue\r\n\r\n" + OK_HELLO, False),
}


@pytest.mark.parametrize(("first", "head_only"), REUSE.values(), ids=REUSE.keys())
async def test_a_kept_alive_connection_carries_the_next_exchange_afresh(first: bytes, head_only: bool) -> None:
    conn, wire = connect()
    done = await exchange(conn, wire, [first], head_only=head_only)
    assert (done.reusable, conn.state) == (True, IDLE)
    second = await exchange(conn, wire, [b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"])
    assert second == Outcome(200, b"next", None, True, ACTIVE)
    assert conn.state is IDLE
    assert bytes(wire.written) == REQUEST * 2


async def test_a_connection_is_new_then_active_then_idle_then_closed() -> None:
    conn, wire = connect()
    seen = [conn.state]
    answered = conn.begin(head_only=False)
    seen.append(conn.state)
    wire.play([OK_HELLO])
    await answered
    assert await conn.read_all(5) == b"hello"
    seen.append(conn.state)   # still its exchange's until the pool takes it back
    conn.idle()
    seen.append(conn.state)
    conn.begin(head_only=False)
    seen.append(conn.state)
    conn.abort()
    seen.append(conn.state)
    assert [state.name for state in seen] == ["NEW", "ACTIVE", "ACTIVE", "IDLE", "ACTIVE", "CLOSED"]


@pytest.mark.parametrize("exchanges", [0, 1], ids=["new", "idle"])
async def test_bytes_arriving_between_exchanges_close_the_connection(exchanges: int) -> None:
    conn, wire = connect()
    for _ in range(exchanges):
        await exchange(conn, wire, [OK_HELLO])
    wire.feed(b"HTTP/1.1 200 OK\r\n")   # nobody asked: it would be read as the next request's answer
    await asyncio.sleep(0)
    assert conn.state is CLOSED
    assert not conn.reusable


async def test_an_exchange_on_a_closed_connection_fails_before_anything_is_written() -> None:
    conn, wire = connect()
    await exchange(conn, wire, [OK_HELLO, FIN])
    assert conn.state is CLOSED
    answered = conn.begin(head_only=False)
    assert conn.state is CLOSED   # beginning an exchange never reopens a closed connection
    with pytest.raises(UpstreamFailure, match="was lost"):
        conn.write(REQUEST)
    assert not conn.received_anything
    answered.cancel()


async def test_an_answer_that_arrived_is_told_apart_from_none() -> None:
    conn, wire = connect()
    await exchange(conn, wire, [FIN])
    assert not conn.received_anything   # then a GET on a stale kept-alive connection may be sent again
    conn, wire = connect()
    await exchange(conn, wire, [b"HTTP/1.1 200", FIN])
    assert conn.received_anything


async def test_a_spoiled_exchange_never_leaves_its_connection_reusable() -> None:
    conn, wire = connect()
    answered = conn.begin(head_only=False)
    conn.spoil()   # the request was not sent whole
    wire.play([OK_HELLO])
    assert (await answered).status == 200
    assert await conn.read_all(5) == b"hello"
    assert not conn.reusable


# --- timeouts: silence from the storage server, and a caller that is the slow side ----------------

@pytest.mark.parametrize(("script", "status", "error"), [
    ([], None, "the storage server did not answer in time"),
    ([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], 200, "the storage server stopped sending its answer"),
    ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"], 200, "the storage server stopped sending its answer"),
], ids=["no-answer", "mid-body", "mid-chunks"])
async def test_silence_for_the_read_timeout_fails_the_exchange_and_closes_the_connection(
    script: list[bytes | str], status: int | None, error: str,
) -> None:
    conn, wire = connect(read_timeout=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await exchange(conn, wire, script)
    assert outcome == Outcome(status, outcome.body, error, False, CLOSED)   # closed by the timeout itself
    assert 0.05 <= loop.time() - started < 1.0
    assert wire.closed


async def test_the_read_timeout_counts_from_the_last_bytes() -> None:
    conn, wire = connect(read_timeout=1.0)
    answered = conn.begin(head_only=False)
    conn.arm()
    wire.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
    assert (await answered).status == 200
    for piece in (b"a", b"b", b"c"):
        await asyncio.sleep(0.4)   # each silence well under the timeout, all of them over it
        wire.feed(piece)
    assert await conn.read_all(3) == b"abc"
    assert conn.reusable


async def test_the_read_timeout_of_a_kept_connection_counts_from_each_exchange() -> None:
    conn, wire = connect(read_timeout=0.3)
    assert await exchange(conn, wire, [OK_HELLO]) == Outcome(200, b"hello", None, True, ConnectionState.ACTIVE)
    conn.idle()
    await asyncio.sleep(0.4)      # idle past a read timeout: nothing is owed, nothing fails
    assert not conn.is_closed()
    assert await exchange(conn, wire, [OK_HELLO]) == Outcome(200, b"hello", None, True, ConnectionState.ACTIVE)
    conn.idle()
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    answered = conn.begin(head_only=False)
    conn.write(REQUEST)
    conn.arm()
    started = loop.time()
    with pytest.raises(UpstreamTimeout):   # a silent server: cut a whole timeout after this exchange began
        await answered
    assert 0.25 <= loop.time() - started < 1.0
    assert wire.closed


async def answering(size: int, arrived: int) -> tuple[Connection, Wire]:
    """An exchange answered with a `size`-byte body, `arrived` bytes of it read in 64 KiB reads."""
    conn, wire = connect(read_timeout=0.05, buffer=64 * 1024)
    answered = conn.begin(head_only=False)
    conn.arm()
    wire.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * arrived)
    await answered
    return conn, wire


async def test_a_slow_caller_is_not_mistaken_for_a_silent_server() -> None:
    size = HIGH_WATER + 256 * 1024
    conn, wire = await answering(size, 0)
    fed = taken = 0
    while wire.reading:
        wire.feed(b"x" * 4096)
        fed += 4096
    assert fed > HIGH_WATER   # reading paused once more than the high-water mark waited
    await asyncio.sleep(0.3)  # several read timeouts while the caller takes nothing
    while not wire.reading:
        taken += len(await conn.read_chunk())
    assert fed - taken <= LOW_WATER < fed - taken + 4096   # resumed as soon as only LOW_WATER waited
    wire.feed(b"x" * (size - fed))
    assert len(await conn.read_all(size)) == size - taken
    assert conn.reusable


async def test_a_whole_answer_left_unread_with_reading_paused_never_goes_back_to_the_pool() -> None:
    # The whole answer arrived in the read that paused reading; the caller gave up on it
    # (an account listing over its bound): reused, the next exchange's answer would never be read.
    conn, wire = await answering(HIGH_WATER + 1000, HIGH_WATER + 1000)   # the last read crosses the mark
    assert not wire.reading
    assert len(await conn.read_chunk()) > 0
    assert not wire.reading
    assert not conn.reusable


async def test_a_server_that_stops_reading_the_request_body_times_out_then_resumes() -> None:
    conn, wire = connect(read_timeout=0.05)
    conn.begin(head_only=False).cancel()

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"

    conn.pause_writing()   # the socket is full and stays so
    with pytest.raises(UpstreamTimeout, match="stopped reading the request body"):
        await send_body(conn, body(), None)
    conn.resume_writing()
    await send_body(conn, body(), None)
    assert bytes(wire.written) == b"3\r\nabc\r\n" + b"3\r\nabc\r\n0\r\n\r\n"
