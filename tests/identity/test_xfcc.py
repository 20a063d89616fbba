"""X-Forwarded-Client-Cert: parsed exactly as Envoy writes it, believed only from the mesh proxy.

Parser: Envoy's documented examples, hostile spellings, and a round trip of any
header written the way Envoy writes one. Reader: the last element's URI, from
trusted peers only; every header that could be read two ways refused. Resolver:
the workload is a source like a token; a token or access key may agree with it,
never differ.
"""

from __future__ import annotations

import ipaddress
import string
from dataclasses import replace

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config import AccessKeyRule, IdentityConfig, JwtIssuer, NetworkRule
from proxy.config.workloads import MatchKind, WorkloadRule, XfccConfig
from proxy.domain import Caller
from proxy.errors import AmbiguousIdentity, ForwardedCertRefused, SignatureMismatch, Unauthenticated
from proxy.identity import IdentityResolver
from proxy.identity.workload import WorkloadTable
from proxy.identity.xfcc import KEYS, REPEATABLE, Element, MalformedXfcc, Workload, XfccReader, parse

from .support import AUDIENCE, ISSUER, NOW, SECRET, FakeClock, claims, headers

HASH = "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688"
IE_ID = "spiffe://cluster.local/ns/mail/sa/reader"
US_ID = "spiffe://cluster.local/ns/us-mail/sa/reader"
UNMAPPED_ID = "spiffe://other.example/ns/mail/sa/reader"
MESH = "spiffe://cluster.local/ns/storage/sa/bailiwick"


# --- the parser: Envoy's documented examples ------------------------------------------------------

ENVOY_EXAMPLES = [
    (f"By=http://frontend.lyft.com;Hash={HASH};URI=http://testclient.lyft.com",
     [[("By", "http://frontend.lyft.com"), ("Hash", HASH), ("URI", "http://testclient.lyft.com")]]),
    (f"By=http://frontend.lyft.com;Hash={HASH};URI=http://testclient.lyft.com,"
     f"By=http://backend.lyft.com;Hash={HASH};URI=http://frontend.lyft.com",
     [[("By", "http://frontend.lyft.com"), ("Hash", HASH), ("URI", "http://testclient.lyft.com")],
      [("By", "http://backend.lyft.com"), ("Hash", HASH), ("URI", "http://frontend.lyft.com")]]),
    (f'By=http://frontend.lyft.com;Hash={HASH};Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";'
     "URI=http://testclient.lyft.com",
     [[("By", "http://frontend.lyft.com"), ("Hash", HASH),
       ("Subject", "/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client"), ("URI", "http://testclient.lyft.com")]]),
    (f'By=http://frontend.lyft.com;Hash={HASH};Cert="-----BEGIN%20CERTIFICATE-----%0cert%0A-----END%20CERTIFICATE-----%0A";'
     f'Chain="-----BEGIN%20CERTIFICATE-----%0cert%0A-----END%20CERTIFICATE-----%0A-----BEGIN%20CERTIFICATE-----%0intermediate%0A-----END%20CERTIFICATE-----%0A";'
     'Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com;DNS=lyft.com;DNS=www.lyft.com',
     [[("By", "http://frontend.lyft.com"), ("Hash", HASH),
       ("Cert", "-----BEGIN%20CERTIFICATE-----%0cert%0A-----END%20CERTIFICATE-----%0A"),
       ("Chain", "-----BEGIN%20CERTIFICATE-----%0cert%0A-----END%20CERTIFICATE-----%0A"
                 "-----BEGIN%20CERTIFICATE-----%0intermediate%0A-----END%20CERTIFICATE-----%0A"),
       ("Subject", "/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client"), ("URI", "http://testclient.lyft.com"),
       ("DNS", "lyft.com"), ("DNS", "www.lyft.com")]]),
    # Istio's sidecar: By is the proxy's own SPIFFE ID, URI the caller's; a Subject with commas is quoted.
    (f'By={MESH};Hash={HASH};Subject="CN=reader,O=Mail\\, Inc.";URI={IE_ID}',
     [[("By", MESH), ("Hash", HASH), ("Subject", "CN=reader,O=Mail, Inc."), ("URI", IE_ID)]]),
    ('Subject="a \\"quoted\\" \\\\ name";URI=x', [[("Subject", 'a "quoted" \\ name'), ("URI", "x")]]),
    ('Subject="";URI=x', [[("Subject", ""), ("URI", "x")]]),
    ("URI=a, URI=b", [[("URI", "a")], [("URI", "b")]]),
]


