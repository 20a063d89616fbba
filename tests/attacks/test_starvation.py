"""Starving the proxy from one address: idle connections, and answers that are never read.

Each case runs `bailiwick serve` as a child process (so that its RSS is its
own) with small limits, in front of the session's moto server. The attacker
is 127.0.0.1; the legitimate caller binds its sockets to 127.0.0.2 (the whole
of 127/8 is loopback), so the proxy sees two peers. While the attack holds,
the legitimate caller's requests must all succeed with a median under
`MEDIAN_BOUND` and none over `WORST_BOUND`; once it ends, the proxy's RSS must
be back within 20% of what it was before.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.localstore import MotoServer
from tests.attacks.conftest import Served, serve_process
from tests.conftest import DUBLIN, make_token
from tests.support.records import written_records

pytestmark = pytest.mark.usefixtures("seeded")

ATTACKER = "127.0.0.1"
LEGITIMATE = "127.0.0.2"
MEDIAN_BOUND = 0.100   # seconds
WORST_BOUND = 1.0
SMALL_KEY = "alice/inbox/1.eml"
BIG_KEY = "alice/attachments/starvation.bin"
BIG_SIZE = 8 * 1024 * 1024   # far more than every socket buffer between the proxy and a caller that reads nothing
SIGV4 = ("Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
         "SignedHeaders=host, Signature=00\r\n")


@contextlib.contextmanager
def serve(tmp_path: Path, moto: MotoServer, settings: dict[str, Any]) -> Iterator[Served]:
    """`bailiwick serve` (aiohttp's C parser) straight in front of moto, with `settings` merged in."""
    with serve_process(tmp_path, moto.url, settings, secret_env="STARVE_HS256_SECRET") as served:
        yield served


def request_bytes(key: str, *, close: bool = True) -> bytes:
    return (f"GET /{DUBLIN}/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {make_token('IE')}\r\n"
            f"{SIGV4}{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n").encode()


def connect_from(source: str, port: int, *, receive_buffer: int | None = None, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)   # before connecting: the window
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def get(source: str, port: int, key: str = SMALL_KEY) -> tuple[int, int, float]:
    """One GET on a fresh connection from `source`, read to its end: (status, body bytes, seconds)."""
    started = time.perf_counter()
    with connect_from(source, port) as sock:
        sock.sendall(request_bytes(key))
        data = bytearray()
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(262144):
                data += chunk
    elapsed = time.perf_counter() - started
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, len(body), elapsed


def legitimate_traffic(port: int, count: int, budget: float = 10.0) -> list[tuple[int, int, float]]:
    """`count` GETs of a small object from the legitimate address, one after the other, for at most `budget` s."""
    results: list[tuple[int, int, float]] = []
    deadline = time.monotonic() + budget
    while len(results) < count and time.monotonic() < deadline:
        results.append(get(LEGITIMATE, port))
    return results


def assert_served_in_time(results: list[tuple[int, int, float]], count: int) -> None:
    statuses = [status for status, _, _ in results]
    latencies = [seconds for _, _, seconds in results]
    assert statuses == [200] * count, statuses
    assert statistics.median(latencies) < MEDIAN_BOUND, latencies
    assert max(latencies) < WORST_BOUND, latencies


def refused_at_once(sock: socket.socket) -> bytes:
    """What the proxy said on this connection, which never sent a request: b"" while it holds it open."""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""   # nothing said: the connection is held
    except ConnectionResetError:
        return b"reset"


def wait_for(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)
    return found


def settle_rss(served: Served) -> int:
    """RSS once the legitimate caller's traffic has run a while (allocator pools warm)."""
    for _ in range(3):
        legitimate_traffic(served.port, 20)
    time.sleep(0.3)
    return served.rss_kib


def test_one_peer_cannot_take_every_connection(moto: MotoServer, tmp_path: Path) -> None:
    # Global cap 128, per-peer cap 32: the attacker's 300 idle sockets are far over both.
    with serve(tmp_path, moto, {"limits": {"max_connections": 128, "max_connections_per_peer": 32,
                                           "header_timeout_seconds": 30}}) as served:
        before = settle_rss(served)
        attack: list[socket.socket] = []
        try:
            for _ in range(300):
                attack.append(connect_from(ATTACKER, served.port))
            # Again and again: the attacker keeps opening sockets while the legitimate caller is served.
            results: list[tuple[int, int, float]] = []
            deadline = time.monotonic() + 10
            while len(results) < 40 and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    attack.append(connect_from(ATTACKER, served.port))
                results.append(get(LEGITIMATE, served.port))
            assert_served_in_time(results, 40)
            # The attacker holds its share of places, no more: every other socket was told why and closed.
            time.sleep(0.5)   # every refusal has arrived by now
            answers = [refused_at_once(sock) for sock in attack]
            held = sum(1 for answer in answers if answer == b"")
            refused = [answer for answer in answers if answer]
            assert held <= 32, held
            assert len(refused) >= len(attack) - 32
            assert all(answer.startswith(b"HTTP/1.1 503 ") and b"from your address" in answer for answer in refused)
        finally:
            for sock in attack:
                sock.close()
        # Once the attacker's sockets are gone, its address is served again.
        wait_for(lambda: get(ATTACKER, served.port)[0] == 200, timeout=5)
        after = settle_rss(served)
        assert after <= before * 1.2, (before, after)


@pytest.fixture(scope="module")
def big_object(direct: Any) -> None:
    direct.put_object(Bucket=DUBLIN, Key=BIG_KEY, Body=os.urandom(BIG_SIZE))


@pytest.mark.usefixtures("big_object")
def test_answers_never_read_do_not_pin_the_upstream_pool(moto: MotoServer, tmp_path: Path) -> None:
    # A pool of 16 connections, 4 of them at most for one peer; the send deadline is 2 s.
    settings = {
        "upstream": {"max_connections": 16, "max_connections_per_peer": 4, "connect_timeout_seconds": 1},
        "limits": {"send_idle_timeout_seconds": 2},
    }
    with serve(tmp_path, moto, settings) as served:
        before = settle_rss(served)
        attack: list[socket.socket] = []
        try:
            for _ in range(40):   # allowed GETs of 8 MiB, and not one byte of the answers read
                sock = connect_from(ATTACKER, served.port, receive_buffer=4096)
                sock.sendall(request_bytes(BIG_KEY, close=False))
                attack.append(sock)
            attacked = time.monotonic()
            results = legitimate_traffic(served.port, 40, budget=10)
            assert_served_in_time(results, 40)
            assert time.monotonic() - attacked < 2.0   # all measured while the stalled answers held
            # After the send deadline the stalled exchanges are cut, audited as such, with the caller's jurisdiction.
            cut = wait_for(lambda: [r for r in written_records(served.audit) if r.get("error_code") == "SendTimeout"],
                           timeout=15)
            assert all(r["caller"]["jurisdiction"] == "IE" and r["caller"]["source"] == ATTACKER for r in cut)
            assert all(r["decision"] == "error" and "read nothing" in r["reason"] for r in cut)
            # The attacker's requests beyond its share waited, then were told to slow down.
            slowed = [r for r in written_records(served.audit) if r.get("error_code") == "SlowDown"]
            assert slowed
            assert all(r["status"] == 503 for r in slowed)
        finally:
            for sock in attack:
                sock.close()
        # Its share is free again: the attacker's address gets a whole large answer when it reads it.
        status, size, _ = wait_for(lambda: (r := get(ATTACKER, served.port, BIG_KEY))[0] == 200 and r, timeout=10)
        assert (status, size) == (200, BIG_SIZE)
        after = settle_rss(served)
        assert after <= before * 1.2, (before, after)
