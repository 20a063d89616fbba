"""Checking the claims bailiwick relies on, once the token's signature is verified.

Three kinds of claim, each refused with a message that says what is wrong
without echoing the claim's value (it is part of the token):

- time: ``exp`` (required), ``nbf`` and ``iat``, with the issuer's leeway, read
  against the resolver's clock, so that expiry can be tested without waiting
  and follows the same clock as everything else in the resolver. A token is
  good while ``now < exp + leeway`` (RFC 7519; pyjwt's rule too), and while
  ``nbf`` and ``iat`` are at most ``now + leeway``: a token issued in the
  future is refused, as its issuer's clock or the token itself is wrong.
  A token may not live longer than its issuer's ``max_lifetime_seconds``
  (a day by default): ``exp - iat`` may not exceed it, nor may ``exp - now``
  (plus the leeway, for an issuer whose clock is ahead). A token without
  ``iat`` is judged by ``exp - now`` alone: ``iat`` is optional in RFC 7519
  and the second bound holds whatever the token says. Without the bound, a
  token with an absurd ``exp`` (``1e308``) would be good, and remembered as
  verified, for ever. A time claim must be a finite JSON number within
  ±253,402,300,799 seconds of 1970 (up to the year 9999): anything else is
  refused as malformed before it is compared with anything;
- the subject, which becomes ``X-Bailiwick-Subject`` and the audit log's
  caller: a non-empty string of printable characters, at most 1024 of them;
- the jurisdiction: a string that is exactly an assigned ISO 3166-1 alpha-2
  code in upper case. Near misses (``ie``, `` IE``, ``["IE"]``, ``UK``) are
  refused, never repaired: a jurisdiction decides where data may go.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from proxy.config import DEFAULT_MAX_TOKEN_LIFETIME_SECONDS
from proxy.errors import Unauthenticated
from proxy.jurisdictions import is_country_code

MAX_SUBJECT_CHARS = 1024
# 9999-12-31T23:59:59Z: the largest time any date library writes; no honest token is past it.
MAX_TIME_SECONDS = 253_402_300_799


def check_times(
    payload: Mapping[str, Any], now: float, leeway: float,
    max_lifetime: float = DEFAULT_MAX_TOKEN_LIFETIME_SECONDS,
) -> float:
    """Refuse a token that has expired, is not valid yet, was issued in the future or lives too long.

    Returns its ``exp``.
    """
    exp = _time_claim(payload, "exp")
    if exp is None:
        raise Unauthenticated("the token has no expiry (exp claim)")
    nbf = _time_claim(payload, "nbf")
    iat = _time_claim(payload, "iat")
    if exp <= now - leeway:
        raise Unauthenticated("the token has expired", code="ExpiredToken")
    if nbf is not None and nbf > now + leeway:
        raise Unauthenticated("the token is not valid yet (nbf is in the future)")
    if iat is not None and iat > now + leeway:
        raise Unauthenticated("the token was issued in the future (iat)")
    if iat is not None and exp - iat > max_lifetime:
        raise Unauthenticated(
            f"the token lives longer (exp - iat) than its issuer allows ({_seconds(max_lifetime)} seconds at most)"
        )
    if exp - now > max_lifetime + leeway:
        raise Unauthenticated(
            f"the token expires further ahead (exp) than its issuer allows a token to live "
            f"({_seconds(max_lifetime)} seconds at most)"
        )
    return exp


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _time_claim(payload: Mapping[str, Any], name: str) -> float | None:
    if name not in payload:
        return None
    value = payload[name]
    wrong = Unauthenticated(f"the token's {name} claim is not a number of seconds")
    # bool is an int to Python, and a NaN would compare false with everything.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong
    try:
        seconds = float(value)
    except OverflowError:
        raise wrong from None
    if not math.isfinite(seconds):
        raise wrong
    if abs(seconds) > MAX_TIME_SECONDS:
        raise Unauthenticated(f"the token's {name} claim is not a plausible time (it is past the year 9999)")
    return seconds


def subject_of(payload: Mapping[str, Any], claim: str) -> str:
    """The caller's subject from `claim`."""
    value = payload.get(claim)
    if value is None:
        raise Unauthenticated(f"the token has no subject ({claim} claim)")
    if not isinstance(value, str) or not value:
        raise Unauthenticated(f"the token's {claim} claim must be a non-empty string")
    if len(value) > MAX_SUBJECT_CHARS:
        raise Unauthenticated(
            f"the token's {claim} claim is longer than {MAX_SUBJECT_CHARS} characters"
        )
    if not value.isprintable():
        raise Unauthenticated(f"the token's {claim} claim contains control or non-printing characters")
    return value


def jurisdiction_of(payload: Mapping[str, Any], claim: str) -> str:
    """The caller's jurisdiction from `claim`: an upper-case ISO 3166-1 alpha-2 code."""
    if claim not in payload:
        raise Unauthenticated(f"the token has no {claim} claim (an ISO 3166-1 alpha-2 code)")
    value = payload[claim]
    if isinstance(value, list):
        problem = "is a list; it must be one ISO 3166-1 alpha-2 code, as a string"
    elif not isinstance(value, str):
        problem = "must be an ISO 3166-1 alpha-2 code, as a string"
    elif value != value.strip():
        problem = "has spaces around the country code"
    elif value != value.upper() and is_country_code(value.upper()):
        problem = "must be in upper case (ISO 3166-1 alpha-2)"
    elif not is_country_code(value):
        problem = "is not an assigned ISO 3166-1 alpha-2 code"
    else:
        return value
    raise Unauthenticated(f"the token's {claim} claim {problem}")
