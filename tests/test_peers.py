"""Who counts as one peer for the per-peer limits: an IPv4 address, an IPv6 /64."""

from __future__ import annotations

import pytest

from proxy.peers import peer_key


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:1", "2001:db8::/64"),                 # another address of the same /64: the same peer
        ("2001:db8:0:0:8a2e:370:7334:1", "2001:db8::/64"),
        ("2001:db8:0:1::1", "2001:db8:0:1::/64"),              # the next /64: another peer
        ("2001:DB8::1", "2001:db8::/64"),                      # however it is spelt
        ("::1", "::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),                     # IPv4-mapped (dual-stack listener): the IPv4 peer
        ("fe80::1%eth0", "fe80::/64"),                         # a scope id is no part of the address
        ("", ""),                                              # no address (a Unix socket)
    ],
)
def test_peer_key(host: str, key: str) -> None:
    assert peer_key(host) == key