@pytest.mark.parametrize(("header", "elements"), ENVOY_EXAMPLES)
def test_envoy_examples_parse_to_their_elements(header: str, elements: list[list[tuple[str, str]]]) -> None:
    assert parse(header) == tuple(Element(tuple(pairs)) for pairs in elements)


@pytest.mark.parametrize(("header", "why"), [
    ("", "expected Key=value"),
    ("URI", "expected Key=value"),
    ("uri=spiffe://td/a", "unknown key"),
    ("Foo=bar", "unknown key"),
    ("=x", "unknown key"),
    ("By=a;By=b", "By given twice"),
    ("Hash=a;URI=x;Hash=b", "Hash given twice"),
    ("Subject=a;Subject=b", "Subject given twice"),
    ("URI=x;", "ends with a separator"),
    ("URI=x,", "ends with a separator"),
    ("URI=x,,URI=y", "unknown key"),
    ("URI=x;;By=y", "unknown key"),
    ('Subject="CN=a', "not closed"),
    ('Subject="CN=a\\', "backslash"),
    ('Subject="CN=a"x;URI=y', "followed by"),
    ("URI=a=b", "unquoted value holds '='"),
    ('URI=a"b', "unquoted value holds '\"'"),
    ("URI=a\\b", "unquoted value holds '\\\\'"),
    (" URI=x", "unknown key"),
    ("URI =x", "unknown key"),
])
def test_headers_envoy_would_not_write_are_malformed(header: str, why: str) -> None:
    with pytest.raises(MalformedXfcc) as raised:
        parse(header)
    assert why in str(raised.value)


def envoy_value(value: str) -> str:
    """A value as Envoy writes it: quoted (with '"' and '\\' escaped) when it holds ',', ';', '=' or a quote."""
    if value == "" or any(c in value for c in ',;="\\'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


values = st.text(string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "").replace("\x0c", ""),
                 max_size=30)


@st.composite
def elements(draw: st.DrawFn) -> list[tuple[str, str]]:
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=8))
    once = [k for i, k in enumerate(keys) if k in REPEATABLE or k not in keys[:i]]
    return [(key, draw(values)) for key in once]


@given(st.lists(elements(), min_size=1, max_size=4), st.sampled_from([",", ", "]))
def test_any_header_written_as_envoy_writes_it_reads_back(written: list[list[tuple[str, str]]],
                                                          between: str) -> None:
    header = between.join(";".join(f"{key}={envoy_value(value)}" for key, value in element) for element in written)
    assert parse(header) == tuple(Element(tuple(pairs)) for pairs in written)


@given(st.text(max_size=60))
def test_any_text_parses_or_is_malformed_nothing_else(text: str) -> None:
    try:
        parsed = parse(text)
    except MalformedXfcc:
        return
    assert parsed
    assert all(element.pairs for element in parsed)
    assert all(key in KEYS for element in parsed for key, _ in element.pairs)


# --- the reader: which header is believed -----------------------------------------------------------

WORKLOADS = (
    WorkloadRule(MatchKind.SPIFFE_PREFIX, "spiffe://cluster.local/ns/mail/", "IE"),
    WorkloadRule(MatchKind.SPIFFE_PREFIX, "spiffe://cluster.local/ns/us-mail/", "US"),
)
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
READER = XfccReader(LOOPBACK, WorkloadTable(WORKLOADS))


def element(uri: str | None, by: str = MESH) -> str:
    return f"By={by};Hash={HASH};Subject=\"\"" + (f";URI={uri}" if uri is not None else "")


