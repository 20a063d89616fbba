"""Tokens that live too long, end to end through the proxy under both of aiohttp's parsers.

A token whose ``exp`` is absurd (``1e308``) or further from its ``iat`` (or,
without ``iat``, from now) than the issuer's longest lifetime (a day by
default) would be good for ever once stolen, and remembered as verified as
long. Each is refused with 403 ``InvalidToken`` before anything is forwarded,
and the refusal is audited.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from tests.attacks.conftest import Target, assert_refused, send
from tests.conftest import AUDIENCE, DUBLIN, ISSUER, SECRET

DAY = 86400


def token(**changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "attacker-IE", "jurisdiction": "IE",
                              "iat": now, "exp": now + 300}
    for name, value in changes.items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value(now) if callable(value) else value
    return jwt.encode(claims, SECRET, algorithm="HS256")


LIFETIMES: dict[str, tuple[dict[str, Any], bytes]] = {
    "exp 1e308": ({"exp": 1e308}, b"past the year 9999"),
    "exp 1e308, no iat": ({"exp": 1e308, "iat": None}, b"past the year 9999"),
    "exp in ten years": ({"exp": lambda now: now + 10 * 365 * DAY}, b"lives longer"),
    "exp a day and a minute after iat": ({"exp": lambda now: now + DAY + 60}, b"lives longer"),
    "iat two days ago, exp in a minute": ({"iat": lambda now: now - 2 * DAY, "exp": lambda now: now + 60},
                                          b"lives longer"),
    "no iat, exp in two days": ({"iat": None, "exp": lambda now: now + 2 * DAY}, b"expires further ahead"),
    "iat 1e308": ({"iat": -1e308}, b"past the year 9999"),
}


@pytest.mark.parametrize("name", list(LIFETIMES))
def test_tokens_that_live_too_long_are_refused(any_parser: Target, name: str) -> None:
    changes, why = LIFETIMES[name]
    request = (f"GET /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"X-Bailiwick-Token: {token(**changes)}\r\n{{SIGV4}}Connection: close\r\n\r\n").encode()
    answer = assert_refused(any_parser, request, by="proxy")
    assert answer.status == 403, answer.raw[:400]   # S3 answers an unusable identity with 403
    assert b"<Code>InvalidToken</Code>" in answer.raw, answer.raw[:600]
    assert why in answer.raw, answer.raw[:600]


def test_a_day_long_token_is_still_served(any_parser: Target) -> None:
    request = (f"GET /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"X-Bailiwick-Token: {token(exp=lambda now: now + DAY)}\r\n{{SIGV4}}Connection: close\r\n\r\n")
    answer = send(any_parser, any_parser.render(request.encode()))
    assert answer.status == 200, answer.raw[:400]
    assert answer.raw.endswith(b"Dublin mail")
