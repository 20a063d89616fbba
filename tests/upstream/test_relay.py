"""The upstream hop against a scripted storage server: what passes through, and how failures end.

A redirect is handed to the caller, never followed; an upstream that breaks
mid-response makes the caller's connection break too, so a short body is never
mistaken for a whole one.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, make_token, proxy_config

KEY = f"/{DUBLIN}/alice/inbox/1.eml"

RESPONSES: dict[str, bytes] = {
    "redirect": b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere.example/x\r\nContent-Length: 0\r\n\r\n",
    "short-length": b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000,
    "short-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + b"y" * 1000 + b"\r\n",
    "short-small": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"z" * 10,
    "empty": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "not-modified": b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n",
    "gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\n\x1f\x8b\x08\x00",
}


class ScriptedUpstream:
    """Answers every request with `RESPONSES[script]` and counts requests."""

    def __init__(self) -> None:
        self.script = "redirect"
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                with contextlib.suppress(OSError):
                    conn.sendall(RESPONSES[self.script])

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def scripted_proxy(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    audit = tmp_path_factory.mktemp("forward") / "audit.jsonl"
    proxy = ProxyThread(proxy_config(f"http://127.0.0.1:{upstream.port}", Path(audit))).start()
    yield proxy
    proxy.stop()


@contextlib.contextmanager
def get(proxy: ProxyThread, headers: dict[str, str] | None = None) -> Iterator[http.client.HTTPResponse]:
    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", KEY, headers={"X-Bailiwick-Token": make_token("IE"), **(headers or {})})
        yield conn.getresponse()
    finally:
        conn.close()


def test_redirects_are_passed_to_the_caller_not_followed(scripted_proxy: ProxyThread,
                                                         upstream: ScriptedUpstream) -> None:
    upstream.script = "redirect"
    before = len(upstream.requests)
    with get(scripted_proxy) as response:
        assert response.status == 307
        assert response.getheader("Location") == "http://elsewhere.example/x"
    assert len(upstream.requests) == before + 1


@pytest.mark.parametrize("script", ["short-length", "short-chunked"])
def test_upstream_breaking_mid_body_breaks_the_callers_connection(
    scripted_proxy: ProxyThread, upstream: ScriptedUpstream, script: str,
) -> None:
    upstream.script = script
    with get(scripted_proxy) as response:
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead):
            response.read()


def test_not_modified_passes_without_a_body(scripted_proxy: ProxyThread, upstream: ScriptedUpstream) -> None:
    upstream.script = "not-modified"
    with get(scripted_proxy, {"If-None-Match": '"e"'}) as response:
        assert response.status == 304
        assert response.getheader("ETag") == '"e"'
        assert response.read() == b""


def test_compressed_responses_pass_untouched(scripted_proxy: ProxyThread, upstream: ScriptedUpstream) -> None:
    upstream.script = "gzip"
    with get(scripted_proxy, {"Accept-Encoding": "gzip"}) as response:
        assert response.getheader("Content-Encoding") == "gzip"
        assert response.read() == b"\x1f\x8b\x08\x00"
    assert b"accept-encoding: gzip" in upstream.requests[-1].lower()


def test_a_small_answer_cut_short_is_a_clean_502(scripted_proxy: ProxyThread, upstream: ScriptedUpstream) -> None:
    # Small answers are read whole before anything is sent, so the caller gets an error, not a short body.
    upstream.script = "short-small"
    with get(scripted_proxy) as response:
        assert response.status == 502
        assert b"<Code>BadGateway</Code>" in response.read()


def test_an_empty_answer_passes(scripted_proxy: ProxyThread, upstream: ScriptedUpstream) -> None:
    upstream.script = "empty"
    with get(scripted_proxy) as response:
        assert response.status == 200
        assert response.read() == b""
