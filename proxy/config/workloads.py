"""Reading `identity.workloads` and `identity.xfcc`: workload identities and the mesh header.

A workload rule maps a SPIFFE ID (``spiffe_id``, exact), every ID under a
SPIFFE path (``spiffe_prefix``, written with its trailing ``/``) or a
certificate subject (``subject``, exact) to a jurisdiction. Every ID is
checked at start as the SPIFFE specification writes them
(`proxy.spiffe`), and each mistake is named with its file and line,
so a rule that could never match (or could match two ways) never starts.

`identity.xfcc` turns on reading ``X-Forwarded-Client-Cert`` from the local
mesh proxy (`proxy.identity.xfcc`); off by default, and read only from
`trusted_peers` (loopback unless set).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from proxy import spiffe

if TYPE_CHECKING:
    from proxy.config.reader import Reader

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

WORKLOAD_KEYS = frozenset({"spiffe_id", "spiffe_prefix", "subject", "jurisdiction"})
XFCC_KEYS = frozenset({"enabled", "trusted_peers"})
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class MatchKind(StrEnum):
    """How a workload rule matches (the key it is written with)."""

    SPIFFE_ID = "spiffe_id"
    SPIFFE_PREFIX = "spiffe_prefix"
    SUBJECT = "subject"


@dataclass(frozen=True, slots=True)
class WorkloadRule:
    """One entry of `identity.workloads[]`: what it matches, how, and the jurisdiction it names."""

    kind: MatchKind
    match: str
    jurisdiction: str


@dataclass(frozen=True, slots=True)
class XfccConfig:
    """`identity.xfcc`: whether X-Forwarded-Client-Cert identifies callers, and from which peers."""

    enabled: bool = False
    trusted_peers: tuple[IPNetwork, ...] = LOOPBACK


def read_workloads(r: Reader, value: Any) -> tuple[WorkloadRule, ...]:
    """`identity.workloads`; a match written twice is refused (even with the same jurisdiction)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise r.fail("identity.workloads", "expected a list of {spiffe_id | spiffe_prefix | subject, jurisdiction}")
    rules: list[WorkloadRule] = []
    seen: set[tuple[MatchKind, str]] = set()
    for i, item in enumerate(value):
        key = f"identity.workloads[{i}]"
        entry = r.mapping(item, key, WORKLOAD_KEYS)
        kinds = [kind for kind in MatchKind if kind in entry]
        if len(kinds) != 1 or "jurisdiction" not in entry:
            raise r.fail(key, "expected exactly one of spiffe_id, spiffe_prefix or subject, and a jurisdiction")
        kind = kinds[0]
        match = r.string(entry[kind], f"{key}.{kind}")
        if kind is MatchKind.SPIFFE_ID:
            problem = spiffe.problem(match)
        elif kind is MatchKind.SPIFFE_PREFIX:
            problem = ("must end with '/' (it matches the IDs under it)" if not match.endswith("/")
                       else spiffe.problem(match[:-1]))
        else:
            problem = None
        if problem is not None:
            raise r.fail(f"{key}.{kind}", f"{match!r} is not a SPIFFE ID: {problem}")
        if (kind, match) in seen:
            raise r.fail(f"{key}.{kind}", f"{match!r} is listed twice")
        seen.add((kind, match))
        rules.append(WorkloadRule(kind, match, r.jurisdiction(entry["jurisdiction"], f"{key}.jurisdiction")))
    return tuple(rules)


def read_xfcc(r: Reader, value: Any) -> XfccConfig:
    """`identity.xfcc`."""
    section = r.section(value, "identity.xfcc", XfccConfig, XFCC_KEYS)
    # The default is written as networks; the file writes them as text.
    peers = section.raw.get("trusted_peers", [str(network) for network in LOOPBACK])
    if not isinstance(peers, list) or not peers:
        raise r.fail("identity.xfcc.trusted_peers", "expected a non-empty list of networks")
    return XfccConfig(
        enabled=section.boolean("enabled"),
        trusted_peers=tuple(r.network(p, f"identity.xfcc.trusted_peers[{i}]") for i, p in enumerate(peers)),
    )
