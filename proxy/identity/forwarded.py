"""Who the client is: the socket peer, or what a trusted proxy says in X-Forwarded-For.

Anyone can write ``X-Forwarded-For``, so it is read only when the peer is one
of the operator's trusted proxies (``identity.trusted_proxies``). Then the
client is the right-most address in the header that is not itself a trusted
proxy: entries to its left were written by the client or by hops nobody
vouches for. A trusted peer that sends a malformed header is refused rather
than guessed about.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from multidict import MultiMapping

from proxy.errors import Unauthenticated
from proxy.identity.networks import IPAddress, IPNetwork, PrefixIndex, parse_address

FORWARDED_FOR = "x-forwarded-for"


@dataclass(frozen=True, slots=True)
class Client:
    """The client's address, if it is one, and how to name it in `Caller.source`."""

    address: IPAddress | None
    source: str


class ClientLocator:
    """Finds the client's address from the peer and, for trusted peers, X-Forwarded-For."""

    def __init__(self, trusted_proxies: Iterable[IPNetwork]) -> None:
        self._trusted: PrefixIndex[bool] = PrefixIndex((net, True) for net in trusted_proxies)
        # A sidecar sees few distinct peers; parsing one costs more than the rest of this step.
        self._direct: dict[str, Client] = {}

    def locate(self, headers: MultiMapping[str], peer: str | None) -> Client:
        """The client behind this request.

        Raises `Unauthenticated` when a trusted peer sends a malformed X-Forwarded-For.
        """
        if peer is None:
            return Client(address=None, source="")
        known = self._direct.get(peer)
        if known is not None:
            return known
        address = parse_address(peer)
        if address is None:
            return Client(address=None, source=peer)
        if address not in self._trusted:
            direct = Client(address=address, source=str(address))
            if len(self._direct) < 4096:
                self._direct[peer] = direct
            return direct
        values = [value for name, value in headers.items() if name.lower() == FORWARDED_FOR]
        if not values:
            # The trusted proxy itself is the client (it forwarded nothing).
            return Client(address=address, source=str(address))
        client = self._from_forwarded(values)
        return Client(address=client, source=str(client))

    def _from_forwarded(self, values: list[str]) -> IPAddress:
        # Repeated headers form one list, in order (RFC 9110, section 5.3).
        hops: list[IPAddress] = []
        for entry in ",".join(values).split(","):
            hop = parse_address(entry) if entry.strip() else None
            if hop is None:
                raise Unauthenticated(
                    "X-Forwarded-For from a trusted proxy is malformed: "
                    "expected a comma-separated list of IP addresses"
                )
            hops.append(hop)
        for hop in reversed(hops):
            if hop not in self._trusted:
                return hop
        # Every hop is a trusted proxy: the first one is where the request began.
        return hops[0]
