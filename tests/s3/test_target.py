"""Request-target and Host -> bucket and key, path-style and virtual-hosted, read strictly, end to end."""

from __future__ import annotations

import re
import string
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from proxy.errors import BadRequest

from .helpers import PATH_HOST, parse

VHOST = f"bkt.{PATH_HOST}"


@pytest.mark.parametrize(
    ("host", "target", "bucket", "key"),
    [
        (PATH_HOST, "/", None, None),
        (PATH_HOST, "/bkt", "bkt", None),
        (PATH_HOST, "/bkt/", "bkt", None),
        (PATH_HOST, "/bkt?", "bkt", None),
        (PATH_HOST, "/bkt/key", "bkt", "key"),
        (PATH_HOST, "/bkt/a/b/c.txt", "bkt", "a/b/c.txt"),
        (PATH_HOST, "/bkt/folder/", "bkt", "folder/"),
        (PATH_HOST, "/bkt/a%20b", "bkt", "a b"),
        (PATH_HOST, "/bkt/a%2Fb", "bkt", "a/b"),  # S3 decodes %2F inside a key too
        (PATH_HOST, "/bkt/%C3%A4%C3%B6", "bkt", "äö"),
        (PATH_HOST, "/bkt/a%2Bb", "bkt", "a+b"),
        (PATH_HOST, "/bkt/a=b&c!$'()*,", "bkt", "a=b&c!$'()*,"),
        (PATH_HOST, "/bkt/a:b@c~d", "bkt", "a:b@c~d"),
        (PATH_HOST, "/bkt/.hidden/...", "bkt", ".hidden/..."),
        (PATH_HOST, "/bkt/100%25", "bkt", "100%"),
        (PATH_HOST, "/bkt/%2541", "bkt", "%41"),  # a literal "%41": decoded once, not twice
        (PATH_HOST, "/bkt/key?x-id=GetObject", "bkt", "key"),
        (PATH_HOST, "/my.dotted.bucket/k", "my.dotted.bucket", "k"),
        ("localhost:8080", "/bkt/k", "bkt", "k"),
        ("[::1]:8080", "/bkt/k", "bkt", "k"),
        (VHOST, "/", "bkt", None),
        (VHOST, "/?list-type=2", "bkt", None),
        (VHOST, "/key", "bkt", "key"),
        (VHOST, "/a/b/", "bkt", "a/b/"),
        (VHOST, "/bkt/key", "bkt", "bkt/key"),  # the whole path is the key
        (VHOST, "/Upper%20Case", "bkt", "Upper Case"),
    ],
)
def test_bucket_and_key(host: str, target: str, bucket: str | None, key: str | None) -> None:
    request = parse("GET", target, host)
    assert (request.bucket, request.key) == (bucket, key)


