"""An https:// storage server, end to end: boto3 -> proxy -> TLS -> moto checking every signature.

moto runs with IAM authentication on, behind `TlsRelay` (a TLS terminator with
a certificate of a CA made here); the proxy re-signs with ``rewrite_host``, so
moto checks a signature made over the Host the proxy sent on the TLS
connection. A handshake the proxy must refuse (another CA, another name, an
expired certificate, a key that is not pinned) is a 502 for the caller,
audited with its reason and counted as ``kind="tls"``, and the relay received
not a byte of the request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from proxy.config import SigningConfig, TagConfig, UpstreamConfig
from proxy.errors import ConfigError
from proxy.harness import ProxyThread
from proxy.upstream import tls
from proxy.upstream.pool import Pool
from proxy.upstream.tls import VerifiedConnector, client_context, spki_sha256
from tests.conftest import make_token, proxy_config
from tests.s3.test_resign import write_credentials
from tests.support.iam import SignedStore, signed_store
from tests.support.metrics import metric
from tests.support.records import wait_for_record
from tests.support.tlsrelay import TlsRelay
from tests.support.upstream_certs import ServerFiles, TestCa

BUCKET = "mail-eu-dublin"   # the example policies' Dublin mailboxes: IE callers may write alice's
KEY = "alice/inbox/tls.eml"
TLS_ERRORS = 'bailiwick_upstream_errors_total{api="s3",kind="tls"}'


@dataclass(frozen=True)
class Certs:
    ca: TestCa
    other_ca: TestCa
    good: ServerFiles       # 127.0.0.1, by the test CA
    localhost: ServerFiles  # localhost, by the test CA
    foreign: ServerFiles    # 127.0.0.1, by another CA
    misnamed: ServerFiles   # storage.test only, by the test CA
    expired: ServerFiles    # 127.0.0.1, by the test CA, expired yesterday


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("upstream-certs")
    ca, other = TestCa(folder), TestCa(folder / "other", "another CA")
    return Certs(ca, other, ca.issue("good"), ca.issue("localhost", ("localhost",)), other.issue("foreign"),
                 ca.issue("misnamed", ("storage.test",)), ca.issue("expired", expired=True))


@pytest.fixture(scope="module")
def store() -> Iterator[SignedStore]:
    with signed_store("tls-proxy", {BUCKET: "eu-west-1"}) as running:
        yield running


@contextmanager
def proxied(folder: Path, store: SignedStore, upstream: str, ca_bundle: Path | None,
            pins: tuple[str, ...] = ()) -> Iterator[ProxyThread]:
    """A proxy re-signing (Host: the upstream's own name) for `store` behind `upstream`."""
    write_credentials(folder / "credentials", store.key, store.secret)
    config = proxy_config(upstream, folder / "audit.jsonl", tag=TagConfig(signing_key=None))
    signing = SigningConfig(region="us-east-1", credentials_file=folder / "credentials", rewrite_host=True)
    config = replace(config, s3=replace(config.s3, sign=signing),
                     upstream=replace(config.upstream, ca_bundle=ca_bundle, pin_sha256=pins))
    running = ProxyThread(config).start()
    try:
        yield running
    finally:
        running.stop()


def caller(proxy: ProxyThread) -> Any:
    """An IE caller whose one request is one attempt (boto3 retries a 502 otherwise)."""
    token = make_token("IE")
    client = boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing",
                          config=BotoConfig(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))

    def add_token(request: Any, **_: Any) -> None:
        request.headers["X-Bailiwick-Token"] = token

    client.meta.events.register("before-send.s3", add_token)
    return client


def round_trip(proxy: ProxyThread, body: bytes) -> bytes:
    client = caller(proxy)
    client.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    return bytes(client.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())