@pytest.mark.parametrize(("header", "peer", "found"), [
    (element(IE_ID), "127.0.0.1", Workload(IE_ID, "IE")),
    (element(IE_ID), "::1", Workload(IE_ID, "IE")),
    (element(IE_ID), "::ffff:127.0.0.1", Workload(IE_ID, "IE")),
    (element(US_ID), "127.0.0.1", Workload(US_ID, "US")),
    # Each hop appends: the last element is the local mesh proxy's, whatever came before.
    (element(US_ID, by="spiffe://edge/gw") + "," + element(IE_ID), "127.0.0.1", Workload(IE_ID, "IE")),
    (element(IE_ID) + "," + element(US_ID), "127.0.0.1", Workload(US_ID, "US")),
    (f"URI={IE_ID};DNS=a;DNS=b", "127.0.0.2", Workload(IE_ID, "IE")),
    (f"URI={IE_ID};URI={IE_ID}", "127.0.0.1", Workload(IE_ID, "IE")),
])
def test_the_last_elements_uri_names_the_workload(header: str, peer: str, found: Workload) -> None:
    assert READER.workload(headers(("X-Forwarded-Client-Cert", header)), peer) == found


def test_a_request_without_the_header_names_no_workload() -> None:
    assert READER.workload(headers(("Host", "x")), "127.0.0.1") is None
    assert READER.workload(headers(("Host", "x")), "203.0.113.9") is None


@pytest.mark.parametrize(("given", "peer", "why"), [
    ([element(IE_ID)], "203.0.113.9", "not a trusted mesh proxy"),
    ([element(IE_ID)], "10.0.0.1", "not a trusted mesh proxy"),
    ([element(IE_ID)], None, "not a trusted mesh proxy"),
    ([element(IE_ID)], "not-an-address", "not a trusted mesh proxy"),
    ([element(IE_ID), element(IE_ID)], "127.0.0.1", "more than once"),
    ([element(US_ID), element(IE_ID)], "127.0.0.1", "more than once"),
    ([element(IE_ID) + ";"], "127.0.0.1", "malformed"),
    ([f'URI="{IE_ID}'], "127.0.0.1", "malformed"),
    ([f"Uri={IE_ID}"], "127.0.0.1", "malformed"),
    ([""], "127.0.0.1", "malformed"),
    ([element(None)], "127.0.0.1", "no URI"),
    ([element(IE_ID) + "," + element(None)], "127.0.0.1", "no URI"),   # the local proxy's element has none
    ([f"URI={IE_ID};URI={US_ID}"], "127.0.0.1", "more than one URI"),
    ([element("http://testclient.lyft.com")], "127.0.0.1", "not a SPIFFE ID"),
    ([element("spiffe://cluster.local/ns/mail/sa/../../us-mail/sa/x")], "127.0.0.1", "not a SPIFFE ID"),
    ([element("spiffe://Cluster.local/ns/mail/sa/reader")], "127.0.0.1", "not a SPIFFE ID"),
    ([element('"spiffe://cluster.local/ns/mail/sa/a%2F"')], "127.0.0.1", "not a SPIFFE ID"),
])
def test_a_header_that_cannot_be_believed_is_refused(given: list[str], peer: str | None, why: str) -> None:
    with pytest.raises(ForwardedCertRefused) as refused:
        READER.workload(headers(*(("X-Forwarded-Client-Cert", value) for value in given)), peer)
    assert why in refused.value.message
    assert refused.value.code == "InvalidClientCertHeader"


def test_an_id_no_rule_maps_identifies_nobody() -> None:
    with pytest.raises(Unauthenticated) as refused:
        READER.workload(headers(("X-Forwarded-Client-Cert", element(UNMAPPED_ID))), "127.0.0.1")
    assert not isinstance(refused.value, ForwardedCertRefused)
    assert UNMAPPED_ID in refused.value.message
    assert "identity.workloads" in refused.value.message


def test_trusted_peers_are_the_configured_networks_only() -> None:
    reader = XfccReader((ipaddress.ip_network("10.1.0.0/16"),), WorkloadTable(WORKLOADS))
    given = headers(("X-Forwarded-Client-Cert", element(IE_ID)))
    assert reader.workload(given, "10.1.2.3") == Workload(IE_ID, "IE")
    with pytest.raises(ForwardedCertRefused):
        reader.workload(given, "127.0.0.1")


# --- the resolver: the workload among the other sources ---------------------------------------------

PEER = "127.0.0.1"


def identity(enabled: bool = True) -> IdentityConfig:
    return IdentityConfig(
        jwt=(JwtIssuer(issuer=ISSUER, audience=AUDIENCE, algorithms=("HS256",), hs256_secret=SECRET),),
        networks=(NetworkRule(ipaddress.ip_network("127.0.0.0/8"), "DE"),),
        workloads=WORKLOADS,
        xfcc=XfccConfig(enabled=enabled),
    )


