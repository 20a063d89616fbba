"""Identity by network address, for callers that send no token.

The operator lists networks and their jurisdictions; an address takes the
jurisdiction of the most specific network that holds it (longest prefix), so
``10.20.5.0/24: DE`` inside ``10.20.0.0/16: IE`` means what it says.

Lookups go through a `PrefixIndex` built once at start: for each prefix
length in use, a dictionary from network address to value, so a lookup costs
one dictionary probe per distinct prefix length, longest first, however many
networks are configured. The trusted-proxy list uses the same index.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from proxy.config import NetworkRule
from proxy.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

T = TypeVar("T")


def parse_address(text: str) -> IPAddress | None:
    """An IP address from `text`, or None; IPv4-mapped IPv6 becomes IPv4, a zone is dropped."""
    try:
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class _Level(Generic[T]):
    """The networks of one IP version and one prefix length."""

    mask: int
    entries: dict[int, tuple[IPNetwork, T]]


class PrefixIndex(Generic[T]):
    """Networks with a value each; finds the longest-prefix network holding an address."""

    def __init__(self, entries: Iterable[tuple[IPNetwork, T]]) -> None:
        """Index `entries`; a network listed twice keeps its last value."""
        by_version: dict[int, dict[int, dict[int, tuple[IPNetwork, T]]]] = {4: {}, 6: {}}
        for network, value in entries:
            level = by_version[network.version].setdefault(network.prefixlen, {})
            level[int(network.network_address)] = (network, value)
        self._levels: dict[int, tuple[_Level[T], ...]] = {
            version: tuple(
                _Level(mask=_mask(version, length), entries=levels[length])
                for length in sorted(levels, reverse=True)
            )
            for version, levels in by_version.items()
        }

    def longest(self, address: IPAddress) -> tuple[IPNetwork, T] | None:
        """The most specific network holding `address`, with its value; None if none does."""
        value = int(address)
        for level in self._levels[address.version]:
            found = level.entries.get(value & level.mask)
            if found is not None:
                return found
        return None

    def __contains__(self, address: IPAddress) -> bool:
        return self.longest(address) is not None


def _mask(version: int, length: int) -> int:
    bits = 32 if version == 4 else 128
    return ((1 << length) - 1) << (bits - length)


class NetworkTable:
    """The operator's network rules, by most specific network."""

    def __init__(self, rules: Iterable[NetworkRule]) -> None:
        """Raises `ConfigError` when one network is given two jurisdictions."""
        chosen: dict[IPNetwork, NetworkRule] = {}
        for rule in rules:
            known = chosen.setdefault(rule.cidr, rule)
            if known.jurisdiction != rule.jurisdiction:
                raise ConfigError(
                    f"identity.networks: {rule.cidr} is given two jurisdictions "
                    f"({known.jurisdiction} and {rule.jurisdiction})"
                )
        self._index = PrefixIndex(chosen.items())

    def lookup(self, address: IPAddress) -> NetworkRule | None:
        """The rule of the most specific network holding `address`, or None."""
        found = self._index.longest(address)
        return found[1] if found is not None else None
