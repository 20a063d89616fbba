"""The parser's quick paths give exactly the answers of the rule-by-rule readings they stand in for.

The request path recognises everyday names and targets with a few cheap
tests, and remembers what it accepted (Host values, bucket names), instead
of applying every rule one by one (see the docstrings of `proxy.storage.target`,
`proxy.s3.names`, `proxy.s3.host`). Behind each quick path production keeps
the rule-by-rule reading, under its own name (`bucket_name_rules`, `key_rules`,
`percent_decode_rules`, `target_rules`); here any input, hostile or not, must
get the same answer from the public entry point, quick path included, as from
that reading: the same value, or a `BadRequest` with the same code and message.

What the rules themselves say is not judged here: the literal tables are the
oracle for that (`tests/s3/test_names.py` for bucket names and keys,
`tests/storage/test_uri.py` for percent-decoding, `tests/s3/test_target.py`
and `tests/storage/test_target.py` for targets and their query parameters,
which have one reading only).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.errors import BadRequest
from proxy.framing import METHODS
from proxy.s3.host import HostReader, bucket_from_host
from proxy.s3.names import bucket_name_problem, bucket_name_rules
from proxy.s3.operations import _TABLE, Level, classify
from proxy.s3.request import _check_scopes
from proxy.storage import host as storage_host
from proxy.storage.host import AMBIGUOUS_HOST_HEADERS, AMBIGUOUS_ROUTING_HEADERS, the_host
from proxy.storage.keys import check_key, key_rules
from proxy.storage.target import QueryParam, Target, is_plain_path, parse_target, target_rules
from proxy.storage.uri import percent_decode, percent_decode_rules

from .helpers import SETTINGS, headers


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """What a call did: ("value", its result) or ("refused", its code and message)."""
    try:
        return "value", call()
    except BadRequest as refused:
        return "refused", (refused.code, refused.message, refused.resource)


# ---- inputs: everyday text salted with every character the rules care about ----------------

_TRICKY = [*"/./.\\%2eEfF5cC+;?#&= -_~:@!$'()*,AZaz09",
           "\x00", "\x1f", "\x7f", "\x85", "\u00a0", "\u2028", "é", "\udc80", "\udcff", "\u212a"]
# A quick path that accepts too much is caught only by a text it takes: one that is everyday but for a
# single intruder (any ASCII character, a few others, escapes and segments the rules care about). Texts
# drawn freely almost always hold several things to refuse, and go down the rule-by-rule path on both sides.
_PLAIN = string.ascii_letters + string.digits + "-._~!$&'()*,=:@/%"
_INTRUDERS = [*map(chr, range(128)), "\x85", "\u00a0", "\u2028", "\u00e9", "\udc80", "\u212a", "%2e", "%2F", "%5c",
              "%00", "%7F", "%C2%85", "%C3", "%zz", "%4", "//", "/./", "/../", "/.", "./"]
ONE_INTRUDER = st.builds("".join, st.tuples(
    st.text(alphabet=_PLAIN, max_size=20), st.sampled_from(_INTRUDERS), st.text(alphabet=_PLAIN, max_size=20)))
TEXT = st.text(alphabet=st.sampled_from(_TRICKY) | st.characters(), max_size=60) | ONE_INTRUDER
# Escapes that decode to what the rules care about: controls (C0, DEL, C1), other non-printables,
# bad UTF-8, broken escapes, and everyday ones.
ESCAPED = st.lists(
    st.sampled_from(["%00", "%1F", "%7f", "%C2%85", "%c2%a0", "%E2%80%A8", "%2e", "%2F", "%20", "%C3%A9", "%C3",
                     "%FF", "%ED%B2%80", "%zz", "%4", "%", "a", "/", "~"]) | TEXT,
    max_size=8,
).map("".join)
NAMES = st.text(alphabet=st.sampled_from([*"abz09.-_A", "é", "\u0130"]), max_size=70) | st.sampled_from(
    ["mail-eu-dublin", "192.168.1.1", "xn--abc", "sthree-x", "ab-s3alias", "ab--ol-s3", "ab.mrap", "a--table-s3",
     "a" * 63, "a" * 64, "1.2.3.4", "1.2.3.4.5", "abc.", ".abc", "a..b", "ab"]
)


@given(NAMES)
def test_bucket_names_as_the_rules_read_them(name: str) -> None:
    assert bucket_name_problem(name) == bucket_name_rules(name)
    assert bucket_name_problem(name) == bucket_name_rules(name)  # remembered the second time


@given(TEXT | st.text(alphabet="a/", min_size=250, max_size=1100) | st.text(alphabet="é/", min_size=250, max_size=600))
def test_keys_as_the_rules_read_them(key: str) -> None:
    assert outcome(lambda: check_key(key, "k", code="C")) == outcome(lambda: key_rules(key, "k", code="C"))


@pytest.mark.parametrize(
    "key", ["", "/", "a/", "/a", "a//b", ".", "..", "a/.", "a/..", "./a", "../a", "a/./b", ".a/b", "a/.b", "a.b/c.d",
            # Around the byte limit, in characters of 1 to 4 UTF-8 bytes: the quick test counts characters.
            *(f"k/{char * count}" for char in ("a", "\u00e9", "\u20ac", "\U0001f600")
              for count in (253, 254, 255, 256, 300, 339, 340, 341, 510, 511, 512, 1021, 1022, 1023))]
)
def test_segment_rules_on_the_edges(key: str) -> None:
    assert outcome(lambda: check_key(key)) == outcome(lambda: key_rules(key))


@given(TEXT | ESCAPED)
def test_percent_decoding_as_the_rules_read_it(text: str) -> None:
    assert outcome(lambda: percent_decode(text, "t")) == outcome(lambda: percent_decode_rules(text, "t"))


@given(st.sampled_from(["", "/", "/bkt", "/bkt/", "/bkt/key", "/bkt?", "?", "#"]), TEXT, st.booleans(), TEXT | ESCAPED)
def test_targets_as_the_rules_read_them(start: str, path: str, query: bool, rest: str) -> None:
    target = start + path + ("?" + rest if query else "")

    def read(parse: Callable[[str], Target]) -> tuple[str, str | None, tuple[QueryParam, ...]]:
        parsed = parse(target)
        assert dict(parsed.by_name) == {param.name: param for param in parsed.params}
        return parsed.raw_path, parsed.raw_query, parsed.params

    assert outcome(lambda: read(parse_target)) == outcome(lambda: read(target_rules))


@pytest.mark.parametrize("intruder", _INTRUDERS)
def test_one_intruder_in_an_everyday_text_gets_the_rules_answer(intruder: str) -> None:
    # Drawn at random, an intruder meets a given quick path too seldom to catch one that lets it through.
    for text in (intruder, f"a{intruder}", f"{intruder}a", f"a/{intruder}/b"):
        assert outcome(partial(check_key, text)) == outcome(partial(key_rules, text))
        assert outcome(partial(percent_decode, text, "t")) == outcome(partial(percent_decode_rules, text, "t"))
    for target in (f"/b/{intruder}", f"/b/k{intruder}x", f"/b?x={intruder}", f"/b?{intruder}=1", f"/b?x&{intruder}"):
        assert outcome(partial(parse_target, target)) == outcome(partial(target_rules, target))


HOSTS = st.sampled_from(
    ["s3.example.test", "S3.Example.TEST:8080", "bkt.s3.example.test", "Bkt.s3.example.test", "127.0.0.1:9000",
     "[::1]:80", "[0:0:0:0:0:0:0:1]", "evil.example", "a..b.s3.example.test", "xn--x.s3.example.test",
     "localhost:99999", "b.localhost", "192.168.1.1", "", "é.localhost"]
) | TEXT


@given(HOSTS)
def test_a_remembered_host_gets_the_same_answer(host: str) -> None:
    reader = HostReader(SETTINGS)
    expected = outcome(lambda: bucket_from_host(headers(host), SETTINGS))
    for _ in range(2):  # the first time read, the second time (if accepted) remembered
        assert outcome(lambda: reader.bucket(headers(host))) == expected


def test_only_accepted_hosts_are_remembered_and_the_table_is_bounded() -> None:
    reader = HostReader(SETTINGS, cache_size=3)
    with pytest.raises(BadRequest):
        reader.bucket(headers("evil.example"))
    assert not reader._accepted.remembered
    for name in ("aaa", "bbb", "ccc", "ddd"):
        assert reader.bucket(headers(f"{name}.s3.example.test")) == name
    assert reader._accepted.remembered == ("bbb.s3.example.test", "ccc.s3.example.test", "ddd.s3.example.test")


@pytest.mark.parametrize(
    ("pairs", "reason"),
    [
        ((("Host", "s3.example.test"),), "repeated"),
        ((("X-Forwarded-Host", "other.example"),), "X-Forwarded-Host"),
        ((("Forwarded", "host=other.example"),), "Forwarded"),
    ],
)
def test_a_remembered_host_is_still_refused_beside_competing_headers(
    pairs: tuple[tuple[str, str], ...], reason: str
) -> None:
    reader = HostReader(SETTINGS)
    assert reader.bucket(headers("s3.example.test")) is None
    with pytest.raises(BadRequest, match=reason):
        reader.bucket(headers("s3.example.test", *pairs))
    with pytest.raises(BadRequest, match="required"):
        reader.bucket(CIMultiDict())


@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize("method", sorted(METHODS | {"PATCH"}))
def test_a_request_without_a_query_is_classified_as_the_table_says(level: Level, method: str) -> None:
    quick = classify(level, method, ())
    assert quick is classify(level, method, [])  # a list takes the general path
    expected = _TABLE.get((level, method, frozenset()))
    assert quick is expected or (expected is None and quick.name == "Unknown")


# ---- the credential scopes of an Authorization value: tokens split without a regex ------------

_TOKEN_SPLIT = re.compile(r"[\s,]+")


def _scopes_by_regex(value: str, *, strict: bool) -> None:
    """`_check_scopes` as it read tokens before, with the regex `[\\s,]+`: the oracle of its split."""
    for token in _TOKEN_SPLIT.split(value):
        if strict and "/" not in token:
            continue
        _check_scopes(token, strict=strict)   # one token: no white space or comma left to split at


_SPACES = [chr(c) for c in range(0x3001) if chr(c).isspace()]
_SCOPE_TEXT = st.lists(st.sampled_from([*_SPACES, ",", "/", "=", "aws4_request", "s3", "sqs", "AK", "20240101",
                                        "us-east-1", "Credential=", "AWS4-HMAC-SHA256", "x", "\x00", "é"]),
                       max_size=40).map("".join)


@given(_SCOPE_TEXT, st.booleans())
def test_scopes_are_read_from_the_tokens_the_regex_split_gives(value: str, strict: bool) -> None:
    assert outcome(partial(_check_scopes, value, strict=strict)) == \
        outcome(partial(_scopes_by_regex, value, strict=strict))


# ---- header names found harmless are not looked at again ------------------------------------------

_NAMES = st.sampled_from([
    "Host", "HOST", "Authorization", "X-Amz-Date", "x-amz-meta-path", "X-Url-Scheme", "X-Real-Host", "x_original_url",
    "X-Request-Method", "Content-Type", *AMBIGUOUS_HOST_HEADERS, *AMBIGUOUS_ROUTING_HEADERS,
    *(name.lower() for name in AMBIGUOUS_ROUTING_HEADERS), "FORWARDED",
])


@given(st.lists(st.lists(_NAMES, max_size=6), min_size=1, max_size=5))
def test_a_remembered_header_name_gets_the_same_answer(requests: list[list[str]]) -> None:
    remembered: set[str] = set()
    before = storage_host._ACCEPTED_NAMES
    try:
        for names in requests:
            fields = CIMultiDict([(name, "s3.example.test") for name in names])
            storage_host._ACCEPTED_NAMES = set()
            fresh = outcome(partial(the_host, fields, "bucket"))
            storage_host._ACCEPTED_NAMES = remembered
            assert outcome(partial(the_host, fields, "bucket")) == fresh
    finally:
        storage_host._ACCEPTED_NAMES = before
    assert not remembered & {name.lower() for name in (*AMBIGUOUS_HOST_HEADERS, *AMBIGUOUS_ROUTING_HEADERS)}


def test_the_remembered_header_names_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    remembered: set[str] = set()
    monkeypatch.setattr(storage_host, "_ACCEPTED_NAMES", remembered)
    monkeypatch.setattr(storage_host, "_ACCEPTED_NAMES_SIZE", 3)
    assert the_host(CIMultiDict([("Host", "h"), ("A", "1"), ("B", "2"), ("C", "3"), ("D", "4")]), "bucket") == "h"
    assert remembered == {"Host", "A", "B"}
    with pytest.raises(BadRequest, match="X-Real-Host"):
        the_host(CIMultiDict([("Host", "h"), ("A", "1"), ("X-Real-Host", "other")]), "bucket")


@given(st.sampled_from(["", "/", "/bkt", "/bkt/", "/bkt/key", "/bkt?", "?", "#"]), TEXT, st.booleans(), TEXT | ESCAPED)
def test_a_plain_path_is_the_target_parse_target_reads_without_a_query(start: str, path: str, query: bool,
                                                                        rest: str) -> None:
    target = start + path + ("?" + rest if query else "")
    if is_plain_path(target):
        assert outcome(partial(parse_target, target)) == ("value", Target(target, None, ()))
        assert parse_target(target).by_name == {}


@pytest.mark.parametrize("target", ["/", "/bkt", "/bkt/key", "/bkt/a%20b", "/bkt/k~-._"])
def test_everyday_paths_are_plain(target: str) -> None:
    assert is_plain_path(target)
    assert not is_plain_path(target + "?acl")
