"""The fast path and the traced path of the engine give the same answer.

`decide` finds each deciding rule in the answer tables built at load time
(`Dataset.answers`) and leaves the trace for `Check.rules` to build when read;
`decide(..., trace=True)` walks the rules in order (`Dataset.trace`), as
`bailiwick explain` shows them. These tests hold the two to one answer: the
tables against the walk for every action and every country code (over the
engine tests' policy, the shipped policies and generated rule sets), and whole
decisions, field by field, over every kind of request and setting.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.jurisdictions import is_country_code
from proxy.policy.decision import Check, Decision
from proxy.policy.engine import decide
from proxy.policy.loader import load_policy
from proxy.policy.model import Dataset, Effect, Policy, Rule
from proxy.policy.patterns import parse_pattern

from .conftest import BASE, SHIPPED_POLICIES, WritePolicy
from .test_engine import POLICY

# Every ISO 3166-1 alpha-2 code (AA..ZZ filtered), so jurisdictions no rule names are covered too.
COUNTRIES = tuple(
    code for code in ("".join(p) for p in itertools.product("ABCDEFGHIJKLMNOPQRSTUVWXYZ", repeat=2))
    if is_country_code(code)
)
# A few for whole decisions, where every combination of settings multiplies the cases.
CALLERS = ("IE", "DE", "NO", "US", "GB", "JP", "CH")
REGIONS = (None, "eu-west-1", "eu-central-1", "us-east-1")


@pytest.fixture(scope="module")
def engine_policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    directory = tmp_path_factory.mktemp("policies")
    (directory / "base.yaml").write_text(BASE)
    (directory / "datasets.yaml").write_text(POLICY)
    return load_policy(directory)


@pytest.fixture(scope="module")
def shipped_policy() -> Policy:
    return load_policy(SHIPPED_POLICIES)


@pytest.fixture(scope="module", params=["engine tests' policy", "shipped policies"])
def policy(request: pytest.FixtureRequest, engine_policy: Policy, shipped_policy: Policy) -> Policy:
    return engine_policy if request.param == "engine tests' policy" else shipped_policy


def test_there_are_enough_country_codes_to_mean_something() -> None:
    assert len(COUNTRIES) > 240
    assert {"IE", "DE", "US", "GB", "JP", "NO"} <= set(COUNTRIES)


def assert_tables_agree_with_the_walk(dataset: Dataset) -> None:
    for action in Action:
        for jurisdiction in COUNTRIES:
            walked, _ = dataset.trace(action, jurisdiction)
            assert dataset.deciding_rule(action, jurisdiction) is walked, (dataset.name, action, jurisdiction)


def test_answer_tables_agree_with_the_walk(policy: Policy) -> None:
    for dataset in policy.datasets:
        assert_tables_agree_with_the_walk(dataset)


def test_datasets_with_the_same_rules_share_their_tables(write_policy: WritePolicy) -> None:
    # Datasets written from one template (different ids, same effects, actions and jurisdictions)
    # share one set of tables, so that a policy of many datasets does not hold many copies.
    rules = "rules: [{allow: [read, list, write, delete], from: [HOME]}, {allow: [read, list], from: [EEA]}]"
    policy = load_policy(write_policy({
        "d.yaml": "datasets:\n" + "".join(
            f"  - {{name: d{i}, region: eu-west-1, resources: [s3://bucket-{i}], {rules}}}\n" for i in range(3)
        ) + f"  - {{name: elsewhere, region: us-east-1, resources: [s3://bucket-us], {rules}}}\n",
    }))
    first, second, third, elsewhere = policy.datasets
    assert first.answers is second.answers is third.answers
    assert elsewhere.answers is not first.answers  # HOME is another jurisdiction there
    assert [r.id for r in first.rules] != [r.id for r in second.rules]


# Generated rule sets: any mix of effects, actions, jurisdictions and "*".
JURISDICTION_SETS = st.frozensets(st.sampled_from(("IE", "DE", "US", "FR", "JP")), max_size=4)
RULES = st.lists(
    st.tuples(
        st.sampled_from(tuple(Effect)),
        st.frozensets(st.sampled_from(tuple(Action)), min_size=1),
        JURISDICTION_SETS,
        st.booleans(),
    ),
    max_size=6,
)


@given(RULES)
def test_answer_tables_agree_with_the_walk_for_any_rules(shapes: list[tuple[Effect, frozenset[Action],
                                                                            frozenset[str], bool]]) -> None:
    rules = tuple(
        Rule(
            id=f"rule-{i}", effect=effect, actions=actions,
            sources=tuple(sorted(jurisdictions)) + (("*",) if any_jurisdiction else ()),
            jurisdictions=jurisdictions, any_jurisdiction=any_jurisdiction,
        )
        for i, (effect, actions, jurisdictions, any_jurisdiction) in enumerate(shapes)
    )
    dataset = Dataset("generated", "eu-west-1", "IE", (parse_pattern("s3://generated"),), rules)
    for action in Action:
        for jurisdiction in ("IE", "DE", "US", "FR", "JP", "GB", "NO"):
            assert dataset.deciding_rule(action, jurisdiction) is dataset.trace(action, jurisdiction)[0]


def sample_resources(policy: Policy) -> list[Resource]:
    """A resource inside every pattern of `policy`, and resources in no dataset."""
    inside = [
        Resource(p.scheme, p.bucket + ("x1" if p.bucket_prefix else ""), p.key_prefix + "k/1")
        for dataset in policy.datasets for p in dataset.resources
    ]
    outside = [Resource("s3", "nowhere", "x"), Resource("s3", "archive", "elsewhere/1"),
               Resource("azure", "mailstoreie", "other/alice/1")]
    return list(dict.fromkeys(inside + outside))


def sample_requests(policy: Policy) -> Iterator[AccessRequest]:
    resources = sample_resources(policy)
    for resource in resources:
        for action in Action:
            yield AccessRequest((Access(action, resource),))
        # Listings of the whole bucket and of the resource's own prefix reach the datasets nested there.
        yield AccessRequest((Access(Action.LIST, Resource(resource.scheme, resource.bucket), listing=True),))
        yield AccessRequest((Access(Action.LIST, resource, listing=True),))
        # Every copy between two sampled resources, each way.
        for source in resources:
            yield AccessRequest((Access(Action.WRITE, resource),), copy_from=source)
    yield AccessRequest(tuple(Access(Action.DELETE, r) for r in resources))  # a multi-object delete
    yield AccessRequest(())


def assert_same_decision(fast: Decision, traced: Decision) -> None:
    assert (fast.outcome, fast.forwarded, fast.reason, fast.dataset, fast.rule, fast.data_region,
            fast.policy_version) == (traced.outcome, traced.forwarded, traced.reason, traced.dataset,
                                     traced.rule, traced.data_region, traced.policy_version)
    assert fast.checks.index(fast.deciding) == traced.checks.index(traced.deciding)
    assert len(fast.checks) == len(traced.checks)
    for mine, theirs in zip(fast.checks, traced.checks, strict=True):
        assert _fields(mine) == _fields(theirs)
        # The trace read afterwards from the fast check is the trace recorded while deciding.
        assert mine.rules == theirs.rules
        if mine.rules and mine.rules[-1].matched:
            assert mine.rule == mine.rules[-1].rule


def _fields(check: Check) -> tuple[object, ...]:
    return (check.access, check.jurisdiction, check.purpose, check.dataset, check.pattern, check.region,
            check.data_jurisdiction, check.mode, check.outcome, check.rule, check.reason)


def test_decisions_agree_for_every_request_and_setting(policy: Policy) -> None:
    requests = list(sample_requests(policy))
    settings: list[dict[str, Any]] = [
        {"proxy_region": region, "unmatched_allow": allow, "force_dry_run": dry_run}
        for region in REGIONS for allow in (False, True) for dry_run in (False, True)
    ]
    compared = 0
    for request, options, jurisdiction in itertools.product(requests, settings, CALLERS):
        fast = decide(policy, jurisdiction, request, **options)
        assert fast == decide(policy, jurisdiction, request, **options)  # pure: same inputs, same answer
        assert_same_decision(fast, decide(policy, jurisdiction, request, trace=True, **options))
        compared += 1
    assert compared > 5_000


def test_decisions_agree_for_every_jurisdiction(policy: Policy) -> None:
    requests = [r for r in sample_requests(policy) if r.copy_from is None]
    for request, jurisdiction in itertools.product(requests, (*COUNTRIES, "ie", "XX", "")):
        assert_same_decision(decide(policy, jurisdiction, request), decide(policy, jurisdiction, request, trace=True))


def test_a_fast_check_builds_its_trace_only_when_read(engine_policy: Policy) -> None:
    request = AccessRequest((Access(Action.READ, Resource("s3", "mail-eu-dublin", "alice/1")),))
    fast = decide(engine_policy, "DE", request).deciding
    traced = decide(engine_policy, "DE", request, trace=True).deciding
    assert fast.traced is engine_policy.by_name["dublin-mail"]   # the dataset, to be walked when asked
    assert isinstance(traced.traced, tuple)
    assert traced.traced == fast.rules
    assert [t.rule for t in fast.rules] == ["no-us-access", "local-full-access", "eea-read"]