@pytest.mark.parametrize("pinned", [False, True], ids=["ca-bundle", "ca-bundle-and-pin"])
def test_an_https_upstream_verified_by_its_ca_serves_boto3(
    tmp_path: Path, certs: Certs, store: SignedStore, pinned: bool,
) -> None:
    body = bytes(range(256)) * 1000
    pins = (spki_sha256(certs.good.der()), base64.b64encode(b"\0" * 32).decode()) if pinned else ()
    with TlsRelay(store.server.port, certs.good) as relay, \
            proxied(tmp_path, store, relay.url, certs.ca.bundle, pins) as proxy:
        assert round_trip(proxy, body) == body
        # moto checked the proxy's signature over the Host it was sent, the upstream's own.
        assert f"\r\nHost: 127.0.0.1:{relay.port}\r\n".encode() in relay.received
        assert metric(proxy, TLS_ERRORS) == 0


def test_sni_the_verified_name_and_host_all_come_from_the_upstream_url(
    tmp_path: Path, certs: Certs, store: SignedStore,
) -> None:
    with TlsRelay(store.server.port, certs.localhost, host="localhost") as relay, \
            proxied(tmp_path, store, relay.url, certs.ca.bundle) as proxy:
        assert round_trip(proxy, b"by name") == b"by name"
        assert set(relay.server_names) == {"localhost"}
        assert f"\r\nHost: localhost:{relay.port}\r\n".encode() in relay.received


@pytest.mark.parametrize(("served", "trusted", "pinned", "why"), [
    ("foreign", "ca", False, "unable to get local issuer certificate"),
    ("good", None, False, "unable to get local issuer certificate"),   # the system's roots know no test CA
    ("misnamed", "ca", False, "IP address mismatch"),
    ("expired", "ca", False, "certificate has expired"),
    ("good", "ca", True, "is not one of upstream.pin_sha256"),
], ids=["unknown-ca", "system-roots", "wrong-name", "expired", "pin-mismatch"])
def test_a_refused_handshake_is_a_502_audited_counted_and_nothing_is_sent(
    tmp_path: Path, certs: Certs, store: SignedStore, served: str, trusted: str | None, pinned: bool, why: str,
) -> None:
    files: ServerFiles = getattr(certs, served)
    bundle = certs.ca.bundle if trusted else None
    # A pin of another key: the chain verifies, the key is not the one expected.
    pins = (spki_sha256(certs.foreign.der()),) if pinned else ()
    with TlsRelay(store.server.port, files) as relay, proxied(tmp_path, store, relay.url, bundle, pins) as proxy:
        with pytest.raises(ClientError) as refused:
            caller(proxy).put_object(Bucket=BUCKET, Key="alice/inbox/refused.eml", Body=b"never sent")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
        record = wait_for_record(tmp_path / "audit.jsonl",
                                 lambda r: r["request"]["resource"] == f"s3://{BUCKET}/alice/inbox/refused.eml")
        assert record["status"] == 502
        assert why in record["reason"], record["reason"]
        assert metric(proxy, TLS_ERRORS) == 1
        assert relay.received == b""


def test_spki_sha256_is_the_digest_openssl_and_envoy_write(certs: Certs) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = x509.load_der_x509_certificate(certs.good.der()).public_key()
    info = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    # openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64
    assert spki_sha256(certs.good.der()) == base64.b64encode(hashlib.sha256(info).digest()).decode()
    assert spki_sha256(certs.good.der()) != spki_sha256(certs.foreign.der())


def test_readyz_says_why_the_storage_server_is_refused(tmp_path: Path, certs: Certs, store: SignedStore) -> None:
    with TlsRelay(store.server.port, certs.foreign) as relay, \
            proxied(tmp_path, store, relay.url, certs.ca.bundle) as proxy:
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=10)
        with answer.value as error:
            assert error.code == 503
            assert "certificate did not verify" in json.loads(error.read())["reason"]
        assert relay.received == b""


