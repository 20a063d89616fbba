"""Finding the caller's token in the request headers (docs/storage-apis.md, "Identity for S3 clients").

A token arrives as ``Authorization: Bearer <jwt>`` or, for clients that need
``Authorization`` for a storage signature (S3 SigV4, Azure SharedKey), as
``X-Bailiwick-Token: <jwt>``. An ``Authorization`` header with any other
scheme belongs to the storage API: it is left alone and forwarded.

Anything that could be read two ways is refused rather than guessed at: two
tokens, a repeated header, an empty or oversized value. Only the shape of the
token is checked here; what it says is `proxy.identity.verifier`'s business.

`find_token` does it all. The resolver uses its two halves instead
(`token_in`, then `check_shape` unless the very same token was verified
before), because the shape check scans the whole token with a regular
expression and is a large part of identifying a request whose token is
already known good.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

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
    found = token_in(headers)
    if found is None:
        return None
    token, header = found
    check_shape(token, header)
    return PresentedToken(token, header)


def token_in(headers: MultiMapping[str], *, storage_bearer: bool = False) -> tuple[str, str] | None:
    """`find_token` without the shape check, as (token, header): the caller must `check_shape` a token it does not know.

    With `storage_bearer` (Azure Blob, whose clients authenticate with Entra ID
    as ``Authorization: Bearer``), a request that carries ``X-Bailiwick-Token``
    keeps its one Bearer ``Authorization`` for the storage server; without
    ``X-Bailiwick-Token``, a Bearer token is still read as the caller's.

    Raises `Unauthenticated` (``InvalidToken``) for ambiguous headers and for
    an empty or oversized token.
    """
    authorization: Sequence[str]
    token_header: Sequence[str]
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):
        # multidict compares names by their str.lower(), exactly as the loop below does,
        # so both find the same headers; two lookups cost less than lowering every name.
        authorization = headers.getall(AUTHORIZATION, ())
        token_header = headers.getall(TOKEN_HEADER, ())
    else:
        authorization, token_header = [], []
        for name, value in headers.items():
            lowered = name.lower()
            if lowered == AUTHORIZATION:
                authorization.append(value)
            elif lowered == TOKEN_HEADER:
                token_header.append(value)

    if len(token_header) > 1:
        raise Unauthenticated(MORE_THAN_ONE)
    # The words of the first Authorization value with the Bearer scheme, if any has it.
    bearer: list[str] | None = None
    for value in authorization:
        words = value.split(None, 1)
        if words and words[0].lower() == "bearer":
            bearer = words
            break
    if bearer is not None and (token_header or len(authorization) > 1):
        if not (storage_bearer and token_header and len(authorization) == 1):
            raise Unauthenticated(MORE_THAN_ONE)
        bearer = None   # the storage server's own token: ours is in X-Bailiwick-Token
    if len(authorization) > 1:
        # Not our token, but a request with two Authorization headers cannot be read one way.
        raise Unauthenticated("the Authorization header appears more than once")

    if bearer is not None:
        token = bearer[1].strip() if len(bearer) == 2 else ""
        return _sized(token, _WHERE[AUTHORIZATION]), AUTHORIZATION
    if token_header:
        return _sized(token_header[0].strip(), _WHERE[TOKEN_HEADER]), TOKEN_HEADER
    return None


# How the error messages name each header.
_WHERE = {AUTHORIZATION: "Authorization: Bearer", TOKEN_HEADER: "X-Bailiwick-Token"}


def _sized(token: str, where: str) -> str:
    if not token:
        raise Unauthenticated(f"{where} is present but carries no token")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated(
            f"the token in {where} is {len(token)} characters; "
            f"at most {MAX_TOKEN_CHARS} are accepted"
        )
    return token


def check_shape(token: str, header: str) -> None:
    """Refuse (`Unauthenticated`) a token, carried by `header`, that is not three base64url parts."""
    if _COMPACT_JWS.fullmatch(token) is None:
        raise Unauthenticated(f"the token in {_WHERE[header]} is not a JWT (expected three base64url parts)")
