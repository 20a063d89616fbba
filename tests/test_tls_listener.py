"""TLS on the data listener: real handshakes from boto3 and the AWS CLI, rotation, expiry, client certificates.

Certificates are made at test time (`tests.support.certs`). The proxy runs in a
thread in front of moto with `listen_tls` set; its certificate files are
rewritten under it to rotate them, and the reload interval is short so that the
tests wait a fraction of a second, not the default five. Where signatures
matter, moto checks every one (IAM authentication on, `tests.support.iam`):
boto3 and the AWS CLI sign for the proxy's address, and the proxy passes the
request on over loopback without re-signing, so moto's acceptance shows that
the TLS listener hands on exactly what the client signed.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from cryptography import x509

from proxy import gateway
from proxy.config import NetworkRule, load_config
from proxy.config.tls import ListenTlsConfig, TlsVersion
from proxy.errors import ConfigError
from proxy.evaluate import RequestHead
from proxy.harness import ProxyThread
from proxy.peercert import PeerCertificate
from tests.conftest import DUBLIN, make_token, proxy_config
from tests.support.certs import (
    Issued,
    expired_server_certificate,
    make_ca,
    server_certificate,
    spiffe_client_certificate,
    write_crl,
)
from tests.support.iam import SignedStore, signed_store
from tests.support.metrics import metric
from tests.support.recorder import Recorder
from tests.support.serve import status, wait_until
from tests.test_gateway import FAKE_SIGV4

OBJECT = f"/{DUBLIN}/alice/inbox/1.eml"


@dataclass
class TlsProxy:
    proxy: ProxyThread
    folder: Path
    ca: Issued
    ca_file: Path

    @property
    def port(self) -> int:
        assert self.proxy.running is not None
        return self.proxy.running.data_address[1]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def install(self, issued: Issued) -> None:
        """Replace the certificate and key files as a Secret's rotation does (each file swapped whole)."""
        for name, data in (("server.key", issued.key_pem), ("server.crt", issued.cert_pem)):
            part = self.folder / f".{name}.new"
            part.write_bytes(data)
            os.replace(part, self.folder / name)

    def connection(self, context: ssl.SSLContext | None = None) -> contextlib.closing[http.client.HTTPSConnection]:
        """A keep-alive HTTPS connection to the data port, closed at the end of the ``with``."""
        context = context or client_context(self.ca_file)
        return contextlib.closing(http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=context))

    def readyz(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"{self.proxy.admin_url}/readyz", timeout=5) as answer:
                return int(answer.status), json.loads(answer.read())
        except urllib.error.HTTPError as err:
            with err:
                return int(err.code), json.loads(err.read())


