"""X-Forwarded-Client-Cert: the caller's certificate as the local mesh proxy verified it.

Behind Envoy (or Istio's sidecar) the TLS handshake with the calling workload
ends in the mesh proxy, which tells the application who the peer was in
``X-Forwarded-Client-Cert`` (XFCC). Envoy writes it as elements separated by
``,``, each a list of ``Key=value`` pairs separated by ``;``, with the keys
``By``, ``Hash``, ``Cert``, ``Chain``, ``Subject``, ``URI`` and ``DNS``; a
value holding ``,``, ``;`` or ``=`` is double-quoted, with ``"`` and ``\\``
escaped by a backslash (``Subject`` always is). Each hop appends its own
element, so the one the local mesh proxy wrote is the LAST one; the caller's
SPIFFE ID is its ``URI``.

Anyone can send the header, so it is read only from the operator's trusted
peers (``identity.xfcc.trusted_peers``, loopback by default), and every way
it could be read twice is refused rather than guessed about: two header
lines, a header that does not parse exactly, an unknown or repeated key, an
element without a ``URI`` or with two, a ``URI`` that is not a SPIFFE ID.
The header is never forwarded (`proxy.tags`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from multidict import MultiMapping

from proxy import spiffe
from proxy.config.workloads import IPNetwork
from proxy.errors import ForwardedCertRefused, Unauthenticated
from proxy.identity.networks import PrefixIndex, parse_address
from proxy.identity.workload import WorkloadTable

XFCC = "x-forwarded-client-cert"
KEYS = ("By", "Hash", "Cert", "Chain", "Subject", "URI", "DNS")
# A certificate may hold several DNS names; one of the other keys twice could be read two ways.
REPEATABLE = frozenset({"URI", "DNS"})


class MalformedXfcc(ValueError):
    """The header is not written as Envoy writes it."""


@dataclass(frozen=True, slots=True)
class Element:
    """One hop's element: its pairs, in order, keys spelled as Envoy spells them."""

    pairs: tuple[tuple[str, str], ...]

    def values(self, key: str) -> tuple[str, ...]:
        return tuple(value for name, value in self.pairs if name == key)


def parse(header: str) -> tuple[Element, ...]:
    """The elements of one XFCC header value, in order. Raises `MalformedXfcc`."""
    elements: list[Element] = []
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(header)
    while True:
        equals = header.find("=", i)
        if equals < 0:
            raise MalformedXfcc(f"expected Key=value at offset {i}")
        name = header[i:equals]
        key = name if name in KEYS else None   # spelled exactly as Envoy spells it
        if key is None:
            raise MalformedXfcc(f"unknown key {name[:40]!r} (expected one of {', '.join(KEYS)})")
        if key not in REPEATABLE and any(seen == key for seen, _ in pairs):
            raise MalformedXfcc(f"{key} given twice in one element")
        value, i = _value(header, equals + 1)
        pairs.append((key, value))
        if i == n:
            elements.append(Element(tuple(pairs)))
            return tuple(elements)
        if header[i] == ",":
            elements.append(Element(tuple(pairs)))
            pairs = []
            i += 1
            while i < n and header[i] in " \t":   # a list written ", " by a proxy that joined two
                i += 1
        else:  # ";"
            i += 1
        if i == n:
            raise MalformedXfcc("ends with a separator")


def _value(header: str, start: int) -> tuple[str, int]:
    """The value at `start` and the offset just after it (at a separator or the end)."""
    n = len(header)
    if start < n and header[start] == '"':
        out: list[str] = []
        i = start + 1
        while True:
            if i >= n:
                raise MalformedXfcc("a quoted value is not closed")
            char = header[i]
            if char == "\\":
                if i + 1 >= n:
                    raise MalformedXfcc("a quoted value ends in a backslash")
                out.append(header[i + 1])
                i += 2
            elif char == '"':
                i += 1
                break
            else:
                out.append(char)
                i += 1
        if i < n and header[i] not in ",;":
            raise MalformedXfcc("a quoted value is followed by something other than ';' or ','")
        return "".join(out), i
    i = start
    while i < n and header[i] not in ",;":
        if header[i] in '="\\':
            raise MalformedXfcc(f"an unquoted value holds {header[i]!r} (Envoy quotes such values)")
        i += 1
    return header[start:i], i


@dataclass(frozen=True, slots=True)
class Workload:
    """The caller the local mesh proxy vouched for: its SPIFFE ID and that ID's jurisdiction."""

    spiffe_id: str
    jurisdiction: str


class XfccReader:
    """Reads the caller's workload identity from X-Forwarded-Client-Cert, from trusted peers only."""

    def __init__(self, trusted_peers: Iterable[IPNetwork], workloads: WorkloadTable) -> None:
        self._trusted: PrefixIndex[bool] = PrefixIndex((network, True) for network in trusted_peers)
        self._workloads = workloads

    def trusts(self, peer: str | None) -> bool:
        """Whether `peer` is one of the trusted mesh proxies (whose own client certificate names no caller)."""
        address = parse_address(peer) if peer is not None else None
        return address is not None and address in self._trusted

    def workload(self, headers: MultiMapping[str], peer: str | None) -> Workload | None:
        """The workload the header names, or None when the request carries none.

        Raises `ForwardedCertRefused` for a header that cannot be believed, and
        `Unauthenticated` for a SPIFFE ID no rule maps.
        """
        values = headers.getall(XFCC, ())
        if not values:
            return None
        if not self.trusts(peer):
            raise ForwardedCertRefused(
                "X-Forwarded-Client-Cert from a peer that is not a trusted mesh proxy "
                "(identity.xfcc.trusted_peers): a caller cannot vouch for itself")
        if len(values) > 1:
            raise ForwardedCertRefused("X-Forwarded-Client-Cert given more than once: only one may be read")
        try:
            last = parse(values[0].strip())[-1]
        except MalformedXfcc as exc:
            raise ForwardedCertRefused(f"X-Forwarded-Client-Cert is malformed: {exc}") from None
        uris = set(last.values("URI"))
        if len(uris) != 1:
            raise ForwardedCertRefused(
                "X-Forwarded-Client-Cert: the mesh proxy's element names "
                + ("no URI (a SPIFFE ID)" if not uris else "more than one URI"))
        (uri,) = uris
        problem = spiffe.problem(uri)
        if problem is not None:
            raise ForwardedCertRefused(f"X-Forwarded-Client-Cert: the URI is not a SPIFFE ID: {problem}")
        jurisdiction = self._workloads.jurisdiction_of(uri)
        if jurisdiction is None:
            raise Unauthenticated(f"no identity: the workload {uri} is in no rule of identity.workloads")
        return Workload(spiffe_id=uri, jurisdiction=jurisdiction)