@pytest.mark.parametrize(
    ("host", "target", "code"),
    [
        # not origin-form
        (PATH_HOST, "*", "InvalidURI"),
        (PATH_HOST, "http://evil.example/bkt/key", "InvalidURI"),
        (PATH_HOST, "", "InvalidURI"),
        (PATH_HOST, "bkt/key", "InvalidURI"),
        # fragments, controls, non-ASCII
        (PATH_HOST, "/bkt/key#frag", "InvalidURI"),
        (PATH_HOST, "/bkt/key?a=b#frag", "InvalidURI"),
        (PATH_HOST, "/bkt/a b", "InvalidURI"),
        (PATH_HOST, "/bkt/a\tb", "InvalidURI"),
        (PATH_HOST, "/bkt/a\x00b", "InvalidURI"),
        (PATH_HOST, "/bkt/a\x7fb", "InvalidURI"),
        (PATH_HOST, "/bkt/\udcff", "InvalidURI"),
        (PATH_HOST, "/bkt/é", "InvalidURI"),
        # escapes
        (PATH_HOST, "/bkt/%zz", "InvalidURI"),
        (PATH_HOST, "/bkt/%4", "InvalidURI"),
        (PATH_HOST, "/bkt/a%", "InvalidURI"),
        (PATH_HOST, "/bkt/%FF", "InvalidURI"),
        (PATH_HOST, "/bkt/%C0%AE%C0%AE/x", "InvalidURI"),
        (PATH_HOST, "/bkt/%00", "InvalidURI"),
        (PATH_HOST, "/bkt/a%0D%0Ab", "InvalidURI"),
        (PATH_HOST, "/bkt/a%C2%85", "InvalidURI"),
        # backslashes
        (PATH_HOST, "/bkt/a\\b", "InvalidURI"),
        (PATH_HOST, "/bkt/a%5cb", "InvalidURI"),
        (PATH_HOST, "/bkt/a%5Cb", "InvalidURI"),
        # dot segments, raw and encoded
        (PATH_HOST, "/bkt/./a", "InvalidURI"),
        (PATH_HOST, "/bkt/../a", "InvalidURI"),
        (PATH_HOST, "/bkt/a/..", "InvalidURI"),
        (PATH_HOST, "/bkt/a/.", "InvalidURI"),
        (PATH_HOST, "/bkt/%2e/a", "InvalidURI"),
        (PATH_HOST, "/bkt/%2e%2e/a", "InvalidURI"),
        (PATH_HOST, "/bkt/.%2E/a", "InvalidURI"),
        (PATH_HOST, "/bkt/%2E./a", "InvalidURI"),
        (PATH_HOST, "/bkt/a%2F..%2Fb", "InvalidURI"),
        (PATH_HOST, "/bkt/a/%2e%2e", "InvalidURI"),
        (PATH_HOST, "/../bkt/a", "InvalidURI"),
        (PATH_HOST, "/./bkt/a", "InvalidURI"),
        # double encoding
        (PATH_HOST, "/bkt/%252e%252e/a", "InvalidURI"),
        (PATH_HOST, "/bkt/a%252fb", "InvalidURI"),
        (PATH_HOST, "/bkt/a%252Fb", "InvalidURI"),
        (PATH_HOST, "/bkt/a%255cb", "InvalidURI"),
        (PATH_HOST, "/bkt/%25%32%65%25%32%65/a", "InvalidURI"),
        # empty segments
        (PATH_HOST, "//bkt/a", "InvalidURI"),
        (PATH_HOST, "//", "InvalidURI"),
        (PATH_HOST, "/bkt//a", "InvalidURI"),
        (PATH_HOST, "/bkt/a//b", "InvalidURI"),
        (PATH_HOST, "/bkt//", "InvalidURI"),
        (PATH_HOST, "/bkt/a%2F%2Fb", "InvalidURI"),
        # ambiguous characters
        (PATH_HOST, "/bkt/a+b", "InvalidURI"),
        (PATH_HOST, "/bkt/a;b", "InvalidURI"),
        (PATH_HOST, "/bkt;x/a", "InvalidURI"),
        (PATH_HOST, "/bkt/[x]", "InvalidURI"),
        (PATH_HOST, "/bkt/a|b", "InvalidURI"),
        (PATH_HOST, '/bkt/a"b', "InvalidURI"),
        # the bucket segment
        (PATH_HOST, "/b%6Bt/key", "InvalidURI"),
        (PATH_HOST, "/bk%2Et/key", "InvalidURI"),
        (PATH_HOST, "/bkt%2Fother/key", "InvalidURI"),
        (PATH_HOST, "/Bkt/key", "InvalidBucketName"),
        (PATH_HOST, "/ab/key", "InvalidBucketName"),
        (PATH_HOST, "/bkt_1/key", "InvalidBucketName"),
        (PATH_HOST, "/10.0.0.1/key", "InvalidBucketName"),
        (PATH_HOST, "/myap-abc-s3alias/key", "InvalidBucketName"),
        # long keys
        (PATH_HOST, "/bkt/" + "x" * 1025, "KeyTooLongError"),
        (PATH_HOST, "/bkt/" + "%C3%A4" * 513, "KeyTooLongError"),
        # virtual-hosted
        (VHOST, "//key", "InvalidURI"),
        (VHOST, "/../key", "InvalidURI"),
        (VHOST, "/a%5c", "InvalidURI"),
        ("Bkt.s3.example.test", "/key", "InvalidRequest"),
        ("bkt.other.example", "/key", "InvalidRequest"),
        # the query
        (PATH_HOST, "/bkt?a=1&a=2", "InvalidURI"),
        (PATH_HOST, "/bkt?prefix=a&PREFIX=b", "InvalidURI"),
        (PATH_HOST, "/bkt?acl&acl", "InvalidURI"),
        (PATH_HOST, "/bkt?&acl", "InvalidURI"),
        (PATH_HOST, "/bkt?acl&", "InvalidURI"),
        (PATH_HOST, "/bkt?=x", "InvalidURI"),
        (PATH_HOST, "/bkt?prefix=a+b", "InvalidURI"),
        (PATH_HOST, "/bkt?pre+fix=a", "InvalidURI"),
        (PATH_HOST, "/bkt?prefix=a;b", "InvalidURI"),
        (PATH_HOST, "/bkt?acl;x", "InvalidURI"),
        (PATH_HOST, "/bkt?prefix=a=b", "InvalidURI"),
        (PATH_HOST, "/bkt?prefix=a?b", "InvalidURI"),
        (PATH_HOST, "/bkt?prefix=%zz", "InvalidURI"),
        (PATH_HOST, "/bkt?prefix=%FF", "InvalidURI"),
        (PATH_HOST, "/bkt?prefix=%00", "InvalidURI"),
        (PATH_HOST, "/bkt?pre%66ix=a", "InvalidURI"),
        (PATH_HOST, "/bkt?%61cl", "InvalidURI"),
        (PATH_HOST, "/bkt?prefix=a b", "InvalidURI"),
    ],
)
def test_refused_targets(host: str, target: str, code: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse("GET", target, host)
    assert caught.value.code == code
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("*", "origin-form"),
        ("http://evil.example/bkt/key", "origin-form"),
        ("/bkt/key#frag", "fragment"),
        ("/bkt/key?a=b#frag", "fragment"),
        ("/bkt/a b", "control or non-ASCII character"),
        ("/bkt/\udcff", "byte 0xFF"),
        ("/bkt/a+b", "send %2B"),
        ("/bkt/a;b", "parameter delimiter"),
        ("/bkt/a\\b", "backslash"),
        ("/bkt/a%5Cb", "backslash"),
        ("/bkt/%2e%2e/b", "dot segment"),
        ("/bkt/a//b", "empty segment"),
        ("/b%6Bt/key", "must not be percent-encoded"),
        ("/bkt?a&a", "repeated"),
        ("/bkt?pre%66ix=a", "plain tokens"),
    ],
)
def test_refusals_say_why(target: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(reason)):
        parse("GET", target)


