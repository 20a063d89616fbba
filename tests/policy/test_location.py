"""A rule's `location`: the caller must be seen (by GeoIP) where its credentials say, or inside a group."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.errors import PolicyLoadError
from proxy.policy.decision import Outcome
from proxy.policy.engine import decide, refused_whatever_the_keys, visible_in_listing
from proxy.policy.loader import load_policy
from proxy.policy.model import LOCATION, Policy
from proxy.policy.testing import run_policy_tests

from .conftest import REPO, WritePolicy

Load = Callable[..., Policy]

DATASETS = """\
datasets:
  - name: dublin
    region: eu-west-1
    resources: [s3://dublin]
    rules:
      - id: home-seen-at-home
        allow: [read, list]
        from: [HOME]
        location: same
      - id: eea-seen-in-eea
        allow: [read]
        from: [EEA]
        location: EEA
      - id: writes-anywhere
        allow: [write]
        from: [IE]
  - name: plain
    region: eu-west-1
    resources: [s3://plain]
    rules:
      - id: plain-home
        allow: [read]
        from: [HOME]
"""


def read(bucket: str = "dublin", action: Action = Action.READ) -> AccessRequest:
    return AccessRequest(accesses=(Access(action, Resource("s3", bucket, "k")),))


@pytest.mark.parametrize(
    ("jurisdiction", "location", "action", "outcome", "rule"),
    [
        ("IE", "IE", Action.READ, Outcome.ALLOW, "home-seen-at-home"),
        ("IE", "US", Action.READ, Outcome.DENY, LOCATION),          # a token stolen and replayed from abroad
        ("IE", "DE", Action.READ, Outcome.DENY, LOCATION),          # "same": not another EEA country
        ("IE", "unknown", Action.READ, Outcome.DENY, LOCATION),     # unknown never agrees
        ("IE", None, Action.READ, Outcome.DENY, LOCATION),          # no GeoIP: not known either
        ("DE", "FR", Action.READ, Outcome.ALLOW, "eea-seen-in-eea"),  # inside the group
        ("DE", "US", Action.READ, Outcome.DENY, LOCATION),
        ("IE", "US", Action.WRITE, Outcome.ALLOW, "writes-anywhere"),  # a rule without location checks none
        ("US", "US", Action.READ, Outcome.DENY, "default deny"),     # a refusal stays the rule's own
    ],
)
def test_the_location_must_agree(load: Load, jurisdiction: str, location: str | None, action: Action,
                                 outcome: Outcome, rule: str) -> None:
    policy = load({"d.yaml": DATASETS})
    for trace in (False, True):
        decision = decide(policy, jurisdiction, read(action=action), location=location, trace=trace)
        assert (decision.outcome, decision.rule) == (outcome, rule)


@pytest.mark.parametrize(
    ("jurisdiction", "location", "reason"),
    [
        ("IE", "US", "seen from US, token says IE: this data requires callers seen from the same country"),
        ("IE", "unknown", "seen from an unknown location, token says IE: this data requires callers seen from "
                          "the same country"),
        ("DE", "US", "seen from US, token says DE: this data requires callers seen from a location in EEA"),
    ],
)
def test_the_refusal_says_where_the_caller_was_seen(load: Load, jurisdiction: str, location: str, reason: str) -> None:
    assert decide(load({"d.yaml": DATASETS}), jurisdiction, read(), location=location).reason == reason


def test_a_dataset_without_location_rules_ignores_the_location(load: Load) -> None:
    policy = load({"d.yaml": DATASETS})
    assert decide(policy, "IE", read("plain"), location="US").outcome is Outcome.ALLOW


def test_dry_run_records_the_location_refusal(load: Load) -> None:
    policy = load({"d.yaml": DATASETS.replace("    region: eu-west-1\n    resources: [s3://dublin]",
                                              "    region: eu-west-1\n    mode: dry-run\n    resources: [s3://dublin]")})
    decision = decide(policy, "IE", read(), location="US")
    assert (decision.outcome, decision.rule) == (Outcome.DRY_RUN_DENY, LOCATION)


def test_listing_and_before_body_decisions_see_the_location(load: Load) -> None:
    policy = load({"d.yaml": DATASETS})
    bucket = Resource("s3", "dublin", "")
    assert visible_in_listing(policy, "IE", bucket, location="IE")
    assert not visible_in_listing(policy, "IE", bucket, location="US")
    delete = AccessRequest(accesses=(Access(Action.READ, bucket),))
    assert refused_whatever_the_keys(policy, "IE", delete, location="IE") is None
    refused = refused_whatever_the_keys(policy, "IE", delete, location="US")
    assert refused is not None
    assert refused.rule == LOCATION


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("        allow: [read]\n        from: [HOME]\n        location: sme\n",
         'policies/d.yaml:9: datasets[0].rules[0].location: "sme" is not a location (did you mean same?)'),
        ("        allow: [read]\n        from: [HOME]\n        location: EAA\n",
         'policies/d.yaml:9: datasets[0].rules[0].location: "EAA" is neither an ISO 3166-1 code nor a defined '
         'group (did you mean EEA?) (location expects "same", a country code, a group or HOME)'),
        ("        deny: [read]\n        from: [US]\n        location: same\n",
         "policies/d.yaml:9: datasets[0].rules[0].location: location is checked on allow rules only (a deny rule "
         "denies wherever the caller is)"),
        ("        allow: [read]\n        from: [HOME]\n        locaton: same\n",
         "policies/d.yaml:9: datasets[0].rules[0].locaton: unknown key (did you mean location? expected one of: "
         "allow, deny, from, id, location)"),
    ],
)
def test_a_bad_location_is_named_at_its_line(load: Load, rule: str, expected: str) -> None:
    text = ("datasets:\n  - name: d\n    region: eu-west-1\n    resources: [s3://ddd]\n    rules:\n"
            "      - id: r\n" + rule)
    with pytest.raises(PolicyLoadError) as caught:
        load({"d.yaml": text})
    assert [str(issue) for issue in caught.value.issues] == [expected]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, check=False,
                          cwd=Path.cwd(), env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60)


@pytest.mark.parametrize(
    ("location", "status", "shown"),
    [
        (["--location", "IE"], 0, "caller:    jurisdiction IE, seen from IE"),
        (["--location", "US"], 1, "reason:    seen from US, token says IE"),
        ([], 1, "reason:    seen from an unknown location, token says IE"),
    ],
)
def test_explain_takes_the_location(write_policy: WritePolicy, location: list[str], status: int, shown: str) -> None:
    folder = write_policy({"d.yaml": DATASETS})
    answer = run_cli("explain", "s3://dublin/k", "--jurisdiction", "IE", "--action", "read",
                     "--policies", str(folder), *location)
    assert answer.returncode == status, answer.stderr
    assert shown in answer.stdout


def test_explain_refuses_a_location_that_is_no_country(write_policy: WritePolicy) -> None:
    folder = write_policy({"d.yaml": DATASETS})
    answer = run_cli("explain", "s3://dublin/k", "--jurisdiction", "IE", "--action", "read",
                     "--policies", str(folder), "--location", "Ireland")
    assert answer.returncode == 2
    assert "--location:" in answer.stderr


def test_policy_check_names_a_bad_location(write_policy: WritePolicy) -> None:
    folder = write_policy({"d.yaml": DATASETS.replace("location: EEA", "location: EAA")})
    answer = run_cli("policy", "check", str(folder))
    assert answer.returncode != 0
    assert "policies/d.yaml:13: datasets[0].rules[1].location:" in answer.stdout + answer.stderr
    assert "did you mean EEA?" in answer.stdout + answer.stderr


@pytest.mark.parametrize(
    ("caller", "expect", "passes"),
    [
        ("{jurisdiction: IE, location: IE}", "allow", True),
        ("{jurisdiction: IE, location: US}", "deny", True),
        ("{jurisdiction: IE, location: unknown}", "deny", True),
        ("{jurisdiction: IE}", "deny", True),                 # no location given: not known
        ("{jurisdiction: IE, location: US}", "allow", False),
    ],
)
def test_policy_tests_give_the_caller_a_location(write_policy: WritePolicy, caller: str, expect: str,
                                                 passes: bool) -> None:
    test = (f"tests:\n  - name: t\n    caller: {caller}\n    request: {{action: read, resource: s3://dublin/k}}\n"
            f"    expect: {expect}\n")
    folder = write_policy({"d.yaml": DATASETS, "tests/d_test.yaml": test})
    report = run_policy_tests(load_policy(folder), folder)
    assert [not result.problems for result in report.results] == [passes]


def test_a_policy_tests_location_that_is_no_country_is_named(write_policy: WritePolicy) -> None:
    test = ("tests:\n  - name: t\n    caller: {jurisdiction: IE, location: Ireland}\n"
            "    request: {action: read, resource: s3://dublin/k}\n    expect: deny\n")
    folder = write_policy({"d.yaml": DATASETS, "tests/d_test.yaml": test})
    with pytest.raises(PolicyLoadError, match=r"d_test\.yaml:3: tests\[0\]\.caller\.location: .*\(or \"unknown\"\)"):
        run_policy_tests(load_policy(folder), folder)


@pytest.mark.parametrize(("location", "outcome", "rule"), [
    ("IE", Outcome.ALLOW, "writes-anywhere"),
    ("US", Outcome.DENY, LOCATION),       # the copy's source is read as any read is: seen where the token says
    (None, Outcome.DENY, LOCATION),
])
def test_a_copy_source_is_read_under_the_location_rule(load: Load, location: str | None, outcome: Outcome,
                                                       rule: str) -> None:
    policy = load({"d.yaml": DATASETS})
    copy = AccessRequest(accesses=(Access(Action.WRITE, Resource("s3", "dublin", "copy")),),
                         copy_from=Resource("s3", "dublin", "k"))
    decision = decide(policy, "IE", copy, location=location)
    assert (decision.outcome, decision.rule) == (outcome, rule)
