"""A verified client certificate as the caller: mapped by `identity.workloads`, combined like XFCC.

Pure units: the certificate is the plain `PeerCertificate` value the listener
hands over. The mapping (SPIFFE ID first, else subject, unmapped identifies
nobody); the resolver's combination (a token may agree, never differ; the
network never stands in); and which of XFCC and the certificate names the
caller when both are there (a trusted mesh peer's certificate is the mesh's).
"""

from __future__ import annotations

import ipaddress

import jwt
import pytest

from proxy.config import IdentityConfig, JwtIssuer, NetworkRule
from proxy.config.workloads import MatchKind, WorkloadRule, XfccConfig
from proxy.domain import Caller
from proxy.errors import AmbiguousIdentity, ForwardedCertRefused, Unauthenticated
from proxy.identity import IdentityResolver
from proxy.identity.mtls import certificate_identity
from proxy.identity.workload import WorkloadTable
from proxy.peercert import PeerCertificate

from .support import AUDIENCE, ISSUER, NOW, SECRET, FakeClock, claims, headers

IE_ID = "spiffe://cluster.local/ns/mail/sa/reader"
US_ID = "spiffe://cluster.local/ns/us-mail/sa/reader"
UNMAPPED_ID = "spiffe://other.example/ns/mail/sa/reader"
MESH_ID = "spiffe://cluster.local/ns/storage/sa/bailiwick"
WORKLOADS = (
    WorkloadRule(MatchKind.SPIFFE_PREFIX, "spiffe://cluster.local/ns/mail/", "IE"),
    WorkloadRule(MatchKind.SPIFFE_ID, US_ID, "US"),
    WorkloadRule(MatchKind.SUBJECT, "CN=batch,O=Example", "DE"),
)
TABLE = WorkloadTable(WORKLOADS)


def cert(spiffe_id: str | None, subject: str = "CN=reader") -> PeerCertificate:
    return PeerCertificate(spiffe_id, subject, (spiffe_id,) if spiffe_id else ())


@pytest.mark.parametrize(("certificate", "found"), [
    (cert(IE_ID), (IE_ID, "IE")),
    (cert(US_ID), (US_ID, "US")),
    (cert(None, "CN=batch,O=Example"), ("CN=batch,O=Example", "DE")),
    # The SPIFFE ID is read first; the subject only when no rule maps the ID.
    (cert(US_ID, "CN=batch,O=Example"), (US_ID, "US")),
    (cert(UNMAPPED_ID, "CN=batch,O=Example"), ("CN=batch,O=Example", "DE")),
])
def test_the_certificate_is_mapped_by_the_workload_rules(certificate: PeerCertificate,
                                                         found: tuple[str, str]) -> None:
    assert certificate_identity(certificate, TABLE) == found


@pytest.mark.parametrize(("certificate", "named"), [
    (cert(UNMAPPED_ID), UNMAPPED_ID),
    (cert(None, "CN=batch"), "CN=batch"),   # subjects match exactly
    (cert(None, ""), "with no subject"),
])
def test_a_certificate_no_rule_maps_identifies_nobody(certificate: PeerCertificate, named: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        certificate_identity(certificate, TABLE)
    assert refused.value.code == "InvalidToken"
    assert named in refused.value.message


# --- the resolver ------------------------------------------------------------------------------------

PEER = "198.51.100.7"
MESH_PEER = "127.0.0.1"


def resolver(xfcc: bool = False, workloads: tuple[WorkloadRule, ...] = WORKLOADS) -> IdentityResolver:
    config = IdentityConfig(
        jwt=(JwtIssuer(issuer=ISSUER, audience=AUDIENCE, algorithms=("HS256",), hs256_secret=SECRET),),
        # Every peer here has a network: it must never stand in for a certificate.
        networks=(NetworkRule(ipaddress.ip_network("0.0.0.0/0"), "FR"),),
        workloads=workloads,
        xfcc=XfccConfig(enabled=xfcc),
    )
    return IdentityResolver(config, clock=FakeClock())


def bearer(jurisdiction: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {jwt.encode(claims(NOW, jurisdiction=jurisdiction), SECRET, algorithm='HS256')}")


async def test_a_verified_certificate_identifies_the_caller_before_the_network() -> None:
    found = await resolver().identify(headers(("Host", "x")), PEER, certificate=cert(IE_ID))
    assert found.caller == Caller(subject=IE_ID, jurisdiction="IE", source=PEER, method="mtls")
    assert found.token_headers == frozenset()


async def test_an_unmapped_certificate_is_refused_not_given_the_network() -> None:
    with pytest.raises(Unauthenticated) as refused:
        await resolver().identify(headers(("Host", "x")), PEER, certificate=cert(UNMAPPED_ID))
    assert UNMAPPED_ID in refused.value.message


async def test_a_token_that_agrees_names_the_caller() -> None:
    found = await resolver().identify(headers(bearer("IE")), PEER, certificate=cert(IE_ID))
    assert (found.caller.method, found.caller.jurisdiction) == ("jwt", "IE")


@pytest.mark.parametrize(("spiffe_id", "claimed"), [(IE_ID, "US"), (US_ID, "IE")])
async def test_a_token_naming_another_jurisdiction_is_ambiguous(spiffe_id: str, claimed: str) -> None:
    with pytest.raises(AmbiguousIdentity) as refused:
        await resolver().identify(headers(bearer(claimed)), PEER, certificate=cert(spiffe_id))
    assert spiffe_id in refused.value.message


async def test_without_workload_rules_a_certificate_only_admits_the_connection() -> None:
    found = await resolver(workloads=()).identify(headers(("Host", "x")), PEER, certificate=cert(UNMAPPED_ID))
    assert (found.caller.method, found.caller.jurisdiction) == ("network", "FR")


def xfcc(uri: str) -> tuple[str, str]:
    return ("X-Forwarded-Client-Cert", f"By={MESH_ID};URI={uri}")


async def test_behind_a_trusted_mesh_proxy_the_header_names_the_caller_not_the_mesh_certificate() -> None:
    mesh_cert = cert(US_ID)   # the mesh proxy's own certificate (mapped, to show it is not read)
    found = await resolver(xfcc=True).identify(headers(xfcc(IE_ID)), MESH_PEER, certificate=mesh_cert)
    assert found.caller == Caller(subject=IE_ID, jurisdiction="IE", source=MESH_PEER, method="xfcc")
    # No header: the mesh's certificate still does not name the caller; the caller's own sources do.
    found = await resolver(xfcc=True).identify(headers(bearer("IE")), MESH_PEER, certificate=mesh_cert)
    assert (found.caller.method, found.caller.jurisdiction) == ("jwt", "IE")


async def test_from_an_untrusted_peer_the_certificate_names_the_caller_and_a_header_is_refused() -> None:
    found = await resolver(xfcc=True).identify(headers(("Host", "x")), PEER, certificate=cert(IE_ID))
    assert (found.caller.method, found.caller.subject) == ("mtls", IE_ID)
    with pytest.raises(ForwardedCertRefused):
        await resolver(xfcc=True).identify(headers(xfcc(IE_ID)), PEER, certificate=cert(IE_ID))
