"""What the proxy strips from callers' headers and the tags it sets."""

from __future__ import annotations

import jwt
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.domain import Caller
from proxy.errors import BadRequest
from proxy.tags import TagSigner, add_tags, check_connection, request_headers, response_headers

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
