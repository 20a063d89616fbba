"""ResourceIndex: the most specific pattern wins, listings find nested datasets, no scans."""

from __future__ import annotations

import random

import pytest

from proxy.domain import Resource
from proxy.policy.index import ResourceIndex
from proxy.policy.patterns import ResourcePattern, parse_pattern

PATTERNS = {
    "whole-archive": "s3://archive",
    "archive-ie": "s3://archive/ie/",
    "archive-ie-2019": "s3://archive/ie/2019/",
    "archive-us-loose": "s3://archive/us",
    "arch-buckets": "s3://arch*",
    "archive-dash-buckets": "s3://archive-*",
    "archive-dash-ie": "s3://archive-*/ie/",
    "ar-buckets": "s3://ar*",
    "all-buckets-logs": "s3://*/logs/",
    "mailboxes": "azure://mailstoreie/mailboxes",
    "mailboxes-vip": "azure://mailstoreie/mailboxes/vip/",
    "azure-mail-accounts": "azure://mail*/archive",
}


def build(patterns: dict[str, str]) -> ResourceIndex[str]:
    return ResourceIndex((parse_pattern(text), name) for name, text in patterns.items())


@pytest.fixture(scope="module")
def index() -> ResourceIndex[str]:
    return build(PATTERNS)


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        # Exact bucket, then the longest key prefix.
        (Resource("s3", "archive", "x/1"), "whole-archive"),
        (Resource("s3", "archive", ""), "whole-archive"),
        (Resource("s3", "archive", "ie/1"), "archive-ie"),
        (Resource("s3", "archive", "ie/2019/jan"), "archive-ie-2019"),
        (Resource("s3", "archive", "ie/2019"), "archive-ie"),
        (Resource("s3", "archive", "ie"), "whole-archive"),
        # Key prefixes are string prefixes (S3 semantics): "us" covers "us-east/..." and "usa".
        (Resource("s3", "archive", "us/1"), "archive-us-loose"),
        (Resource("s3", "archive", "usa"), "archive-us-loose"),
        # An exact bucket beats any bucket prefix, even one with a longer key prefix.
        (Resource("s3", "archive", "logs/x"), "whole-archive"),
        # A longer bucket prefix beats a shorter one; then the key prefix decides within it.
        (Resource("s3", "archive-2", "x"), "archive-dash-buckets"),
        (Resource("s3", "archive-2", "ie/x"), "archive-dash-ie"),
        (Resource("s3", "archives", "x"), "arch-buckets"),
        (Resource("s3", "arch", "x"), "arch-buckets"),
        (Resource("s3", "arbor", "x"), "ar-buckets"),
        # A bucket prefix without a key match falls through to a shorter bucket prefix that matches.
        (Resource("s3", "zebra", "logs/1"), "all-buckets-logs"),
        (Resource("s3", "zebra", "data/1"), None),
        (Resource("s3", "a", "x"), None),
        # Azure: the account is the "bucket", the key is CONTAINER/BLOB.
        (Resource("azure", "mailstoreie", "mailboxes/alice/1"), "mailboxes"),
        (Resource("azure", "mailstoreie", "mailboxes/"), "mailboxes"),
        (Resource("azure", "mailstoreie", "mailboxes/vip/ceo"), "mailboxes-vip"),
        (Resource("azure", "mailstoreie", "mailboxesold/x"), None),
        (Resource("azure", "mailstoreie", "archive/x"), "azure-mail-accounts"),
        (Resource("azure", "mailstoreus", "archive/x"), "azure-mail-accounts"),
        # Schemes do not mix.
        (Resource("azure", "archive", "x"), None),
        (Resource("gcs", "archive", "x"), None),
    ],
)
def test_lookup_most_specific(index: ResourceIndex[str], resource: Resource, expected: str | None) -> None:
    hit = index.lookup(resource)
    assert (hit[0] if hit else None) == expected
    if hit is not None:
        assert hit[1] == parse_pattern(PATTERNS[hit[0]])


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (Resource("s3", "archive", ""), ["archive-ie", "archive-ie-2019", "archive-us-loose"]),
        (Resource("s3", "archive", "ie"), ["archive-ie", "archive-ie-2019"]),
        (Resource("s3", "archive", "ie/"), ["archive-ie-2019"]),
        (Resource("s3", "archive", "ie/2019/"), []),
        (Resource("s3", "archive", "u"), ["archive-us-loose"]),
        (Resource("s3", "archive", "x/"), []),
        # Bucket-prefix patterns reach listings of the buckets they match, unless shadowed:
        # in "archive-7", keys under logs/ belong to "archive-*" (the longer bucket prefix).
        (Resource("s3", "archive-7", ""), ["archive-dash-ie"]),
        (Resource("s3", "zebra", ""), ["all-buckets-logs"]),
        (Resource("s3", "zebra", "lo"), ["all-buckets-logs"]),
        (Resource("s3", "zebra", "logs/"), []),
        (Resource("azure", "mailstoreie", "mailboxes/"), ["mailboxes-vip"]),
        (Resource("azure", "mailstoreie", ""), ["mailboxes", "mailboxes-vip", "azure-mail-accounts"]),
    ],
)
def test_nested_for_listings(index: ResourceIndex[str], resource: Resource, expected: list[str]) -> None:
    assert [name for name, _ in index.nested(resource)] == expected


