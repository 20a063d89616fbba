"""The proxy's own TLS handshakes: every failure counted by reason, a refused client certificate audited.

Real handshakes against the proxy in a thread (`listen_tls` with a client CA
and a CRL, certificates made at test time): each refused client certificate
leaves an audit line naming why, with the client's address and nothing of a
request; failures that are not a refused credential (not TLS at all, a client
that leaves, one that says nothing) are only counted. Nothing of any of them
reaches the storage server. The handshake's outcome is also checked for what
the gate must keep: a handshake still running at shutdown. Both loops are run: `serve` runs on
uvloop, whose TLS protocol and transports are its own.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import uvloop

from proxy.config.tls import ListenTlsConfig
from proxy.handshake import HandshakeFailure, RefusedHandshake, classify
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, make_token, proxy_config
from tests.support.certs import Issued, make_ca, server_certificate, spiffe_client_certificate, write_crl
from tests.support.metrics import metric
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record, written_records
from tests.support.serve import wait_until
from tests.test_gateway import FAKE_SIGV4

DAY = datetime.timedelta(days=1)
REQUEST = (f"GET /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: localhost\r\nX-Bailiwick-Token: {{token}}\r\n"
           f"Authorization: {FAKE_SIGV4.split(': ', 1)[1].strip()}\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n"
           "Connection: close\r\n\r\n")


@dataclass(frozen=True, slots=True)
class Listener:
    proxy: ProxyThread
    folder: Path
    ca_file: Path
    clients: Issued
    revoked: Issued
    audit: Path

    @property
    def port(self) -> int:
        assert self.proxy.running is not None
        return self.proxy.running.data_address[1]

    def context(self, client: Issued | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if client is not None:
            context.load_cert_chain(*client.write(self.folder / "clients", f"c{client.certificate.serial_number}"))
        return context

    def failures(self, failure: HandshakeFailure) -> float:
        return metric(self.proxy, f'bailiwick_tls_handshake_failures_total{{reason="{failure.value}"}}')


# `serve` runs on uvloop, whose TLS and transports are its own: both loops are tested.
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop,
                                                              "uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="module", params=sorted(LOOPS))
def listener(request: pytest.FixtureRequest, recorder: Recorder, seeded: None,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    folder = tmp_path_factory.mktemp("handshake")
    server_ca, clients = make_ca(), make_ca("workload CA")
    ca_file, _ = server_ca.write(folder, "ca")
    cert, key = server_certificate(server_ca).write(folder / "tls", "server")
    client_ca, _ = clients.write(folder / "clients", "ca")
    revoked = spiffe_client_certificate(clients)
    crl = folder / "clients" / "crl.pem"
    write_crl(crl, clients, (revoked,))
    audit = folder / "audit.jsonl"
    config = proxy_config(recorder.url, audit, listen_tls=ListenTlsConfig(
        certificate=cert, key=key, client_ca=client_ca, crl=crl))
    config = replace(config, limits=replace(config.limits, header_timeout_seconds=0.5))
    running = ProxyThread(config, loop=LOOPS[request.param]()).start()
    yield Listener(running, folder, ca_file, clients, revoked, audit)
    running.stop()


def request(listener: Listener, client: Issued | None) -> None:
    """A request over a new connection presenting `client`; raises if the connection is refused."""
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as raw, \
            listener.context(client).wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(REQUEST.format(token=make_token("IE")).encode())
        assert tls.recv(1) == b"", "the connection is refused: nothing of an answer"
        raise ConnectionResetError


def handshake_lines(listener: Listener) -> list[dict[str, Any]]:
    return [line for line in written_records(listener.audit) if line["request"]["operation"] == "TlsHandshake"]


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# Which client certificate each case presents (None: none), from the listener's client CA unless said otherwise.
CLIENTS: dict[str, Callable[[Listener], Issued | None]] = {
    "expired": lambda listener: spiffe_client_certificate(listener.clients, valid_from=now() - 3 * DAY, days=2),
    "not yet valid": lambda listener: spiffe_client_certificate(listener.clients, valid_from=now() + DAY),
    "from another CA": lambda listener: spiffe_client_certificate(make_ca("another CA")),
    "revoked": lambda listener: listener.revoked,
    "none": lambda listener: None,
    # OpenSSL looks for the chain before the dates: a stranger's expired certificate is a stranger's.
    "expired, from another CA": lambda listener: spiffe_client_certificate(
        make_ca("another CA"), valid_from=now() - 3 * DAY, days=2),
    # The client CA's name, another key: the signature is not the client CA's.
    "signed by the CA's name with another key": lambda listener: spiffe_client_certificate(
        make_ca(listener.clients.certificate.subject.rfc4514_string().removeprefix("CN="))),
    "for servers only (serverAuth)": lambda listener: server_certificate(listener.clients),
}


@pytest.mark.parametrize(("case", "failure", "status", "reason"), [
    ("expired", HandshakeFailure.CERTIFICATE_EXPIRED, 495,
     "TLS handshake refused: the client certificate has expired"),
    ("not yet valid", HandshakeFailure.CERTIFICATE_NOT_YET_VALID, 495,
     "TLS handshake refused: the client certificate is not valid yet"),
    ("from another CA", HandshakeFailure.CERTIFICATE_UNTRUSTED, 495,
     "TLS handshake refused: the client certificate is not issued by a CA of listen_tls.client_ca"),
    ("revoked", HandshakeFailure.CERTIFICATE_REVOKED, 495,
     "TLS handshake refused: the client certificate is revoked (listen_tls.crl)"),
    ("none", HandshakeFailure.NO_CERTIFICATE, 496,
     "TLS handshake refused: no client certificate was presented, and listen_tls.client_ca requires one"),
    ("expired, from another CA", HandshakeFailure.CERTIFICATE_UNTRUSTED, 495,
     "TLS handshake refused: the client certificate is not issued by a CA of listen_tls.client_ca"),
    ("signed by the CA's name with another key", HandshakeFailure.CERTIFICATE_UNTRUSTED, 495,
     "TLS handshake refused: the client certificate is not issued by a CA of listen_tls.client_ca"),
    ("for servers only (serverAuth)", HandshakeFailure.CERTIFICATE_INVALID, 495,
     "TLS handshake refused: the client certificate does not verify: unsuitable certificate purpose"),
])
def test_a_refused_client_certificate_is_counted_and_audited(
        listener: Listener, recorder: Recorder, case: str, failure: HandshakeFailure, status: int, reason: str) -> None:
    before, lines_before, mark = listener.failures(failure), len(handshake_lines(listener)), recorder.mark()
    # TLS 1.3 sends the server's refusal after the client's handshake ends: it may surface on the request.
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        request(listener, CLIENTS[case](listener))
    wait_until(lambda: listener.failures(failure) == before + 1, timeout=5)
    line = wait_for_record(listener.audit, lambda line: line["request"]["operation"] == "TlsHandshake"
                           and line["reason"] == reason and len(handshake_lines(listener)) > lines_before)
    assert (line["decision"], line["error_code"], line["status"]) == ("deny", "ClientCertificateRefused", status)
    assert line["caller"] == {"jurisdiction": None, "source": "127.0.0.1", "subject": None}
    assert (line["dataset"], line["rule"], line["request"]["method"], line["request"]["resource"],
            line["request"]["action"]) == (None, None, "", None, None)
    assert len(handshake_lines(listener)) == lines_before + 1
    assert recorder.since(mark) == b"", "nothing reached the storage server"


def test_a_valid_client_certificate_is_served_and_leaves_no_handshake_line(
        listener: Listener, recorder: Recorder) -> None:
    lines_before, mark = len(handshake_lines(listener)), recorder.mark()
    client = spiffe_client_certificate(listener.clients)
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as raw, \
            listener.context(client).wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(REQUEST.format(token=make_token("IE")).encode())
        answer = b"".join(iter(lambda: tls.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"Dublin mail")
    assert recorder.since(mark) != b""
    assert len(handshake_lines(listener)) == lines_before


def _plain_http(listener: Listener) -> None:
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        raw.recv(100)


def _leaves(listener: Listener) -> None:
    """A ClientHello, then the client goes away."""
    hello = ssl.MemoryBIO()
    ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), hello, server_hostname="localhost")
    client = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), hello, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as raw:
        raw.sendall(hello.read())


def _silent(listener: Listener) -> None:
    """Connects and says nothing: cut at the handshake's deadline (the request head's, 0.5 s here)."""
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as raw:
        assert raw.recv(1) == b""


@pytest.mark.parametrize(("client", "failure"), [
    (_plain_http, HandshakeFailure.PROTOCOL),
    (_leaves, HandshakeFailure.CLOSED),
    (_silent, HandshakeFailure.TIMEOUT),
])
def test_other_failures_are_counted_not_audited(
        listener: Listener, recorder: Recorder, client: Callable[[Listener], None], failure: HandshakeFailure,
        caplog: pytest.LogCaptureFixture) -> None:
    before, lines_before, mark = listener.failures(failure), len(handshake_lines(listener)), recorder.mark()
    client(listener)
    wait_until(lambda: listener.failures(failure) == before + 1, timeout=5)
    time.sleep(0.1)   # an audit line would be written by now
    assert len(handshake_lines(listener)) == lines_before
    assert recorder.since(mark) == b""
    # The failed handshake's future was read: asyncio does not log it as an exception never retrieved.
    gc.collect()
    assert not [record for record in caplog.records if "never retrieved" in record.getMessage()]


@pytest.mark.parametrize("loop", sorted(LOOPS))
@pytest.mark.parametrize("kept_alive", [False, True], ids=["in its handshake", "kept alive after a request"])
def test_the_shutdown_cuts_every_tls_connection(recorder: Recorder, seeded: None, tmp_path: Path, loop: str,
                                                kept_alive: bool) -> None:
    """Over TLS, a close waits for the client's close_notify, and a connection in its handshake is not aiohttp's:
    neither may outlive the shutdown (the socket would be left open, not closed)."""
    ca = make_ca()
    ca_file, _ = ca.write(tmp_path, "ca")
    cert, key = server_certificate(ca).write(tmp_path, "server")
    running = ProxyThread(proxy_config(recorder.url, tmp_path / "audit.jsonl",
                                       listen_tls=ListenTlsConfig(certificate=cert, key=key)),
                          loop=LOOPS[loop]()).start()
    assert running.running is not None
    connection = socket.create_connection(("127.0.0.1", running.running.data_address[1]), timeout=5)
    if kept_alive:
        context = ssl.create_default_context(cafile=str(ca_file))
        connection = context.wrap_socket(connection, server_hostname="localhost")
        connection.sendall(REQUEST.format(token=make_token("IE")).replace("Connection: close", "Connection: keep-alive")
                           .encode())
        assert connection.recv(12) == b"HTTP/1.1 200"
    with connection:
        time.sleep(0.1)
        started = time.monotonic()
        running.stop()
        assert time.monotonic() - started < 5
        assert ended(connection)


def ended(connection: socket.socket) -> bool:
    """Whether the proxy ended `connection` (an end of file, or a TLS one without close_notify), within 5 s."""
    try:
        while connection.recv(65536):
            pass
    except (ssl.SSLEOFError, ConnectionResetError):
        return True
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize(("exc", "failure"), [
    (ConnectionAbortedError("SSL handshake is taking longer than 15.0 seconds: aborting the connection"),
     HandshakeFailure.TIMEOUT),
    (TimeoutError(), HandshakeFailure.TIMEOUT),
    (ConnectionResetError(), HandshakeFailure.CLOSED),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), HandshakeFailure.CLOSED),
    (ValueError("anything else"), HandshakeFailure.PROTOCOL),
])
def test_failures_that_are_not_openssls_are_classified(exc: BaseException, failure: HandshakeFailure) -> None:
    assert classify(exc) is failure
    refused = RefusedHandshake.of("192.0.2.1", exc)
    assert (refused.peer, refused.failure) == ("192.0.2.1", failure)
    assert refused.reason.startswith("TLS handshake refused: ")
    assert not failure.refuses_certificate
