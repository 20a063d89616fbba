"""A multi-object delete refused before its body is read is one `decide` would refuse with any body.

`refused_whatever_the_keys` answers for a request whose keys are still in the
body. It must never refuse a request that `decide` would forward for some
keys (that would deny a caller what the policy allows), and it should refuse
every request that `decide` would refuse for all keys (or a caller with no
right could make the proxy read megabytes). Both are checked here against
`decide` itself: over the shipped policies for every caller, bucket and
setting, and over generated policies (datasets, nested prefixes, bucket-name
prefixes, deny rules, dry run, the proxy's region, unmatched allow).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.domain import Access, AccessRequest, Action, Flow, Remote, Resource
from proxy.policy.decision import Decision
from proxy.policy.engine import decide, refused_whatever_the_keys
from proxy.policy.loader import load_policy
from proxy.policy.model import Dataset, Effect, Mode, Policy, Rule
from proxy.policy.patterns import parse_pattern

from .conftest import SHIPPED_POLICIES

CALLERS = ("IE", "DE", "NO", "US", "GB", "JP")
REGIONS = (None, "eu-west-1", "us-east-1")
SETTINGS = list(itertools.product(REGIONS, (False, True), (False, True)))


def before_body(bucket: str, *, bypass: bool) -> AccessRequest:
    """DeleteObjects as parsed before its body: the bucket, with key ""."""
    resource = Resource("s3", bucket, "")
    actions = (Action.DELETE, Action.ADMIN) if bypass else (Action.DELETE,)
    return AccessRequest(tuple(Access(action, resource) for action in actions))


def with_keys(bucket: str, keys: list[str], *, bypass: bool) -> AccessRequest:
    """The same request once its body named `keys` (as `S3Api.expand` builds it)."""
    deletes = tuple(Access(Action.DELETE, Resource("s3", bucket, key)) for key in keys)
    if bypass:
        deletes += tuple(Access(Action.ADMIN, access.resource) for access in deletes)
    return AccessRequest(deletes)


def assert_agrees(policy: Policy, jurisdiction: str, bucket: str, keys: list[str], *, bypass: bool,
                  region: str | None, unmatched_allow: bool, dry_run: bool) -> None:
    early = refused_whatever_the_keys(policy, jurisdiction, before_body(bucket, bypass=bypass), proxy_region=region,
                                      unmatched_allow=unmatched_allow, force_dry_run=dry_run)

    def decided(request: AccessRequest) -> Decision:
        return decide(policy, jurisdiction, request, proxy_region=region, unmatched_allow=unmatched_allow,
                      force_dry_run=dry_run)

    forwarded = [key for key in keys if decided(with_keys(bucket, [key], bypass=bypass)).forwarded]
    if early is not None:
        # Never refuses what the full decision would allow, for any key ...
        assert forwarded == [], (jurisdiction, bucket, early.reason)
        assert not early.forwarded
        assert not decided(with_keys(bucket, keys, bypass=bypass)).forwarded
    else:
        # ... and lets through only what some key could be allowed for.
        assert forwarded, (jurisdiction, bucket, bypass, region, unmatched_allow, dry_run)


@pytest.fixture(scope="module")
def shipped() -> Policy:
    return load_policy(SHIPPED_POLICIES)


@pytest.mark.parametrize(("region", "unmatched_allow", "dry_run"), SETTINGS)
@pytest.mark.parametrize("bypass", [False, True])
@pytest.mark.parametrize("bucket", ["mail-eu-dublin", "mail-us-east", "archive", "elsewhere"])
def test_agrees_with_decide_on_the_shipped_policies(
    shipped: Policy, bucket: str, bypass: bool, region: str | None, unmatched_allow: bool, dry_run: bool,
) -> None:
    keys = ["alice/inbox/1.eml", "ie/box/1", "ie", "ie/", "other/x", "zzz"]
    for jurisdiction in CALLERS:
        assert_agrees(shipped, jurisdiction, bucket, keys, bypass=bypass, region=region,
                      unmatched_allow=unmatched_allow, dry_run=dry_run)


@pytest.mark.parametrize(
    ("jurisdiction", "bucket", "refused"),
    [
        ("US", "mail-eu-dublin", True),      # denied everything
        ("DE", "mail-eu-dublin", True),      # may read and list, not delete
        ("IE", "mail-eu-dublin", False),
        ("IE", "mail-us-east", True),
        ("US", "mail-us-east", False),
        ("US", "archive", False),            # ie/ denies, but in dry run: a key under it is forwarded
        ("IE", "archive", False),            # ie/ may be deleted from Ireland
        ("IE", "elsewhere", True),           # in no dataset
        ("XX", "mail-eu-dublin", True),      # not a country
    ],
)
def test_who_is_refused_unread(shipped: Policy, jurisdiction: str, bucket: str, refused: bool) -> None:
    decision = refused_whatever_the_keys(shipped, jurisdiction, before_body(bucket, bypass=False))
    assert (decision is not None) == refused
    if decision is not None:
        assert decision.deciding.jurisdiction == jurisdiction
        assert not decision.forwarded


@pytest.mark.parametrize("region", ["eu-west-1", "us-east-1"])
def test_a_key_named_by_region_does_not_spare_the_body_read(shipped: Policy, region: str) -> None:
    # DeleteObjects with an x-amz-server-side-encryption-aws-kms-key-id header: its remote only adds a check.
    remote = Remote(f"the SSE-KMS key arn:aws:kms:{region}:123456789012:key/abc", region)
    request = replace(before_body("mail-eu-dublin", bypass=False), remotes=(remote,))
    decision = refused_whatever_the_keys(shipped, "US", request)
    assert decision is not None
    assert decision.deciding.jurisdiction == "US"
    assert not decision.forwarded
    assert refused_whatever_the_keys(shipped, "IE", request) is None


def test_the_reason_names_the_data_and_the_caller(shipped: Policy) -> None:
    decision = refused_whatever_the_keys(shipped, "US", before_body("mail-eu-dublin", bypass=False))
    assert decision is not None
    assert decision.reason == "delete access to data held in eu-west-1 (IE) is not allowed for callers in US"
    assert decision.deciding.dataset == "dublin-mail"


def test_dry_run_never_refuses_unread(shipped: Policy) -> None:
    for jurisdiction in CALLERS:
        for bucket in ("mail-eu-dublin", "mail-us-east", "archive", "elsewhere"):
            assert refused_whatever_the_keys(shipped, jurisdiction, before_body(bucket, bypass=True),
                                             force_dry_run=True) is None


# Generated policies: patterns on a bucket, on bucket-name prefixes and on nested key prefixes of it.
PATTERNS = ("s3://bkt", "s3://bkt/a", "s3://bkt/a/b", "s3://bkt/b", "s3://bk*", "s3://bk*/a", "s3://b*",
            "s3://b*/b/", "s3://other")
KEYS = ["zzz", "a", "ab", "a/b", "a/b/c", "a/x", "b", "b/", "b/c", "bz"]
HOMES = {"eu-west-1": "IE", "us-east-1": "US", "eu-central-1": "DE"}
JURISDICTIONS = ("IE", "DE", "US", "FR", "JP")
RULES = st.lists(
    st.tuples(
        st.sampled_from(tuple(Effect)),
        st.frozensets(st.sampled_from(tuple(Action)), min_size=1),
        st.frozensets(st.sampled_from(JURISDICTIONS), max_size=3),
        st.booleans(),
    ),
    max_size=4,
)
DATASETS = st.lists(
    st.tuples(st.sampled_from(tuple(HOMES)), st.sampled_from(tuple(Mode)), RULES,
              st.integers(min_value=1, max_value=3)),
    min_size=0, max_size=4,
)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    patterns = list(draw(st.permutations(PATTERNS)))
    datasets = []
    for number, (region, mode, shapes, count) in enumerate(draw(DATASETS)):
        mine, patterns = patterns[:count], patterns[count:]
        if not mine:
            break
        rules = tuple(
            Rule(id=f"r{number}-{i}", effect=effect, actions=actions,
                 sources=tuple(sorted(codes)) + (("*",) if anyone else ()),
                 jurisdictions=codes, any_jurisdiction=anyone)
            for i, (effect, actions, codes, anyone) in enumerate(shapes)
        )
        datasets.append(Dataset(name=f"d{number}", region=region, jurisdiction=HOMES[region],
                                resources=tuple(parse_pattern(p) for p in mine), rules=rules, mode=mode))
    return Policy(version="generated", datasets=tuple(datasets), regions=HOMES, files=())


@given(
    policies(),
    st.sampled_from(JURISDICTIONS),
    st.sampled_from(("bkt", "bkx", "bz", "other", "nowhere")),
    st.booleans(),
    st.sampled_from(SETTINGS),
)
def test_agrees_with_decide_on_any_policy(
    policy: Policy, jurisdiction: str, bucket: str, bypass: bool,
    settings: tuple[str | None, bool, bool],
) -> None:
    region, unmatched_allow, dry_run = settings
    assert_agrees(policy, jurisdiction, bucket, KEYS, bypass=bypass, region=region,
                  unmatched_allow=unmatched_allow, dry_run=dry_run)


# CreateBucket (its region) and the requests that name a second place (RestoreObject, replication, ...)
# are refused unread when `decide` refuses them as parsed: what their body adds only adds checks.
RESOURCES = [Resource("s3", bucket, key) for bucket in ("bkt", "bkx", "other", "nowhere") for key in ("", "a/b", "zzz")]
ACCESSES = st.builds(Access, st.sampled_from(tuple(Action)), st.sampled_from(RESOURCES), st.booleans())


@given(
    policies(),
    st.sampled_from(JURISDICTIONS),
    st.lists(ACCESSES, min_size=1, max_size=2),
    st.one_of(st.none(), st.sampled_from(tuple(HOMES))),
    st.lists(st.builds(Flow, ACCESSES, ACCESSES), max_size=2),
    st.lists(st.builds(Remote, st.just("a key"), st.sampled_from(tuple(HOMES))), max_size=1),
    st.sampled_from(SETTINGS),
)
def test_what_a_body_adds_never_turns_a_refusal_into_a_forward(
    policy: Policy, jurisdiction: str, accesses: list[Access], placement: str | None, flows: list[Flow],
    remotes: list[Remote], settings: tuple[str | None, bool, bool],
) -> None:
    region, unmatched_allow, dry_run = settings
    parsed = AccessRequest(tuple(accesses), remotes=tuple(remotes))
    read = replace(parsed, placement=placement, flows=tuple(flows))
    before = decide(policy, jurisdiction, parsed, proxy_region=region, unmatched_allow=unmatched_allow,
                    force_dry_run=dry_run)
    after = decide(policy, jurisdiction, read, proxy_region=region, unmatched_allow=unmatched_allow,
                   force_dry_run=dry_run)
    if not before.forwarded:
        assert not after.forwarded
