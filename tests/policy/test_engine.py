"""decide: deny-overrides, default deny, HOME, "*", groups, dry run, unmatched, region, copies, listings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.policy.decision import DEFAULT_DENY, Check, Decision, Outcome, Purpose, RuleTrace
from proxy.policy.engine import decide
from proxy.policy.loader import load_policy
from proxy.policy.model import Mode, Policy

from .conftest import BASE

POLICY = """\
datasets:
  - name: dublin-mail
    region: eu-west-1
    resources: [s3://mail-eu-dublin, azure://mailstoreie/mailboxes]
    rules:
      - id: local-full-access
        allow: [read, list, write, delete]
        from: [HOME]
      - id: eea-read
        allow: [read, list]
        from: [EEA]
      - id: no-us-access
        deny: ["*"]
        from: [US]
  - name: frankfurt-archive
    region: eu-central-1
    mode: dry-run
    resources: [s3://mail-eu-dublin/archive/]
    rules:
      - id: de-only
        allow: ["*"]
        from: [HOME]
  - name: us-mail
    region: us-east-1
    resources: [s3://mail-us-east]
    rules:
      - id: us-full
        allow: [read, list, write, delete]
        from: [HOME]
      - id: eu-read
        allow: [read, list]
        from: [EU]
  - name: us-legal-hold
    region: us-east-1
    resources: [s3://mail-us-east/legal/]
    rules:
      - id: legal-us-only
        allow: [read, list]
        from: [HOME]
  - name: shared-us
    region: us-east-1
    resources: [s3://shared-us]
    rules:
      - id: ie-writes
        allow: [write]
        from: [IE]
  - name: open-data
    region: eu-central-1
    resources: [s3://open-*]
    rules:
      - id: anyone-reads
        allow: [read, list]
        from: ["*"]
      - id: no-deletes
        deny: [delete]
        from: ["*"]
  - name: overrides
    region: eu-west-1
    resources: [s3://overrides]
    rules:
      - id: everyone-all
        allow: ["*"]
        from: ["*"]
      - id: no-eea-writes
        deny: [write]
        from: [EEA]
  - name: locked
    region: eu-west-1
    resources: [s3://locked]
"""

DATASET_NAMES = (
    "dublin-mail", "frankfurt-archive", "us-mail", "us-legal-hold", "shared-us", "open-data", "overrides",
    "locked",
)
RULE_IDS = (
    "local-full-access", "eea-read", "no-us-access", "de-only", "us-full", "eu-read", "legal-us-only",
    "ie-writes", "anyone-reads", "no-deletes", "everyone-all", "no-eea-writes",
)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    directory = tmp_path_factory.mktemp("policies")
    (directory / "base.yaml").write_text(BASE)
    (directory / "datasets.yaml").write_text(POLICY)
    return load_policy(directory)


def s3(bucket: str, key: str = "") -> Resource:
    return Resource("s3", bucket, key)


def req(
    action: Action, resource: Resource, *, listing: bool = False, copy_from: Resource | None = None
) -> AccessRequest:
    return AccessRequest((Access(action, resource, listing=listing),), copy_from=copy_from)


@dataclass(frozen=True)
class Case:
    jurisdiction: str
    request: AccessRequest
    outcome: Outcome
    rule: str
    purpose: str = "target"
    dataset: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


READ, LIST, WRITE, DELETE, ADMIN = Action.READ, Action.LIST, Action.WRITE, Action.DELETE, Action.ADMIN
ALLOW, DENY, DRY = Outcome.ALLOW, Outcome.DENY, Outcome.DRY_RUN_DENY
MAIL = s3("mail-eu-dublin", "alice/inbox/1.eml")

CASES = [
    # HOME: the dataset's own jurisdiction.
    pytest.param(Case("IE", req(READ, MAIL), ALLOW, "local-full-access", dataset="dublin-mail"), id="HOME reads"),
    pytest.param(Case("IE", req(WRITE, MAIL), ALLOW, "local-full-access", dataset="dublin-mail"), id="HOME writes"),
    pytest.param(Case("IE", req(ADMIN, s3("mail-eu-dublin")), DENY, DEFAULT_DENY, dataset="dublin-mail"),
                 id="HOME without admin: default deny"),
    # Groups, nested: EEA contains EU.
    pytest.param(Case("DE", req(READ, MAIL), ALLOW, "eea-read", dataset="dublin-mail"), id="EU member via EEA"),
    pytest.param(Case("NO", req(READ, MAIL), ALLOW, "eea-read", dataset="dublin-mail"), id="Norway via EEA"),
    pytest.param(Case("DE", req(WRITE, MAIL), DENY, DEFAULT_DENY, dataset="dublin-mail"), id="EEA cannot write"),
    pytest.param(Case("CH", req(READ, MAIL), DENY, DEFAULT_DENY, dataset="dublin-mail"), id="outside EEA"),
    # Deny rules first; a deny wins over any allow.
    pytest.param(Case("US", req(READ, MAIL), DENY, "no-us-access", dataset="dublin-mail"), id="deny rule"),
    pytest.param(Case("DE", req(WRITE, s3("overrides", "k")), DENY, "no-eea-writes", dataset="overrides"),
                 id="deny overrides an earlier allow"),
    pytest.param(Case("US", req(WRITE, s3("overrides", "k")), ALLOW, "everyone-all", dataset="overrides"),
                 id="allow where the deny does not apply"),
    pytest.param(Case("DE", req(READ, s3("overrides", "k")), ALLOW, "everyone-all", dataset="overrides"),
                 id="deny for another action"),
    # "*": any jurisdiction; bucket-name prefixes.
    pytest.param(Case("JP", req(READ, s3("open-weather", "x")), ALLOW, "anyone-reads", dataset="open-data"),
                 id="star allows anyone"),
    pytest.param(Case("DE", req(DELETE, s3("open-weather", "x")), DENY, "no-deletes", dataset="open-data"),
                 id="star denies even HOME"),
    # No rules at all: default deny.
    pytest.param(Case("IE", req(READ, s3("locked", "x")), DENY, DEFAULT_DENY, dataset="locked"), id="no rules"),
    # Dry run: a dataset's mode, or forced by the configuration.
    pytest.param(Case("IE", req(READ, s3("mail-eu-dublin", "archive/2019/a")), DRY, DEFAULT_DENY,
                      dataset="frankfurt-archive"), id="dry-run dataset"),
    pytest.param(Case("DE", req(READ, s3("mail-eu-dublin", "archive/2019/a")), ALLOW, "de-only",
                      dataset="frankfurt-archive"), id="dry-run dataset allows"),
    pytest.param(Case("US", req(READ, MAIL), DRY, "no-us-access", dataset="dublin-mail",
                      options={"force_dry_run": True}), id="forced dry run"),
    pytest.param(Case("US", req(READ, s3("nowhere", "x")), DRY, "unmatched", options={"force_dry_run": True}),
                 id="forced dry run, unmatched"),
    # Resources in no dataset.
    pytest.param(Case("IE", req(READ, s3("nowhere", "x")), DENY, "unmatched"), id="unmatched denied"),
    pytest.param(Case("IE", req(READ, s3("nowhere", "x")), ALLOW, "unmatched: allow",
                      options={"unmatched_allow": True}), id="unmatched allowed"),
    # The proxy's own region.
    pytest.param(Case("IE", req(READ, MAIL), DENY, "region", dataset="dublin-mail",
                      options={"proxy_region": "us-east-1"}), id="other region"),
    pytest.param(Case("IE", req(READ, MAIL), DRY, "region", dataset="dublin-mail",
                      options={"proxy_region": "us-east-1", "force_dry_run": True}), id="other region, dry run"),
    pytest.param(Case("IE", req(READ, MAIL), ALLOW, "local-full-access", dataset="dublin-mail",
                      options={"proxy_region": "eu-west-1"}), id="own region"),
    # Azure resources share the index.
    pytest.param(Case("IE", req(READ, Resource("azure", "mailstoreie", "mailboxes/alice/1")), ALLOW,
                      "local-full-access", dataset="dublin-mail"), id="azure blob"),
    pytest.param(Case("IE", req(READ, Resource("azure", "mailstoreie", "other/alice/1")), DENY, "unmatched"),
                 id="azure other container"),
    # Copies: the source must be readable by the caller and by the destination's jurisdiction.
    pytest.param(Case("IE", req(WRITE, s3("shared-us", "x"), copy_from=MAIL), DENY, "no-us-access",
                      purpose="copy source for destination", dataset="dublin-mail"),
                 id="copy out of Dublin into the US"),
    pytest.param(Case("IE", req(WRITE, s3("mail-eu-dublin", "copy/1"), copy_from=s3("mail-us-east", "bob/1")),
                      ALLOW, "local-full-access", dataset="dublin-mail"), id="copy from the US into Dublin"),
    pytest.param(Case("US", req(WRITE, s3("mail-us-east", "evidence/1"), copy_from=MAIL), DENY, "no-us-access",
                      purpose="copy source", dataset="dublin-mail"), id="copy source unreadable by caller"),
    pytest.param(Case("IE", req(WRITE, s3("nowhere", "x"), copy_from=MAIL), DENY, "unmatched destination",
                      purpose="copy source for destination", dataset="dublin-mail",
                      options={"unmatched_allow": True}), id="copy into no dataset"),
    pytest.param(Case("IE", req(WRITE, s3("nowhere", "x"), copy_from=s3("elsewhere", "y")), ALLOW,
                      "unmatched: allow", options={"unmatched_allow": True}), id="copy between no datasets"),
    # Listings reach nested datasets.
    pytest.param(Case("IE", req(LIST, s3("mail-eu-dublin"), listing=True), DRY, DEFAULT_DENY,
                      purpose="nested dataset", dataset="frankfurt-archive"), id="listing reaches dry-run dataset"),
    pytest.param(Case("DE", req(LIST, s3("mail-eu-dublin"), listing=True), ALLOW, "eea-read",
                      dataset="dublin-mail"), id="listing allowed everywhere"),
    pytest.param(Case("IE", req(LIST, s3("mail-eu-dublin", "alice/"), listing=True), ALLOW, "local-full-access",
                      dataset="dublin-mail"), id="listing with nothing nested"),
    pytest.param(Case("IE", req(LIST, s3("mail-us-east"), listing=True), DENY, DEFAULT_DENY,
                      purpose="nested dataset", dataset="us-legal-hold"), id="listing reaches a denying dataset"),
    pytest.param(Case("IE", req(LIST, s3("mail-us-east", "bob/")), ALLOW, "eu-read", dataset="us-mail"),
                 id="not a listing: no nested checks"),
    # Several accesses (multi-object delete): one deny refuses all.
    pytest.param(Case("IE", AccessRequest((Access(DELETE, MAIL), Access(DELETE, s3("nowhere", "x")),
                                           Access(DELETE, s3("mail-eu-dublin", "archive/x")))),
                      DENY, "unmatched"), id="multi delete with one deny"),
    pytest.param(Case("IE", AccessRequest((Access(DELETE, MAIL), Access(DELETE, s3("mail-eu-dublin", "archive/x")))),
                      DRY, DEFAULT_DENY, dataset="frankfurt-archive"), id="multi delete with a would-deny"),
    # Requests that cannot be judged.
    pytest.param(Case("IE", AccessRequest(()), DENY, "empty request"), id="no accesses"),
    pytest.param(Case("ie", req(READ, MAIL), DENY, "invalid jurisdiction"), id="lower-case jurisdiction"),
    pytest.param(Case("XX", req(READ, MAIL), DENY, "invalid jurisdiction", options={"force_dry_run": True}),
                 id="unknown jurisdiction, even in dry run"),
]


@pytest.mark.parametrize("case", CASES)
def test_decide(policy: Policy, case: Case) -> None:
    decision = decide(policy, case.jurisdiction, case.request, **case.options)
    assert (decision.outcome, decision.rule, decision.deciding.purpose, decision.dataset) == (
        case.outcome, case.rule, case.purpose, case.dataset,
    )
    assert decision.policy_version == policy.version
    assert decision.forwarded is (case.outcome is not Outcome.DENY)
    assert decision.deciding in decision.checks
    _assert_outcome_aggregates(decision)
    for check in decision.checks:
        _assert_reason_fit_for_callers(check)


def _assert_outcome_aggregates(decision: Decision) -> None:
    outcomes = [c.outcome for c in decision.checks]
    if Outcome.DENY in outcomes:
        assert decision.deciding is next(c for c in decision.checks if c.outcome is Outcome.DENY)
    elif Outcome.DRY_RUN_DENY in outcomes:
        assert decision.outcome is Outcome.DRY_RUN_DENY
    else:
        assert decision.outcome is Outcome.ALLOW
        assert decision.deciding is next(c for c in decision.checks if c.purpose == "target")


def _assert_reason_fit_for_callers(check: Check) -> None:
    for name in (*DATASET_NAMES, *RULE_IDS):
        assert name not in check.reason, f"{name!r} leaked into {check.reason!r}"


@pytest.mark.parametrize(
    ("jurisdiction", "request_", "options", "reason"),
    [
        pytest.param("US", req(READ, MAIL), {},
                     "read access to data held in eu-west-1 (IE) is not allowed for callers in US", id="deny"),
        pytest.param("DE", req(LIST, MAIL), {},
                     "list access to data held in eu-west-1 (IE) is allowed for callers in DE", id="allow"),
        pytest.param("IE", req(WRITE, s3("shared-us", "x"), copy_from=MAIL), {},
                     "copying data held in eu-west-1 (IE) into us-east-1 (US) requires that US may read it, "
                     "and the policy does not allow that", id="copy"),
        pytest.param("IE", req(READ, s3("bucket", "key")), {},
                     "s3://bucket/key is not covered by any data residency policy", id="unmatched"),
        pytest.param("IE", req(READ, MAIL), {"proxy_region": "us-east-1"},
                     "data in eu-west-1 (IE) is controlled only from eu-west-1; this proxy runs in us-east-1",
                     id="region"),
        pytest.param("IE", req(READ, s3("mail-eu-dublin", "archive/1")), {},
                     "read access to data held in eu-central-1 (DE) is not allowed for callers in IE "
                     "(dry run: recorded, not enforced)", id="dry run"),
        pytest.param("IE", req(LIST, s3("mail-us-east"), listing=True), {},
                     "the listing also reaches data held in us-east-1 (US); list access to it is not allowed "
                     "for callers in IE", id="nested"),
        pytest.param("IE", req(WRITE, s3("nowhere", "x"), copy_from=MAIL), {"unmatched_allow": True},
                     "copying data held in eu-west-1 (IE) into s3://nowhere/x is not allowed: the destination is "
                     "not covered by any data residency policy, so the data could leave its jurisdiction",
                     id="unmatched destination"),
    ],
)
def test_reasons(
    policy: Policy, jurisdiction: str, request_: AccessRequest, options: dict[str, Any], reason: str
) -> None:
    assert decide(policy, jurisdiction, request_, **options).reason == reason


def test_copy_checks_every_side(policy: Policy) -> None:
    decision = decide(policy, "IE", req(WRITE, s3("shared-us", "x"), copy_from=MAIL))
    assert [(c.purpose, c.jurisdiction, c.access.action, str(c.access.resource), c.outcome, c.rule)
            for c in decision.checks] == [
        ("copy source", "IE", READ, str(MAIL), ALLOW, "local-full-access"),
        ("copy source for destination", "US", READ, str(MAIL), DENY, "no-us-access"),
        ("target", "IE", WRITE, "s3://shared-us/x", ALLOW, "ie-writes"),
    ]


def test_a_copy_out_of_its_jurisdiction_is_reported_as_such(policy: Policy) -> None:
    # Both the write (IE may not write US mail) and the copy refuse; the copy's reason is the one given.
    decision = decide(policy, "IE", req(WRITE, s3("mail-us-east", "x"), copy_from=MAIL))
    assert [(c.purpose, c.outcome, c.rule) for c in decision.checks] == [
        ("copy source", ALLOW, "local-full-access"),
        ("copy source for destination", DENY, "no-us-access"),
        ("target", DENY, DEFAULT_DENY),
    ]
    assert (decision.deciding.purpose, decision.rule) == ("copy source for destination", "no-us-access")


def test_nested_dataset_checked_once_per_dataset(policy: Policy) -> None:
    decision = decide(policy, "DE", req(LIST, s3("mail-eu-dublin"), listing=True))
    assert [(c.purpose, c.dataset, c.pattern) for c in decision.checks] == [
        ("target", "dublin-mail", "s3://mail-eu-dublin"),
        ("nested dataset", "frankfurt-archive", "s3://mail-eu-dublin/archive/"),
    ]


@pytest.mark.parametrize(
    ("jurisdiction", "action", "traces"),
    [
        pytest.param("US", READ, [RuleTrace("no-us-access", "deny", True, "denies read for callers in US")],
                     id="stops at the first matching deny"),
        pytest.param("DE", WRITE, [
            RuleTrace("no-us-access", "deny", False, "denies write, but not for callers in DE (from: US)"),
            RuleTrace("local-full-access", "allow", False, "allows write, but not for callers in DE (from: HOME)"),
            RuleTrace("eea-read", "allow", False, "allows read, list, not write"),
        ], id="every rule looked at, then default deny"),
        pytest.param("DE", READ, [
            RuleTrace("no-us-access", "deny", False, "denies read, but not for callers in DE (from: US)"),
            RuleTrace("local-full-access", "allow", False, "allows read, but not for callers in DE (from: HOME)"),
            RuleTrace("eea-read", "allow", True, "allows read for callers in DE (through EEA)"),
        ], id="stops at the first matching allow"),
        pytest.param("IE", READ, [
            RuleTrace("no-us-access", "deny", False, "denies read, but not for callers in IE (from: US)"),
            RuleTrace("local-full-access", "allow", True, "allows read for callers in IE (through HOME)"),
        ], id="HOME named in the trace"),
    ],
)
def test_rule_traces(policy: Policy, jurisdiction: str, action: Action, traces: list[RuleTrace]) -> None:
    decision = decide(policy, jurisdiction, req(action, MAIL))
    assert list(decision.deciding.rules) == traces


def test_star_named_in_the_trace(policy: Policy) -> None:
    decision = decide(policy, "JP", req(READ, s3("open-weather", "x")))
    assert decision.deciding.rules[-1] == RuleTrace(
        "anyone-reads", "allow", True, 'allows read for callers in JP (through "*")'
    )


def test_check_describes_the_data(policy: Policy) -> None:
    check = decide(policy, "DE", req(READ, s3("mail-eu-dublin", "archive/1"))).deciding
    assert (check.dataset, check.pattern, check.region, check.data_jurisdiction, check.mode) == (
        "frankfurt-archive", "s3://mail-eu-dublin/archive/", "eu-central-1", "DE", "dry-run",
    )
    # Kinds, not free strings: the dataset's own mode, and why the resource was judged.
    assert (check.mode, check.purpose) == (Mode.DRY_RUN, Purpose.TARGET)
    assert (type(check.mode), type(check.purpose)) == (Mode, Purpose)


def test_rules_are_laid_out_per_action_at_load_time(policy: Policy) -> None:
    dublin = policy.by_name["dublin-mail"]
    assert set(dublin.plan) == set(Action)
    # Deny rules come first whatever their place in the file.
    assert [s.rule.id for s in dublin.plan[Action.READ]] == ["no-us-access", "local-full-access", "eea-read"]
    assert [s.skipped is None for s in dublin.plan[Action.WRITE]] == [True, True, False]
    assert dublin.rules[0].jurisdictions == frozenset({"IE"})
