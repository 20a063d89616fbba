"""The engine on requests that send data elsewhere (flows) or name a key or target by region (remotes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from proxy.domain import Access, AccessRequest, Action, Flow, Remote, Resource
from proxy.policy.engine import decide
from proxy.policy.explain import format_explain
from proxy.policy.loader import load_policy
from proxy.policy.model import Policy

from .conftest import SHIPPED_POLICIES

R, L, W, A = Action.READ, Action.LIST, Action.WRITE, Action.ADMIN
DUBLIN, US, ARCHIVE = "mail-eu-dublin", "mail-us-east", "archive"
FRANKFURT = "mail-eu-frankfurt"
KEY_US = "the SSE-KMS key arn:aws:kms:us-east-1:123456789012:key/k"
KEY_IE = "the SSE-KMS key arn:aws:kms:eu-west-1:123456789012:key/k"

POLICY = """\
datasets:
  - name: dublin-mail
    region: eu-west-1
    resources: [s3://mail-eu-dublin]
    rules:
      - id: home
        allow: ["*"]
        from: [HOME]
      - id: eu-read
        allow: [read, list, write]
        from: [EU]
  - name: frankfurt-mail
    region: eu-central-1
    resources: [s3://mail-eu-frankfurt]
    rules:
      - id: eu-all
        allow: ["*"]
        from: [EU]
  - name: us-mail
    region: us-east-1
    resources: [s3://mail-us-east]
    rules:
      - id: anyone-writes
        allow: [read, list, write]
        from: ["*"]
  - name: irish-archive
    region: eu-west-1
    resources: [s3://archive/ie/]
    mode: dry-run
    rules:
      - id: archive-home
        allow: ["*"]
        from: [HOME]
"""


@pytest.fixture
def policy(load: Callable[..., Policy]) -> Policy:
    return load({"mail.yaml": POLICY})


def obj(bucket: str, key: str = "k", action: Action = W) -> Access:
    return Access(action, Resource("s3", bucket, key))


def whole(bucket: str, action: Action = W) -> Access:
    return Access(action, Resource("s3", bucket, ""), listing=True)


def restore(into: str, *, caller_key: str = "k") -> AccessRequest:
    """A SELECT restore of s3://mail-eu-dublin/k with its output in `into`."""
    return AccessRequest((obj(DUBLIN, caller_key),), flows=(Flow(obj(DUBLIN, caller_key, R), whole(into)),))


def test_a_restore_into_a_us_bucket_is_refused_even_where_the_caller_may_write_it(policy: Policy) -> None:
    # us-mail lets anyone write, so only the flow check stops Dublin data leaving for the US.
    decision = decide(policy, "IE", restore(US))
    assert decision.outcome.value == "deny"
    assert (decision.deciding.purpose, decision.deciding.jurisdiction) == ("source for destination", "US")
    assert decision.reason == (
        "sending data held in eu-west-1 (IE) to s3://mail-us-east, held in us-east-1 (US), requires that US "
        "may read it, and the policy does not allow that"
    )
    assert str(decision.deciding.access.resource) == "s3://mail-eu-dublin/k"


def test_the_caller_must_be_allowed_to_write_the_destination(policy: Policy) -> None:
    # Frankfurt may read Dublin data (EU), but a US caller may not write into Frankfurt's bucket.
    request = AccessRequest((obj(US, "k"),), flows=(Flow(obj(US, "k", R), whole(FRANKFURT)),))
    decision = decide(policy, "US", request)
    assert (decision.outcome.value, decision.deciding.purpose) == ("deny", "destination")
    assert str(decision.deciding.access.resource) == "s3://mail-eu-frankfurt"
    assert "sends data to s3://mail-eu-frankfurt, held in eu-central-1 (DE)" in decision.reason


def test_the_caller_must_be_allowed_the_source(policy: Policy) -> None:
    decision = decide(policy, "US", AccessRequest((obj(US),), flows=(Flow(obj(DUBLIN, "k", R), whole(US)),)))
    assert (decision.outcome.value, decision.deciding.purpose) == ("deny", "source")


@pytest.mark.parametrize(("into", "caller", "outcome"), [
    (FRANKFURT, "IE", "allow"),      # both ends in the EU, and DE may read Dublin data
    (DUBLIN, "IE", "allow"),         # into its own bucket
    (US, "IE", "deny"),
    ("scratch", "IE", "deny"),       # a destination in no dataset: the data could go anywhere
])
def test_flows_are_judged_like_copies(policy: Policy, into: str, caller: str, outcome: str) -> None:
    assert decide(policy, caller, restore(into)).outcome.value == outcome


def test_an_unmatched_destination_is_named(policy: Policy) -> None:
    decision = decide(policy, "IE", restore("scratch"))
    assert decision.rule == "unmatched destination"
    assert decision.reason.startswith("sending data held in eu-west-1 (IE) into s3://scratch is not allowed")


def test_a_bucket_source_reaches_every_dataset_nested_in_it(policy: Policy) -> None:
    # Replicating the archive bucket sends s3://archive/ie/ (a dry-run dataset) to the US too.
    request = AccessRequest((whole(ARCHIVE, A),), flows=(Flow(whole(ARCHIVE, R), whole(US)),))
    decision = decide(policy, "IE", request, unmatched_allow=True)
    nested = [c for c in decision.checks if c.purpose == "source for destination" and c.dataset == "irish-archive"]
    assert [c.outcome.value for c in nested] == ["dry_run_deny"]
    assert decision.outcome.value == "dry_run_deny"


def test_a_bucket_destination_reaches_every_dataset_nested_in_it(policy: Policy) -> None:
    request = AccessRequest((obj(DUBLIN),), flows=(Flow(obj(DUBLIN, "k", R), whole(ARCHIVE)),))
    decision = decide(policy, "IE", request, unmatched_allow=True)
    assert ("destination", "irish-archive") in {(c.purpose, c.dataset) for c in decision.checks}
    # Dublin data judged for each place it may land: the archive's root (in no dataset) and ie/.
    into = [(c.rule, c.jurisdiction) for c in decision.checks if c.purpose == "source for destination"]
    assert into == [("unmatched destination", "IE"), ("home", "IE")]
    assert decision.rule == "unmatched destination"


@pytest.mark.parametrize(("bucket", "remote", "proxy_region", "outcome"), [
    (DUBLIN, KEY_IE, None, "allow"),
    (DUBLIN, KEY_US, None, "deny"),
    (DUBLIN, KEY_IE, "eu-west-1", "allow"),
    ("scratch", KEY_US, None, "allow"),                # no dataset, no proxy region: nothing to compare
    ("scratch", KEY_US, "eu-west-1", "deny"),          # the proxy's own region
    ("archive", KEY_US, None, "allow"),                # the archive's root is in no dataset
])
def test_a_key_outside_the_data_region_is_refused(
    policy: Policy, bucket: str, remote: str, proxy_region: str | None, outcome: str,
) -> None:
    region = remote.split(":")[3]
    request = AccessRequest((obj(bucket),), remotes=(Remote(remote, region),))
    decision = decide(policy, "IE", request, proxy_region=proxy_region, unmatched_allow=True)
    assert decision.outcome.value == outcome
    if outcome == "deny":
        assert decision.rule == "remote region"
        assert region in decision.reason
        assert (proxy_region or "eu-west-1") in decision.reason


def test_the_key_refusal_names_both_regions(policy: Policy) -> None:
    decision = decide(policy, "IE", AccessRequest((obj(DUBLIN),), remotes=(Remote(KEY_US, "us-east-1"),)))
    assert decision.reason == (
        f"{KEY_US} is in us-east-1, but s3://mail-eu-dublin/k is data held in eu-west-1 (IE); "
        "it may only be used in eu-west-1"
    )
    assert decision.deciding.purpose == "remote region"


def test_a_key_is_checked_against_every_dataset_a_configuration_reaches(policy: Policy) -> None:
    # Bucket encryption of s3://archive reaches the dry-run dataset under ie/.
    request = AccessRequest((whole(ARCHIVE, A),), remotes=(Remote(KEY_US, "us-east-1"),))
    decision = decide(policy, "IE", request, unmatched_allow=True)
    assert (decision.outcome.value, decision.rule) == ("dry_run_deny", "remote region")


def test_a_copy_key_is_the_destination_s(policy: Policy) -> None:
    # CopyObject from Dublin to Frankfurt under a Frankfurt key: the key is the destination's.
    frankfurt_key = Remote("the SSE-KMS key arn:aws:kms:eu-central-1:123456789012:key/k", "eu-central-1")
    request = AccessRequest((obj(FRANKFURT),), copy_from=Resource("s3", DUBLIN, "k"), remotes=(frankfurt_key,))
    assert decide(policy, "IE", request).outcome.value == "allow"
    dublin_key = Remote(KEY_IE, "eu-west-1")
    request = AccessRequest((obj(FRANKFURT),), copy_from=Resource("s3", DUBLIN, "k"), remotes=(dublin_key,))
    assert decide(policy, "IE", request).rule == "remote region"


def test_traced_and_untraced_decisions_agree(policy: Policy) -> None:
    requests: list[tuple[str, AccessRequest, dict[str, Any]]] = [
        ("IE", restore(US), {}), ("IE", restore(FRANKFURT), {}), ("US", restore(DUBLIN), {}),
        ("IE", AccessRequest((obj(DUBLIN),), remotes=(Remote(KEY_US, "us-east-1"),)), {"proxy_region": "eu-west-1"}),
    ]
    for jurisdiction, request, options in requests:
        fast = decide(policy, jurisdiction, request, **options)
        traced = decide(policy, jurisdiction, request, trace=True, **options)
        assert fast == traced
        assert [c.rules for c in fast.checks] == [c.rules for c in traced.checks]


def test_explain_shows_what_is_sent_and_named(policy: Policy) -> None:
    request = AccessRequest((obj(DUBLIN),), flows=(Flow(obj(DUBLIN, "k", R), whole(US)),),
                            remotes=(Remote(KEY_US, "us-east-1"),))
    text = format_explain(decide(policy, "IE", request, proxy_region="eu-west-1"), "IE", request)
    lines = text.splitlines()
    assert lines[1:4] == [
        "request:   write s3://mail-eu-dublin/k",
        "           sending read s3://mail-eu-dublin/k into: write s3://mail-us-east (listing everything under this "
        "prefix)",
        f"           naming {KEY_US}, in us-east-1",
    ]
    assert 'by:        the check "region" of dataset us-mail (source for destination)' not in lines
    assert "check 2 of 6: source for destination: read s3://mail-eu-dublin/k, for jurisdiction US: deny  <- decided" \
        in lines
    assert "  dataset:  none; the region us-east-1 is compared with this proxy's" in lines
    assert any(line.startswith("  reason:   the SSE-KMS key") for line in lines)


def test_shipped_policies_refuse_an_irish_restore_into_the_us() -> None:
    policy = load_policy(SHIPPED_POLICIES)
    decision = decide(policy, "IE", restore(US))
    assert decision.outcome.value == "deny"
    assert "s3://mail-us-east" in decision.reason
