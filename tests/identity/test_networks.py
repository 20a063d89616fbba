"""Network identity: the most specific configured network wins, for IPv4 and IPv6."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.config import NetworkRule
from proxy.errors import ConfigError
from proxy.identity.networks import NetworkTable, PrefixIndex, parse_address


def rule(cidr: str, jurisdiction: str) -> NetworkRule:
    return NetworkRule(cidr=ipaddress.ip_network(cidr), jurisdiction=jurisdiction)


TABLE = NetworkTable(
    [
        rule("10.0.0.0/8", "US"),
        rule("10.20.0.0/16", "IE"),
        rule("10.20.5.0/24", "DE"),
        rule("10.20.5.7/32", "FR"),
        rule("192.168.0.0/16", "NL"),
        rule("2001:db8::/32", "SE"),
        rule("2001:db8:ab::/48", "FI"),
        rule("::/0", "CH"),
    ]
)


@pytest.mark.parametrize(
    ("address", "cidr", "jurisdiction"),
    [
        ("10.1.2.3", "10.0.0.0/8", "US"),
        ("10.20.0.1", "10.20.0.0/16", "IE"),
        ("10.20.255.255", "10.20.0.0/16", "IE"),
        ("10.20.5.1", "10.20.5.0/24", "DE"),
        ("10.20.5.7", "10.20.5.7/32", "FR"),
        ("192.168.77.1", "192.168.0.0/16", "NL"),
        ("2001:db8:1::1", "2001:db8::/32", "SE"),
        ("2001:db8:ab:1::1", "2001:db8:ab::/48", "FI"),
        ("fe80::1", "::/0", "CH"),
    ],
)
def test_most_specific_network_wins(address: str, cidr: str, jurisdiction: str) -> None:
    found = TABLE.lookup(ipaddress.ip_address(address))
    assert found is not None
    assert (str(found.cidr), found.jurisdiction) == (cidr, jurisdiction)


@pytest.mark.parametrize("address", ["11.0.0.1", "9.255.255.255", "172.16.0.1", "127.0.0.1"])
def test_addresses_outside_every_network_match_nothing(address: str) -> None:
    assert TABLE.lookup(ipaddress.ip_address(address)) is None


def test_ipv4_networks_do_not_hold_ipv6_addresses() -> None:
    table = NetworkTable([rule("0.0.0.0/0", "IE")])
    assert table.lookup(ipaddress.ip_address("::1")) is None
    assert table.lookup(ipaddress.ip_address("8.8.8.8")) is not None


def test_one_network_with_two_jurisdictions_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"10\.0\.0\.0/8 is given two jurisdictions \(IE and DE\)"):
        NetworkTable([rule("10.0.0.0/8", "IE"), rule("10.0.0.0/8", "DE")])


def test_one_network_listed_twice_alike_is_fine() -> None:
    table = NetworkTable([rule("10.0.0.0/8", "IE"), rule("10.0.0.0/8", "IE")])
    found = table.lookup(ipaddress.ip_address("10.9.9.9"))
    assert found is not None
    assert found.jurisdiction == "IE"


def test_prefix_index_membership() -> None:
    index = PrefixIndex([(ipaddress.ip_network("172.16.0.0/12"), True)])
    assert ipaddress.ip_address("172.31.255.255") in index
    assert ipaddress.ip_address("172.32.0.0") not in index


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", "10.0.0.1"),
        (" 10.0.0.1 ", "10.0.0.1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),  # a dual-stack socket's view of an IPv4 peer
        ("2001:DB8::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("10.0.0.256", None),
        ("10.0.0.1:8080", None),
        ("example.com", None),
        ("", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (str(parsed) if parsed is not None else None) == expected
