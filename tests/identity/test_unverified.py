"""Reading header and issuer before verification: only JSON objects, and an issuer."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import Unauthenticated
from proxy.identity.unverified import MAX_JSON_DEPTH, peek

from .support import ISSUER, b64, b64json, forge

DEEP_OBJECT = b'{"a":' * 50_000


def test_reads_header_and_issuer() -> None:
    token = forge({"alg": "RS256", "kid": "k1"}, {"iss": ISSUER, "sub": "x"})
    seen = peek(token)
    assert seen.issuer == ISSUER
    assert dict(seen.header) == {"alg": "RS256", "kid": "k1"}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (["iss", ISSUER], "payload is not a JSON object"),
        (ISSUER, "payload is not a JSON object"),
        (42, "payload is not a JSON object"),
        (None, "payload is not a JSON object"),
        ({"sub": "x"}, "no issuer"),
        ({"iss": ""}, "no issuer"),
        ({"iss": [ISSUER]}, "no issuer"),
        ({"iss": {"url": ISSUER}}, "no issuer"),
    ],
)
def test_refuses_payloads_without_an_issuer(payload: Any, message: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        peek(forge({"alg": "RS256"}, payload))
    assert refused.value.code == "InvalidToken"
    assert message in refused.value.message


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (f"{b64json(['alg'])}.{b64json({'iss': ISSUER})}.c2ln", "header is not a JSON object"),
        (f"{b64(b'not json')}.{b64json({'iss': ISSUER})}.c2ln", "header is not valid"),
        (f"{b64json({'alg': 'RS256'})}.{b64(b'{nope')}.c2ln", "payload is not valid"),
        (f"{b64json({'alg': 'RS256'})}.{b64(bytes([0xFF, 0xFE]))}.c2ln", "payload is not valid"),
        # base64url with one character too many cannot be decoded.
        (f"{b64json({'alg': 'RS256'})}.abcde.c2ln", "payload is not valid"),
        # Deep nesting must not crash the parser or be walked.
        (f"{b64json({'alg': 'RS256'})}.{b64(b'[' * 100_000)}.c2ln", "payload is not valid"),
        (f"{b64json({'alg': 'RS256'})}.{b64(DEEP_OBJECT)}.c2ln", "payload is not valid"),
        (f"{b64json({'alg': 'RS256'})}.{b64json({'iss': ISSUER})}", "not a JWT"),
        (f"{b64json({'alg': 'RS256'})}.{b64json({'iss': ISSUER})}.c2ln.extra", "not a JWT"),
    ],
)
def test_refuses_undecodable_parts(token: str, message: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        peek(token)
    assert refused.value.code == "InvalidToken"
    assert message in refused.value.message


DUPLICATE_CLAIM = "the token's payload names a claim twice (duplicate claim)"
DUPLICATE_PARAMETER = "the token's header names a parameter twice (duplicate parameter)"


def raw(header: bytes, payload: bytes) -> str:
    return f"{b64(header)}.{b64(payload)}.c2ln"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (raw(b'{"alg": "RS256"}', b'{"iss": "a", "iss": "a"}'), DUPLICATE_CLAIM),
        (raw(b'{"alg": "RS256"}', b'{"iss": "a", "x": {"k": 1, "k": 2}}'), DUPLICATE_CLAIM),
        (raw(b'{"alg": "none", "alg": "RS256"}', b'{"iss": "a"}'), DUPLICATE_PARAMETER),
    ],
)
def test_refuses_duplicate_members(token: str, message: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        peek(token)
    assert (refused.value.code, refused.value.message) == ("InvalidToken", message)


def test_nesting_is_bounded_at_max_json_depth() -> None:
    def nested(levels: int) -> list[Any]:
        value: list[Any] = []
        for _ in range(levels - 1):
            value = [value]
        return value

    # The payload object is level 1; its claim adds MAX_JSON_DEPTH - 1 more.
    assert peek(forge({"alg": "RS256"}, {"iss": ISSUER, "x": nested(MAX_JSON_DEPTH - 1)})).issuer == ISSUER
    with pytest.raises(Unauthenticated, match=f"payload is nested more than {MAX_JSON_DEPTH} levels deep"):
        peek(forge({"alg": "RS256"}, {"iss": ISSUER, "x": nested(MAX_JSON_DEPTH)}))
    with pytest.raises(Unauthenticated, match=f"header is nested more than {MAX_JSON_DEPTH} levels deep"):
        peek(forge({"alg": "RS256", "x": nested(MAX_JSON_DEPTH)}, {"iss": ISSUER}))
