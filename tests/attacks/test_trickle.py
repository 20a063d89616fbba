"""Trickling: a caller that reads its answer, or sends its upload, a few bytes now and then.

Such a caller moves, so no idle deadline ever fires, yet it would hold an
exchange with the storage server (a connection of the pool) for as long as it
likes. The minimum send and receive rates cut it. Each case runs its own
proxy (in this process) with a pool of ONE upstream connection, a window of
1 s, idle deadlines of 60 s (so that only the rate can cut within the test)
and a minimum rate of `RATE`; the well-behaved callers go `ADEQUATE` times
faster than that (they pass at twice the rate, too), the tricklers 20 times
slower.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from proxy.config import Limits
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, make_token, proxy_config
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record, written_records

pytestmark = pytest.mark.usefixtures("seeded")

RATE = 8000            # bytes/s, the minimum in both directions
WINDOW = 1.0           # seconds
ADEQUATE = 20          # how many times the minimum the well-behaved callers go at
TRICKLER = "127.0.0.1"
OTHER = "127.0.0.2"    # another peer (the proxy caps exchanges per peer, too)
BIG_KEY = "alice/attachments/trickle.bin"
BIG_SIZE = 8 * 1024 * 1024   # far more than every socket buffer between the storage server and a slow reader
SIGV4 = ("Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
         "SignedHeaders=host, Signature=00\r\n")


@contextlib.contextmanager
def trickle_proxy(recorder: Recorder, audit: Path) -> Iterator[ProxyThread]:
    config = proxy_config(recorder.url, audit)
    limits = replace(Limits(), send_idle_timeout_seconds=60, body_idle_timeout_seconds=60,
                     min_send_rate_bytes_per_second=RATE, min_receive_rate_bytes_per_second=RATE,
                     min_rate_window_seconds=WINDOW)
    upstream = replace(config.upstream, max_connections=1, max_connections_per_peer=1, connect_timeout_seconds=3)
    proxy = ProxyThread(replace(config, limits=limits, upstream=upstream)).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def connect_from(proxy: ProxyThread, source: str, *, receive_buffer: int | None = None) -> socket.socket:
    host, port = proxy.url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)   # before connecting: the window
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect((host, int(port)))
    return sock


def head(method: str, key: str, extra: str = "") -> bytes:
    return (f"{method} /{DUBLIN}/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {make_token('IE')}\r\n"
            f"{SIGV4}{extra}Connection: close\r\n\r\n").encode()


def whole_answer(sock: socket.socket) -> bytes:
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while piece := sock.recv(65536):
            answer += piece
    return answer


def small_get(proxy: ProxyThread, source: str) -> bytes:
    with connect_from(proxy, source) as sock:
        sock.sendall(head("GET", "alice/inbox/1.eml"))
        return whole_answer(sock)


def read_at(sock: socket.socket, rate: float, seconds: float, until: Callable[[], bool] = lambda: False) -> int:
    """Read about `rate` bytes a second for `seconds` (or until `until()`), in pieces every 50 ms;
    what was read, or -1 if the connection ended."""
    got = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds and not until():
        want = int(rate * elapsed) - got
        while want > 0:
            try:
                piece = sock.recv(min(want, 65536))
            except ConnectionResetError:
                return -1
            if not piece:
                return -1
            got += len(piece)
            want -= len(piece)
        time.sleep(0.05)
    return got


@pytest.fixture(scope="module")
def big_object(direct: Any) -> None:
    direct.put_object(Bucket=DUBLIN, Key=BIG_KEY, Body=os.urandom(BIG_SIZE))


@pytest.mark.usefixtures("big_object")
def test_a_trickle_reader_is_cut_and_frees_its_upstream_connection(recorder: Recorder, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with trickle_proxy(recorder, audit) as proxy, connect_from(proxy, TRICKLER, receive_buffer=4096) as trickler:
        trickler.sendall(head("GET", BIG_KEY))
        started = time.monotonic()
        # 50 bytes a second, always moving: the idle deadline (60 s) never fires, the rate does. What the
        # caller reads of its socket's buffer after the cut is not the proxy's: the audit line marks the cut.
        def cut() -> list[dict[str, Any]]:
            return [r for r in written_records(audit) if r.get("error_code") == "SendTimeout"]

        read_at(trickler, RATE / 20, seconds=8, until=lambda: bool(cut()))
        cut_after = time.monotonic() - started
        assert cut(), "the trickle reader was never cut"
        # Its credit (a window's worth at the rate, plus the 16 KiB the kernel may still hold) lasts about
        # 3 s at its pace; the bound leaves room for a loaded host.
        assert cut_after < 6, cut_after
        record = cut()[0]
        assert record["caller"]["jurisdiction"] == "IE"
        assert record["caller"]["source"] == TRICKLER
        assert record["decision"] == "error"
        assert f"minimum rate of {RATE} bytes/s" in record["reason"]
        # The pool's one connection is free again: another peer is served at once.
        asked = time.monotonic()
        assert small_get(proxy, OTHER).startswith(b"HTTP/1.1 200 ")
        assert time.monotonic() - asked < 1.0


@pytest.mark.usefixtures("big_object")
def test_a_slow_but_adequate_reader_is_not_cut(recorder: Recorder, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with trickle_proxy(recorder, audit) as proxy, connect_from(proxy, TRICKLER, receive_buffer=4096) as reader:
        reader.sendall(head("GET", BIG_KEY))
        slowly = read_at(reader, RATE * ADEQUATE, seconds=4)   # four windows, its answer waiting in the proxy all along
        assert slowly > 0
        rest = whole_answer(reader)   # then the rest at once
    assert slowly + len(rest) > BIG_SIZE   # the head, then the whole object: never cut
    assert not [r for r in written_records(audit) if r.get("error_code") == "SendTimeout"]
    record = wait_for_record(audit, lambda r: r.get("status") == 200)
    assert record["caller"]["source"] == TRICKLER


def test_a_trickle_uploader_is_cut_and_nothing_is_stored(recorder: Recorder, tmp_path: Path, direct: Any) -> None:
    audit = tmp_path / "audit.jsonl"
    key = f"alice/trickle/{time.monotonic_ns()}"
    with trickle_proxy(recorder, audit) as proxy, connect_from(proxy, TRICKLER) as uploader:
        uploader.sendall(head("PUT", key, "Content-Length: 1000\r\n") + b"x" * 10)
        uploader.settimeout(0.2)
        started = time.monotonic()
        answer = b""
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            while time.monotonic() - started < 8 and not answer:
                uploader.sendall(b"x")   # 5 bytes a second: it never stops, so the idle deadline (60 s) never fires
                with contextlib.suppress(TimeoutError):
                    answer = uploader.recv(65536)
        cut_after = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"<Code>RequestTimeout</Code>" in answer
    assert cut_after < 6, cut_after
    record = wait_for_record(audit, lambda r: r.get("error_code") == "RequestTimeout")
    assert record["caller"]["jurisdiction"] == "IE"
    assert record["caller"]["source"] == TRICKLER
    assert f"minimum rate of {RATE} bytes/s" in record["reason"]
    with pytest.raises(ClientError):
        direct.head_object(Bucket=DUBLIN, Key=key)


def test_a_slow_but_adequate_uploader_completes(recorder: Recorder, tmp_path: Path, direct: Any) -> None:
    audit = tmp_path / "audit.jsonl"
    key = f"alice/trickle/{time.monotonic_ns()}"
    body = os.urandom(RATE * ADEQUATE * 3)   # three windows' worth at its pace
    piece = RATE * ADEQUATE // 20
    with trickle_proxy(recorder, audit) as proxy, connect_from(proxy, TRICKLER) as uploader:
        uploader.sendall(head("PUT", key, f"Content-Length: {len(body)}\r\n"))
        for offset in range(0, len(body), piece):
            uploader.sendall(body[offset:offset + piece])
            time.sleep(0.05)
        answer = whole_answer(uploader)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert direct.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == body
    assert not [r for r in written_records(audit) if r.get("error_code") == "RequestTimeout"]
