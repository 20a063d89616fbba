"""The connection caps with ``listen_tls``: a connection counts from its accept, its TLS handshake included.

Raw sockets against a proxy in a thread (both loops: the TLS protocol is the
loop's own): connections that never send a ClientHello, or send half of one,
hold places like any other, so the ones over `limits.max_connections` (or over
`limits.max_connections_per_peer`) are closed at once, long before the handshake's
deadline, counted in ``bailiwick_connections_closed_total`` and not as failed
handshakes, and nothing of them reaches the storage server. Every way a
connection ends (the handshake's deadline, a failed handshake, the client leaving
before, during or after it, a served request) gives its place back exactly once:
the counts return to zero.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from proxy.config.tls import ListenTlsConfig
from proxy.handshake import HandshakeFailure
from proxy.harness import ProxyThread
from proxy.limiter import ConnectionCaps
from tests.conftest import make_token, proxy_config
from tests.support.certs import make_ca, server_certificate
from tests.support.metrics import metric
from tests.support.recorder import Recorder
from tests.support.serve import wait_until
from tests.test_handshake import LOOPS, REQUEST

pytestmark = pytest.mark.usefixtures("seeded")

DEADLINE = 3.0   # the handshake's (the request head's): the over-cap connections must go long before it
ENDINGS_DEADLINE = 1.0   # where the deadline is not what is measured


@dataclass(frozen=True, slots=True)
class TlsListener:
    proxy: ProxyThread
    ca_file: Path

    @property
    def caps(self) -> ConnectionCaps:
        assert self.proxy.running is not None
        return self.proxy.running.connection_caps

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        assert self.proxy.running is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", self.proxy.running.data_address[1]))
        return sock

    def get(self, source: str = "127.0.0.1", *, keep_alive: bool = False) -> tuple[bytes, ssl.SSLSocket]:
        """A request over a new TLS connection from `source`: the head of its answer, and the connection."""
        raw = self.connect(source)
        try:
            tls = ssl.create_default_context(cafile=str(self.ca_file)).wrap_socket(raw, server_hostname="localhost")
        except BaseException:
            raw.close()
            raise
        request = REQUEST.format(token=make_token("IE"))
        tls.sendall((request.replace("Connection: close", "Connection: keep-alive") if keep_alive else request)
                    .encode())
        return tls.recv(12), tls

    def closed(self, reason: str) -> float:
        return metric(self.proxy, f'bailiwick_connections_closed_total{{reason="{reason}"}}')

    def failed(self, failure: HandshakeFailure) -> float:
        return metric(self.proxy, f'bailiwick_tls_handshake_failures_total{{reason="{failure.value}"}}')


@pytest.fixture(params=sorted(LOOPS))
def start(request: pytest.FixtureRequest, recorder: Recorder, tmp_path: Path) -> Iterator[Callable[..., TlsListener]]:
    started: list[ProxyThread] = []

    def run(deadline: float = DEADLINE, **limits: int) -> TlsListener:
        ca = make_ca()
        ca_file, _ = ca.write(tmp_path, "ca")
        cert, key = server_certificate(ca).write(tmp_path / "tls", "server")
        config = proxy_config(recorder.url, tmp_path / "audit.jsonl", listen_tls=ListenTlsConfig(certificate=cert,
                                                                                                  key=key))
        config = replace(config, limits=replace(config.limits, header_timeout_seconds=deadline, **limits))
        proxy = ProxyThread(config, loop=LOOPS[request.param]()).start()
        started.append(proxy)
        return TlsListener(proxy, ca_file)

    yield run
    for proxy in started:
        proxy.stop()


def client_hello() -> bytes:
    """A TLS 1.3 ClientHello, as a client's first flight."""
    out = ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return out.read()


