"""The parser's quick paths give exactly the answers of the rule-by-rule readings they stand in for.

The request path recognises everyday names and targets with a few cheap
tests, and remembers what it accepted (Host values, bucket names), instead
of applying every rule one by one (see the docstrings of `proxy.storage.target`,
`proxy.s3.names`, `proxy.s3.host`). Here the rule-by-rule readings are
kept as they were written before those quick paths existed, as reference
oracles, and any input, hostile or not, must get the same answer from both:
the same value, or a `BadRequest` with the same code and message.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.errors import BadRequest
from proxy.framing import METHODS
from proxy.s3.host import HostReader, bucket_from_host
from proxy.s3.names import bucket_name_problem
from proxy.s3.operations import _TABLE, Level, classify
from proxy.storage.keys import MAX_KEY_BYTES, check_key
from proxy.storage.target import QueryParam, parse_target
from proxy.storage.uri import (
    CONTROL,
    DOUBLE_ENCODED,
    PATH_CHARS,
    QUERY_NAME_CHARS,
    QUERY_VALUE_CHARS,
    describe,
    first_outside,
    percent_decode,
)

from .helpers import SETTINGS, headers

# ---- the reference readings (each rule in turn, as first written) ---------------------------

_BUCKET_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-")
_ALNUM = frozenset(string.ascii_lowercase + string.digits)
_IP_FORM = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_RESERVED_PREFIXES = {
    "xn--": "bucket names must not start with xn-- (reserved)",
    "sthree-": "bucket names must not start with sthree- (reserved)",
}
_RESERVED_SUFFIXES = {
    "-s3alias": "names ending in -s3alias are access point aliases; address the bucket by its name",
    "--ol-s3": "names ending in --ol-s3 are Object Lambda aliases; address the bucket by its name",
    ".mrap": "names ending in .mrap are multi-region access points; address the bucket by its name",
    "--table-s3": "bucket names must not end in --table-s3 (reserved)",
}


def reference_bucket_name_problem(name: str) -> str | None:
    if not 3 <= len(name) <= 63:
        return "bucket names must be between 3 and 63 characters long"
    if name.lower() != name:
        return "bucket names must be lower case"
    if any(char not in _BUCKET_CHARS for char in name):
        return "bucket names may contain only lower-case letters, digits, dots and hyphens"
    if name[0] not in _ALNUM or name[-1] not in _ALNUM:
        return "bucket names must begin and end with a letter or digit"
    if ".." in name:
        return "bucket names must not contain two adjacent dots"
    if _IP_FORM.fullmatch(name):
        return "bucket names must not be formatted as an IP address"
    for prefix, reason in _RESERVED_PREFIXES.items():
        if name.startswith(prefix):
            return reason
    for suffix, reason in _RESERVED_SUFFIXES.items():
        if name.endswith(suffix):
            return reason
    return None


def reference_check_key(key: str, what: str = "the object key", *, code: str = "InvalidUri") -> None:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise BadRequest(f"{what} is longer than {MAX_KEY_BYTES} bytes", code=code)
    bad = CONTROL.search(key)
    if bad:
        raise BadRequest(f"{what} contains a control character ({describe(bad.group())})", code=code)
    if "\\" in key:
        raise BadRequest(f"{what} contains a backslash", code=code)
    if DOUBLE_ENCODED.search(key):
        raise BadRequest(f"{what} contains a double-encoded '.', '/' or '\\'", code=code)
    segments = key.split("/")
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            raise BadRequest(f"{what} contains a dot segment ({segment!r})", code=code)
        if not segment and index != last:
            raise BadRequest(f"{what} contains an empty segment", code=code)


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def reference_percent_decode(text: str, where: str, *, code: str = "InvalidUri") -> str:
    if not text.isascii():
        raise BadRequest(f"{where} contains a non-ASCII character", code=code)
    if "%" in text:
        if _BAD_ESCAPE.search(text):
            raise BadRequest(f"{where} contains an invalid percent-escape", code=code)
        try:
            text = unquote_to_bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{where} does not decode to UTF-8", code=code) from None
    bad = CONTROL.search(text)
    if bad:
        raise BadRequest(f"{where} contains a control character ({describe(bad.group())})", code=code)
    return text


_NOT_VISIBLE_ASCII = re.compile(r"[^\x21-\x7e]")
_PATH_REASONS = {
    "+": 'a raw "+" in the path is ambiguous (some servers read it as a space); send %2B',
    ";": 'a ";" in the path is not accepted (some servers read it as a parameter delimiter)',
    "\\": "a backslash in the path is not accepted",
}


def reference_parse_target(target: str) -> tuple[str, str | None, tuple[QueryParam, ...]]:
    if not target.startswith("/"):
        raise BadRequest("the request target must be a path starting with '/' (origin-form)", code="InvalidUri")
    if "#" in target:
        raise BadRequest("the request target must not contain a fragment ('#')", code="InvalidUri")
    bad_char = _NOT_VISIBLE_ASCII.search(target)
    if bad_char:
        raise BadRequest(
            f"the request target contains a control or non-ASCII character ({describe(bad_char.group())})",
            code="InvalidUri",
        )
    raw_path, question, raw_query = target.partition("?")
    bad = first_outside(raw_path, PATH_CHARS)
    if bad is not None:
        reason = _PATH_REASONS.get(bad, f"the path must not contain {describe(bad)} unencoded")
        raise BadRequest(reason, code="InvalidUri")
    if not question:
        return raw_path, None, ()
    return raw_path, raw_query, _reference_query(raw_query)


def _reference_query(raw_query: str) -> tuple[QueryParam, ...]:
    if not raw_query:
        return ()
    params: list[QueryParam] = []
    seen: set[str] = set()
    for piece in raw_query.split("&"):
        name, equals, raw_value = piece.partition("=")
        if not name:
            raise BadRequest("the query has an empty parameter name", code="InvalidUri")
        bad = first_outside(name, QUERY_NAME_CHARS)
        if bad is not None:
            raise BadRequest(
                f"query parameter names must be plain tokens; {name!r} contains {describe(bad)}",
                code="InvalidUri",
            )
        folded = name.lower()
        if folded in seen:
            raise BadRequest(f"the query parameter {name!r} is repeated", code="InvalidUri")
        seen.add(folded)
        if not equals:
            params.append(QueryParam(name, None, None))
            continue
        bad = first_outside(raw_value, QUERY_VALUE_CHARS)
        if bad is not None:
            raise BadRequest(
                f"the value of query parameter {name!r} contains {describe(bad)} unencoded", code="InvalidUri"
            )
        value = reference_percent_decode(raw_value, f"the value of query parameter {name!r}")
        params.append(QueryParam(name, raw_value, value))
    return tuple(params)


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """What a call did: ("value", its result) or ("refused", its code and message)."""
    try:
        return "value", call()
    except BadRequest as refused:
        return "refused", (refused.code, refused.message, refused.resource)


# ---- inputs: everyday text salted with every character the rules care about ----------------

_TRICKY = [*"/./.\\%2eEfF5cC+;?#&= -_~:@!$'()*,AZaz09",
           "\x00", "\x1f", "\x7f", "\x85", "\u00a0", "\u2028", "é", "\udc80", "\udcff", "\u212a"]
TEXT = st.text(alphabet=st.sampled_from(_TRICKY) | st.characters(), max_size=60)
NAMES = st.text(alphabet=st.sampled_from([*"abz09.-_A", "é", "\u0130"]), max_size=70) | st.sampled_from(
    ["mail-eu-dublin", "192.168.1.1", "xn--abc", "sthree-x", "ab-s3alias", "ab--ol-s3", "ab.mrap", "a--table-s3",
     "a" * 63, "a" * 64, "1.2.3.4", "1.2.3.4.5", "abc.", ".abc", "a..b", "ab"]
)


@given(NAMES)
def test_bucket_names_as_the_rules_read_them(name: str) -> None:
    assert bucket_name_problem(name) == reference_bucket_name_problem(name)
    assert bucket_name_problem(name) == reference_bucket_name_problem(name)  # remembered the second time


@given(TEXT | st.text(alphabet="a/", min_size=250, max_size=1100) | st.text(alphabet="é/", min_size=250, max_size=600))
def test_keys_as_the_rules_read_them(key: str) -> None:
    assert outcome(lambda: check_key(key, "k", code="C")) == outcome(lambda: reference_check_key(key, "k", code="C"))


@pytest.mark.parametrize(
    "key", ["", "/", "a/", "/a", "a//b", ".", "..", "a/.", "a/..", "./a", "../a", "a/./b", ".a/b", "a/.b", "a.b/c.d"]
)
def test_segment_rules_on_the_edges(key: str) -> None:
    assert outcome(lambda: check_key(key)) == outcome(lambda: reference_check_key(key))


@given(TEXT)
def test_percent_decoding_as_the_rules_read_it(text: str) -> None:
    assert outcome(lambda: percent_decode(text, "t")) == outcome(lambda: reference_percent_decode(text, "t"))


@given(st.sampled_from(["", "/", "/bkt", "/bkt/", "/bkt/key", "/bkt?", "?", "#"]), TEXT, st.booleans(), TEXT)
def test_targets_as_the_rules_read_them(start: str, path: str, query: bool, rest: str) -> None:
    target = start + path + ("?" + rest if query else "")

    def new() -> tuple[str, str | None, tuple[QueryParam, ...]]:
        parsed = parse_target(target)
        assert dict(parsed.by_name) == {param.name: param for param in parsed.params}
        return parsed.raw_path, parsed.raw_query, parsed.params

    assert outcome(new) == outcome(lambda: reference_parse_target(target))


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