def test_nested_skips_patterns_shadowed_by_an_exact_bucket() -> None:
    # In the bucket "archive", keys under logs/ belong to "whole-archive" (exact bucket wins),
    # so a listing of "archive" never reaches "all-buckets-logs".
    index = build(PATTERNS)
    assert "all-buckets-logs" not in [n for n, _ in index.nested(Resource("s3", "archive", ""))]
    shadowing = build({"exact": "s3://data/logs/x", "prefix": "s3://dat*/logs/", "whole": "s3://data/logs/"})
    assert [n for n, _ in shadowing.nested(Resource("s3", "data", ""))] == ["whole", "exact"]


def test_duplicate_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        build({"a": "s3://mail", "b": "s3://mail/"})


def _brute_force(patterns: list[tuple[ResourcePattern, int]], resource: Resource) -> int | None:
    """The reference answer: scan everything, rank by (exact bucket, bucket length, key length)."""
    matching = [(p, v) for p, v in patterns if p.matches(resource)]
    if not matching:
        return None
    best = max(matching, key=lambda pv: (not pv[0].bucket_prefix, len(pv[0].bucket), len(pv[0].key_prefix)))
    return best[1]


def test_ten_thousand_datasets_agree_with_a_full_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20240611)  # noqa: S311 - test data, not secrets; a fixed seed gives the same cases each run
    patterns: list[tuple[ResourcePattern, int]] = []
    seen: set[ResourcePattern] = set()
    while len(patterns) < 10_000:
        bucket = f"bucket-{rng.randrange(2_000):04d}"
        kind = rng.random()
        if kind < 0.1:
            text = f"s3://{bucket[:rng.randrange(1, len(bucket))]}*"
        elif kind < 0.4:
            text = f"s3://{bucket}"
        else:
            text = f"s3://{bucket}/" + "/".join(f"d{rng.randrange(4)}" for _ in range(rng.randrange(1, 4))) + "/"
        pattern = parse_pattern(text)
        if pattern not in seen:
            seen.add(pattern)
            patterns.append((pattern, len(patterns)))
    index = ResourceIndex(patterns)
    assert len(index) == 10_000
    resources = [
        Resource("s3", f"bucket-{rng.randrange(2_200):04d}",
                 "/".join(f"d{rng.randrange(5)}" for _ in range(rng.randrange(0, 5))))
        for _ in range(1_000)
    ]
    expected = [_brute_force(patterns, r) for r in resources]
    assert sum(e is not None for e in expected) > 500, "the sample must exercise matches"

    # The index must answer without testing patterns one by one.
    def no_scanning(self: ResourcePattern, resource: Resource) -> bool:
        raise AssertionError("lookup scanned patterns")

    monkeypatch.setattr(ResourcePattern, "matches", no_scanning)
    actual = []
    for r in resources:
        hit = index.lookup(r)
        actual.append(hit[0] if hit else None)
    assert actual == expected