@pytest.mark.parametrize(("served", "pinned", "answers"), [
    ("good", "good", True),
    ("good", "foreign", False),
    ("foreign", None, False),
], ids=["pinned", "pin-mismatch", "unknown-ca"])
def test_the_tools_connect_as_the_proxy_does(
    certs: Certs, store: SignedStore, served: str, pinned: str | None, answers: bool,
) -> None:
    files: ServerFiles = getattr(certs, served)
    pins = (spki_sha256(getattr(certs, pinned).der()),) if pinned else ()

    async def head(url: str) -> int | str:
        """The status of a HEAD, or the refusal's text."""
        upstream = UpstreamConfig(url=url, ca_bundle=certs.ca.bundle, pin_sha256=pins)
        try:
            async with aiohttp.ClientSession(connector=VerifiedConnector(upstream)) as session, \
                    session.head(url + "/") as answer:
                return answer.status
        except aiohttp.ClientError as exc:
            return str(exc)
        finally:
            await asyncio.sleep(0.05)   # a transport closed after a failed handshake finishes closing

    with TlsRelay(store.server.port, files) as relay:
        answer = asyncio.run(head(relay.url))
        if answers:
            assert isinstance(answer, int)   # moto's answer to an unsigned request: an answer
            assert relay.received.startswith(b"HEAD / HTTP/1.1\r\n")
        else:
            assert isinstance(answer, str)
            assert ("pin_sha256" if pinned else "certificate verify failed") in answer, answer
            assert relay.received == b""


REQUESTS_ON_ONE_CONNECTION = 3


def test_the_tools_check_a_pooled_connections_pin_once(certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[bytes] = []

    def counted(certificate_der: bytes) -> str:
        hashed.append(certificate_der)
        return spki_sha256(certificate_der)

    monkeypatch.setattr(tls, "spki_sha256", counted)
    created: list[object] = []

    async def on_create(_session: object, _context: object, params: object) -> None:
        created.append(params)

    traced = aiohttp.TraceConfig()
    traced.on_connection_create_end.append(on_create)

    async def gets() -> tuple[list[bytes], int]:
        """Bodies of GETs through one session, and the handshakes the TLS terminator saw."""
        # A plain server that keeps connections open (moto closes each), behind the TLS terminator.
        async def ok(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_route("GET", "/", ok)
        async with TestServer(app, host="127.0.0.1") as server:
            assert server.port is not None
            with TlsRelay(server.port, certs.good) as relay:
                upstream = UpstreamConfig(url=relay.url, ca_bundle=certs.ca.bundle,
                                          pin_sha256=(spki_sha256(certs.good.der()),))
                async with aiohttp.ClientSession(connector=VerifiedConnector(upstream),
                                                 trace_configs=[traced]) as session:
                    bodies = []
                    for _ in range(REQUESTS_ON_ONE_CONNECTION):
                        async with session.get(relay.url + "/") as answer:
                            bodies.append(await answer.read())
                return bodies, len(relay.server_names)

    bodies, handshakes = asyncio.run(gets())
    assert bodies == [b"ok"] * REQUESTS_ON_ONE_CONNECTION
    assert (handshakes, len(created)) == (1, 1)   # the requests shared one pooled connection
    assert hashed == [certs.good.der()]   # its certificate's key hashed once, for the connection


def test_a_ca_bundle_without_a_certificate_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    config = UpstreamConfig(url="https://s3.test", ca_bundle=tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match=re.escape(f"upstream.ca_bundle: {tmp_path / 'notes.txt'} holds no usable")):
        client_context(config)


NEW_CONNECTIONS = 3


def test_the_pool_checks_the_pin_on_every_new_connection(
    certs: Certs, store: SignedStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashed: list[bytes] = []

    def counted(certificate_der: bytes) -> str:
        hashed.append(certificate_der)
        return spki_sha256(certificate_der)

    monkeypatch.setattr(tls, "spki_sha256", counted)

    async def connects(url: str) -> None:
        pool = Pool(UpstreamConfig(url=url, ca_bundle=certs.ca.bundle, pin_sha256=(spki_sha256(certs.good.der()),)))
        try:
            for _ in range(NEW_CONNECTIONS):
                (await pool.connect()).abort()
        finally:
            pool.close()

    with TlsRelay(store.server.port, certs.good) as relay:
        asyncio.run(connects(relay.url))
    # No connection is trusted for another's check: a key rotated to an unpinned one is seen at the next.
    assert hashed == [certs.good.der()] * NEW_CONNECTIONS
