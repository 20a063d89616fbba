"""What the proxy strips from callers' headers and the tags it sets."""

from __future__ import annotations

from urllib.parse import quote

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.domain import Caller
from proxy.errors import BadRequest
from proxy.tags import (
    CONNECTION_TOKENS,
    HOP_BY_HOP,
    REQUEST_ONLY_DROPPED,
    ROUTING_HINTS_DROPPED,
    SUBJECT_SAFE,
    TagSigner,
    add_tags,
    check_connection,
    request_headers,
    response_headers,
)

CALLER = Caller(subject="alice", jurisdiction="IE", source="127.0.0.1", method="jwt")


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


@pytest.mark.parametrize(
    "name",
    ["X-Bailiwick-Jurisdiction", "x-bailiwick-jurisdiction", "X_BAILIWICK_JURISDICTION", "x-BaIlIwIcK-tag",
     "X-Bailiwick-Anything-Else", "Connection", "Keep-Alive", "Transfer-Encoding", "TE", "Upgrade",
     "Proxy-Authorization", "Expect", "X-Named-In-Connection"],
)
def test_dropped_request_headers(name: str) -> None:
    out = request_headers(headers((name, "v"), ("Connection", "X-Named-In-Connection"), ("Host", "h")), frozenset())
    assert name not in out
    assert out["Host"] == "h"


def test_token_header_dropped_only_when_it_carried_the_token() -> None:
    incoming = headers(("Authorization", "AWS4-HMAC-SHA256 x"), ("X-Amz-Date", "d"))
    assert request_headers(incoming, frozenset())["Authorization"] == "AWS4-HMAC-SHA256 x"
    assert "Authorization" not in request_headers(incoming, frozenset({"authorization"}))


def test_repeated_end_to_end_headers_keep_order() -> None:
    out = request_headers(headers(("X-Amz-Meta-A", "1"), ("X-Amz-Meta-A", "2")), frozenset())
    assert out.getall("X-Amz-Meta-A") == ["1", "2"]


def test_response_hop_by_hop_dropped() -> None:
    out = response_headers(headers(("Transfer-Encoding", "chunked"), ("Connection", "close, X-Secret"),
                                   ("X-Secret", "s"), ("ETag", '"e"')))
    assert list(out.items()) == [("ETag", '"e"')]


def test_tags_set_after_stripping() -> None:
    out = request_headers(headers(("X-Bailiwick-Jurisdiction", "US")), frozenset())
    add_tags(out, caller=CALLER, decision_id="d1", policy_version="v1", method="GET", path="/b/k", signer=None)
    assert out.getall("X-Bailiwick-Jurisdiction") == ["IE"]
    assert (out["X-Bailiwick-Subject"], out["X-Bailiwick-Decision"], out["X-Bailiwick-Policy"]) == ("alice", "d1", "v1")
    assert "X-Bailiwick-Tag" not in out


@pytest.mark.parametrize(("subject", "sent"), [("alice\r\nX-Evil: 1", "alice%0D%0AX-Evil:%201"), ("josé", "jos%C3%A9")])
def test_subject_cannot_break_a_header_line(subject: str, sent: str) -> None:
    out: CIMultiDict[str] = CIMultiDict()
    caller = Caller(subject=subject, jurisdiction="IE", source="", method="jwt")
    add_tags(out, caller=caller, decision_id="d", policy_version="v", method="GET", path="/", signer=None)
    assert out["X-Bailiwick-Subject"] == sent


def test_signed_tag_verifies_with_the_shared_key_and_binds_method_and_path() -> None:
    key = b"k" * 32
    out: CIMultiDict[str] = CIMultiDict([("Host", "bkt.s3.example")])
    add_tags(out, caller=CALLER, decision_id="d1", policy_version="v1", method="PUT", path="/b/k?x=1",
             signer=TagSigner(key, 60))
    claims = jwt.decode(out["X-Bailiwick-Tag"], key, algorithms=["HS256"])
    assert claims["jurisdiction"] == "IE"
    assert claims["decision"] == "d1"
    assert (claims["method"], claims["path"]) == ("PUT", "/b/k?x=1")
    assert claims["host"] == "bkt.s3.example"
    assert 0 < claims["exp"] - claims["iat"] <= 60
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(out["X-Bailiwick-Tag"], b"x" * 32, algorithms=["HS256"])


@pytest.mark.parametrize(
    ("connection", "refused"),
    [
        ("close", False),
        ("keep-alive", False),
        ("Keep-Alive, TE", False),
        ("close, X-Bailiwick-Decision", False),  # stripped and set anew anyway
        ("close, Host", True),
        ("x-amz-copy-source", True),
        ("Content-Encoding", True),
        ("authorization", True),
        ("X-Bailiwick-Token, x-amz-date", True),
    ],
)
def test_connection_may_name_only_hop_by_hop_headers(connection: str, refused: bool) -> None:
    incoming = headers(("Host", "h"), ("Connection", connection))
    if refused:
        with pytest.raises(BadRequest) as excinfo:
            check_connection(incoming)
        assert "not a hop-by-hop header" in excinfo.value.message
    else:
        check_connection(incoming)
        assert request_headers(incoming, frozenset())["Host"] == "h"


# ---- the per-request fast paths read headers exactly as the plain loops they replaced ----------

