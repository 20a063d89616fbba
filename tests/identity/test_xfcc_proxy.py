"""X-Forwarded-Client-Cert through the real proxy in front of moto, over plain HTTP on loopback.

The test client stands in for the mesh sidecar: it connects from 127.0.0.1 and
writes the header as Envoy does. One proxy trusts loopback (the default); a
second trusts only 10.0.0.0/8, so the same header from 127.0.0.1 is a caller's
own copy. Every refusal carries its code in the XML body and in
``X-Bailiwick-Error-Code``, is audited as a denial with that code and the
caller it names (nobody, for a header that cannot be believed), and nothing
reaches moto; an allowed request reaches moto without the header (the
recording relay sees every byte sent upstream), and its audit line names the
SPIFFE ID.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from proxy.config import Config
from proxy.config.workloads import MatchKind, WorkloadRule, XfccConfig
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, US, make_token, proxy_config
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record

HASH = "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688"
IE_ID = "spiffe://cluster.local/ns/mail/sa/reader"
US_ID = "spiffe://cluster.local/ns/us-mail/sa/reader"
# moto refuses anonymous reads of a private object; without IAM checks it takes any signature.
SIGV4 = ("AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
         "SignedHeaders=host, Signature=00")
IE_OBJECT = f"/{DUBLIN}/alice/inbox/1.eml"
US_OBJECT = f"/{US}/bob/inbox/1.eml"
WORKLOADS = (
    WorkloadRule(MatchKind.SPIFFE_PREFIX, "spiffe://cluster.local/ns/mail/", "IE"),
    WorkloadRule(MatchKind.SPIFFE_ID, US_ID, "US"),
)


def xfcc(uri: str) -> str:
    return f'By=spiffe://cluster.local/ns/storage/sa/bailiwick;Hash={HASH};Subject="";URI={uri}'


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    code: str | None
    header_code: str | None   # X-Bailiwick-Error-Code
    decision_id: str | None
    forwarded: bytes


def with_xfcc(base: Config, trusted: str) -> Config:
    identity = replace(base.identity, workloads=WORKLOADS,
                       xfcc=XfccConfig(enabled=True, trusted_peers=(ipaddress.ip_network(trusted),)))
    return replace(base, identity=identity)


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xfcc") / "audit.jsonl"


@pytest.fixture(scope="module")
def mesh(recorder: Recorder, seeded: None, audit: Path) -> Iterator[ProxyThread]:
    """A proxy that reads XFCC from loopback (its sidecar)."""
    running = ProxyThread(with_xfcc(proxy_config(recorder.url, audit), "127.0.0.0/8")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def elsewhere(recorder: Recorder, seeded: None, audit: Path) -> Iterator[ProxyThread]:
    """A proxy whose mesh proxy is somewhere else: XFCC from 127.0.0.1 is the caller's own."""
    running = ProxyThread(with_xfcc(proxy_config(recorder.url, audit), "10.0.0.0/8")).start()
    yield running
    running.stop()


