"""Bucket-name and key rules shared by the path, the Host, the copy source and the delete body."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import BadRequest
from proxy.s3.names import bucket_name_problem, check_bucket_name
from proxy.storage.keys import MAX_KEY_BYTES, check_key


@pytest.mark.parametrize(
    "name",
    ["abc", "mail-eu-dublin", "my.bucket.name", "123", "a" * 63, "b1-2.c3", "logs--usw2-az1--x-s3"],
)
def test_valid_bucket_names(name: str) -> None:
    assert bucket_name_problem(name) is None
    check_bucket_name(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("ab", "between 3 and 63"),
        ("a" * 64, "between 3 and 63"),
        ("", "between 3 and 63"),
        ("MyBucket", "lower case"),
        ("my_bucket", "only lower-case letters"),
        ("bücket", "only lower-case letters"),
        ("my bucket", "only lower-case letters"),
        ("-bucket", "begin and end"),
        ("bucket-", "begin and end"),
        (".bucket", "begin and end"),
        ("my..bucket", "two adjacent dots"),
        ("192.168.1.1", "IP address"),
        ("xn--bucket", "xn--"),
        ("sthree-bucket", "sthree-"),
        ("myap-abcdef-s3alias", "access point alias"),
        ("myap-abcdef--ol-s3", "Object Lambda"),
        ("mfzwi23gnjvgw.mrap", "multi-region"),
        ("tables--table-s3", "reserved"),
    ],
)
def test_invalid_bucket_names_say_why(name: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason) as caught:
        check_bucket_name(name)
    assert caught.value.code == "InvalidBucketName"
    assert caught.value.resource == name


@pytest.mark.parametrize(
    "key",
    ["a", "a/b/c", "folder/", "a b", "ä/ö", ".hidden", "a/...", "..a", "a..", "100%", "%41", "a+b",
     "x" * MAX_KEY_BYTES, ""],
)
def test_valid_keys(key: str) -> None:
    check_key(key)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("x" * (MAX_KEY_BYTES + 1), "longer than 1024"),
        ("ä" * 513, "longer than 1024"),
        ("a\nb", "control"),
        ("a\x7fb", "control"),
        ("a\x85b", "control"),
        ("a\\b", "backslash"),
        ("a%2eb", "double-encoded"),
        ("a%2Fb", "double-encoded"),
        ("a%5cb", "double-encoded"),
        (".", "dot segment"),
        ("..", "dot segment"),
        ("a/../b", "dot segment"),
        ("a/./b", "dot segment"),
        ("a/..", "dot segment"),
        ("../a", "dot segment"),
        ("a//b", "empty segment"),
        ("/a", "empty segment"),
        ("a//", "empty segment"),
        ("/", "empty segment"),
    ],
)
def test_invalid_keys(key: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason) as caught:
        check_key(key)
    # A key over S3's limit gets S3's own code; the rest are the proxy's reading of the path.
    assert caught.value.code == ("KeyTooLongError" if reason == "longer than 1024" else "InvalidURI")


# Names near the rules' edges: S3's characters, a few it refuses, and lengths around 3 and 63.
_NAME_CHARS = st.sampled_from("abz09.-_A é")


@given(st.text(_NAME_CHARS, max_size=70))
def test_a_refused_bucket_name_is_always_s3s_invalid_bucket_name(name: str) -> None:
    problem = bucket_name_problem(name)
    if problem is None:
        check_bucket_name(name)
        return
    with pytest.raises(BadRequest) as refused:
        check_bucket_name(name)
    assert (refused.value.status, refused.value.code, refused.value.resource) == (400, "InvalidBucketName", name)
    assert refused.value.message.startswith(problem)


@given(st.text(st.sampled_from("ab/\u00e9\u00e4\U0001f600."), min_size=250, max_size=1100))
def test_a_key_is_refused_as_too_long_exactly_when_it_is_over_1024_bytes(key: str) -> None:
    # Keys whose only fault could be their length (no dot or empty segments): S3's KeyTooLongError, by bytes.
    key = "k" + key.replace("/.", "/k").replace("//", "/k")
    if len(key.encode("utf-8")) <= MAX_KEY_BYTES:
        check_key(key)
        return
    with pytest.raises(BadRequest) as refused:
        check_key(key)
    assert (refused.value.status, refused.value.code) == (400, "KeyTooLongError")