def closed_by_proxy(sock: socket.socket, within: float) -> bool:
    """Whether the proxy ends `sock` (end of file or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def half_open(listener: TlsListener, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """`count` connections in their handshake: every other one said half of a ClientHello, the rest nothing."""
    hello = client_hello()
    held = [listener.connect(source) for _ in range(count)]
    for sock in held[::2]:
        sock.sendall(hello[: len(hello) // 2])
    return held


def test_half_open_handshakes_count_against_max_connections(start: Callable[..., TlsListener],
                                                            recorder: Recorder) -> None:
    listener = start(max_connections=4)
    mark = recorder.mark()
    opened = time.monotonic()
    held = half_open(listener, 4)
    try:
        wait_until(lambda: listener.caps.held == 4, timeout=5)
        started = time.monotonic()
        extra = half_open(listener, 3)
        # The extra ones are closed at their accept, not at the handshake's deadline; the held ones stay.
        assert all(closed_by_proxy(sock, within=DEADLINE / 2) for sock in extra)
        assert time.monotonic() - started < DEADLINE / 2
        for sock in extra:
            sock.close()
        assert listener.closed("max_connections") == 3
        assert not any(closed_by_proxy(sock, within=0.05) for sock in held)
        # A real client is refused too while they hold every place: its handshake is cut.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            listener.get()
        assert listener.closed("max_connections") == 4
        # Closed over the cap is not a failed handshake.
        assert listener.failed(HandshakeFailure.CLOSED) == 0
        # The held ones end at the handshake's deadline: every place is given back.
        assert all(closed_by_proxy(sock, within=DEADLINE + 2) for sock in held)
        assert time.monotonic() - opened >= DEADLINE - 0.1
        wait_until(lambda: listener.caps.held == 0 and not listener.caps.per_peer, timeout=5)
        assert listener.failed(HandshakeFailure.TIMEOUT) == 4
        assert recorder.since(mark) == b""
        # The cap is whole again: exactly four places.
        again = half_open(listener, 4)
        wait_until(lambda: listener.caps.held == 4, timeout=5)
        assert not any(closed_by_proxy(sock, within=0.1) for sock in again)
        for sock in again:
            sock.close()
        wait_until(lambda: listener.caps.held == 0, timeout=5)
        status, tls = listener.get()
        tls.close()
        assert status == b"HTTP/1.1 200"
    finally:
        for sock in held:
            sock.close()


def test_half_open_handshakes_count_against_max_connections_per_peer(start: Callable[..., TlsListener]) -> None:
    listener = start(max_connections_per_peer=3)
    held = half_open(listener, 3)
    try:
        wait_until(lambda: listener.caps.per_peer == {"127.0.0.1": 3}, timeout=5)
        extra = half_open(listener, 2)
        assert all(closed_by_proxy(sock, within=DEADLINE / 2) for sock in extra)
        for sock in extra:
            sock.close()
        assert listener.closed("max_connections_per_peer") == 2
        assert listener.closed("max_connections") == 0
        # Another peer is served meanwhile.
        status, tls = listener.get("127.0.0.2")
        tls.close()
        assert status == b"HTTP/1.1 200"
        assert not any(closed_by_proxy(sock, within=0.05) for sock in held)
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: listener.caps.held == 0 and not listener.caps.per_peer, timeout=5)


def _leaves_silent(listener: TlsListener) -> None:
    with listener.connect():
        wait_until(lambda: listener.caps.held == 1, timeout=5)   # accepted, before it leaves


def _leaves_mid_hello(listener: TlsListener) -> None:
    with listener.connect() as sock:
        sock.sendall(client_hello()[:20])
        wait_until(lambda: listener.caps.held == 1, timeout=5)


def _not_tls(listener: TlsListener) -> None:
    with listener.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert closed_by_proxy(sock, within=DEADLINE / 2)


def _times_out(listener: TlsListener) -> None:
    with listener.connect() as sock:
        sock.sendall(client_hello()[:20])
        assert closed_by_proxy(sock, within=ENDINGS_DEADLINE + 2)


def _served_and_closed_by_the_proxy(listener: TlsListener) -> None:
    status, tls = listener.get()
    assert status == b"HTTP/1.1 200"
    assert closed_by_proxy(tls, within=DEADLINE / 2)
    tls.close()


def _kept_alive_then_left(listener: TlsListener) -> None:
    status, tls = listener.get(keep_alive=True)
    assert status == b"HTTP/1.1 200"
    tls.close()


def _handshake_then_left(listener: TlsListener) -> None:
    ssl.create_default_context(cafile=str(listener.ca_file)).wrap_socket(
        listener.connect(), server_hostname="localhost").close()


@pytest.mark.parametrize("ending", [_leaves_silent, _leaves_mid_hello, _not_tls, _times_out,
                                    _served_and_closed_by_the_proxy, _kept_alive_then_left, _handshake_then_left])
def test_every_ending_gives_the_place_back_once(start: Callable[..., TlsListener],
                                                ending: Callable[[TlsListener], None]) -> None:
    listener = start(ENDINGS_DEADLINE, max_connections=2, max_connections_per_peer=2)
    for _ in range(3):   # more than the cap: a place not given back would refuse the last ones
        ending(listener)
        wait_until(lambda: listener.caps.held == 0 and not listener.caps.per_peer, timeout=5)
    assert listener.closed("max_connections") == listener.closed("max_connections_per_peer") == 0
