"""GeoIP is asked once per request, whichever source names the caller: counted on the real proxy's /metrics.

Two proxies in front of moto, both with `identity.geoip` as the last resort and
loopback as a trusted proxy (so the test names each request's client address
in X-Forwarded-For): one reads X-Forwarded-Client-Cert from loopback, the other
listens with TLS and takes client certificates. Each request is one identity
mode; it must add exactly one to ``bailiwick_geoip_lookups_total``, and its
audit line names the caller that mode should have found (None: refused unidentified).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from proxy.config import AccessKeyRule, Config, NetworkRule
from proxy.config.geoip import GeoIpConfig
from proxy.config.tls import ListenTlsConfig
from proxy.config.workloads import XfccConfig
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, make_token, proxy_config
from tests.identity.test_mtls import IE_ID, WORKLOADS
from tests.support.certs import make_ca, server_certificate, spiffe_client_certificate
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record, written_records

from .geodb import ABSENT_ADDRESS, IE_ADDRESS, US_ADDRESS, US_NETWORK, write_database

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
KEY_ID, KEY_SECRET, KEY_SUBJECT = "AKIAGEOIPONCE", "geoip-once-secret", "mail-client-ie"
REGION = "eu-west-1"
NETWORK_SUBJECT = f"network:{US_NETWORK}"
LOOKUPS = re.compile(r'^bailiwick_geoip_lookups_total\{result="\w+"\} (\S+)$', re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Located:
    """A running proxy, its audit log, and how to reach it (`verify`: the CA file for https)."""

    proxy: ProxyThread
    audit: Path
    url: str
    verify: str | bool = False
    certificate: tuple[str, str] | None = None   # the client certificate boto3 presents (mTLS)


def geolocated(config: Config, database: Path) -> Config:
    identity = replace(
        config.identity, trusted_proxies=(LOOPBACK,), workloads=WORKLOADS,
        networks=(NetworkRule(ipaddress.ip_network(US_NETWORK), "US"),),
        access_keys=(AccessKeyRule(KEY_ID, "IE", KEY_SUBJECT, secret_access_key=KEY_SECRET),),
        access_key_region=REGION, geoip=GeoIpConfig(database=database, use_as_jurisdiction=True))
    return replace(config, identity=identity)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("geoip-once")


@pytest.fixture(scope="module")
def database(folder: Path) -> Path:
    return write_database(folder / "countries.mmdb")


@pytest.fixture(scope="module")
def mesh(recorder: Recorder, seeded: None, folder: Path, database: Path) -> Iterator[Located]:
    """Behind a mesh sidecar on loopback: X-Forwarded-Client-Cert names the workload."""
    audit = folder / "mesh.jsonl"
    config = geolocated(proxy_config(recorder.url, audit), database)
    config = replace(config, identity=replace(config.identity, xfcc=XfccConfig(enabled=True,
                                                                               trusted_peers=(LOOPBACK,))))
    running = ProxyThread(config).start()
    yield Located(running, audit, running.url)
    running.stop()


@pytest.fixture(scope="module")
def mtls(recorder: Recorder, seeded: None, folder: Path, database: Path) -> Iterator[Located]:
    """TLS on the listener with a client CA: a client certificate names the workload."""
    server_ca = make_ca()
    ca_file, _ = server_ca.write(folder, "ca")
    cert, key = server_certificate(server_ca).write(folder / "tls", "server")
    clients = make_ca("workload CA")
    client_ca, _ = clients.write(folder / "clients", "ca")
    certificate, certificate_key = spiffe_client_certificate(clients, IE_ID).write(folder / "clients", "reader")
    audit = folder / "mtls.jsonl"
    config = proxy_config(recorder.url, audit, listen_tls=ListenTlsConfig(certificate=cert, key=key,
                                                                          client_ca=client_ca))
    running = ProxyThread(geolocated(config, database)).start()
    assert running.running is not None
    yield Located(running, audit, f"https://127.0.0.1:{running.running.data_address[1]}", str(ca_file),
                  (str(certificate), str(certificate_key)))
    running.stop()


def client(to: Located, *, address: str, key: tuple[str, str] | None = None,
           headers: tuple[tuple[str, str], ...] = ()) -> Any:
    """boto3 from `address` (X-Forwarded-For of a trusted proxy), signing with `key` (None: unsigned), adding
    `headers`, and presenting the proxy's client certificate if it takes one."""
    signing = {} if key is None else {"aws_access_key_id": key[0], "aws_secret_access_key": key[1]}
    made = boto3.client("s3", endpoint_url=to.url, region_name=REGION, verify=to.verify, **signing,
                        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                          client_cert=to.certificate,
                                          signature_version=UNSIGNED if key is None else "s3v4"))

    def add(request: Any, **_: Any) -> None:
        request.headers["X-Forwarded-For"] = address
        for name, value in headers:
            request.headers[name] = make_token("IE") if value == FRESH_IE_TOKEN else value

    made.meta.events.register("before-send.s3", add)
    return made


