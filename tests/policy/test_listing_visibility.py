"""Account listings: allowed as a named check, answered with only what the caller may list."""

from __future__ import annotations

import pytest

from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.policy.decision import Outcome
from proxy.policy.engine import decide, visible_in_listing
from proxy.policy.loader import load_policy
from proxy.policy.model import ACCOUNT_LISTING, Policy
from tests.conftest import EXAMPLE_POLICIES


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(EXAMPLE_POLICIES)


@pytest.mark.parametrize("jurisdiction", ["IE", "US", "CN"])
def test_an_account_listing_is_allowed_by_its_own_check(policy: Policy, jurisdiction: str) -> None:
    decision = decide(policy, jurisdiction, AccessRequest((Access(Action.LIST, Resource("s3", "")),)))
    assert (decision.outcome, decision.rule, decision.dataset) == (Outcome.ALLOW, ACCOUNT_LISTING, None)


@pytest.mark.parametrize("action", [Action.READ, Action.WRITE, Action.ADMIN, Action.DELETE])
def test_only_a_listing_of_the_account_gets_that_check(policy: Policy, action: Action) -> None:
    decision = decide(policy, "IE", AccessRequest((Access(action, Resource("s3", "")),)))
    assert decision.outcome is Outcome.DENY


# mail-eu-dublin: lists for IE (home) and the EEA, never US; mail-us-east: US and ADEQUATE;
# archive: no dataset at its root, the dry-run irish-archive under ie/; elsewhere: no dataset.
@pytest.mark.parametrize(("jurisdiction", "bucket", "shown"), [
    ("IE", "mail-eu-dublin", True),
    ("FR", "mail-eu-dublin", True),
    ("US", "mail-eu-dublin", False),
    ("CN", "mail-eu-dublin", False),
    ("US", "mail-us-east", True),
    ("JP", "mail-us-east", True),
    ("CN", "mail-us-east", False),
    ("IE", "archive", True),     # through the dataset nested under ie/
    ("US", "archive", True),     # that dataset is in dry run: its would-deny is forwarded
    ("IE", "someone-elses", False),
    ("XX", "mail-eu-dublin", False),   # not a country code
])
def test_a_bucket_is_shown_when_the_caller_may_list_it_or_a_dataset_in_it(
    policy: Policy, jurisdiction: str, bucket: str, shown: bool,
) -> None:
    assert visible_in_listing(policy, jurisdiction, Resource("s3", bucket)) is shown


def test_a_proxy_in_another_region_shows_none_of_that_regions_buckets(policy: Policy) -> None:
    assert visible_in_listing(policy, "US", Resource("s3", "mail-us-east"))
    assert not visible_in_listing(policy, "US", Resource("s3", "mail-us-east"), proxy_region="eu-west-1")


def test_unmatched_allow_shows_buckets_in_no_dataset(policy: Policy) -> None:
    assert visible_in_listing(policy, "IE", Resource("s3", "someone-elses"), unmatched_allow=True)
