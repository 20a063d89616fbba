"""Workload identity: SPIFFE IDs read strictly, rules read from the file, the most specific rule wins."""

from __future__ import annotations

import ipaddress
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import spiffe
from proxy.config import IdentityConfig, load_config
from proxy.config.workloads import MatchKind, WorkloadRule, XfccConfig
from proxy.errors import ConfigError
from proxy.identity.workload import WorkloadTable

TD = "spiffe://prod.example"


@pytest.mark.parametrize("text", [
    "spiffe://td",
    "spiffe://prod.example/ns/payments/sa/api",
    "spiffe://a_b-c.d/x",
    "spiffe://td/A.b-C_9",
    "spiffe://td/..a/a..",
    "spiffe://td/" + "/".join(["s"] * 1000),
])
def test_ids_the_spec_allows_are_read(text: str) -> None:
    assert spiffe.problem(text) is None
    parsed = spiffe.parse(text)
    assert parsed is not None
    assert str(parsed) == text


@pytest.mark.parametrize(("text", "why"), [
    ("", "spiffe://"),
    ("SPIFFE://td/a", "spiffe://"),
    ("spiffe:/td/a", "spiffe://"),
    ("https://td/a", "spiffe://"),
    ("spiffe://", "no trust domain"),
    ("spiffe:///a", "no trust domain"),
    ("spiffe://TD/a", "trust domain"),
    ("spiffe://td:443/a", "trust domain"),
    ("spiffe://user@td/a", "trust domain"),
    ("spiffe://td?x=1", "trust domain"),
    ("spiffe://td#f", "trust domain"),
    ("spiffe://t%64/a", "trust domain"),
    ("spiffe://td/", "empty path segment"),
    ("spiffe://td/a/", "empty path segment"),
    ("spiffe://td//a", "empty path segment"),
    ("spiffe://td/a/./b", "'.' or '..'"),
    ("spiffe://td/a/..", "'.' or '..'"),
    ("spiffe://td/a%2Fb", "path may hold"),
    ("spiffe://td/a?b", "path may hold"),
    ("spiffe://td/a#b", "path may hold"),
    ("spiffe://td/a b", "path may hold"),
    ("spiffe://td/é", "path may hold"),
    ("spiffe://" + "a" * 256, "trust domain longer"),
    ("spiffe://td/" + "a" * 2037, "longer than 2048"),
])
def test_ids_the_spec_forbids_are_refused_with_the_reason(text: str, why: str) -> None:
    problem = spiffe.problem(text)
    assert problem is not None
    assert why in problem
    assert spiffe.parse(text) is None


