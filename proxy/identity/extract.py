"""Finding the caller's token in the request headers (CONTRACT.md, "Identity on the wire").

A token arrives as ``Authorization: Bearer <jwt>`` or, for clients that need
``Authorization`` for a storage signature (S3 SigV4, Azure SharedKey), as
``X-Bailiwick-Token: <jwt>``. An ``Authorization`` header with any other
scheme belongs to the storage API: it is left alone and forwarded.

Anything that could be read two ways is refused rather than guessed at: two
tokens, a repeated header, an empty or oversized value. Only the shape of the
token is checked here; what it says is `proxy.identity.verifier`'s business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from multidict import MultiMapping

from proxy.errors import Unauthenticated

AUTHORIZATION = "authorization"
TOKEN_HEADER = "x-bailiwick-token"  # noqa: S105 - a header name, not a secret

# Generous for any real JWT, small enough that nothing is decoded for junk.
MAX_TOKEN_CHARS = 16 * 1024

# A compact JWS: three base64url segments, unpadded; the signature may not be empty.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

MORE_THAN_ONE = (
    "more than one token: send exactly one, in Authorization: Bearer or X-Bailiwick-Token"
)


@dataclass(frozen=True, slots=True)
class PresentedToken:
    """A token as the caller sent it, and the (lower-case) header that carried it."""

    token: str
    header: str

    def __repr__(self) -> str:
        # The token is a credential: keep it out of logs and tracebacks.
        return f"PresentedToken(header={self.header!r}, token=<{len(self.token)} chars>)"


def find_token(headers: MultiMapping[str]) -> PresentedToken | None:
    """The one token in `headers`, or None if the request carries none.

    Raises `Unauthenticated` (``InvalidToken``) when the headers are ambiguous
    or the token is not shaped like a JWT. Header names are compared without
    regard to case, whatever kind of mapping `headers` is.
    """
    authorization: list[str] = []
    token_header: list[str] = []
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == AUTHORIZATION:
            authorization.append(value)
        elif lowered == TOKEN_HEADER:
            token_header.append(value)

    if len(token_header) > 1:
        raise Unauthenticated(MORE_THAN_ONE)
    bearer = [value for value in authorization if _is_bearer(value)]
    if bearer and (token_header or len(authorization) > 1):
        raise Unauthenticated(MORE_THAN_ONE)
    if len(authorization) > 1:
        # Not our token, but a request with two Authorization headers cannot be read one way.
        raise Unauthenticated("the Authorization header appears more than once")

    if bearer:
        parts = bearer[0].split(None, 1)
        token = parts[1].strip() if len(parts) == 2 else ""
        return PresentedToken(_checked(token, "Authorization: Bearer"), AUTHORIZATION)
    if token_header:
        return PresentedToken(_checked(token_header[0].strip(), "X-Bailiwick-Token"), TOKEN_HEADER)
    return None


def _is_bearer(value: str) -> bool:
    parts = value.split(None, 1)
    return bool(parts) and parts[0].lower() == "bearer"


def _checked(token: str, where: str) -> str:
    if not token:
        raise Unauthenticated(f"{where} is present but carries no token")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated(
            f"the token in {where} is {len(token)} characters; "
            f"at most {MAX_TOKEN_CHARS} are accepted"
        )
    if _COMPACT_JWS.fullmatch(token) is None:
        raise Unauthenticated(f"the token in {where} is not a JWT (expected three base64url parts)")
    return token
