"""Workload identity: a SPIFFE ID or certificate subject mapped to a jurisdiction.

The operator's rules (`identity.workloads`) name exact SPIFFE IDs, SPIFFE
prefixes (``spiffe://td/ns/payments/``: every ID under that path) and exact
certificate subjects. The most specific rule wins, as datasets do: an exact
ID before any prefix, a longer prefix before a shorter one. A prefix matches
whole path segments only (``spiffe://td/ns/pay/`` does not hold
``spiffe://td/ns/payments/sa/x``). An ID no rule matches, or one that is not
a SPIFFE ID as the specification writes it, identifies nobody: the caller is
refused as unidentified, never given a default.

A lookup costs one dictionary probe per path segment of the ID.
"""

from __future__ import annotations

from collections.abc import Iterable

from proxy import spiffe
from proxy.config.workloads import MatchKind, WorkloadRule


class WorkloadTable:
    """The operator's workload rules, compiled for lookups by most specific match."""

    def __init__(self, rules: Iterable[WorkloadRule]) -> None:
        self._exact: dict[str, WorkloadRule] = {}
        self._prefixes: dict[str, WorkloadRule] = {}
        self._subjects: dict[str, WorkloadRule] = {}
        table = {MatchKind.SPIFFE_ID: self._exact, MatchKind.SPIFFE_PREFIX: self._prefixes,
                 MatchKind.SUBJECT: self._subjects}
        for rule in rules:
            table[rule.kind].setdefault(rule.match, rule)

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefixes or self._subjects)

    def rule_for(self, spiffe_id: str) -> WorkloadRule | None:
        """The most specific rule matching `spiffe_id`; None if none does or it is not a SPIFFE ID."""
        parsed = spiffe.parse(spiffe_id)
        if parsed is None:
            return None
        exact = self._exact.get(spiffe_id)
        if exact is not None:
            return exact
        # The ID's ancestors, longest first: spiffe://td/a/b/ then spiffe://td/a/ then spiffe://td/.
        for length in range(len(parsed.segments) - 1, -1, -1):
            prefix = str(spiffe.SpiffeId(parsed.trust_domain, parsed.segments[:length])) + "/"
            found = self._prefixes.get(prefix)
            if found is not None:
                return found
        return None

    def jurisdiction_of(self, spiffe_id: str) -> str | None:
        """The jurisdiction `spiffe_id` identifies, or None (the caller is then unidentified)."""
        rule = self.rule_for(spiffe_id)
        return rule.jurisdiction if rule is not None else None

    def jurisdiction_of_subject(self, subject: str) -> str | None:
        """The jurisdiction of a certificate subject written exactly as a rule names it, or None."""
        rule = self._subjects.get(subject)
        return rule.jurisdiction if rule is not None else None
