"""format_explain: the whole trace of a decision, as `bailiwick explain` prints it."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.policy.engine import decide
from proxy.policy.explain import format_explain
from proxy.policy.loader import load_policy
from proxy.policy.model import Policy

from .conftest import SHIPPED_POLICIES


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(SHIPPED_POLICIES)


def explain(policy: Policy, jurisdiction: str, request: AccessRequest, **options: Any) -> str:
    return format_explain(decide(policy, jurisdiction, request, **options), jurisdiction, request)


def one(action: Action, bucket: str, key: str = "", **kwargs: Any) -> AccessRequest:
    copy_from = kwargs.pop("copy_from", None)
    return AccessRequest((Access(action, Resource("s3", bucket, key), **kwargs),), copy_from=copy_from)


def test_full_trace_of_a_deny(policy: Policy) -> None:
    text = explain(policy, "US", one(Action.READ, "mail-eu-dublin", "alice/inbox/1.eml"))
    assert text == "\n".join([
        "caller:    jurisdiction US",
        "request:   read s3://mail-eu-dublin/alice/inbox/1.eml",
        "decision:  deny",
        'by:        rule "no-us-access" of dataset dublin-mail (target)',
        "reason:    read access to data held in eu-west-1 (IE) is not allowed for callers in US",
        f"policy:    version {policy.version}",
        "",
        "check 1 of 1: target: read s3://mail-eu-dublin/alice/inbox/1.eml, for jurisdiction US: deny  <- decided",
        "  dataset:  dublin-mail, held in eu-west-1 (IE), mode enforce",
        "  matched:  s3://mail-eu-dublin (bucket 'mail-eu-dublin', every key), the most specific pattern that matches",
        "  rules (deny rules first, then allow rules, in file order):",
        "    no-us-access  deny   matches   denies read for callers in US",
        "  decided:  no-us-access",
        "  reason:   read access to data held in eu-west-1 (IE) is not allowed for callers in US",
    ])


def test_default_deny_lists_every_rule_looked_at(policy: Policy) -> None:
    lines = explain(policy, "DE", one(Action.WRITE, "mail-eu-dublin", "x")).splitlines()
    assert "by:        the default deny of dataset dublin-mail: no rule matched (target)" in lines
    assert lines[-6:] == [
        "  rules (deny rules first, then allow rules, in file order):",
        "    no-us-access       deny   no match  denies write, but not for callers in DE (from: US)",
        "    local-full-access  allow  no match  allows write, but not for callers in DE (from: HOME)",
        "    eea-read           allow  no match  allows read, list, not write",
        "  decided:  default deny",
        "  reason:   write access to data held in eu-west-1 (IE) is not allowed for callers in DE",
    ]


@pytest.mark.parametrize(
    ("jurisdiction", "request_", "options", "expected_lines"),
    [
        pytest.param(
            "IE", one(Action.WRITE, "mail-us-east", "x", copy_from=Resource("s3", "mail-eu-dublin", "a")), {},
            [
                "           copying from s3://mail-eu-dublin/a",
                "check 1 of 3: copy source: read s3://mail-eu-dublin/a, for jurisdiction IE: allow",
                "check 2 of 3: copy source for destination: read s3://mail-eu-dublin/a, for jurisdiction US: deny"
                "  <- decided",
                'by:        rule "no-us-access" of dataset dublin-mail (copy source for destination)',
                "check 3 of 3: target: write s3://mail-us-east/x, for jurisdiction IE: deny",
                "  reason:   copying data held in eu-west-1 (IE) into us-east-1 (US) requires that US may read it, "
                "and the policy does not allow that",
            ],
            id="copy",
        ),
        pytest.param(
            "IE", one(Action.READ, "mail-eu-dublin", "x"), {"proxy_region": "us-east-1"},
            ['by:        the check "region" of dataset dublin-mail (target)', "  rules:    none looked at"],
            id="region",
        ),
        pytest.param(
            "US", one(Action.LIST, "archive", listing=True), {"unmatched_allow": True},
            [
                "request:   list s3://archive (listing everything under this prefix)",
                "decision:  dry-run deny (recorded, and the request is forwarded)",
                "  dataset:  none; no resource pattern of the policy matches s3://archive",
                "  decided:  unmatched: allow",
                "  dataset:  irish-archive, held in eu-west-1 (IE), mode dry-run",
                "  matched:  s3://archive/ie/ (bucket 'archive', keys starting with 'ie/'), a dataset under the "
                "listing prefix, so the listing reaches it",
            ],
            id="listing with a nested dry-run dataset",
        ),
        pytest.param(
            "IE", AccessRequest(()), {},
            [
                "request:   (no resource)",
                'by:        the check "empty request" (target)',
                "  dataset:  not looked up: the request could not be judged",
            ],
            id="nothing to judge",
        ),
    ],
)
def test_explain_lines(
    policy: Policy, jurisdiction: str, request_: AccessRequest, options: dict[str, Any], expected_lines: list[str]
) -> None:
    lines = explain(policy, jurisdiction, request_, **options).splitlines()
    missing = [line for line in expected_lines if line not in lines]
    assert not missing, "\n".join(lines)
