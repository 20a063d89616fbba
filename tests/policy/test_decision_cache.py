"""The decisions a policy remembers are the decisions `decide` makes anew.

`decide` keeps, per policy, the decision of each request of the most common
shape (one access, no copy, nothing nested, no body-named destination), by
every input it depends on (the access, with its key; the caller's
jurisdiction and location; the proxy's settings), and gives it again. Here a
decision taken from that table must equal, field by field, the one made with
the table empty, over every request, setting, jurisdiction and location the
sample policies give; a new policy (a reload) starts empty; the table is
bounded; a traced decision is neither kept nor taken from it.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.policy import engine
from proxy.policy.decision import Decision
from proxy.policy.engine import decide
from proxy.policy.loader import load_policy
from proxy.policy.model import Policy

from .conftest import BASE, SHIPPED_POLICIES, WritePolicy
from .test_engine import POLICY
from .test_fast_path import CALLERS, REGIONS, _fields, sample_requests
from .test_location import DATASETS as LOCATION_DATASETS

LOCATIONS = (None, "IE", "DE", "US", "unknown")


def assert_same_decision(kept: Decision, made: Decision) -> None:
    """Field by field, each check's trace included (which `==` leaves out)."""
    assert (kept.outcome, kept.reason, kept.rule, kept.dataset, kept.policy_version) == \
        (made.outcome, made.reason, made.rule, made.dataset, made.policy_version)
    assert kept.checks.index(kept.deciding) == made.checks.index(made.deciding)
    assert [(_fields(c), c.rules) for c in kept.checks] == [(_fields(c), c.rules) for c in made.checks]


@pytest.fixture(scope="module", params=["engine tests' policy", "shipped policies", "location rules"])
def policy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Policy:
    if request.param == "shipped policies":
        return load_policy(SHIPPED_POLICIES)
    directory = tmp_path_factory.mktemp("policies")
    (directory / "base.yaml").write_text(BASE)
    (directory / "datasets.yaml").write_text(POLICY if request.param == "engine tests' policy" else LOCATION_DATASETS)
    return load_policy(directory)


def simple(policy: Policy) -> list[AccessRequest]:
    """The sample requests of the shape whose decisions are kept, and one of each other shape."""
    requests = list(sample_requests(policy))
    return [r for r in requests if len(r.accesses) == 1 and r.copy_from is None][:400] + [
        r for r in requests if len(r.accesses) != 1 or r.copy_from is not None][:20]


def test_a_remembered_decision_is_the_decision_made_anew(policy: Policy) -> None:
    settings: list[dict[str, Any]] = [
        {"proxy_region": region, "unmatched_allow": allow, "force_dry_run": dry_run, "location": location}
        for region in REGIONS[:3] for allow in (False, True) for dry_run in (False, True) for location in LOCATIONS
    ]
    cases = list(itertools.product(simple(policy), settings, CALLERS))
    fresh: list[Decision] = []
    for request, options, jurisdiction in cases:
        policy.decisions.clear()
        fresh.append(decide(policy, jurisdiction, request, **options))
    order = list(range(len(cases)))
    random.Random(19).shuffle(order)  # noqa: S311 - an order of cases, not a secret
    for i in order * 2:
        request, options, jurisdiction = cases[i]
        kept = decide(policy, jurisdiction, request, **options)
        assert kept == fresh[i]
        assert_same_decision(kept, fresh[i])
    assert policy.decisions   # kept: most of the cases above were answered from the table
    assert len(cases) > 5_000


def test_a_new_policy_starts_with_no_decisions(write_policy: WritePolicy) -> None:
    folder = write_policy({"d.yaml": POLICY})
    first = load_policy(folder)
    decide(first, "IE", AccessRequest((Access(Action.READ, Resource("s3", "mail-eu-dublin", "k")),)))
    assert len(first.decisions) == 1
    assert load_policy(folder).decisions == {}


def test_the_decisions_kept_are_bounded(monkeypatch: pytest.MonkeyPatch, write_policy: WritePolicy) -> None:
    monkeypatch.setattr(engine, "DECISIONS_KEPT", 3)
    policy = load_policy(write_policy({"d.yaml": POLICY}))
    for i in range(10):
        decide(policy, "IE", AccessRequest((Access(Action.READ, Resource("s3", "mail-eu-dublin", f"k{i}")),)))
        assert 1 <= len(policy.decisions) <= 3


def test_a_traced_decision_is_neither_kept_nor_taken(write_policy: WritePolicy) -> None:
    policy = load_policy(write_policy({"d.yaml": POLICY}))
    request = AccessRequest((Access(Action.READ, Resource("s3", "mail-eu-dublin", "k")),))
    traced = decide(policy, "IE", request, trace=True)
    assert policy.decisions == {}
    assert isinstance(traced.deciding.traced, tuple)
    kept = decide(policy, "IE", request)
    assert decide(policy, "IE", request) is kept
    again = decide(policy, "IE", request, trace=True)
    assert again is not kept
    assert isinstance(again.deciding.traced, tuple)
    assert_same_decision(kept, again)
