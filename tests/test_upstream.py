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
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from proxy import upstream as upstream_module
from proxy.server import ProxyThread
from tests.conftest import DUBLIN, make_token, proxy_config

KEY = f"/{DUBLIN}/alice/inbox/1.eml"
OK_HELLO = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


class KeepAliveUpstream:
    """Serves requests on kept-alive connections; each answer is the next item of `answers`.

    An answer is raw bytes to send, optionally followed by closing the connection
    (a ``(bytes, "close")`` item), or silence (``(b"", "hold")``). Requests are recorded whole: head and body,
    with the body read by Content-Length or chunked framing.
    """

    def __init__(self) -> None:
        self.answers: list[bytes | tuple[bytes, str]] = []
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
                if isinstance(answer, tuple) and answer[1] == "hold":
                    with contextlib.suppress(OSError):
                        conn.recv(1)   # says nothing until the proxy gives up
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
         headers: dict[str, str] | None = None, *, chunked: bool = False) -> tuple[int, dict[str, str], bytes]:
    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
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


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
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
    monkeypatch.setattr(upstream_module, "IDLE_SECONDS", -1.0)   # every released connection is already too old
    for _ in range(3):
        assert call(proxy)[::2] == (200, b"hello")
    assert upstream.connections == 3