# The header sets are the module's (the first test above pins what they drop); what these tests hold
# the fast paths to is the plain loops' way of applying them.


def _reference_is_tag(name: str) -> bool:
    return name.lower().replace("_", "-").startswith("x-bailiwick-")


def _reference_named(incoming: CIMultiDictProxy[str]) -> set[str]:
    named: set[str] = set()
    for value in incoming.getall("Connection", ()):
        named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


def _reference_request_headers(incoming: CIMultiDictProxy[str], token_headers: frozenset[str]) -> list[tuple[str, str]]:
    dropped = HOP_BY_HOP | REQUEST_ONLY_DROPPED | ROUTING_HINTS_DROPPED | token_headers | _reference_named(incoming)
    return [(name, value) for name, value in incoming.items()
            if name.lower() not in dropped and not _reference_is_tag(name.lower())]


def _reference_check_connection(incoming: CIMultiDictProxy[str]) -> str | None:
    named = _reference_named(incoming)
    if "upgrade" in named or any(name in incoming for name in ("Upgrade", "HTTP2-Settings")):
        return "protocol upgrades (WebSocket, h2c) are not supported"
    for name in incoming:
        lower = name.lower()
        if "_" in lower and not _reference_is_tag(lower) and not lower.startswith(("x-amz-meta-", "x-ms-meta-")):
            return f'the header name "{name}" contains "_"; some servers read it as "{lower.replace("_", "-")}"'
    for token in named:
        if token not in CONNECTION_TOKENS and not _reference_is_tag(token):
            return (f'the Connection header names "{token}", which is not a hop-by-hop header; '
                    "the proxy does not drop end-to-end headers on a caller's request")
    return None


_NAMES = st.sampled_from([
    "Host", "Authorization", "X-Bailiwick-Token", "x-bailiwick-token", "X_Bailiwick_Jurisdiction", "x-BAILIWICK_tag",
    "X-Bailiwick", "X-Bailiwickx", "Connection", "connection", "Keep-Alive", "TE", "Expect", "Upgrade",
    "HTTP2-Settings", "Transfer-Encoding", "X-Amz-Meta-a_b", "x_amz_date", "X-Amz-Date", "Proxy-Authorization",
    "x-ms-meta-my_key", "x_ms_meta-a", "x-ms_meta-a",
    "X-Named", "x-named", "X-Bailiwic\u212a-Policy", "\u0130nfo",
])
_CONNECTION_VALUES = st.lists(
    st.sampled_from(["close", "keep-alive", "TE", "x-named", "X-Bailiwick-Policy", "x_bailiwick_tag", "Host",
                     "upgrade", " ", ""]), max_size=3,
).map(", ".join)
_HEADER_LISTS = st.lists(
    st.tuples(_NAMES, st.text(alphabet="ab ", max_size=3)) | st.tuples(st.just("Connection"), _CONNECTION_VALUES),
    max_size=8,
)
_TOKEN_HEADERS = st.sampled_from([frozenset(), frozenset({"authorization"}), frozenset({"x-bailiwick-token"}),
                                  frozenset({"authorization", "x-named"})])


@given(_HEADER_LISTS, _TOKEN_HEADERS)
def test_request_headers_keep_what_the_plain_loop_kept(pairs: list[tuple[str, str]], token: frozenset[str]) -> None:
    incoming = headers(*pairs)
    for _ in range(2):  # the second time with the dropped-name set and the names that passed remembered
        assert list(request_headers(incoming, token).items()) == _reference_request_headers(incoming, token)


@given(_HEADER_LISTS)
def test_check_connection_refuses_what_the_plain_loop_refused(pairs: list[tuple[str, str]]) -> None:
    incoming = headers(*pairs)
    try:
        check_connection(incoming)
        refused = None
    except BadRequest as err:
        refused = err.message
    assert refused == _reference_check_connection(incoming)


@given(st.text(alphabet=st.sampled_from([*"aZ09_.-~!#$&'()*+,/:;=?@[]% \"<>\\^`{|}\r\n\x00\x7f", "é", "\u2028",
                                          "\udc80"]) | st.characters()))
def test_subject_is_sent_as_quote_would_send_it(subject: str) -> None:
    out: CIMultiDict[str] = CIMultiDict()
    caller = Caller(subject=subject, jurisdiction="IE", source="", method="jwt")
    try:
        expected = quote(subject, safe=SUBJECT_SAFE)
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            add_tags(out, caller=caller, decision_id="d", policy_version="v", method="GET", path="/", signer=None)
        return
    add_tags(out, caller=caller, decision_id="d", policy_version="v", method="GET", path="/", signer=None)
    assert out["X-Bailiwick-Subject"] == expected


@pytest.mark.parametrize("name", [
    "X-Forwarded-Proto", "x-forwarded-port", "X-Forwarded-Scheme", "X-Forwarded-Protocol", "X-Forwarded-Ssl",
    "X-Url-Scheme", "X-Scheme", "Front-End-Https",
])
def test_scheme_and_port_hints_of_a_front_proxy_are_not_forwarded(name: str) -> None:
    incoming = CIMultiDictProxy(CIMultiDict([("Host", "h"), (name, "https"), ("X-Forwarded-For", "10.0.0.1")]))
    out = request_headers(incoming, frozenset())
    assert name not in out
    assert out["X-Forwarded-For"] == "10.0.0.1"   # the client's address chain is not a routing hint