def lookups(to: Located) -> float:
    with urllib.request.urlopen(f"{to.proxy.admin_url}/metrics", timeout=10) as answer:
        return sum(float(count) for count in LOOKUPS.findall(answer.read().decode()))


def xfcc(uri: str) -> tuple[str, str]:
    return ("X-Forwarded-Client-Cert", f"By=spiffe://cluster.local/ns/storage/sa/bailiwick;URI={uri}")


# Made when sent (`client`): a token made at collection would expire before a long suite reaches the test.
FRESH_IE_TOKEN = "an IE token, made when the request is sent"
TOKEN = ("X-Bailiwick-Token", FRESH_IE_TOKEN)
MAPPED_KEY = (KEY_ID, KEY_SECRET)
UNKNOWN_KEY = ("AKIANOSECRETHELD", "whatever")
# The table: which proxy, the client's address, what it presents, and who the audit line names.
MESH_MODES: list[tuple[str, dict[str, Any], str | None]] = [
    ("jwt", {"address": US_ADDRESS, "headers": (TOKEN,)}, "client-1"),
    ("access key", {"address": US_ADDRESS, "key": MAPPED_KEY}, KEY_SUBJECT),
    ("network", {"address": US_ADDRESS}, NETWORK_SUBJECT),
    ("geoip", {"address": IE_ADDRESS}, "geoip:IE"),
    ("nobody, the country unknown", {"address": ABSENT_ADDRESS}, None),
    ("an unknown access key, the country unknown", {"address": ABSENT_ADDRESS, "key": UNKNOWN_KEY}, None),
    ("xfcc alone, the country unknown", {"address": ABSENT_ADDRESS, "headers": (xfcc(IE_ID),)}, IE_ID),
    ("xfcc alone, the country known", {"address": IE_ADDRESS, "headers": (xfcc(IE_ID),)}, IE_ID),
    ("xfcc and a token", {"address": ABSENT_ADDRESS, "headers": (xfcc(IE_ID), TOKEN)}, "client-1"),
    ("xfcc and an unknown access key", {"address": ABSENT_ADDRESS, "key": UNKNOWN_KEY, "headers": (xfcc(IE_ID),)},
     IE_ID),
    ("xfcc and a mapped access key", {"address": US_ADDRESS, "key": MAPPED_KEY, "headers": (xfcc(IE_ID),)},
     KEY_SUBJECT),
]


def one_request(to: Located, make: Callable[[], Any]) -> tuple[float, str | None]:
    """Lookups one GET adds, and the subject its audit line names."""
    before, earlier = lookups(to), {record["decision_id"] for record in written_records(to.audit)}
    with contextlib.suppress(ClientError):   # refused or not, the request was identified (or not) once
        make().get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    line = wait_for_record(to.audit, lambda record: record["decision_id"] not in earlier)
    return lookups(to) - before, line["caller"]["subject"]


@pytest.mark.parametrize(("mode", "request_", "subject"), MESH_MODES, ids=[mode for mode, _, _ in MESH_MODES])
def test_one_lookup_per_request_behind_a_mesh(mesh: Located, mode: str, request_: dict[str, Any],
                                              subject: str | None) -> None:
    assert one_request(mesh, lambda: client(mesh, **request_)) == (1, subject)


@pytest.mark.parametrize(
    ("address", "headers", "subject"),
    [(ABSENT_ADDRESS, (), IE_ID), (US_ADDRESS, (), IE_ID), (US_ADDRESS, (TOKEN,), "client-1")],
    ids=["the country unknown", "the country known", "and a token"],
)
def test_one_lookup_per_request_with_a_client_certificate(
    mtls: Located, address: str, headers: tuple[tuple[str, str], ...], subject: str,
) -> None:
    assert one_request(mtls, lambda: client(mtls, address=address, headers=headers)) == (1, subject)
