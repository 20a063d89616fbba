"""Verifying one issuer's tokens with pyjwt, against that issuer's keys only.

The order matters and every step fails closed:

1. the header: ``crit`` is refused (no extension is understood), ``alg`` must
   be on the issuer's allow-list (``none`` never is), ``kid`` must be a short
   string. ``jku``, ``x5u``, ``jwk`` and ``x5c`` are never looked at: keys come
   from the operator's configuration, not from the token;
2. the key: the issuer's shared secret, or the JWKS key the ``kid`` names
   (the only key, without a kid), whose own algorithm must be the token's;
3. pyjwt checks the signature with exactly that algorithm, ``iss`` exactly,
   and that the issuer's audience is in ``aud``; it reads the payload with
   the same strict JSON reader as `proxy.identity.unverified` (no duplicate
   claims, bounded nesting), so what is verified is what was peeked at;
4. the time claims (with the issuer's longest token lifetime), the subject and
   the jurisdiction (`proxy.identity.claims`).

Refusals are `Unauthenticated` with code ``InvalidToken``, or
``ExpiredToken`` for an expired token. Messages come from this module alone,
never from pyjwt's exception text, which can quote the token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWK
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWTError,
)
from jwt.types import Options

from proxy.config import HMAC_ALGORITHMS, PUBLIC_KEY_ALGORITHMS, JwtIssuer
from proxy.errors import ConfigError, Unauthenticated
from proxy.identity.claims import check_times, jurisdiction_of, subject_of
from proxy.identity.jwks import KeySource
from proxy.identity.keyset import MAX_KID_CHARS
from proxy.identity.unverified import json_object

# Time claims are checked by `check_times` against the resolver's clock; pyjwt
# checks presence, signature, issuer and audience. A short key is an error, not
# a warning on every request.
_OPTIONS: Options = {
    "require": ["exp", "iss", "aud"],
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "strict_aud": False,
    "enforce_minimum_key_length": True,
}


class _StrictPyJWT(jwt.PyJWT):
    """pyjwt, reading the verified payload with `json_object` instead of a lenient `json.loads`."""

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        # pyjwt documents this method as the one to override to decode payloads differently.
        return json_object(decoded["payload"], "payload")


_PYJWT = _StrictPyJWT()


@dataclass(frozen=True, slots=True)
class VerifiedClaims:
    """What a verified token says about its bearer.

    `valid_until` (``exp`` plus the leeway, never more than the issuer's longest
    token lifetime from the verification), `kid` and `key` let the resolver
    reuse the verification until the token expires, as long as the key that
    verified it is still the issuer's key for that kid.
    """

    subject: str
    jurisdiction: str
    valid_until: float = field(default=math.inf, compare=False)
    kid: str | None = field(default=None, compare=False)
    key: object = field(default=None, compare=False, repr=False)


class IssuerVerifier:
    """Verifies tokens of one issuer, with its shared secret or its JWKS keys."""

    def __init__(
        self, issuer: JwtIssuer, keys: KeySource | None, *, clock: Callable[[], float]
    ) -> None:
        """`keys` is the issuer's JWKS, or None for an issuer with an HMAC secret.

        Raises `ConfigError` for a combination that could verify a token the
        wrong way (an HMAC algorithm with public keys, a secret too short for
        an algorithm it is allowed).
        """
        self._issuer = issuer
        self._clock = clock
        self._algorithms = frozenset(issuer.algorithms)
        secret = issuer.hs256_secret
        where = f"identity.jwt issuer {issuer.issuer}"
        if not self._algorithms:
            raise ConfigError(f"{where}: no algorithms are allowed")
        self._keys: KeySource | bytes
        if keys is None:
            if secret is None:
                raise ConfigError(f"{where}: needs a JWKS or an HMAC secret")
            for alg in sorted(self._algorithms):
                if alg not in HMAC_ALGORITHMS:
                    raise ConfigError(f"{where}: {alg} cannot be used with a shared secret")
                if get_default_algorithms()[alg].check_key_length(secret) is not None:
                    raise ConfigError(f"{where}: the secret is too short for {alg}")
            self._keys = secret
        else:
            if secret is not None:
                raise ConfigError(f"{where}: set either a JWKS or an HMAC secret, not both")
            self._keys = keys
            for alg in sorted(self._algorithms):
                if alg not in PUBLIC_KEY_ALGORITHMS:
                    raise ConfigError(f"{where}: {alg} cannot be used with a JWKS")

    async def verify(self, token: str, header: Mapping[str, Any]) -> VerifiedClaims:
        """Verify `token`, whose `header` was decoded unverified. Raises `Unauthenticated`."""
        alg, kid = self._check_header(header)
        key: PyJWK | bytes
        if isinstance(self._keys, bytes):
            key = self._keys
        else:
            key = await self._keys.key_for(kid)
            if key.algorithm_name != alg:
                raise Unauthenticated("the token's algorithm (alg) is not the algorithm of its key")
        payload = self._decode(token, key, alg)
        issuer = self._issuer
        now = self._clock()
        exp = check_times(payload, now, issuer.leeway_seconds, issuer.max_lifetime_seconds)
        return VerifiedClaims(
            subject=subject_of(payload, issuer.subject_claim),
            jurisdiction=jurisdiction_of(payload, issuer.jurisdiction_claim),
            # The token is good while now < exp + leeway; the resolver remembers it that long, and
            # never longer than the issuer's longest lifetime from now (check_times bounds exp too).
            valid_until=min(exp, now + issuer.max_lifetime_seconds) + issuer.leeway_seconds,
            kid=kid,
            key=key,
        )

    async def key_is_current(self, kid: str | None, key: object) -> bool:
        """Whether `key` is still this issuer's key for `kid` (a rotated-out key is not)."""
        keys = self._keys
        if isinstance(keys, bytes):
            return key is keys
        found = keys.key_at_hand(kid)
        if found is not None:
            return found is key
        try:
            return await keys.key_for(kid) is key
        except Unauthenticated:
            return False

    def key_is_current_at_hand(self, kid: str | None, key: object) -> bool | None:
        """`key_is_current` from the keys held, without an await; None when only a fetch can tell.

        The answer is the one `key_is_current` gives: a key at hand for `kid` is
        what `key_for` returns too, and only when there is none may it fetch.
        """
        if isinstance(self._keys, bytes):
            return key is self._keys
        found = self._keys.key_at_hand(kid)
        return None if found is None else found is key

    def _check_header(self, header: Mapping[str, Any]) -> tuple[str, str | None]:
        if "crit" in header:
            raise Unauthenticated(
                "the token marks header extensions as critical (crit); none are supported"
            )
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise Unauthenticated("the token's header names no algorithm (alg)")
        if alg.lower() == "none":
            raise Unauthenticated("unsigned tokens (alg none) are refused")
        if alg not in self._algorithms:
            allowed = ", ".join(sorted(self._algorithms))
            raise Unauthenticated(
                f"the token's algorithm (alg) is not allowed for its issuer (allowed: {allowed})"
            )
        if "kid" not in header or isinstance(self._keys, bytes):
            return alg, None
        kid = header["kid"]
        if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS:
            raise Unauthenticated(
                f"the token's key id (kid) must be a string of 1 to {MAX_KID_CHARS} characters"
            )
        return alg, kid

    def _decode(self, token: str, key: PyJWK | bytes, alg: str) -> dict[str, Any]:
        issuer = self._issuer
        try:
            payload: dict[str, Any] = _PYJWT.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=issuer.audience,
                issuer=issuer.issuer,
                options=_OPTIONS,
            )
        except (PyJWTError, ValueError, TypeError) as exc:
            raise _refusal(exc, issuer) from None
        return payload


def _refusal(exc: Exception, issuer: JwtIssuer) -> Unauthenticated:
    """What the caller is told for a pyjwt failure (pyjwt's own text can quote the token)."""
    if isinstance(exc, ExpiredSignatureError):
        return Unauthenticated("the token has expired", code="ExpiredToken")
    if isinstance(exc, MissingRequiredClaimError):
        return Unauthenticated(f"the token has no {exc.claim} claim")
    for kind, message in _MESSAGES:
        if isinstance(exc, kind):
            return Unauthenticated(message.format(audience=issuer.audience))
    return Unauthenticated("the token is not valid")


# Most specific first: InvalidSignatureError is a DecodeError.
_MESSAGES: tuple[tuple[type[Exception], str], ...] = (
    (InvalidSignatureError, "the token's signature does not verify"),
    (InvalidAudienceError, "the token is not for this service (aud must include {audience})"),
    (InvalidIssuerError, "the token's issuer (iss) is not exactly the configured issuer"),
    (InvalidAlgorithmError, "the token's algorithm (alg) is not allowed for its key"),
    (InvalidKeyError, "the issuer's key cannot verify this token"),
    (ImmatureSignatureError, "the token is not valid yet"),
    (DecodeError, "the token is not a well-formed JWT"),
)