def client_context(ca_file: Path, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if client is not None:
        context.load_cert_chain(*client)
    return context


def serial_of(connection: http.client.HTTPSConnection) -> int:
    assert isinstance(connection.sock, ssl.SSLSocket)
    der = connection.sock.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def fetch(connection: http.client.HTTPSConnection) -> tuple[int, bytes]:
    connection.request("GET", OBJECT, headers={"X-Bailiwick-Token": make_token("IE"),
                                               "Authorization": FAKE_SIGV4.split(": ", 1)[1].strip(),
                                               "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    answer = connection.getresponse()
    return answer.status, answer.read()


@pytest.fixture
def start_tls(recorder: Recorder, seeded: None, tmp_path: Path) -> Iterator[Callable[..., TlsProxy]]:
    started: list[ProxyThread] = []

    def start(certificate: Issued | None = None, *, ca: Issued | None = None, client_ca: Path | None = None,
              min_version: TlsVersion = TlsVersion.TLS_1_2, crl: Path | None = None,
              upstream: str | None = None) -> TlsProxy:
        ca = ca or make_ca()
        folder = tmp_path / "tls"
        ca_file, _ = ca.write(tmp_path, "ca")
        cert, key = (certificate or server_certificate(ca)).write(folder, "server")
        settings = ListenTlsConfig(certificate=cert, key=key, client_ca=client_ca, min_version=min_version,
                                   reload_interval_seconds=0.1, crl=crl)
        config = proxy_config(upstream or recorder.url, tmp_path / "audit.jsonl", listen_tls=settings)
        # The AWS CLI sends no token: loopback is Irish here.
        config = replace(config, identity=replace(config.identity, networks=(
            NetworkRule(ipaddress.ip_network("127.0.0.1/32"), "IE"),)))
        proxy = ProxyThread(config).start()
        started.append(proxy)
        return TlsProxy(proxy, folder, ca, ca_file)

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="module")
def store() -> Iterator[SignedStore]:
    """moto checking every signature, holding the Dublin mailboxes' bucket."""
    with signed_store("tls-listener", {DUBLIN: "eu-west-1"}) as running:
        running.client().put_object(Bucket=DUBLIN, Key="alice/inbox/1.eml", Body=b"Dublin mail")
        yield running


def boto3_client(running: TlsProxy, key: str, secret: str) -> Any:
    """boto3 over the TLS listener, trusting the test CA, signing with these keys, sending an IE token."""
    client = boto3.client("s3", endpoint_url=running.url, region_name="us-east-1", verify=str(running.ca_file),
                          aws_access_key_id=key, aws_secret_access_key=secret,
                          config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    client.meta.events.register("before-send.s3", lambda request, **_: request.headers.__setitem__(
        "X-Bailiwick-Token", make_token("IE")))
    return client


def test_boto3_reads_and_writes_through_the_tls_listener(start_tls: Callable[..., TlsProxy],
                                                         store: SignedStore) -> None:
    # The control: moto checks signatures (a wrong secret is refused), so what passes below was signed right.
    with pytest.raises(ClientError) as refused:
        boto3.client("s3", endpoint_url=store.server.url, region_name="us-east-1", aws_access_key_id=store.key,
                     aws_secret_access_key="not-the-secret",
                     config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
                     ).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    running = start_tls(upstream=store.server.url)
    body = bytes(range(256)) * 300
    with contextlib.closing(boto3_client(running, store.key, store.secret)) as client:
        assert client.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")["Body"].read() == b"Dublin mail"
        client.put_object(Bucket=DUBLIN, Key="alice/inbox/tls.eml", Body=body)
    assert store.client().get_object(Bucket=DUBLIN, Key="alice/inbox/tls.eml")["Body"].read() == body


def test_a_client_that_does_not_trust_the_ca_is_refused(start_tls: Callable[..., TlsProxy], tmp_path: Path) -> None:
    running = start_tls()
    other, _ = make_ca("another CA").write(tmp_path / "other", "ca")
    with running.connection(client_context(other)) as connection, pytest.raises(ssl.SSLCertVerificationError):
        fetch(connection)


def test_the_aws_cli_reads_and_writes_with_its_ca_bundle(start_tls: Callable[..., TlsProxy], store: SignedStore,
                                                         tmp_path: Path) -> None:
    aws = shutil.which("aws")
    assert aws is not None, "the AWS CLI is installed with the test tools"
    running = start_tls(upstream=store.server.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=store.key, AWS_SECRET_ACCESS_KEY=store.secret, AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", HOME=str(tmp_path))

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([aws, "--endpoint-url", running.url, *args], capture_output=True, env=env, timeout=60,
                              check=False)

    bundle = ("--ca-bundle", str(running.ca_file))
    target = tmp_path / "got.eml"
    done = cli(*bundle, "s3api", "get-object", "--bucket", DUBLIN, "--key", "alice/inbox/1.eml", str(target))
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert target.read_bytes() == b"Dublin mail"
    # `aws s3 cp` both ways, each request signed by the CLI and checked by moto.
    sent = tmp_path / "sent.eml"
    sent.write_bytes(b"through TLS, signed by the CLI\n" * 1000)
    for source, destination in ((str(sent), f"s3://{DUBLIN}/alice/inbox/cli.eml"),
                                (f"s3://{DUBLIN}/alice/inbox/cli.eml", str(tmp_path / "back.eml"))):
        done = cli(*bundle, "s3", "cp", source, destination)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert (tmp_path / "back.eml").read_bytes() == sent.read_bytes()
    assert store.client().get_object(Bucket=DUBLIN, Key="alice/inbox/cli.eml")["Body"].read() == sent.read_bytes()
    # Without the bundle, the CLI does not trust the proxy's certificate.
    refused = cli("s3api", "head-bucket", "--bucket", DUBLIN)
    assert refused.returncode != 0
    assert b"CERTIFICATE_VERIFY_FAILED" in refused.stderr


@pytest.mark.parametrize(("server_min", "client_max", "served"), [
    (TlsVersion.TLS_1_2, ssl.TLSVersion.TLSv1_1, False),
    (TlsVersion.TLS_1_2, ssl.TLSVersion.TLSv1_2, True),
    (TlsVersion.TLS_1_3, ssl.TLSVersion.TLSv1_2, False),
    (TlsVersion.TLS_1_3, ssl.TLSVersion.TLSv1_3, True),
])
def test_old_tls_versions_are_refused(start_tls: Callable[..., TlsProxy], server_min: TlsVersion,
                                      client_max: ssl.TLSVersion, served: bool) -> None:
    running = start_tls(min_version=server_min)
    context = client_context(running.ca_file)
    # The client would speak TLS 1.1 (OpenSSL's default security level forbids it on its own side).
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():   # the ssl module deprecates naming TLS 1.1 at all
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = client_max
    with running.connection(context) as connection:
        if served:
            assert fetch(connection) == (200, b"Dublin mail")
        else:
            with pytest.raises(ssl.SSLError):
                fetch(connection)


def test_a_rotated_certificate_is_served_to_new_connections_and_open_ones_keep_working(
        start_tls: Callable[..., TlsProxy]) -> None:
    running = start_tls()
    with running.connection() as kept:
        assert fetch(kept) == (200, b"Dublin mail")
        first = serial_of(kept)
        running.install(server_certificate(running.ca, serial=first + 1))

        def new_serial() -> int:
            with running.connection() as connection:
                connection.connect()
                return serial_of(connection)

        wait_until(lambda: new_serial() == first + 1, timeout=10)
        # The connection opened before the rotation is still open, on its certificate, and still serves.
        assert fetch(kept) == (200, b"Dublin mail")
        assert serial_of(kept) == first
    code, body = running.readyz()
    assert (code, body["tls"]["serial"], body["tls"]["reloads"]) == (200, f"{first + 1:x}", 1)


def test_a_rotation_to_a_pair_that_does_not_load_keeps_the_last_good_one(start_tls: Callable[..., TlsProxy]) -> None:
    running = start_tls()
    good = running.proxy.running
    assert good is not None
    assert good.tls is not None
    served = good.tls.served.serial
    mismatched = server_certificate(running.ca)
    (running.folder / "server.crt").write_bytes(mismatched.cert_pem)   # its key never arrives
    wait_until(lambda: running.readyz()[0] == 503, timeout=10)
    _, body = running.readyz()
    assert "cannot be loaded" in body["reason"]
    assert body["tls"]["reload_failures"] >= 1
    with running.connection() as connection:
        assert fetch(connection) == (200, b"Dublin mail")
        assert serial_of(connection) == served
    # The key arrives: the pair loads, and the proxy is ready again.
    (running.folder / "server.key").write_bytes(mismatched.key_pem)
    wait_until(lambda: running.readyz()[0] == 200, timeout=10)


@pytest.mark.parametrize("name", ["server.crt", "server.key"])
def test_a_certificate_file_that_cannot_be_read_makes_the_proxy_not_ready(
        start_tls: Callable[..., TlsProxy], name: str) -> None:
    running = start_tls()
    path = running.folder / name
    kept = path.read_bytes()
    path.unlink()
    code, body = running.readyz()
    assert code == 503
    assert body["reason"] == f"TLS certificate: {path} cannot be read: No such file or directory"
    with running.connection() as connection:   # the pair in service still serves
        assert fetch(connection) == (200, b"Dublin mail")
    path.write_bytes(kept)
    assert running.readyz()[0] == 200


def test_an_expired_certificate_makes_the_proxy_not_ready(start_tls: Callable[..., TlsProxy]) -> None:
    ca = make_ca()
    running = start_tls(expired_server_certificate(ca), ca=ca)
    code, body = running.readyz()
    assert code == 503
    assert body["reason"].startswith("TLS certificate expired at ")
    running.install(server_certificate(ca))
    wait_until(lambda: running.readyz()[0] == 200, timeout=10)
    assert status(f"{running.proxy.admin_url}/healthz") == 200


def test_with_a_client_ca_a_client_certificate_is_required(start_tls: Callable[..., TlsProxy],
                                                           tmp_path: Path) -> None:
    ca = make_ca()
    clients = make_ca("workload CA")
    client_ca, _ = clients.write(tmp_path / "clients", "ca")
    running = start_tls(ca=ca, client_ca=client_ca)
    workload = spiffe_client_certificate(clients).write(tmp_path / "clients", "workload")
    stranger = spiffe_client_certificate(make_ca("another CA")).write(tmp_path / "clients", "stranger")
    with running.connection(client_context(running.ca_file, workload)) as connection:
        assert fetch(connection) == (200, b"Dublin mail")
    for client in (None, stranger):
        # TLS 1.3 sends the server's refusal after the client's handshake ends: it may surface on the request.
        with running.connection(client_context(running.ca_file, client)) as refused, \
                pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected)):
            fetch(refused)


@pytest.mark.parametrize("with_client_ca", [True, False])
def test_the_verified_client_certificate_reaches_the_request_head(
        start_tls: Callable[..., TlsProxy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        with_client_ca: bool) -> None:
    heads: list[RequestHead] = []

    def recorded(request: Any) -> RequestHead:
        heads.append(real_request_head(request))
        return heads[-1]

    real_request_head = gateway.request_head
    monkeypatch.setattr(gateway, "request_head", recorded)
    clients = make_ca("workload CA")
    client_ca, _ = clients.write(tmp_path / "clients", "ca")
    workload = spiffe_client_certificate(clients, "spiffe://cluster.local/ns/mail/sa/reader").write(
        tmp_path / "clients", "workload")
    running = start_tls(client_ca=client_ca if with_client_ca else None)
    with running.connection(client_context(running.ca_file, workload)) as connection:
        assert fetch(connection) == (200, b"Dublin mail")
        assert fetch(connection) == (200, b"Dublin mail")   # a second request on the same connection
    expected = PeerCertificate("spiffe://cluster.local/ns/mail/sa/reader", "CN=reader",
                               ("spiffe://cluster.local/ns/mail/sa/reader",))
    # Without a client CA the proxy asks for no certificate: nothing unverified is ever passed on.
    assert [head.peer_certificate for head in heads] == [expected if with_client_ca else None] * 2


def write_config(folder: Path, section: str) -> Path:
    path = folder / "bailiwick.yaml"
    path.write_text(f"listen_tls:\n{section}")
    return path


@pytest.mark.parametrize(("section", "message"), [
    ("  key: server.key\n", "listen_tls.certificate: is required"),
    ("  certificate: server.crt\n", "listen_tls.key: is required"),
    ("  certificate: missing.crt\n  key: server.key\n", "No such file or directory"),
    ("  certificate: server.crt\n  key: other.key\n", "cannot be used: the key is not the certificate's"),
    ("  certificate: server.key\n  key: server.key\n", "listen_tls.certificate:"),
    ("  certificate: server.crt\n  key: server.key\n  client_ca: server.key\n", "listen_tls.client_ca:"),
    ("  certificate: server.crt\n  key: server.key\n  min_version: '1.1'\n", 'expected "1.2" or "1.3"'),
    ("  certificate: server.crt\n  key: server.key\n  reload: 5\n", "unknown setting"),
    ("  certificate: server.crt\n  key: server.key\n  crl: server.crt\n", "set listen_tls.client_ca too"),
    ("  certificate: server.crt\n  key: server.key\n  client_ca: server.crt\n  crl: server.crt\n",
     "listen_tls.crl: "),
    ("  certificate: server.crt\n  key: server.key\n  reload_interval_seconds: 0\n", "must be between 0.1"),
])
def test_listen_tls_is_checked_at_start(tmp_path: Path, section: str, message: str) -> None:
    ca = make_ca()
    server_certificate(ca).write(tmp_path, "server")
    (tmp_path / "other.key").write_bytes(server_certificate(ca).key_pem)
    with pytest.raises(ConfigError) as refused:
        load_config(write_config(tmp_path, section), environ={})
    assert message in str(refused.value)


def test_listen_tls_paths_are_the_config_files_folders(tmp_path: Path) -> None:
    ca = make_ca()
    server_certificate(ca).write(tmp_path / "tls", "server")
    ca.write(tmp_path / "tls", "ca")
    config = load_config(write_config(tmp_path, "  certificate: tls/server.crt\n  key: tls/server.key\n"
                                                "  client_ca: tls/ca.crt\n"), environ={})
    assert config.listen_tls == ListenTlsConfig(certificate=tmp_path / "tls/server.crt",
                                                key=tmp_path / "tls/server.key", client_ca=tmp_path / "tls/ca.crt")
    assert load_config(None, environ={}).listen_tls is None


def test_the_listener_speaks_plain_http_without_listen_tls(proxy: ProxyThread) -> None:
    assert proxy.running is not None
    assert proxy.running.tls is None
    with socket.create_connection(proxy.running.data_address, timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert sock.recv(5) == b"HTTP/"


def refused(running: TlsProxy, client: tuple[Path, Path]) -> bool:
    """Whether a new connection presenting `client` is refused (in the handshake, or at its first request)."""
    try:
        with running.connection(client_context(running.ca_file, client)) as connection:
            fetch(connection)
    except (ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected):
        return True
    return False


def test_a_revoked_client_certificate_is_refused_and_the_crl_is_reloaded(
        start_tls: Callable[..., TlsProxy], tmp_path: Path) -> None:
    clients = make_ca("workload CA")
    folder = tmp_path / "clients"
    client_ca, _ = clients.write(folder, "ca")
    first, second = spiffe_client_certificate(clients), spiffe_client_certificate(clients)
    first_files, second_files = first.write(folder, "first"), second.write(folder, "second")
    crl = folder / "crl.pem"
    write_crl(crl, clients, (first,))
    running = start_tls(client_ca=client_ca, crl=crl)
    assert refused(running, first_files)
    assert not refused(running, second_files)
    # Revoked later: new handshakes are refused once the new CRL is read.
    write_crl(crl, clients, (first, second))
    wait_until(lambda: refused(running, second_files), timeout=10)
    assert refused(running, first_files)
    # A CRL that does not load: the last good one stays, and /readyz says so.
    crl.write_bytes(b"-----BEGIN X509 CRL-----\nnot a CRL\n-----END X509 CRL-----\n")
    wait_until(lambda: running.readyz()[0] == 503, timeout=10)
    assert "CRL" in running.readyz()[1]["reason"]
    assert refused(running, second_files)
    assert refused(running, first_files)
    write_crl(crl, clients, ())
    wait_until(lambda: running.readyz()[0] == 200, timeout=10)
    assert not refused(running, second_files)


def test_a_crl_that_does_not_load_holds_no_certificate_rotation_back(
        start_tls: Callable[..., TlsProxy], tmp_path: Path) -> None:
    clients = make_ca("workload CA")
    folder = tmp_path / "clients"
    client_ca, _ = clients.write(folder, "ca")
    revoked, good = spiffe_client_certificate(clients), spiffe_client_certificate(clients)
    revoked_files, good_files = revoked.write(folder, "revoked"), good.write(folder, "good")
    crl = folder / "crl.pem"
    write_crl(crl, clients, (revoked,))
    running = start_tls(client_ca=client_ca, crl=crl)
    crl.write_bytes(b"-----BEGIN X509 CRL-----\nnot a CRL\n-----END X509 CRL-----\n")
    wait_until(lambda: "CRL" in running.readyz()[1].get("reason", ""), timeout=10)
    with running.connection(client_context(running.ca_file, good_files)) as connection:
        connection.connect()
        first = serial_of(connection)
    # The certificate rotates meanwhile: it goes into service, with the CRL in service (the last good one).
    running.install(server_certificate(running.ca, serial=first + 1))

    def new_serial() -> int:
        with running.connection(client_context(running.ca_file, good_files)) as connection:
            connection.connect()
            return serial_of(connection)

    wait_until(lambda: new_serial() == first + 1, timeout=10)
    assert refused(running, revoked_files)
    assert not refused(running, good_files)
    assert running.readyz()[1]["tls"]["serial"] == f"{first + 1:x}"


def test_a_new_crl_waits_for_a_certificate_pair_that_loads_then_goes_into_service(
        start_tls: Callable[..., TlsProxy], tmp_path: Path) -> None:
    clients = make_ca("workload CA")
    folder = tmp_path / "clients"
    client_ca, _ = clients.write(folder, "ca")
    client = spiffe_client_certificate(clients)
    client_files = client.write(folder, "client")
    crl = folder / "crl.pem"
    write_crl(crl, clients, ())
    running = start_tls(client_ca=client_ca, crl=crl)
    assert not refused(running, client_files)
    # The certificate on disk no longer matches its key, and the client is revoked meanwhile.
    (running.folder / "server.crt").write_bytes(server_certificate(running.ca).cert_pem)
    wait_until(lambda: running.readyz()[0] == 503, timeout=10)
    write_crl(crl, clients, (client,))
    tls = running.proxy.running.tls if running.proxy.running is not None else None
    assert tls is not None
    # /readyz names the pair (it comes first); the CRL says why it is not in service.
    wait_until(lambda: "waits for a certificate pair that loads" in (tls.crl_failure or ""), timeout=10)
    assert running.readyz()[1]["reason"].startswith("TLS certificate: ")
    # The pair is mended: the CRL it waited for goes into service with it, with no change to the CRL file.
    running.install(server_certificate(running.ca))
    wait_until(lambda: running.readyz()[0] == 200, timeout=10)
    assert refused(running, client_files)


def test_the_certificates_expiry_and_reloads_are_metrics(start_tls: Callable[..., TlsProxy]) -> None:
    first = server_certificate(make_ca(), days=7)
    running = start_tls(first)
    expiry = "bailiwick_tls_certificate_expiry_timestamp_seconds "
    assert metric(running.proxy, expiry) == first.certificate.not_valid_after_utc.timestamp()
    # A good rotation: counted, and the new certificate's expiry reported.
    longer = server_certificate(running.ca, days=30)
    running.install(longer)
    wait_until(lambda: metric(running.proxy, 'bailiwick_tls_reloads_total{result="success"}') == 1, timeout=10)
    assert metric(running.proxy, expiry) == longer.certificate.not_valid_after_utc.timestamp()
    # A pair that does not load: counted, and the expiry stays the one in service.
    (running.folder / "server.crt").write_bytes(server_certificate(running.ca, days=1).cert_pem)
    wait_until(lambda: metric(running.proxy, 'bailiwick_tls_reloads_total{result="failure"}') >= 1, timeout=10)
    assert metric(running.proxy, expiry) == longer.certificate.not_valid_after_utc.timestamp()
