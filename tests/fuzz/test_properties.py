"""Property-based fuzzing of what decides: the S3 request reader and the resource matcher.

The property for the reader: whatever the bytes, either the request is refused
(`BadRequest`) or the bucket and key it names are exactly the ones an S3
server reads from the same bytes (virtual-hosted bucket from Host, else the
first path segment; the rest of the path percent-decoded once). The property
for the matcher: the dataset it picks matches the resource and no other
matching pattern is more specific (checked against a brute-force scan).

Profiles (tests/conftest.py): ``fast`` (default, CI) and ``deep`` for longer
runs: ``HYPOTHESIS_PROFILE=deep python -m pytest tests/fuzz``.
"""

from __future__ import annotations

from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.config import S3Settings
from proxy.domain import Resource
from proxy.errors import BadRequest, PayloadTooLarge
from proxy.policy.index import ResourceIndex
from proxy.policy.patterns import ResourcePattern
from proxy.s3.request import RequestReader

SETTINGS = S3Settings(endpoints=("localhost", "127.0.0.1", "s3.example.com"),
                      virtual_hosts=("localhost", "s3.example.com"))
READER = RequestReader(SETTINGS)

# Pieces that have broken proxies before: separators, dots, encodings, case, controls.
PIECES = [
    "/", "/", "/", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "\\", "%25", "%252e", "%00", "%0a", "\x00",
    ";", "?", "#", "&", "=", "+", "%20", " ", "%c0%ae", "%ff", "é", "%C3%A9", "~", "*", "-", "_",
    "a", "b", "x1", "mail-eu-dublin", "MAIL-EU-DUBLIN", "mail-us-east", "archive", "ie", "key.txt",
    "?prefix=ie/", "?acl", "?delete", "?x-id=GetObject", "?versionId=1", "?list-type=2&prefix=",
]
HOSTS = [
    "localhost", "localhost:8080", "127.0.0.1", "127.0.0.1:80", "LOCALHOST", "localhost.",
    "mail-eu-dublin.localhost", "mail-eu-dublin.localhost:8080", "MAIL-EU-DUBLIN.localhost",
    "mail-us-east.s3.example.com", "a.b.localhost", "evil.example", "mail-eu-dublin.evil.example",
    "10.0.0.1", "[::1]", "", "localhost:x", "mail-eu-dublin..localhost",
]
METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]

targets = st.lists(st.sampled_from(PIECES), min_size=0, max_size=10).map(lambda parts: "/" + "".join(parts))


def reference(host: str, target: str) -> tuple[str, str]:
    """How an S3 server reads bucket and key from the request it is sent (moto: the first label of the Host)."""
    path = target.split("?", 1)[0]
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    for endpoint in sorted(SETTINGS.endpoints, key=len, reverse=True):
        if name.lower().endswith("." + endpoint):
            return name.split(".")[0].lower(), unquote(path[1:], errors="strict")
    bucket, _, key = path[1:].partition("/")
    return unquote(bucket, errors="strict"), unquote(key, errors="strict")


@given(method=st.sampled_from(METHODS), host=st.sampled_from(HOSTS), target=targets)
def test_reader_refuses_or_names_what_the_server_reads(method: str, host: str, target: str) -> None:
    headers: CIMultiDict[str] = CIMultiDict([("Host", host)] if host else [])
    try:
        parsed = READER.read(method, target, headers)
    except (BadRequest, PayloadTooLarge):
        return
    bucket, key = reference(host, target)
    if parsed.bucket is None:  # the service level: ListBuckets
        assert (bucket, key) == ("", "")
        return
    assert parsed.bucket == bucket
    assert parsed.access.resource.bucket == bucket
    if parsed.key is not None:
        assert parsed.key == key
        assert parsed.access.resource == Resource("s3", bucket, key)
    else:
        assert key == ""


# --- the matcher ------------------------------------------------------------------------------

buckets = st.sampled_from(["mail-eu-dublin", "mail-eu-cork", "mail-us-east", "archive", "arc", "mail"])
prefixes = st.sampled_from(["", "a", "ab", "a/", "a/b", "a/b/", "ie/", "ie/x", "b"])
patterns = st.builds(
    lambda bucket, star, key: ResourcePattern("s3", bucket[: max(1, len(bucket) - 3)] if star else bucket,
                                              star, key, text=""),
    buckets, st.booleans(), prefixes,
)


def rank(pattern: ResourcePattern) -> tuple[int, int, int]:
    # docs/policies.md: an exact bucket beats a bucket prefix, a longer prefix a shorter one,
    # then the longer key prefix wins.
    return (0 if pattern.bucket_prefix else 1, len(pattern.bucket), len(pattern.key_prefix))


@given(entries=st.lists(patterns, max_size=12, unique_by=lambda p: (p.bucket, p.bucket_prefix, p.key_prefix)),
       bucket=buckets, key=st.sampled_from(["", "a", "ab", "a/b/c", "ie/x/1", "b", "zzz"]))
def test_matcher_picks_the_most_specific_matching_pattern(
    entries: list[ResourcePattern], bucket: str, key: str,
) -> None:
    index = ResourceIndex((p, n) for n, p in enumerate(entries))
    resource = Resource("s3", bucket, key)
    matching = [p for p in entries if p.matches(resource)]
    hit = index.lookup(resource)
    if not matching:
        assert hit is None
        return
    assert hit is not None
    number, pattern = hit
    assert entries[number] == pattern
    assert pattern.matches(resource)
    assert rank(pattern) == max(rank(p) for p in matching)
