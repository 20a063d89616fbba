"""Checking the claims bailiwick relies on, once the token's signature is verified.

Three kinds of claim, each refused with a message that says what is wrong
without echoing the claim's value (it is part of the token):

- time: ``exp`` (required), ``nbf`` and ``iat``, with the issuer's leeway, read
  against the resolver's clock, so that expiry can be tested without waiting
  and follows the same clock as everything else in the resolver. A token is
  good while ``now < exp + leeway`` (RFC 7519; pyjwt's rule too), and while
  ``nbf`` and ``iat`` are at most ``now + leeway``: a token issued in the
  future is refused, as its issuer's clock or the token itself is wrong;
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

from proxy.errors import Unauthenticated
from proxy.jurisdictions import is_country_code

MAX_SUBJECT_CHARS = 1024


def check_times(payload: Mapping[str, Any], now: float, leeway: float) -> None:
    """Refuse a token that has expired, is not valid yet, or was issued in the future."""
    exp = _time_claim(payload, "exp")
    if exp is None:
        raise Unauthenticated("the token has no expiry (exp claim)")
    if exp <= now - leeway:
        raise Unauthenticated("the token has expired", code="ExpiredToken")
    nbf = _time_claim(payload, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise Unauthenticated("the token is not valid yet (nbf is in the future)")
    iat = _time_claim(payload, "iat")
    if iat is not None and iat > now + leeway:
        raise Unauthenticated("the token was issued in the future (iat)")


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
