"""Reading a token's header and issuer before its signature is checked.

The issuer decides which keys may verify the token, so `iss` has to be read
before verification. Nothing read here is trusted: the header only selects a
key and is checked against the issuer's allow-list, and pyjwt re-reads and
verifies everything (including `iss`, exactly) afterwards. This module only
decodes; it refuses what is not a JSON object, and never echoes the token.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from proxy.errors import Unauthenticated


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """The header and the claimed issuer of a token whose signature is not yet checked."""

    header: Mapping[str, Any]
    issuer: str


def peek(token: str) -> UnverifiedToken:
    """Decode `token`'s header and read its `iss` claim, without verifying anything.

    `token` has already been checked to be three base64url segments
    (`proxy.identity.extract`). Raises `Unauthenticated` (``InvalidToken``).
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthenticated("the token is not a JWT (expected three base64url parts)")
    header_part, payload_part, _ = parts
    header = _json_object(header_part, "header")
    payload = _json_object(payload_part, "payload")
    issuer = payload.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise Unauthenticated("the token has no issuer (iss claim)")
    return UnverifiedToken(header=MappingProxyType(header), issuer=issuer)


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        # ValueError covers bad UTF-8 and bad JSON; RecursionError deeply nested JSON.
        raise Unauthenticated(f"the token's {what} is not valid base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise Unauthenticated(f"the token's {what} is not a JSON object")
    return value
