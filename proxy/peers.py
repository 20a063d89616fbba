"""Who a connection comes from, for the limits one caller may hold.

The proxy's per-peer limits (connections held at once, exchanges in flight to
the storage server) count by the address of the socket, as the proxy sees it:
never by ``X-Forwarded-For``, which the caller writes. An IPv4 address counts
on its own. An IPv6 address counts by its /64: one host is normally given a
whole /64 (SLAAC, privacy addresses, a /64 per container or VM), so counting
single IPv6 addresses would let one caller open each connection from a new
address of its prefix. An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, on
a dual-stack listener) counts as the IPv4 address it maps.
"""

from __future__ import annotations

import functools
import ipaddress

# The IPv6 prefix length that counts as one peer.
IPV6_PEER_PREFIX = 64


def peer_key(host: str) -> str:
    """The name one peer's connections are counted under: the host, or its IPv6 /64."""
    if ":" not in host:
        return host   # IPv4 (the common case, and cheap), or no address at all ("")
    return _ipv6_key(host)


@functools.lru_cache(maxsize=4096)
def _ipv6_key(host: str) -> str:
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])   # a scope id (fe80::1%eth0) is no part of it
    except ValueError:
        return host
    mapped = address.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    network = ipaddress.IPv6Network((address, IPV6_PEER_PREFIX), strict=False)
    return str(network)