def token(jurisdiction: str) -> str:
    return jwt.encode(claims(NOW, jurisdiction=jurisdiction), SECRET, algorithm="HS256")


def resolver(enabled: bool = True) -> IdentityResolver:
    return IdentityResolver(identity(enabled), clock=FakeClock())


async def test_the_workload_identifies_a_caller_without_a_token_before_the_network() -> None:
    found = await resolver().identify(headers(("X-Forwarded-Client-Cert", element(IE_ID))), PEER)
    assert found.caller == Caller(subject=IE_ID, jurisdiction="IE", source=PEER, method="xfcc")
    assert found.token_headers == frozenset()


async def test_when_off_the_header_is_not_read() -> None:
    found = await resolver(enabled=False).identify(
        headers(("X-Forwarded-Client-Cert", element(US_ID)), ("X-Forwarded-Client-Cert", "junk")), PEER)
    assert found.caller.method == "network"
    assert found.caller.jurisdiction == "DE"


async def test_a_token_that_agrees_with_the_workload_names_the_caller() -> None:
    found = await resolver().identify(
        headers(("X-Forwarded-Client-Cert", element(IE_ID)), ("Authorization", f"Bearer {token('IE')}")), PEER)
    assert (found.caller.method, found.caller.jurisdiction, found.caller.subject) == ("jwt", "IE", "alice@example.ie")
    assert found.token_headers == frozenset({"authorization"})


@pytest.mark.parametrize(("workload", "claimed"), [(IE_ID, "US"), (US_ID, "IE"), (US_ID, "DE")])
async def test_a_token_and_a_workload_naming_different_jurisdictions_are_refused(workload: str,
                                                                                claimed: str) -> None:
    with pytest.raises(AmbiguousIdentity) as refused:
        await resolver().identify(
            headers(("X-Forwarded-Client-Cert", element(workload)), ("Authorization", f"Bearer {token(claimed)}")),
            PEER)
    assert refused.value.code == "AmbiguousIdentity"
    assert workload in refused.value.message


async def test_a_bad_token_is_refused_even_with_a_workload() -> None:
    with pytest.raises(Unauthenticated) as refused:
        await resolver().identify(
            headers(("X-Forwarded-Client-Cert", element(IE_ID)), ("Authorization", "Bearer not.a.token")), PEER)
    assert refused.value.code == "InvalidToken"


@pytest.mark.parametrize("peer", ["203.0.113.9", "10.0.0.1"])
async def test_a_callers_own_header_is_refused_not_ignored(peer: str) -> None:
    with pytest.raises(ForwardedCertRefused):
        await resolver().identify(
            headers(("X-Forwarded-Client-Cert", element(IE_ID)), ("Authorization", f"Bearer {token('IE')}")), peer)


SIGV4 = ("AWS4-HMAC-SHA256 Credential={key}/20231114/eu-west-1/s3/aws4_request, "
         "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + "0" * 64)


@pytest.mark.parametrize(("key", "refused"), [("AKIDUNKNOWN", None), ("AKIDKNOWN", SignatureMismatch)])
async def test_an_access_key_signature_is_judged_beside_the_workload(key: str,
                                                                    refused: type[Exception] | None) -> None:
    """A key the proxy holds no secret for identifies nobody (the workload does); a bad signature is refused."""
    config = replace(identity(), access_key_region="eu-west-1", access_keys=(
        AccessKeyRule(access_key_id="AKIDKNOWN", jurisdiction="US", subject="us-app",
                      secret_access_key="known-secret-value"),))
    given = headers(("X-Forwarded-Client-Cert", element(IE_ID)), ("Host", "127.0.0.1"),
                    ("X-Amz-Date", "20231114T221320Z"), ("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD"),
                    ("Authorization", SIGV4.format(key=key)))
    resolving = IdentityResolver(config, clock=FakeClock()).identify(given, PEER, "/bucket/key", "GET")
    if refused is None:
        assert (await resolving).caller == Caller(subject=IE_ID, jurisdiction="IE", source=PEER, method="xfcc")
    else:
        with pytest.raises(refused) as raised:
            await resolving
        assert not isinstance(raised.value, AmbiguousIdentity | ForwardedCertRefused)
