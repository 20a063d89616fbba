"""`peer_certificate`: what getpeercert() says of a verified client certificate, as a plain value."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.peercert import PeerCertificate, peer_certificate

WORKLOAD = "spiffe://cluster.local/ns/mail/sa/reader"


def decoded(*uris: str, subject: tuple[tuple[tuple[str, str], ...], ...] = ((("commonName", "reader"),),),
            dns: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"subject": subject,
            "subjectAltName": tuple(("URI", uri) for uri in uris) + tuple(("DNS", name) for name in dns)}


@pytest.mark.parametrize(("certificate", "expected"), [
    (None, None),
    ({}, None),   # what getpeercert() answers when the client sent no certificate
    (decoded(WORKLOAD), PeerCertificate(WORKLOAD, "CN=reader", (WORKLOAD,))),
    (decoded(WORKLOAD, dns=("reader.mail.svc",)), PeerCertificate(WORKLOAD, "CN=reader", (WORKLOAD,))),
    # An X.509-SVID has exactly one URI SAN: two make no SPIFFE ID, whichever comes first.
    (decoded(WORKLOAD, "spiffe://cluster.local/ns/mail/sa/admin"),
     PeerCertificate(None, "CN=reader", (WORKLOAD, "spiffe://cluster.local/ns/mail/sa/admin"))),
    (decoded("https://example.com/reader"), PeerCertificate(None, "CN=reader", ("https://example.com/reader",))),
    # Read strictly (proxy.spiffe): an ID that could be read two ways is none.
    (decoded("spiffe://Cluster.local/ns/mail/sa/reader"),
     PeerCertificate(None, "CN=reader", ("spiffe://Cluster.local/ns/mail/sa/reader",))),
    (decoded("spiffe://cluster.local/ns/mail/sa/../admin"),
     PeerCertificate(None, "CN=reader", ("spiffe://cluster.local/ns/mail/sa/../admin",))),
    (decoded(subject=((("countryName", "IE"),), (("organizationName", "Example, Ltd"),), (("commonName", "r"),))),
     PeerCertificate(None, "CN=r,O=Example\\, Ltd,C=IE")),
    (decoded(subject=((("commonName", "a"), ("userId", "7")),)), PeerCertificate(None, "CN=a+UID=7")),
    # A value that spells another attribute is escaped, so it cannot match a `subject` rule naming two.
    (decoded(subject=((("commonName", "a+UID=7"),),)), PeerCertificate(None, "CN=a\\+UID\\=7")),
    (decoded(subject=((("commonName", 'x;"<>\\'),),)), PeerCertificate(None, 'CN=x\\;\\"\\<\\>\\\\')),
    (decoded(subject=((("commonName", "#r "),),)), PeerCertificate(None, "CN=\\#r\\ ")),
    (decoded(subject=((("commonName", " r"),),)), PeerCertificate(None, "CN=\\ r")),
])
def test_a_verified_certificate_becomes_a_plain_value(certificate: dict[str, Any] | None,
                                                      expected: PeerCertificate | None) -> None:
    assert peer_certificate(certificate) == expected
