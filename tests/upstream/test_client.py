"""The lean upstream client against a scripted keep-alive storage server.

Each test scripts the bytes the storage server answers with and checks what
the caller got, what reached the server (byte for byte) and over how many
connections: keep-alive reuse, answers framed by length, by chunks and by the
connection's end, HEAD answers that announce a length, interim answers,
extra answers that must never be read as the next request's, stale pooled
connections, and uploads with and without a declared length.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from proxy.harness import ProxyThread
from proxy.upstream import pool as pool_module
from proxy.upstream.body import BodyStream
from tests.conftest import DUBLIN, make_token, proxy_config
from tests.support.serve import wait_until

KEY = f"/{DUBLIN}/alice/inbox/1.eml"
OK_HELLO = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


class KeepAliveUpstream:
    """Serves requests on kept-alive connections; each answer is the next item of `answers`.

    An answer is raw bytes to send, optionally followed by closing the connection
    (a ``(bytes, "close")`` item) or by silence (``(bytes, "hold")``), or a function that
    does what it likes with the socket and returns whether to go on serving it.
    Requests are recorded whole: head and body, with the body read by
    Content-Length or chunked framing.
    """

    def __init__(self) -> None:
        self.answers: list[bytes | tuple[bytes, str] | Callable[[socket.socket], bool]] = []
        self.requests: list[bytes] = []
        self.connections = 0
        self.read_bodies = True
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                request = head + b"\r\n\r\n"
                if self.read_bodies:
                    body, buffer = self._body(conn, head, buffer)
                    request += body
                self.requests.append(request)
                answer = self.answers.pop(0) if self.answers else OK_HELLO
                if callable(answer):
                    with contextlib.suppress(OSError):
                        if answer(conn):
                            continue
                    return
                if isinstance(answer, tuple) and answer[1] == "hold":
                    with contextlib.suppress(OSError):
                        conn.sendall(answer[0])
                        conn.recv(1)   # says nothing more until the proxy gives up
                    return
                close = isinstance(answer, tuple)
                with contextlib.suppress(OSError):
                    conn.sendall(answer[0] if isinstance(answer, tuple) else answer)
                if close:
                    return

    @staticmethod
    def _body(conn: socket.socket, head: bytes, buffer: bytes) -> tuple[bytes, bytes]:
        lower = head.lower()

        def more() -> bytes:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError
            return chunk

        if b"\r\ncontent-length:" in lower:
            length = int(lower.split(b"\r\ncontent-length:")[1].split(b"\r\n")[0])
            while len(buffer) < length:
                buffer += more()
            return buffer[:length], buffer[length:]
        if b"\r\ntransfer-encoding: chunked" in lower:
            while b"\r\n0\r\n\r\n" not in buffer and not buffer.startswith(b"0\r\n\r\n"):
                buffer += more()
            end = buffer.index(b"0\r\n\r\n") + 5
            return buffer[:end], buffer[end:]
        return b"", buffer

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def upstream() -> Iterator[KeepAliveUpstream]:
    server = KeepAliveUpstream()
    yield server
    server.close()


@pytest.fixture
def proxy(upstream: KeepAliveUpstream, tmp_path: Path) -> Iterator[ProxyThread]:
    running = ProxyThread(proxy_config(f"http://127.0.0.1:{upstream.port}", tmp_path / "audit.jsonl")).start()
    yield running
    running.stop()


def call(proxy: ProxyThread, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None, *, chunked: bool = False,
         source: str | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10,
                                      source_address=(source, 0) if source else None)
    try:
        all_headers = {"X-Bailiwick-Token": make_token("IE"), **(headers or {})}
        if chunked:
            conn.putrequest(method, KEY)
            for name, value in all_headers.items():
                conn.putheader(name, value)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            if body:
                conn.send(b"%x\r\n%s\r\n" % (len(body), body))
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, KEY, body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_connections_are_kept_alive_and_reused(proxy: ProxyThread, upstream: KeepAliveUpstream) -> None:
    for _ in range(5):
        assert call(proxy)[::2] == (200, b"hello")
    assert len(upstream.requests) == 5
    assert upstream.connections == 1


@pytest.mark.parametrize(("answer", "body"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"L" * 200000, b"L" * 200000),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
])
def test_answers_framed_by_length_or_chunks_pass_whole(
    proxy: ProxyThread, upstream: KeepAliveUpstream, answer: bytes, body: bytes,
) -> None:
    upstream.answers = [answer]
    status, _, received = call(proxy)
    assert received == body
    assert status in (200, 204)
    assert call(proxy)[::2] == (200, b"hello")   # and the connection is still in step
    assert upstream.connections == 1


def test_an_answer_delimited_by_the_connections_end_passes_whole(
    proxy: ProxyThread, upstream: KeepAliveUpstream,
) -> None:
    upstream.answers = [(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"E" * 100000, "close")]
    assert call(proxy)[::2] == (200, b"E" * 100000)
    assert call(proxy)[::2] == (200, b"hello")
    assert upstream.connections == 2


def test_a_head_answer_announcing_a_length_ends_at_its_header(
    proxy: ProxyThread, upstream: KeepAliveUpstream,
) -> None:
    upstream.answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: \"h\"\r\n\r\n"]
    status, headers, body = call(proxy, "HEAD")
    assert (status, headers["content-length"], headers["etag"], body) == (200, "1234", '"h"', b"")
    assert call(proxy)[::2] == (200, b"hello")
    assert upstream.connections == 1   # a clean HEAD answer leaves the connection reusable


def test_interim_answers_are_skipped(proxy: ProxyThread, upstream: KeepAliveUpstream) -> None:
    upstream.answers = [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]
    assert call(proxy)[::2] == (200, b"ok")


def test_a_second_answer_is_never_read_as_the_next_requests(
    proxy: ProxyThread, upstream: KeepAliveUpstream,
) -> None:
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
    upstream.answers = [OK_HELLO + smuggled, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal"]
    first = call(proxy)
    second = call(proxy)
    assert b"smuggled" not in first[2] + second[2]
    assert second[::2] == (200, b"real")
    assert upstream.connections == 2


def test_a_pooled_connection_the_server_closed_is_replaced_for_a_get(
    proxy: ProxyThread, upstream: KeepAliveUpstream,
) -> None:
    # The server closes after answering without saying so; the next GET finds the
    # pooled connection dead before reading anything, and is sent again on a new one.
    upstream.answers = [(OK_HELLO, "close")]
    assert call(proxy)[::2] == (200, b"hello")
    assert call(proxy)[::2] == (200, b"hello")
    assert upstream.connections == 2
    assert len(upstream.requests) == 2


@pytest.mark.parametrize("chunked", [False, True])
def test_uploads_reach_the_server_byte_for_byte(
    proxy: ProxyThread, upstream: KeepAliveUpstream, chunked: bool,
) -> None:
    payload = bytes(range(256)) * 1000
    status, _, _ = call(proxy, "PUT", payload, chunked=chunked)
    assert status == 200
    head, _, body = upstream.requests[-1].partition(b"\r\n\r\n")
    if chunked:
        assert b"\r\ntransfer-encoding: chunked" in head.lower()
        decoded, rest = b"", body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded += rest[:size]
            rest = rest[size + 2:]
        assert decoded == payload
    else:
        assert f"\r\nContent-Length: {len(payload)}".encode() in head
        assert body == payload


@pytest.mark.parametrize("body", [b"denied", b"d" * 300000], ids=["small", "large"])
def test_an_answer_before_the_whole_upload_is_passed_on(
    proxy: ProxyThread, upstream: KeepAliveUpstream, body: bytes,
) -> None:
    # The server answers at once and does not close (closing with the upload unread would
    # reset the connection, and the answer with it); it reads on without looking.
    upstream.read_bodies = False
    upstream.answers = [b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)]
    status, _, received = call(proxy, "PUT", b"x" * 50000)
    assert (status, received) == (403, body)


def test_a_connection_left_mid_upload_is_never_reused(proxy: ProxyThread, upstream: KeepAliveUpstream) -> None:
    # The server answers while half the body is still to come; the rest of it would be
    # read as the next request's head if the connection went back to the pool.
    upstream.read_bodies = False
    upstream.answers = [b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied"]
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as caller:
        caller.sendall(f"PUT {KEY} HTTP/1.1\r\nHost: {host}:{port}\r\nX-Bailiwick-Token: {make_token('IE')}"
                       f"\r\nContent-Length: 100000\r\n\r\n".encode() + b"x" * 50000)
        answer = b""
        while not answer.endswith(b"denied"):
            piece = caller.recv(65536)
            assert piece, answer
            answer += piece
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert call(proxy)[::2] == (200, b"hello")
    assert upstream.connections == 2


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
    # Only chunked is understood as a transfer coding; anything else is not guessed at.
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot-really-gzip",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    # An interim answer has no body: bytes after its head are not an answer.
    b"HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
])
def test_answers_with_ambiguous_framing_are_a_502(
    proxy: ProxyThread, upstream: KeepAliveUpstream, answer: bytes,
) -> None:
    upstream.answers = [(answer, "close")]
    status, _, body = call(proxy)
    assert status == 502
    assert b"<Code>BadGateway</Code>" in body


def test_an_unreachable_server_is_a_502(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]   # bound, not listening: connections are refused
        running = ProxyThread(proxy_config(f"http://127.0.0.1:{port}", tmp_path / "a.jsonl")).start()
        try:
            status, _, body = call(running)
        finally:
            running.stop()
    assert status == 502
    assert b"<Code>BadGateway</Code>" in body


def test_a_silent_server_is_a_504(upstream: KeepAliveUpstream, tmp_path: Path) -> None:
    upstream.answers = [(b"", "hold")]   # answers nothing, keeps the connection open
    config = proxy_config(f"http://127.0.0.1:{upstream.port}", tmp_path / "a.jsonl")
    config = replace(config, upstream=replace(config.upstream, read_timeout_seconds=0.3))
    running = ProxyThread(config).start()
    try:
        status, _, body = call(running)
    finally:
        running.stop()
    assert status == 504
    assert b"<Code>GatewayTimeout</Code>" in body


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 500000\r\n\r\n" + b"x" * 100000,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n",
])
def test_a_stream_cut_short_or_misframed_breaks_the_callers_connection(
    proxy: ProxyThread, upstream: KeepAliveUpstream, answer: bytes,
) -> None:
    # Streamed answers have started when the fault shows: the caller's connection is cut.
    upstream.answers = [(answer, "close")]
    with pytest.raises(http.client.IncompleteRead):
        call(proxy)


def test_connections_idle_too_long_are_closed(
    proxy: ProxyThread, upstream: KeepAliveUpstream, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pool_module, "IDLE_SECONDS", -1.0)   # every released connection is already too old
    for _ in range(3):
        assert call(proxy)[::2] == (200, b"hello")
    assert upstream.connections == 3


@pytest.mark.parametrize("status", [204, 304])
def test_a_bodiless_status_with_a_content_length_has_no_body(
    proxy: ProxyThread, upstream: KeepAliveUpstream, status: int,
) -> None:
    # A 304's Content-Length is the length of the representation it stands for, not of a body.
    upstream.answers = [b"HTTP/1.1 %d Nope\r\nContent-Length: 1234\r\nETag: \"e\"\r\n\r\n" % status]
    answered, headers, body = call(proxy)
    assert (answered, headers["etag"], body) == (status, '"e"', b"")
    assert call(proxy)[::2] == (200, b"hello")
    assert upstream.connections == 1


def _reset_after(data: bytes, pause: float) -> Callable[[socket.socket], bool]:
    def answer(conn: socket.socket) -> bool:
        conn.sendall(data)
        time.sleep(pause)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False   # closing now sends RST instead of FIN
    return answer


def test_a_reset_never_ends_an_answer_delimited_by_the_connections_end(
    proxy: ProxyThread, upstream: KeepAliveUpstream,
) -> None:
    # Only an orderly close (FIN) ends such a body; a reset may have cut it anywhere.
    upstream.answers = [_reset_after(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"E" * 100000, 0.3)]
    try:
        status, _, _ = call(proxy)
    except (http.client.IncompleteRead, ConnectionError):
        return   # the caller's connection was cut mid-body
    assert status == 502


def test_a_get_on_a_pooled_connection_closed_unanswered_is_sent_again(
    proxy: ProxyThread, upstream: KeepAliveUpstream,
) -> None:
    # The server takes the second request, then closes without a byte of answer (it was
    # shutting the idle connection down): nothing was read, so a GET is safe to resend.
    upstream.answers = [OK_HELLO, (b"", "close")]
    assert call(proxy)[::2] == (200, b"hello")
    assert call(proxy)[::2] == (200, b"hello")
    assert (len(upstream.requests), upstream.connections) == (3, 2)


# (method, what the pooled connection does with the second request, status): none of these is sent again.
NOT_RESENT: dict[str, tuple[str, bytes | tuple[bytes, str], int]] = {
    "delete": ("DELETE", (b"", "close"), 502),                  # not safe to send twice
    "part-answered": ("GET", (b"HTTP/1.1 200", "close"), 502),  # the server had started answering
    "silent": ("GET", (b"", "hold"), 504),                      # a timeout is no stale connection
}


@pytest.mark.parametrize(("method", "second", "status"), NOT_RESENT.values(), ids=NOT_RESENT.keys())
def test_only_a_get_or_head_closed_unanswered_is_sent_again(
    upstream: KeepAliveUpstream, tmp_path: Path, method: str, second: bytes | tuple[bytes, str], status: int,
) -> None:
    upstream.answers = [OK_HELLO, second]
    running = _proxy_with(upstream, tmp_path, read_timeout_seconds=0.3)
    try:
        assert call(running)[::2] == (200, b"hello")
        assert call(running, method)[0] == status
    finally:
        running.stop()
    assert (len(upstream.requests), upstream.connections) == (2, 1)


def _proxy_with(upstream: KeepAliveUpstream, tmp_path: Path, **settings: Any) -> ProxyThread:
    config = proxy_config(f"http://127.0.0.1:{upstream.port}", tmp_path / "a.jsonl")
    return ProxyThread(replace(config, upstream=replace(config.upstream, **settings))).start()


def test_silence_mid_body_cuts_the_stream_one_read_timeout_after_the_last_bytes(
    upstream: KeepAliveUpstream, tmp_path: Path,
) -> None:
    def stall_mid_body(conn: socket.socket) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n")
        time.sleep(0.1)
        conn.sendall(b"x" * 100000)
        conn.recv(1)   # then nothing, until the proxy gives up
        return False

    upstream.answers = [stall_mid_body]
    running = _proxy_with(upstream, tmp_path, read_timeout_seconds=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(http.client.IncompleteRead):
            call(running)
        waited = time.monotonic() - started
    finally:
        running.stop()
    # Cut one timeout after the last bytes (~1.1 s), not up to two timeouts after the first wait.
    assert 1.0 <= waited < 1.7


def test_a_slow_caller_is_not_mistaken_for_a_silent_server(upstream: KeepAliveUpstream, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 8192   # 2 MiB: the proxy stops reading while the caller lags
    upstream.answers = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)]
    running = _proxy_with(upstream, tmp_path, read_timeout_seconds=0.3)
    try:
        host, port = running.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", KEY, headers={"X-Bailiwick-Token": make_token("IE")})
        response = conn.getresponse()
        received = b""
        while piece := response.read(32768):
            received += piece
            time.sleep(0.02)   # ~1.3 s in all, several read timeouts
        conn.close()
    finally:
        running.stop()
    assert received == payload


def test_an_upload_to_a_server_that_stops_reading_is_a_504(upstream: KeepAliveUpstream, tmp_path: Path) -> None:
    def never_read(conn: socket.socket) -> bool:
        time.sleep(5)
        return False

    upstream.read_bodies = False
    upstream.answers = [never_read]
    running = _proxy_with(upstream, tmp_path, read_timeout_seconds=0.5)
    size = 256 * 1024 * 1024   # far more than every socket buffer between caller and server
    host, port = running.url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=10) as caller:
            caller.sendall(f"PUT {KEY} HTTP/1.1\r\nHost: {host}:{port}\r\nX-Bailiwick-Token: {make_token('IE')}"
                           f"\r\nContent-Length: {size}\r\n\r\n".encode())

            def upload() -> None:
                with contextlib.suppress(OSError):
                    for _ in range(size // 65536):
                        caller.sendall(b"u" * 65536)

            threading.Thread(target=upload, daemon=True).start()
            answer = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in answer and (piece := caller.recv(65536)):
                    answer += piece
    finally:
        running.stop()
    assert answer.startswith(b"HTTP/1.1 504 ")


def test_waiting_for_a_free_connection_is_bounded_by_the_connect_timeout(
    upstream: KeepAliveUpstream, tmp_path: Path,
) -> None:
    upstream.answers = [(b"", "hold")]   # the only connection stays busy
    running = _proxy_with(upstream, tmp_path, max_connections=1, connect_timeout_seconds=0.3,
                          read_timeout_seconds=5.0)
    try:
        busy: list[tuple[int, dict[str, str], bytes]] = []
        first = threading.Thread(target=lambda: busy.append(call(running)), daemon=True)
        first.start()
        wait_until(lambda: len(upstream.requests) == 1)
        status, _, body = call(running)
    finally:
        running.stop()
    assert status == 504
    assert b"stayed busy" in body
    assert len(upstream.requests) == 1   # the second request never reached the server


def test_one_peer_takes_its_share_of_the_pool_and_no_more(upstream: KeepAliveUpstream, tmp_path: Path) -> None:
    upstream.answers = [(b"", "hold"), (b"", "hold")]   # two exchanges of 127.0.0.1 stay busy
    running = _proxy_with(upstream, tmp_path, max_connections=4, max_connections_per_peer=2,
                          connect_timeout_seconds=0.3, read_timeout_seconds=3.0)

    def held() -> None:
        with contextlib.suppress(OSError):
            call(running)

    try:
        for _ in range(2):
            threading.Thread(target=held, daemon=True).start()
        wait_until(lambda: len(upstream.requests) == 2)
        started = time.monotonic()
        status, _, body = call(running)                                   # the same peer, a third time
        waited = time.monotonic() - started
        other = call(running, source="127.0.0.2")                         # another peer, meanwhile
    finally:
        running.stop()
    assert status == 503
    assert b"<Code>SlowDown</Code>" in body
    assert 0.3 <= waited < 2.0   # it waited for one of its own exchanges to end, then was told to slow down
    assert other[::2] == (200, b"hello")
    assert len(upstream.requests) == 3   # the refused request never reached the server


# --- account listings: the answer is read whole and filtered, or refused ----------------------------

_LISTING = ('<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/'
            '2006-03-01/"><Buckets><Bucket><Name>mail-eu-dublin</Name></Bucket><Bucket><Name>mail-us-east</Name>'
            "</Bucket></Buckets>{tail}</ListAllMyBucketsResult>")


def _listing_answer(status: str = "200 OK", extra: str = "", tail: str = "") -> bytes:
    body = _LISTING.format(tail=tail).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nETag: \"abc\"\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def list_buckets(proxy: ProxyThread, jurisdiction: str) -> tuple[int, dict[str, str], bytes]:
    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/", headers={"X-Bailiwick-Token": make_token(jurisdiction)})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_an_account_listing_is_cut_to_what_the_caller_may_list(
    proxy: ProxyThread, upstream: KeepAliveUpstream,
) -> None:
    upstream.answers = [_listing_answer()]
    status, headers, body = list_buckets(proxy, "US")
    assert status == 200
    assert b"mail-eu-dublin" not in body
    assert b"<Name>mail-us-east</Name>" in body
    assert int(headers["content-length"]) == len(body)
    assert "etag" not in headers   # the server's ETag was for the whole list


@pytest.mark.parametrize("answer", [
    _listing_answer("206 Partial Content", "Content-Range: bytes 0-10/300\r\n"),   # a part of the list
    _listing_answer(extra="Content-Encoding: gzip\r\n"),                           # bytes the filter cannot read
    _listing_answer(tail="<ContinuationToken>mail-eu-dublin-2</ContinuationToken>"),  # a page of it
    _listing_answer().replace(b"<Buckets>", b"<Buckets><!-- <Bucket> -->"),      # markup that hides a bucket
], ids=["partial", "encoded", "paged", "comment"])
def test_an_account_listing_that_cannot_be_filtered_is_a_502(
    proxy: ProxyThread, upstream: KeepAliveUpstream, answer: bytes,
) -> None:
    upstream.answers = [(answer, "close")]
    status, _, body = list_buckets(proxy, "US")
    assert status == 502
    assert b"<Code>BadGateway</Code>" in body
    assert b"mail-eu-dublin" not in body


def _per_request_values_masked(request: bytes) -> bytes:
    """A request as the storage server got it, without the values that differ from one request to the next."""
    head, _, body = request.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"x-bailiwick-")]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.mark.parametrize("size", [0, 1, 1024, 60_000])
def test_an_upload_already_here_reaches_the_server_as_a_streamed_one_does(
    proxy: ProxyThread, upstream: KeepAliveUpstream, monkeypatch: pytest.MonkeyPatch, size: int,
) -> None:
    # A body that has all arrived before it is forwarded is sent with its head in one write: the storage
    # server gets the same bytes as when it is streamed piece by piece.
    payload = (bytes(range(256)) * 300)[:size]
    taken: list[bool] = []
    arrived = BodyStream.arrived

    def spy(self: BodyStream, length: int) -> bytes | None:
        whole = arrived(self, length)
        taken.append(whole is not None)
        return whole

    monkeypatch.setattr(BodyStream, "arrived", spy)
    assert _put_in_one_piece(proxy, payload).startswith(b"HTTP/1.1 200 ")
    at_once = upstream.requests[-1]
    monkeypatch.setattr(BodyStream, "arrived", lambda self, length: None)
    assert _put_in_one_piece(proxy, payload).startswith(b"HTTP/1.1 200 ")
    streamed = upstream.requests[-1]
    assert _per_request_values_masked(at_once) == _per_request_values_masked(streamed)
    assert at_once.endswith(b"\r\n\r\n" + payload)
    # Sent with its head in one write, a small one is all here before it is forwarded (an empty one is not
    # streamed; a larger one may arrive in more than one read).
    if size <= 1024:
        assert taken == ([True] if size else [])


def _put_in_one_piece(proxy: ProxyThread, payload: bytes) -> bytes:
    """A PUT of `payload` written with its head in one `sendall`; the status line of the answer."""
    netloc = proxy.url.removeprefix("http://")
    host, port = netloc.split(":")
    head = (f"PUT {KEY} HTTP/1.1\r\nHost: {netloc}\r\nX-Bailiwick-Token: {make_token('IE')}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as sock, sock.makefile("rb") as answer:
        sock.sendall(head.encode() + payload)
        return answer.readline()