# ---- properties --------------------------------------------------------------

# Characters that make keys interesting, mixed with everything S3 allows.
_KEY_CHARS = st.one_of(
    st.sampled_from("/./.\\%2eEfF5cC+;?#& "), st.characters(blacklist_categories=("Cc", "Cs"))
)
KEYS = st.text(alphabet=_KEY_CHARS, min_size=1, max_size=40)


def key_is_acceptable(key: str) -> bool:
    """The rules, stated independently of the parser: what a key may be to be addressed."""
    segments = key.split("/")
    return not (
        len(key.encode()) > 1024
        or "\\" in key
        or re.search("%(2e|2f|5c)", key, re.IGNORECASE)
        or any(segment in (".", "..") for segment in segments)
        or any(not segment for segment in segments[:-1])
    )


def _round_trip(host: str, target: str, key: str) -> None:
    if key_is_acceptable(key):
        request = parse("GET", target, host)
        assert request.key == key
        assert request.access.resource.key == key
        assert request.operation.name == "GetObject"
    else:
        with pytest.raises(BadRequest):
            parse("GET", target, host)


@given(KEYS)
def test_any_botocore_encoded_key_round_trips_path_style(key: str) -> None:
    _round_trip(PATH_HOST, "/bkt/" + quote(key, safe="/~"), key)


@given(KEYS)
def test_any_botocore_encoded_key_round_trips_virtual_hosted(key: str) -> None:
    _round_trip(VHOST, "/" + quote(key, safe="/~"), key)


@given(KEYS)
def test_any_fully_encoded_key_round_trips(key: str) -> None:
    # Clients that encode "/" too: S3 decodes %2F to "/", and so does the parser.
    _round_trip(PATH_HOST, "/bkt/" + quote(key, safe=""), key)


_SEGMENT = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=8)
_POISON = st.sampled_from(
    ["%2e", "%2E", ".%2e", "%2e.", "%2E%2e", "..", ".", "%2e%2E", "%252e", "%252E%252e"]
)
_INSIDE = st.sampled_from(
    ["\\", "%5c", "%5C", "%255c", "%00", "%1F", "%7F", "%0a", "\x00", "\x1f", "\x7f", "\t", "%C2%80", "%252f"]
)


@given(st.lists(_SEGMENT, min_size=1, max_size=5), st.data())
def test_an_encoded_dot_segment_anywhere_is_refused(segments: list[str], data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(segments)))
    poisoned = [*segments[:position], data.draw(_POISON), *segments[position:]]
    with pytest.raises(BadRequest):
        parse("GET", "/bkt/" + "/".join(poisoned))


@given(st.lists(_SEGMENT, min_size=1, max_size=5), st.data())
def test_a_backslash_or_control_anywhere_is_refused(segments: list[str], data: st.DataObject) -> None:
    path = "/bkt/" + "/".join(segments)
    position = data.draw(st.integers(5, len(path)))
    poisoned = path[:position] + data.draw(_INSIDE) + path[position:]
    with pytest.raises(BadRequest):
        parse("GET", poisoned)


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F) | st.just("\x7f")), st.text())
def test_a_control_character_in_the_query_is_refused(control: str, rest: str) -> None:
    assume(control)
    with pytest.raises(BadRequest):
        parse("GET", f"/bkt?prefix={control}{rest}")
