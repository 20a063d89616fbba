"""Reading a token's header and issuer before its signature is checked.

The issuer decides which keys may verify the token, so `iss` has to be read
before verification. Nothing read here is trusted: the header only selects a
key and is checked against the issuer's allow-list, and pyjwt re-reads and
verifies everything (including `iss`, exactly) afterwards. This module only
decodes; it refuses what is not a JSON object, and never echoes the token.

JSON is read strictly (`json_object`), so that every reader of a token sees
the same thing:

- a member named twice in one object (two ``jurisdiction`` claims, two
  ``alg`` parameters) is refused: parsers disagree on which one counts;
- nesting deeper than `MAX_JSON_DEPTH` is refused: no claim needs it, and
  Python's parser raises `RecursionError` on deep nesting at a depth that
  depends on the caller's stack, so a document accepted here could otherwise
  fail (or pass) a later parse.

The verifier reads the verified payload with the same function
(`proxy.identity.verifier`), and pyjwt reads the header from the same bytes
that were checked here.
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

# Far deeper than any real claim set, far shallower than Python's recursion limit.
MAX_JSON_DEPTH = 32

_MEMBER = {"header": "parameter", "payload": "claim"}


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
    header = json_object(_base64url(header_part, "header"), "header")
    payload = json_object(_base64url(payload_part, "payload"), "payload")
    issuer = payload.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise Unauthenticated("the token has no issuer (iss claim)")
    return UnverifiedToken(header=MappingProxyType(header), issuer=issuer)


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """`raw`, the token's `what` ("header" or "payload"), as a JSON object, read strictly.

    Raises `Unauthenticated` (``InvalidToken``) for anything but a JSON object
    without repeated members and at most `MAX_JSON_DEPTH` levels deep.
    """
    member = _MEMBER.get(what, "member")
    try:
        value = json.loads(raw, object_pairs_hook=_unique_members)
    except _DuplicateMember:
        raise Unauthenticated(f"the token's {what} names a {member} twice (duplicate {member})") from None
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8 and bad JSON; RecursionError deeply nested JSON.
        raise Unauthenticated(f"the token's {what} is not valid base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise Unauthenticated(f"the token's {what} is not a JSON object")
    if _too_deep(value):
        raise Unauthenticated(f"the token's {what} is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _base64url(segment: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise Unauthenticated(f"the token's {what} is not valid base64url-encoded JSON") from None


class _DuplicateMember(ValueError):
    """A JSON object names a member twice."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _DuplicateMember
    return members


def _too_deep(value: dict[str, Any]) -> bool:
    """Whether `value` nests containers more than `MAX_JSON_DEPTH` deep (iteratively: no recursion)."""
    pending: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while pending:
        container, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        children = container.values() if isinstance(container, dict) else container
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
