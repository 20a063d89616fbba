"""Resource limits: slow or idle callers cannot starve well-behaved ones.

Each test runs its own proxy with small limits in front of the session's moto
server, attacks it from raw sockets, and checks that (a) the attacking
connections are cut when their limit passes and (b) a well-behaved boto3
client's requests keep succeeding meanwhile.
"""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import Limits
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, make_token, proxy_config, s3_client
from tests.support.recorder import Recorder

pytestmark = pytest.mark.usefixtures("seeded")

FAKE_SIGV4 = ("Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
              "SignedHeaders=host, Signature=00\r\n")


@contextlib.contextmanager
def limited_proxy(recorder: Recorder, tmp_path: Path, **limits: Any) -> Iterator[ProxyThread]:
    config = proxy_config(recorder.url, tmp_path / "audit.jsonl")
    proxy = ProxyThread(replace(config, limits=replace(Limits(), **limits))).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def connect(proxy: ProxyThread) -> socket.socket:
    host, port = proxy.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True if the proxy closes the connection (EOF or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def well_behaved(proxy: ProxyThread, count: int) -> list[int]:
    s3 = s3_client(proxy.url, make_token("IE"))
    statuses = []
    for _ in range(count):
        response = s3.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
        statuses.append(response["ResponseMetadata"]["HTTPStatusCode"])
        response["Body"].read()
    return statuses


def test_slowloris_and_idle_flood_do_not_starve_good_clients(recorder: Recorder, tmp_path: Path) -> None:
    with limited_proxy(recorder, tmp_path, header_timeout_seconds=1.0, max_connections=1024) as proxy:
        idle = [connect(proxy) for _ in range(200)]
        slow = [connect(proxy) for _ in range(20)]
        try:
            started = time.monotonic()
            for sock in slow:
                sock.sendall(f"GET /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
            # Meanwhile a good client is served, while the attackers still hold their sockets.
            assert well_behaved(proxy, 20) == [200] * 20
            for sock in slow:  # keep trickling header bytes: they must not buy more time
                sock.sendall(b"X-Slow: 1\r\n")
            assert all(closed_by_peer(sock, within=5) for sock in slow)
            assert all(closed_by_peer(sock, within=5) for sock in idle)
            assert time.monotonic() - started < 8
            assert well_behaved(proxy, 5) == [200] * 5
        finally:
            for sock in idle + slow:
                sock.close()


def test_connections_over_the_cap_get_503(recorder: Recorder, tmp_path: Path) -> None:
    with limited_proxy(recorder, tmp_path, header_timeout_seconds=1.0, max_connections=5) as proxy:
        held = [connect(proxy) for _ in range(5)]
        try:
            time.sleep(0.2)
            extra = connect(proxy)
            extra.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            extra.settimeout(5)
            assert extra.recv(65536).startswith(b"HTTP/1.1 503")
            extra.close()
            assert connections_closed(proxy, "max_connections") == 1
            # The held connections never send a request: the header deadline frees their places.
            assert all(closed_by_peer(sock, within=5) for sock in held)
            assert well_behaved(proxy, 3) == [200] * 3
        finally:
            for sock in held:
                sock.close()


def connect_from(proxy: ProxyThread, source: str, *, receive_buffer: int | None = None) -> socket.socket:
    host, port = proxy.url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect((host, int(port)))
    return sock


def get_from(proxy: ProxyThread, source: str) -> bytes:
    with connect_from(proxy, source) as sock:
        sock.sendall((f"GET /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"X-Bailiwick-Token: {make_token('IE')}\r\n{FAKE_SIGV4}Connection: close\r\n\r\n").encode())
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while piece := sock.recv(65536):
                answer += piece
        return answer


def connections_closed(proxy: ProxyThread, reason: str) -> float:
    with urllib.request.urlopen(proxy.admin_url + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "bailiwick_connections_closed_total" and sample.labels == {"reason": reason}:
                return float(sample.value)
    return 0.0


def test_connections_over_the_per_peer_cap_get_503_and_other_peers_are_served(
    recorder: Recorder, tmp_path: Path,
) -> None:
    with limited_proxy(recorder, tmp_path, header_timeout_seconds=5.0, max_connections_per_peer=3) as proxy:
        held = [connect_from(proxy, "127.0.0.1") for _ in range(3)]
        try:
            time.sleep(0.2)
            over = get_from(proxy, "127.0.0.1")
            assert over.startswith(b"HTTP/1.1 503 "), over[:200]
            assert over.endswith(b"too many connections from your address, retry\n")
            assert get_from(proxy, "127.0.0.2").startswith(b"HTTP/1.1 200 ")
            assert connections_closed(proxy, "max_connections_per_peer") == 1
            assert connections_closed(proxy, "max_connections") == 0
        finally:
            for sock in held:
                sock.close()
        # Its places are given back as its connections close.
        deadline = time.monotonic() + 5
        while not get_from(proxy, "127.0.0.1").startswith(b"HTTP/1.1 200 "):
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_caller_that_stops_reading_is_cut_after_the_send_deadline(
    recorder: Recorder, tmp_path: Path, direct: Any,
) -> None:
    # Answers small enough to be written after the handler returned (the upstream connection long
    # free), pipelined, never read: the connection is cut all the same, and gives its place back.
    key = "alice/limits/60k.bin"
    direct.put_object(Bucket=DUBLIN, Key=key, Body=b"x" * 60_000)
    request = (f"GET /{DUBLIN}/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {make_token('IE')}\r\n"
               f"{FAKE_SIGV4}\r\n").encode()
    with limited_proxy(recorder, tmp_path, max_connections_per_peer=1, send_idle_timeout_seconds=1.0) as proxy, \
            connect_from(proxy, "127.0.0.1", receive_buffer=4096) as stalled:
        stalled.sendall(request * 150)   # 9 MB of answers, more than the socket buffers hold (4 MiB at most)
        started = time.monotonic()
        time.sleep(0.3)
        assert get_from(proxy, "127.0.0.1").startswith(b"HTTP/1.1 503 ")   # its one place is held
        while not get_from(proxy, "127.0.0.1").startswith(b"HTTP/1.1 200 "):
            assert time.monotonic() - started < 5
            time.sleep(0.1)
        assert time.monotonic() - started >= 1.0
        assert connections_closed(proxy, "send_timeout") == 1


def test_stalled_upload_is_cut_and_commits_nothing(recorder: Recorder, tmp_path: Path, direct: Any) -> None:
    key = f"stalled/{time.monotonic_ns()}"
    with limited_proxy(recorder, tmp_path, body_idle_timeout_seconds=0.5) as proxy, connect(proxy) as sock:
        sock.sendall((f"PUT /{DUBLIN}/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {make_token('IE')}\r\n"
                      f"{FAKE_SIGV4}Content-Length: 100\r\n\r\n").encode() + b"x" * 10)
        sock.settimeout(10)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"<Code>RequestTimeout</Code>" in answer
    with pytest.raises(ClientError):
        direct.head_object(Bucket=DUBLIN, Key=key)


@pytest.mark.parametrize(
    "head",
    [
        "X-Big: " + "a" * 9000 + "\r\n",
        "".join(f"X-Many-{n}: 1\r\n" for n in range(200)),
    ],
    ids=["field-too-long", "too-many-fields"],
)
def test_oversized_heads_are_refused_before_the_handler(recorder: Recorder, tmp_path: Path, head: str) -> None:
    with limited_proxy(recorder, tmp_path, max_header_bytes=8190, max_headers=128) as proxy, connect(proxy) as sock:
        mark = recorder.mark()
        sock.sendall((f"GET /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"X-Bailiwick-Token: {make_token('IE')}\r\n{head}\r\n").encode())
        sock.settimeout(10)
        answer = sock.recv(65536)
        assert answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:200]
        assert recorder.since(mark) == b""