_TD_CHARS = string.ascii_lowercase + string.digits + ".-_"
_SEG_CHARS = string.ascii_letters + string.digits + ".-_"
trust_domains = st.text(_TD_CHARS, min_size=1, max_size=30)
segments = st.text(_SEG_CHARS, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@given(trust_domains, st.lists(segments, max_size=8))
def test_every_well_formed_id_round_trips(trust_domain: str, path: list[str]) -> None:
    text = spiffe.SCHEME + trust_domain + "".join("/" + s for s in path)
    parsed = spiffe.parse(text)
    assert parsed == spiffe.SpiffeId(trust_domain, tuple(path))
    assert parsed is not None
    assert str(parsed) == text


@given(st.text(max_size=80))
def test_whatever_is_read_is_written_back_the_same(text: str) -> None:
    parsed = spiffe.parse(spiffe.SCHEME + text)
    if parsed is not None:
        # Nothing is normalised: an ID that reads at all reads as exactly itself.
        assert str(parsed) == spiffe.SCHEME + text
        assert set(text) <= set(_SEG_CHARS + "/")


@given(trust_domains, st.lists(segments, min_size=1, max_size=5),
       st.sampled_from(["%2e", "/.", "/..", "//", "/", "?q", "#f", ":1", " ", "A%41"]))
def test_a_corrupted_id_is_refused(trust_domain: str, path: list[str], corruption: str) -> None:
    text = spiffe.SCHEME + trust_domain + "".join("/" + s for s in path) + corruption
    assert spiffe.parse(text) is None


def rule(kind: MatchKind, match: str, jurisdiction: str) -> WorkloadRule:
    return WorkloadRule(kind, match, jurisdiction)


TABLE = WorkloadTable([
    rule(MatchKind.SPIFFE_PREFIX, f"{TD}/", "US"),
    rule(MatchKind.SPIFFE_PREFIX, f"{TD}/ns/payments/", "IE"),
    rule(MatchKind.SPIFFE_PREFIX, f"{TD}/ns/payments/sa/", "DE"),
    rule(MatchKind.SPIFFE_ID, f"{TD}/ns/payments/sa/audit", "FR"),
    rule(MatchKind.SPIFFE_ID, f"{TD}/ns/mail/sa/api", "NL"),
    rule(MatchKind.SUBJECT, "CN=legacy,O=Example", "SE"),
])


@pytest.mark.parametrize(("spiffe_id", "jurisdiction"), [
    (f"{TD}/ns/payments/sa/audit", "FR"),          # exact beats every prefix
    (f"{TD}/ns/payments/sa/api", "DE"),            # the longest prefix
    (f"{TD}/ns/payments/other", "IE"),
    (f"{TD}/ns/payments/sa", "IE"),                # a prefix holds what is under it, not itself
    (f"{TD}/ns/paymentsx/sa/api", "US"),           # whole segments only
    (f"{TD}/ns/mail/sa/api", "NL"),
    (f"{TD}/ns/mail/sa/api2", "US"),
    (f"{TD}/x", "US"),
    (TD, None),                                    # the trust domain itself is under no prefix
    ("spiffe://other.example/ns/payments/sa/api", None),
    (f"{TD}/ns/payments/sa/../audit", None),       # not a SPIFFE ID: identifies nobody
    (f"{TD}/ns/payments/sa/audit/", None),
    (f"{TD.upper()}/ns/payments/sa/audit", None),
    ("CN=legacy,O=Example", None),                 # a subject is not an ID
])
def test_the_most_specific_rule_wins_and_unmatched_ids_identify_nobody(spiffe_id: str,
                                                                       jurisdiction: str | None) -> None:
    assert TABLE.jurisdiction_of(spiffe_id) == jurisdiction


@pytest.mark.parametrize(("subject", "jurisdiction"), [
    ("CN=legacy,O=Example", "SE"), ("CN=legacy, O=Example", None), ("cn=legacy,o=example", None),
])
def test_subjects_match_exactly(subject: str, jurisdiction: str | None) -> None:
    assert TABLE.jurisdiction_of_subject(subject) == jurisdiction


def test_no_rules_identify_nobody() -> None:
    table = WorkloadTable([])
    assert not table
    assert table.jurisdiction_of(f"{TD}/a") is None


def load(tmp_path: Path, identity: str) -> IdentityConfig:
    path = tmp_path / "bailiwick.yaml"
    path.write_text("identity:\n" + identity)
    return load_config(path, environ={}).identity


def test_rules_and_xfcc_are_read_from_the_file(tmp_path: Path) -> None:
    identity = load(tmp_path, (
        "  workloads:\n"
        f"    - {{spiffe_id: '{TD}/ns/a/sa/b', jurisdiction: IE}}\n"
        f"    - {{spiffe_prefix: '{TD}/ns/a/', jurisdiction: DE}}\n"
        "    - {subject: 'CN=x,O=y', jurisdiction: FR}\n"
        "  xfcc: {enabled: true, trusted_peers: [10.0.0.0/8]}\n"
    ))
    assert identity.workloads == (
        rule(MatchKind.SPIFFE_ID, f"{TD}/ns/a/sa/b", "IE"),
        rule(MatchKind.SPIFFE_PREFIX, f"{TD}/ns/a/", "DE"),
        rule(MatchKind.SUBJECT, "CN=x,O=y", "FR"),
    )
    assert identity.xfcc == XfccConfig(True, (ipaddress.ip_network("10.0.0.0/8"),))


def test_xfcc_is_off_by_default_and_trusts_loopback_when_on(tmp_path: Path) -> None:
    assert load(tmp_path, "  jwt: []\n").xfcc == XfccConfig()
    on = load(tmp_path, f"  workloads: [{{spiffe_prefix: '{TD}/', jurisdiction: IE}}]\n"
                        "  xfcc: {enabled: true}\n").xfcc
    assert on.enabled
    assert [str(n) for n in on.trusted_peers] == ["127.0.0.0/8", "::1/128"]


@pytest.mark.parametrize(("identity", "line", "message"), [
    ("  workloads:\n    - {spiffe_id: 'spiffe://TD/a', jurisdiction: IE}\n", 3,
     "identity.workloads[0].spiffe_id: 'spiffe://TD/a' is not a SPIFFE ID: its trust domain"),
    ("  workloads:\n    - {spiffe_id: 'spiffe://td/a/../b', jurisdiction: IE}\n", 3, "'.' or '..'"),
    ("  workloads:\n    - {spiffe_prefix: 'spiffe://td/ns', jurisdiction: IE}\n", 3, "must end with '/'"),
    ("  workloads:\n    - {spiffe_prefix: 'spiffe://td//', jurisdiction: IE}\n", 3, "empty path segment"),
    ("  workloads:\n    - {spiffe_id: 'spiffe://td/a', jurisdiction: UK}\n", 3,
     "identity.workloads[0].jurisdiction: 'UK' is not an ISO 3166-1"),
    ("  workloads:\n    - {spiffe_id: 'spiffe://td/a'}\n", 3, "expected exactly one of"),
    ("  workloads:\n    - {spiffe_id: 'spiffe://td/a', subject: 'CN=a', jurisdiction: IE}\n", 3,
     "expected exactly one of"),
    ("  workloads:\n    - {spiffe_id: 'spiffe://td/a', jurisdiction: IE}\n"
     "    - {spiffe_id: 'spiffe://td/a', jurisdiction: DE}\n", 4, "listed twice"),
    ("  workloads:\n    - {spiffe: 'spiffe://td/a', jurisdiction: IE}\n", 3, "unknown setting"),
    ("  workloads: {a: b}\n", 2, "expected a list"),
    ("  xfcc: {enabled: yes please}\n", 2, "expected true or false"),
    ("  xfcc: {enabled: true, trusted_peers: []}\n", 2, "non-empty list"),
    ("  xfcc: {enabled: true, trusted_peers: [10.0.0.1/8]}\n", 2, "CIDR"),
    ("  xfcc: {enable: true}\n", 2, "did you mean enabled?"),
    ("  xfcc: {enabled: true}\n", 2, "identity.xfcc.enabled: X-Forwarded-Client-Cert is read by its SPIFFE ID"),
    ("  workloads: [{subject: 'CN=a', jurisdiction: IE}]\n  xfcc:\n    enabled: true\n", 4,
     "map IDs to jurisdictions in identity.workloads"),
])
def test_mistakes_stop_the_start_naming_file_line_and_key(tmp_path: Path, identity: str, line: int,
                                                          message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, identity)
    assert f"bailiwick.yaml:{line}:" in str(raised.value)
    assert message in str(raised.value)
