"""The client address: X-Forwarded-For only from trusted proxies, right-most untrusted hop."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.errors import Unauthenticated
from proxy.identity.forwarded import ClientLocator

from .support import headers

LOCATOR = ClientLocator(
    [ipaddress.ip_network("10.99.0.0/16"), ipaddress.ip_network("fd00:99::/32")]
)


@pytest.mark.parametrize(
    ("peer", "forwarded", "source"),
    [
        # Untrusted peers: X-Forwarded-For is ignored, whatever it says.
        ("203.0.113.9", ["10.20.0.1"], "203.0.113.9"),
        ("203.0.113.9", ["garbage"], "203.0.113.9"),
        ("10.98.0.1", ["10.20.0.1"], "10.98.0.1"),
        # Trusted peers: the right-most hop that is not a trusted proxy.
        ("10.99.0.1", ["10.20.0.1"], "10.20.0.1"),
        ("10.99.0.1", ["198.51.100.1, 10.20.0.1"], "10.20.0.1"),
        ("10.99.0.1", ["198.51.100.1, 10.20.0.1, 10.99.0.2"], "10.20.0.1"),
        ("10.99.0.1", ["198.51.100.1", "10.20.0.1 , 10.99.3.3"], "10.20.0.1"),
        ("10.99.0.1", ["2001:db8::7"], "2001:db8::7"),
        ("::ffff:10.99.0.1", ["10.20.0.1"], "10.20.0.1"),
        ("fd00:99::1", ["10.20.0.1"], "10.20.0.1"),
        # Every hop trusted: the request began at the first.
        ("10.99.0.1", ["10.99.0.5, 10.99.0.6"], "10.99.0.5"),
        # A trusted peer without the header is the client itself.
        ("10.99.0.1", [], "10.99.0.1"),
    ],
)
def test_locates_the_client(peer: str, forwarded: list[str], source: str) -> None:
    client = LOCATOR.locate(headers(*[("X-Forwarded-For", v) for v in forwarded]), peer)
    assert client.source == source
    assert str(client.address) == source


@pytest.mark.parametrize(
    "forwarded",
    [
        ["10.20.0.1,"],
        [",10.20.0.1"],
        ["10.20.0.1,,10.20.0.2"],
        ["unknown"],
        ["10.20.0.1:5555"],
        ["[2001:db8::1]"],
        ["10.20.0.1", ""],
        ["for=10.20.0.1"],
    ],
)
def test_refuses_malformed_forwarded_for_from_trusted_peers(forwarded: list[str]) -> None:
    with pytest.raises(Unauthenticated) as refused:
        LOCATOR.locate(headers(*[("X-Forwarded-For", v) for v in forwarded]), "10.99.0.1")
    assert refused.value.code == "InvalidToken"
    assert "X-Forwarded-For from a trusted proxy is malformed" in refused.value.message


@pytest.mark.parametrize(("peer", "source"), [(None, ""), ("/run/bailiwick.sock", "/run/bailiwick.sock")])
def test_peers_that_are_not_addresses_have_no_address(peer: str | None, source: str) -> None:
    client = LOCATOR.locate(headers(("X-Forwarded-For", "10.20.0.1")), peer)
    assert client.address is None
    assert client.source == source
