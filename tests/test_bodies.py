"""Bodies read before the decision: the budget they share, and how a read is cut.

The budget's accounting and its memory release are checked directly; how a
read is refused or cut is checked through the real proxy on loopback in front
of the session's moto (tests/attacks/test_body_dos.py attacks a
`bailiwick serve` process with many senders).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path
from typing import cast
from unittest.mock import Mock

import pytest
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from proxy.bodies import PINNED_BYTES, BodyBudget, read_inspected, release_free_memory
from proxy.errors import BadRequest, SlowDown
from tests.conftest import DUBLIN, make_token
from tests.support.recorder import Recorder
from tests.test_limits import FAKE_SIGV4, connect, connect_from, limited_proxy

MIB = 1024 * 1024


def test_the_budget_is_taken_and_given_back() -> None:
    trims: list[int] = []
    budget = BodyBudget(3 * MIB, trim=lambda: trims.append(1))
    assert budget.take(2 * MIB)
    assert not budget.take(2 * MIB)     # nothing taken when it does not fit
    assert budget.held == 2 * MIB
    assert budget.take(MIB)
    budget.give_back(MIB)
    assert trims == []                  # the burst is not over: a read still holds its bytes
    budget.give_back(2 * MIB)
    assert budget.held == 0
    assert trims == []                  # under 4 MiB read since the last trim: nothing worth giving back


def test_a_request_holds_its_share_until_it_releases_it() -> None:
    budget = BodyBudget(MIB, trim=lambda: None)
    first, second = budget.hold(), budget.hold()
    first.take(MIB // 2)
    first.take(MIB // 4)
    with pytest.raises(SlowDown, match="retry later") as refused:
        second.take(MIB // 2)
    assert (refused.value.status, refused.value.code) == (503, "SlowDown")
    assert (first.size, second.size, budget.held) == (3 * MIB // 4, 0, 3 * MIB // 4)
    first.release()
    first.release()     # once only
    assert budget.held == 0
    second.take(MIB)
    assert budget.held == MIB


def test_memory_is_given_back_once_a_burst_ends_and_again_after_the_next() -> None:
    async def run() -> list[float]:
        trims: list[float] = []
        budget = BodyBudget(64 * MIB, trim=lambda: trims.append(time.monotonic()))
        for _ in range(2):
            assert budget.take(8 * MIB)
            budget.give_back(8 * MIB)
        # The second burst ended less than a second after the first trim: its trim comes a second later.
        await asyncio.sleep(1.3)
        return trims

    trims = asyncio.run(run())
    assert len(trims) == 2
    assert 0.9 <= trims[1] - trims[0] <= 1.3


def test_memory_can_be_given_back_here() -> None:
    release_free_memory()   # glibc's malloc_trim on Linux, nothing elsewhere; never raises


def delete_head(port: int, *, length: int | None, sub: str) -> bytes:
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    return (f"POST /{DUBLIN}?delete HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"X-Bailiwick-Token: {make_token('IE', sub=sub)}\r\n{FAKE_SIGV4}{framing}\r\n\r\n").encode()


def answer_of(sock: socket.socket, within: float) -> bytes:
    sock.settimeout(within)
    data = b""
    while b"</Error>" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_chunked_body_takes_the_budget_as_it_arrives(recorder: Recorder, tmp_path: Path) -> None:
    with limited_proxy(recorder, tmp_path, max_inspected_bytes=2 * MIB) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        mark = recorder.mark()
        with connect(proxy) as holder, connect(proxy) as chunked:
            # 1.5 MiB announced holds that much; a chunked body takes PINNED_BYTES up front, then more ...
            holder.sendall(delete_head(port, length=3 * MIB // 2, sub="holder"))
            time.sleep(0.3)
            chunked.sendall(delete_head(port, length=None, sub="chunked"))
            piece = b" " * (PINNED_BYTES // 2)
            # ... until what it has read no longer fits (past 512 KiB): 503 SlowDown, the read stops there.
            with contextlib.suppress(ConnectionError):
                for _ in range(6):
                    chunked.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            answer = answer_of(chunked, 5)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:300]
        assert b"<Code>SlowDown</Code>" in answer
        assert recorder.since(mark) == b""


def test_a_body_that_trickles_in_is_cut_at_the_total_deadline(recorder: Recorder, tmp_path: Path) -> None:
    # It never stalls for the idle timeout, but it does not arrive whole within the read deadline either.
    with limited_proxy(recorder, tmp_path, body_read_timeout_seconds=1.0, body_idle_timeout_seconds=60) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        mark = recorder.mark()
        with connect(proxy) as sock:
            sock.sendall(delete_head(port, length=1000, sub="trickle"))
            started = time.monotonic()
            answer = b""
            sock.settimeout(0.2)
            while time.monotonic() - started < 5 and b"</Error>" not in answer:
                try:
                    answer += sock.recv(65536)
                except TimeoutError:
                    sock.sendall(b" ")
            took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
        assert b"<Code>RequestTimeout</Code>" in answer
        assert 0.9 <= took < 3, took
        assert recorder.since(mark) == b""


@pytest.mark.parametrize("length", [1000, 60_000])
def test_an_answer_that_needs_no_body_never_waits_for_one(recorder: Recorder, tmp_path: Path, length: int) -> None:
    # CreateBucket of a bucket the caller may not administer: whatever region its body names, it is refused.
    with limited_proxy(recorder, tmp_path) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        mark = recorder.mark()
        with connect(proxy) as sock:
            sock.sendall((f"PUT /{DUBLIN} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          f"X-Bailiwick-Token: {make_token('DE', sub='creator')}\r\n{FAKE_SIGV4}"
                          f"Content-Length: {length}\r\n\r\n").encode())
            answer = answer_of(sock, 5)
        assert answer.startswith(b"HTTP/1.1 403 "), answer[:300]
        assert recorder.since(mark) == b""


def test_one_peer_holds_its_share_of_the_budget_and_no_more(recorder: Recorder, tmp_path: Path) -> None:
    # 8 MiB in all, a peer a quarter of it (its share of the connections, 2 of 8), and never less than
    # one delete body: one address cannot spend the whole budget and leave everyone else SlowDown.
    with limited_proxy(recorder, tmp_path, max_inspected_bytes=8 * MIB, max_connections=8,
                       max_connections_per_peer=2) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        mark = recorder.mark()
        with connect(proxy) as first, connect(proxy) as second, connect_from(proxy, "127.0.0.2") as other:
            first.sendall(delete_head(port, length=2 * MIB, sub="first"))
            time.sleep(0.3)
            # The same address, over its share (3 MiB of 2): refused before a byte of the body is read.
            second.sendall(delete_head(port, length=MIB, sub="second"))
            refused = answer_of(second, 5)
            # Another address still has the rest of the budget: its read goes on (no answer before its body).
            other.sendall(delete_head(port, length=MIB, sub="other"))
            other.settimeout(0.5)
            with pytest.raises(TimeoutError):
                other.recv(65536)
        assert refused.startswith(b"HTTP/1.1 503 "), refused[:300]
        assert b"<Code>SlowDown</Code>" in refused
        assert recorder.since(mark) == b""


def test_a_body_shorter_than_its_content_length_is_s3s_incomplete_body() -> None:
    async def read() -> None:
        # The protocol only pauses and resumes reading: nothing here needs it to.
        payload = StreamReader(cast(BaseProtocol, Mock(_reading_paused=False)), 2**16,
                               loop=asyncio.get_running_loop())
        payload.feed_data(b"<Delete>")
        payload.feed_eof()
        request = make_mocked_request("POST", f"/{DUBLIN}?delete", headers={"Content-Length": "100"},
                                      payload=payload)

        async def nothing() -> None:
            return None

        hold = BodyBudget(MIB, trim=lambda: None).hold()
        try:
            await read_inspected(request, MIB, hold, deadline=5, idle=5, before_reading=nothing)
        finally:
            hold.release()

    with pytest.raises(BadRequest, match="shorter than its Content-Length") as refused:
        asyncio.run(read())
    assert (refused.value.status, refused.value.code) == (400, "IncompleteBody")