def get(proxy: ProxyThread, recorder: Recorder, path: str, headers: list[tuple[str, str]]) -> Answer:
    """GET `path` with exactly these header lines (repeats kept), signed as any S3 client signs; what moto got."""
    mark = recorder.mark()
    port = int(proxy.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", f"127.0.0.1:{port}")
        connection.putheader("Authorization", SIGV4)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        decision = response.getheader("x-amz-request-id")
        found = re.search(rb"<Code>([^<]+)</Code>", body)
        return Answer(response.status, found.group(1).decode() if found else None,
                      response.getheader("X-Bailiwick-Error-Code"), decision, recorder.since(mark))
    finally:
        connection.close()


def audited(audit: Path, decision_id: str | None) -> dict[str, Any]:
    assert decision_id is not None
    return wait_for_record(audit, lambda record: record["decision_id"] == decision_id)


@pytest.mark.parametrize("header", [
    pytest.param(xfcc(IE_ID), id="one element"),
    # The local mesh proxy's element is the last: an earlier hop's (or a caller's) names nobody.
    pytest.param(f"{xfcc(US_ID)},{xfcc(IE_ID)}", id="after another hop's element"),
])
def test_a_mapped_workload_reads_its_jurisdictions_data(
    mesh: ProxyThread, recorder: Recorder, audit: Path, header: str,
) -> None:
    answer = get(mesh, recorder, IE_OBJECT, [("X-Forwarded-Client-Cert", header)])
    assert answer.status == 200
    assert b"GET " + IE_OBJECT.encode() in answer.forwarded
    assert b"x-forwarded-client-cert" not in answer.forwarded.lower()
    decision = re.findall(rb"(?im)^x-bailiwick-decision: *([0-9a-f]+)\r$", answer.forwarded)
    assert len(decision) == 1
    line = audited(audit, decision[0].decode())
    assert line["caller"]["subject"] == IE_ID
    assert line["caller"]["jurisdiction"] == "IE"
    assert line["decision"] == "allow"


def test_a_us_workload_is_refused_irish_data(mesh: ProxyThread, recorder: Recorder, audit: Path) -> None:
    answer = get(mesh, recorder, IE_OBJECT, [("X-Forwarded-Client-Cert", xfcc(US_ID))])
    assert (answer.status, answer.code, answer.forwarded) == (403, "AccessDenied", b"")
    line = audited(audit, answer.decision_id)
    assert (line["caller"]["subject"], line["caller"]["jurisdiction"]) == (US_ID, "US")


XFCC = "X-Forwarded-Client-Cert"
NOBODY = None   # refused before anyone was identified: the audit line names no caller


def refused_xfcc(case_id: str, headers: list[tuple[str, str]], code: str, why: str, *, via: str = "mesh",
                 path: str = IE_OBJECT, caller: tuple[str, str] | None = NOBODY) -> Any:
    """A request `via` the mesh proxy (trusts loopback) or `elsewhere` (does not), refused `code` for `why`.

    `caller`: the (subject, jurisdiction) the audit line names, when a believed header identified one.
    """
    return pytest.param(via, path, headers, code, why, caller, id=case_id)


UNTRUSTED_PEERS = [
    refused_xfcc("untrusted peer, Irish data", [(XFCC, xfcc(IE_ID))], "InvalidClientCertHeader",
                 "not a trusted mesh proxy", via="elsewhere"),
    refused_xfcc("untrusted peer, US data", [(XFCC, xfcc(IE_ID))], "InvalidClientCertHeader",
                 "not a trusted mesh proxy", via="elsewhere", path=US_OBJECT),
    # A good token does not make the caller's own header acceptable: the header is refused, not ignored.
    refused_xfcc("untrusted peer, with an agreeing token", [(XFCC, xfcc(IE_ID)), ("X-Bailiwick-Token", "IE")],
                 "InvalidClientCertHeader", "not a trusted mesh proxy", via="elsewhere"),
    refused_xfcc("untrusted peer, a malformed header", [(XFCC, "garbage")], "InvalidClientCertHeader",
                 "not a trusted mesh proxy", via="elsewhere"),
]

FORGED = [
    refused_xfcc("ends with a separator", [(XFCC, xfcc(IE_ID) + ";")], "InvalidClientCertHeader", "malformed"),
    refused_xfcc("quote never closed", [(XFCC, f'URI="{IE_ID}')], "InvalidClientCertHeader", "malformed"),
    refused_xfcc("no URI", [(XFCC, f"By=x;Hash={HASH}")], "InvalidClientCertHeader", "no URI"),
    refused_xfcc("last element without a URI", [(XFCC, xfcc(IE_ID) + ",By=x")], "InvalidClientCertHeader",
                 "no URI"),
    refused_xfcc("dot-dot segment", [(XFCC, xfcc("spiffe://cluster.local/ns/mail/../us-mail"))],
                 "InvalidClientCertHeader", "not a SPIFFE ID"),
    refused_xfcc("upper-case scheme", [(XFCC, xfcc("SPIFFE://cluster.local/ns/mail/sa/reader"))],
                 "InvalidClientCertHeader", "not a SPIFFE ID"),
    refused_xfcc("percent-encoded segment", [(XFCC, xfcc("spiffe://cluster.local/ns/mail/sa/re%61der"))],
                 "InvalidClientCertHeader", "not a SPIFFE ID"),
    refused_xfcc("not a SPIFFE URI", [(XFCC, xfcc("https://cluster.local/ns/mail/sa/reader"))],
                 "InvalidClientCertHeader", "not a SPIFFE ID"),
    # Quoting tricks: a second URI inside a quoted value is part of that value, never a key of its own.
    refused_xfcc("a URI quoted around a second URI", [(XFCC, xfcc(f'"{US_ID},URI={IE_ID}"'))],
                 "InvalidClientCertHeader", "not a SPIFFE ID"),
    refused_xfcc("a URI hidden in a quoted Subject", [(XFCC, f'By=x;Hash={HASH};Subject="CN=x\\";URI={IE_ID}"')],
                 "InvalidClientCertHeader", "no URI"),
    refused_xfcc("an escaped closing quote", [(XFCC, f'URI="{IE_ID}\\"')], "InvalidClientCertHeader",
                 "malformed"),
    refused_xfcc("a quote inside an unquoted value", [(XFCC, f'URI={IE_ID}"')], "InvalidClientCertHeader",
                 "malformed"),
    refused_xfcc("text after a quoted value", [(XFCC, f'URI="{IE_ID}"x;By=y')], "InvalidClientCertHeader",
                 "malformed"),
    refused_xfcc("a key in lower case", [(XFCC, f"uri={IE_ID}")], "InvalidClientCertHeader", "malformed"),
    refused_xfcc("Hash twice", [(XFCC, f"Hash={HASH};Hash={HASH};URI={IE_ID}")], "InvalidClientCertHeader",
                 "malformed"),
    refused_xfcc("an ID no rule maps", [(XFCC, xfcc("spiffe://elsewhere/ns/mail/sa/reader"))], "InvalidToken",
                 "identity.workloads"),
]

DOUBLED = [
    refused_xfcc("two equal header lines", [(XFCC, xfcc(IE_ID)), (XFCC, xfcc(IE_ID))], "InvalidClientCertHeader",
                 "more than once"),
    refused_xfcc("two header lines, names spelled apart", [(XFCC, xfcc(US_ID)), (XFCC.lower(), xfcc(IE_ID))],
                 "InvalidClientCertHeader", "more than once"),
    refused_xfcc("one element naming two URIs", [(XFCC, xfcc(IE_ID) + f";URI={US_ID}")],
                 "InvalidClientCertHeader", "more than one URI"),
    # A list: the local mesh proxy's element is the last; an element before it (a caller's own) names nobody.
    refused_xfcc("a caller's IE element before the mesh proxy's US one", [(XFCC, f"{xfcc(IE_ID)},{xfcc(US_ID)}")],
                 "AccessDenied", "not allowed for callers in US", caller=(US_ID, "US")),
    # A token's jurisdiction here; the token itself is made when the test runs (it expires).
    refused_xfcc("the header names IE, a token US", [(XFCC, xfcc(IE_ID)), ("X-Bailiwick-Token", "US")],
                 "AmbiguousIdentity", "names IE"),
    refused_xfcc("the header names US, a token IE", [(XFCC, xfcc(US_ID)), ("X-Bailiwick-Token", "IE")],
                 "AmbiguousIdentity", "names US", path=US_OBJECT),
]


@pytest.mark.parametrize(("via", "path", "headers", "code", "why", "caller"),
                         [*UNTRUSTED_PEERS, *FORGED, *DOUBLED])
def test_headers_that_cannot_be_believed_are_refused_and_audited(
    request: pytest.FixtureRequest, recorder: Recorder, audit: Path, via: str, path: str,
    headers: list[tuple[str, str]], code: str, why: str, caller: tuple[str, str] | None,
) -> None:
    proxy: ProxyThread = request.getfixturevalue(via)
    headers = [(name, make_token(value) if name == "X-Bailiwick-Token" else value) for name, value in headers]
    answer = get(proxy, recorder, path, headers)
    assert (answer.status, answer.code, answer.header_code, answer.forwarded) == (403, code, code, b"")
    line = audited(audit, answer.decision_id)
    assert (line["decision"], line["error_code"]) == ("deny", code)
    assert why in line["reason"]
    subject, jurisdiction = caller if caller is not None else (None, None)
    assert (line["caller"]["subject"], line["caller"]["jurisdiction"]) == (subject, jurisdiction)


def test_a_token_that_agrees_is_the_caller_and_the_header_is_not_forwarded(
    mesh: ProxyThread, recorder: Recorder,
) -> None:
    answer = get(mesh, recorder, IE_OBJECT,
                 [("X-Forwarded-Client-Cert", xfcc(IE_ID)), ("X-Bailiwick-Token", make_token("IE"))])
    assert answer.status == 200
    assert b"x-forwarded-client-cert" not in answer.forwarded.lower()


def test_the_header_is_never_forwarded_even_when_not_read(proxy: ProxyThread, recorder: Recorder) -> None:
    """The session proxy does not read XFCC at all; it still never passes the header on."""
    answer = get(proxy, recorder, IE_OBJECT,
                 [("X-Forwarded-Client-Cert", xfcc(US_ID)), ("X-Bailiwick-Token", make_token("IE"))])
    assert answer.status == 200
    assert b"GET " + IE_OBJECT.encode() in answer.forwarded
    assert b"x-forwarded-client-cert" not in answer.forwarded.lower()


@pytest.mark.parametrize("name", ["X_Forwarded_Client_Cert", "X-Forwarded_Client-Cert"])
def test_an_underscore_spelling_is_refused_not_forwarded(mesh: ProxyThread, recorder: Recorder, name: str) -> None:
    """Servers that read "_" as "-" (WSGI) would see the header: it is refused, never passed on."""
    answer = get(mesh, recorder, IE_OBJECT, [(name, xfcc(IE_ID)), ("X-Bailiwick-Token", make_token("IE"))])
    assert (answer.status, answer.forwarded) == (400, b"")
