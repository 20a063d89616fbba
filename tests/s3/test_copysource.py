"""x-amz-copy-source -> the Resource a server-side copy reads."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings

from proxy.domain import Resource
from proxy.errors import BadRequest
from proxy.s3.copysource import parse_copy_source

from .helpers import parse_wire, wire
from .test_target import KEYS, key_is_acceptable


@pytest.mark.parametrize(
    ("value", "bucket", "key"),
    [
        ("src-bkt/key", "src-bkt", "key"),
        ("/src-bkt/key", "src-bkt", "key"),
        ("src-bkt/a/b/c", "src-bkt", "a/b/c"),
        ("src-bkt/folder/", "src-bkt", "folder/"),
        ("src-bkt/a%20b", "src-bkt", "a b"),
        ("src-bkt/a%2Fb", "src-bkt", "a/b"),
        ("src-bkt/%C3%A4", "src-bkt", "ä"),
        ("src-bkt/a%2Bb", "src-bkt", "a+b"),
        ("src-bkt/100%25", "src-bkt", "100%"),
        ("src-bkt/%2541", "src-bkt", "%41"),  # decoded exactly once
        ("src-bkt/key?versionId=3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", "src-bkt", "key"),
        ("src-bkt/key?versionId=abc%2Bdef", "src-bkt", "key"),
        ("my.dotted.bucket/k", "my.dotted.bucket", "k"),
    ],
)
def test_valid_copy_sources(value: str, bucket: str, key: str) -> None:
    assert parse_copy_source(value) == Resource("s3", bucket, key)


# S3's code where it differs from InvalidArgument (a copy source S3 cannot read either); an ARN is the
# proxy's own refusal (S3 reads it).
COPY_SOURCE_CODES = {
    "ARN": "InvalidRequest",
    "lower case": "InvalidBucketName",
    "between 3 and 63": "InvalidBucketName",
    "access point alias": "InvalidBucketName",
    "longer than 1024": "KeyTooLongError",
}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "BUCKET/KEY"),
        ("/", "BUCKET/KEY"),
        ("src-bkt", "BUCKET/KEY"),
        ("src-bkt/", "BUCKET/KEY"),
        ("//src-bkt/key", "BUCKET/KEY"),
        ("arn:aws:s3:us-east-1:123456789012:accesspoint/ap/object/key", "ARN"),
        ("/arn:aws:s3:us-east-1:123456789012:accesspoint/ap/object/key", "ARN"),
        ("ARN:aws:s3:::x/y", "ARN"),
        ("src-bkt/key?partNumber=1", "only parameter"),
        ("src-bkt/key?versionId=", "only parameter"),
        ("src-bkt/key?versionId=a&x=y", "only parameter"),
        ("src-bkt/key?versionId=a?b", "only parameter"),
        ("src-bkt/key?versionid=a", "only parameter"),
        ("src-bkt/key?", "only parameter"),
        ("src-bkt/key#frag", "must not contain"),
        ("src-bkt/a+b", "must not contain"),
        ("src-bkt/a;b", "must not contain"),
        ("src-bkt/a\\b", "must not contain"),
        ("src-bkt/a b", "space"),
        ("src-bkt/a\x00b", "control"),
        ("src-bkt/\udcff", "non-ASCII"),
        ("src-bkt/ä", "non-ASCII"),
        ("src%2Dbkt/key", "percent-encoded"),
        ("src-bkt%2Fkey/x", "percent-encoded"),
        ("Src-Bkt/key", "lower case"),
        ("sb/key", "between 3 and 63"),
        ("myap-abc-s3alias/key", "access point alias"),
        ("src-bkt/a/../b", "dot segment"),
        ("src-bkt/%2e%2e/b", "dot segment"),
        ("src-bkt/a%2F..%2Fb", "dot segment"),
        ("src-bkt/./b", "dot segment"),
        ("src-bkt/a//b", "empty segment"),
        ("src-bkt//b", "empty segment"),
        ("src-bkt/a%5Cb", "backslash"),
        ("src-bkt/a%252e", "double-encoded"),
        ("src-bkt/%zz", "invalid percent-escape"),
        ("src-bkt/%FF", "UTF-8"),
        ("src-bkt/%0A", "control"),
        ("src-bkt/" + "x" * 1025, "longer than 1024"),
    ],
)
def test_refused_copy_sources(value: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason) as caught:
        parse_copy_source(value)
    assert caught.value.status == 400
    assert caught.value.code == COPY_SOURCE_CODES.get(reason, "InvalidArgument")


# botocore builds and signs each request: slower than a pure parser, and its first call builds the client.
@settings(deadline=None)
@given(KEYS)
def test_any_key_botocore_sends_as_a_copy_source_round_trips(key: str) -> None:
    request = wire("copy_object", {"Bucket": "bkt", "Key": "dest", "CopySource": {"Bucket": "src-bkt", "Key": key}})
    if key_is_acceptable(key):
        assert parse_wire(request).copy_from == Resource("s3", "src-bkt", key)
    else:
        with pytest.raises(BadRequest):
            parse_wire(request)


# botocore builds and signs each request: slower than a pure parser, and its first call builds the client.
@settings(deadline=None)
@given(KEYS)
def test_any_key_botocore_sends_as_a_copy_source_string_round_trips(key: str) -> None:
    # The string form: botocore quotes everything before "?versionId=" itself.
    assume("?versionId=" not in key)  # botocore itself cannot tell where such a key ends
    request = wire("copy_object", {"Bucket": "bkt", "Key": "dest", "CopySource": f"src-bkt/{key}?versionId=v1"})
    if key_is_acceptable(key):
        assert parse_wire(request).copy_from == Resource("s3", "src-bkt", key)
    else:
        with pytest.raises(BadRequest):
            parse_wire(request)
