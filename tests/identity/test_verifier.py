"""Verifying one issuer's tokens: header rules, key binding, pyjwt's checks, then the claims."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jwt
import pytest
from jwt import PyJWK

from proxy.config import JwtIssuer
from proxy.errors import ConfigError, Unauthenticated
from proxy.identity.jwks import UNKNOWN_KID, KeySource
from proxy.identity.keyset import KeySet, parse_jwks
from proxy.identity.unverified import peek
from proxy.identity.verifier import IssuerVerifier, VerifiedClaims

from .support import (
    AUDIENCE,
    ISSUER,
    NOW,
    SECRET,
    FakeClock,
    SigningKey,
    b64json,
    claims,
    forge,
    forge_hmac,
    jwks,
    rsa_key,
)

JWKS_ISSUER = JwtIssuer(issuer=ISSUER, audience=AUDIENCE, algorithms=("RS256", "ES256", "EdDSA"))
HMAC_ISSUER = JwtIssuer(issuer=ISSUER, audience=AUDIENCE, algorithms=("HS256",), hs256_secret=SECRET)
GOOD = VerifiedClaims(subject="alice@example.ie", jurisdiction="IE")


class StaticKeys:
    """A `KeySource` over a fixed key set, counting lookups."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys
        self.lookups = 0

    async def key_for(self, kid: str | None) -> PyJWK:
        self.lookups += 1
        found = self.keys.find(kid)
        if found is None:
            raise Unauthenticated(UNKNOWN_KID)
        return found

    def key_at_hand(self, kid: str | None) -> PyJWK | None:
        self.lookups += 1
        return self.keys.find(kid)


@dataclass(frozen=True)
class Signers:
    rsa: SigningKey
    ec: SigningKey
    ed: SigningKey
    stranger: SigningKey  # an RSA key the issuer never published, with the issuer's kid


@pytest.fixture(scope="module")
def signers(rsa: SigningKey, ec: SigningKey, ed: SigningKey) -> Signers:
    return Signers(rsa, ec, ed, rsa_key("rsa-1"))


def verifier_for(
    signers: Signers, clock: FakeClock, issuer: JwtIssuer = JWKS_ISSUER
) -> tuple[IssuerVerifier, StaticKeys]:
    source = StaticKeys(parse_jwks(jwks(signers.rsa, signers.ec, signers.ed), issuer.algorithms))
    return IssuerVerifier(issuer, source, clock=clock), source


async def verify(verifier: IssuerVerifier, token: str) -> VerifiedClaims:
    return await verifier.verify(token, peek(token).header)


Make = Callable[[Signers], str]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda s: s.rsa.sign(claims()), id="RS256"),
        pytest.param(lambda s: s.ec.sign(claims()), id="ES256"),
        pytest.param(lambda s: s.ed.sign(claims()), id="EdDSA"),
        pytest.param(lambda s: s.rsa.sign(claims(aud=["other", AUDIENCE])), id="aud list"),
        pytest.param(lambda s: s.rsa.sign(claims(exp=int(NOW) - 29)), id="expired within leeway"),
        pytest.param(lambda s: s.rsa.sign(claims(nbf=int(NOW) + 29)), id="nbf within leeway"),
        pytest.param(lambda s: s.rsa.sign(claims(iat=None, nbf=int(NOW))), id="nbf now"),
        # Key-fetching header fields are never used, so they change nothing for a good token.
        pytest.param(
            lambda s: s.ec.sign(claims(), jku="http://127.0.0.1:9/keys", x5u="http://127.0.0.1:9/c"),
            id="jku and x5u ignored",
        ),
    ],
)
async def test_accepts_good_tokens(signers: Signers, clock: FakeClock, make: Make) -> None:
    verifier, _ = verifier_for(signers, clock)
    assert await verify(verifier, make(signers)) == GOOD


def _hmac_with_public_pem(s: Signers, kid: str | None) -> str:
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    return forge_hmac(header, claims(), s.rsa.public_pem())


def _tampered(s: Signers) -> str:
    head, payload, signature = s.rsa.sign(claims()).split(".")
    forged_payload = b64json(claims(jurisdiction="US"))
    assert forged_payload != payload
    return f"{head}.{forged_payload}.{signature}"


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        *[
            pytest.param(
                lambda s, alg=alg: forge({"alg": alg, "kid": "rsa-1"}, claims(), b""),
                "InvalidToken",
                "alg none",
                id=f"alg {alg}",
            )
            for alg in ("none", "None", "NONE", "nOnE")
        ],
        pytest.param(
            lambda s: _hmac_with_public_pem(s, "rsa-1"), "InvalidToken", "not allowed for its issuer",
            id="HS256 signed with the RSA public key PEM",
        ),
        pytest.param(
            lambda s: _hmac_with_public_pem(s, None), "InvalidToken", "not allowed for its issuer",
            id="HS256 with the PEM, no kid",
        ),
        pytest.param(
            lambda s: forge({"kid": "rsa-1"}, claims()), "InvalidToken", "names no algorithm",
            id="no alg",
        ),
        pytest.param(
            lambda s: forge({"alg": ["RS256"], "kid": "rsa-1"}, claims()),
            "InvalidToken", "names no algorithm", id="alg not a string",
        ),
        pytest.param(
            lambda s: jwt.encode(claims(), s.rsa.private, algorithm="RS512", headers={"kid": "rsa-1"}),
            "InvalidToken", "not allowed for its issuer", id="alg off the allow-list",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(), kid="ec-1"), "InvalidToken",
            "not the algorithm of its key", id="RS256 token naming the EC key",
        ),
        pytest.param(
            lambda s: s.ed.sign(claims(), kid="rsa-1"), "InvalidToken",
            "not the algorithm of its key", id="EdDSA token naming the RSA key",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(), crit=["exp"]), "InvalidToken", "critical (crit)",
            id="crit",
        ),
        pytest.param(
            lambda s: forge({"alg": "RS256", "kid": "rsa-1", "crit": []}, claims()),
            "InvalidToken", "critical (crit)", id="empty crit",
        ),
        pytest.param(
            lambda s: forge({"alg": "RS256", "kid": 7}, claims()), "InvalidToken", "key id (kid)",
            id="kid not a string",
        ),
        pytest.param(
            lambda s: forge({"alg": "RS256", "kid": ""}, claims()), "InvalidToken", "key id (kid)",
            id="empty kid",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(), kid="k" * 257), "InvalidToken", "key id (kid)",
            id="kid over 256 characters",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(), kid="unknown"), "InvalidToken", "not one of the issuer's keys",
            id="unknown kid",
        ),
        pytest.param(
            lambda s: s.stranger.sign(claims()), "InvalidToken", "signature does not verify",
            id="signed by another key",
        ),
        pytest.param(
            lambda s: s.stranger.sign(claims(), jwk=s.stranger.public_jwk()),
            "InvalidToken", "signature does not verify", id="embedded jwk ignored",
        ),
        pytest.param(
            lambda s: s.stranger.sign(claims(), x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
            "InvalidToken", "signature does not verify", id="x5c ignored",
        ),
        pytest.param(_tampered, "InvalidToken", "signature does not verify", id="tampered payload"),
        pytest.param(
            lambda s: s.rsa.sign(claims(exp=int(NOW) - 3600)), "ExpiredToken", "has expired",
            id="expired",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(exp=int(NOW) - 30)), "ExpiredToken", "has expired",
            id="expired at the leeway",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(nbf=int(NOW) + 3600)), "InvalidToken", "not valid yet",
            id="nbf in the future",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(iat=int(NOW) + 3600)), "InvalidToken", "issued in the future",
            id="iat in the future",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(exp=None)), "InvalidToken", "no exp claim", id="exp missing",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(aud="someone-else")), "InvalidToken", "not for this service",
            id="wrong aud",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(aud=f"{AUDIENCE}-admin")), "InvalidToken", "not for this service",
            id="aud superstring",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(aud=["a", "b"])), "InvalidToken", "not for this service",
            id="aud list without us",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(aud=None)), "InvalidToken", "no aud claim", id="aud missing",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(iss=ISSUER + "/")), "InvalidToken", "issuer (iss)",
            id="iss superstring",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(iss=ISSUER[:-3])), "InvalidToken", "issuer (iss)",
            id="iss substring",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(sub=None)), "InvalidToken", "no subject", id="sub missing",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(jurisdiction=["IE"])), "InvalidToken", "jurisdiction claim is a list",
            id="jurisdiction list",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(jurisdiction="ie")), "InvalidToken", "upper case",
            id="jurisdiction lower case",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(jurisdiction=" IE ")), "InvalidToken", "spaces around",
            id="jurisdiction padded",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(jurisdiction=None)), "InvalidToken", "no jurisdiction claim",
            id="jurisdiction missing",
        ),
        pytest.param(
            lambda s: s.rsa.sign(claims(jurisdiction="UK")), "InvalidToken", "not an assigned",
            id="jurisdiction unknown code",
        ),
    ],
)
async def test_refuses_bad_tokens(
    signers: Signers, clock: FakeClock, make: Make, code: str, message: str
) -> None:
    verifier, _ = verifier_for(signers, clock)
    token = make(signers)
    with pytest.raises(Unauthenticated) as refused:
        await verify(verifier, token)
    assert refused.value.code == code
    assert message in refused.value.message
    for part in filter(None, token.split(".")):
        assert part not in refused.value.message


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "HS256", "kid": "unknown"},
        {"alg": "none", "kid": "unknown"},
        {"alg": "RS512", "kid": "unknown"},
        {"alg": "RS256", "kid": "k" * 257},
        {"alg": "RS256", "kid": "unknown", "crit": ["b64"], "b64": True},
    ],
)
async def test_bad_headers_are_refused_before_keys_are_looked_up(
    signers: Signers, clock: FakeClock, header: dict[str, Any]
) -> None:
    verifier, source = verifier_for(signers, clock)
    with pytest.raises(Unauthenticated) as refused:
        await verify(verifier, forge(header, claims()))
    assert refused.value.code == "InvalidToken"
    assert source.lookups == 0


async def test_public_key_algorithm_must_match_the_jwk(clock: FakeClock, rsa: SigningKey) -> None:
    # The issuer allows PS256, but its JWK is published for RS256: a PS256 token does not use it.
    issuer = replace(JWKS_ISSUER, algorithms=("RS256", "PS256"))
    verifier = IssuerVerifier(issuer, StaticKeys(parse_jwks(jwks(rsa), issuer.algorithms)), clock=clock)
    token = jwt.encode(claims(), rsa.private, algorithm="PS256", headers={"kid": "rsa-1"})
    with pytest.raises(Unauthenticated) as refused:
        await verify(verifier, token)
    assert "not the algorithm of its key" in refused.value.message
    assert await verify(verifier, rsa.sign(claims())) == GOOD


async def test_custom_subject_and_jurisdiction_claims(signers: Signers, clock: FakeClock) -> None:
    issuer = replace(JWKS_ISSUER, subject_claim="email", jurisdiction_claim="residency")
    verifier, _ = verifier_for(signers, clock, issuer)
    token = signers.ec.sign(claims(sub=None, jurisdiction=None, email="bob@example.de", residency="DE"))
    assert await verify(verifier, token) == VerifiedClaims("bob@example.de", "DE")
    with pytest.raises(Unauthenticated, match="no residency claim"):
        await verify(verifier, signers.ec.sign(claims(email="bob@example.de")))


async def test_expiry_follows_the_injected_clock(signers: Signers, clock: FakeClock) -> None:
    verifier, _ = verifier_for(signers, clock)
    token = signers.rsa.sign(claims(exp=int(NOW) + 60))
    assert await verify(verifier, token) == GOOD
    clock.advance(60 + 29)
    assert await verify(verifier, token) == GOOD
    clock.advance(1)
    with pytest.raises(Unauthenticated) as refused:
        await verify(verifier, token)
    assert refused.value.code == "ExpiredToken"


# --- HMAC issuers --------------------------------------------------------------------------


def hmac_token(payload: dict[str, Any], secret: bytes = SECRET, **header: Any) -> str:
    return jwt.encode(payload, secret, algorithm=header.pop("alg", "HS256"), headers=header or None)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(hmac_token(claims()), id="plain"),
        pytest.param(hmac_token(claims(), kid="whatever"), id="kid ignored"),
    ],
)
async def test_hmac_issuer_accepts_its_tokens(clock: FakeClock, token: str) -> None:
    verifier = IssuerVerifier(HMAC_ISSUER, None, clock=clock)
    assert await verify(verifier, token) == GOOD


@pytest.mark.parametrize(
    ("token", "message"),
    [
        pytest.param(hmac_token(claims(), secret=b"x" * 48), "signature does not verify", id="wrong secret"),
        pytest.param(hmac_token(claims(), alg="HS384"), "not allowed for its issuer", id="HS384"),
        pytest.param(forge({"alg": "none"}, claims(), b""), "alg none", id="alg none"),
        pytest.param(
            jwt.encode(claims(), rsa_key(None).private, algorithm="RS256"), "not allowed for its issuer",
            id="RS256 to an HMAC issuer",
        ),
        pytest.param(hmac_token(claims(exp=int(NOW) - 31)), "has expired", id="expired"),
    ],
)
async def test_hmac_issuer_refuses(clock: FakeClock, token: str, message: str) -> None:
    verifier = IssuerVerifier(HMAC_ISSUER, None, clock=clock)
    with pytest.raises(Unauthenticated) as refused:
        await verify(verifier, token)
    assert message in refused.value.message


# --- configurations that could verify a token the wrong way -------------------------------------


@pytest.mark.parametrize(
    ("issuer", "with_keys", "message"),
    [
        (
            replace(HMAC_ISSUER, algorithms=("HS256", "HS512"), hs256_secret=b"s" * 32),
            False,
            "too short for HS512",
        ),
        (replace(HMAC_ISSUER, algorithms=("RS256",)), False, "RS256 cannot be used with a shared secret"),
        (replace(HMAC_ISSUER, hs256_secret=None), False, "needs a JWKS or an HMAC secret"),
        (replace(JWKS_ISSUER, algorithms=("RS256", "HS256")), True, "HS256 cannot be used with a JWKS"),
        (replace(JWKS_ISSUER, algorithms=("none",)), True, "none cannot be used with a JWKS"),
        (replace(JWKS_ISSUER, algorithms=()), True, "no algorithms"),
        (HMAC_ISSUER, True, "not both"),
    ],
)
def test_unsafe_issuer_configurations_are_refused(
    issuer: JwtIssuer, with_keys: bool, message: str
) -> None:
    keys: KeySource | None = StaticKeys(KeySet(keys=(), by_kid={})) if with_keys else None
    with pytest.raises(ConfigError, match=message):
        IssuerVerifier(issuer, keys, clock=FakeClock())


HOUR_ISSUER = replace(JWKS_ISSUER, max_lifetime_seconds=3600.0, leeway_seconds=30.0)
N = int(NOW)

# (issuer, claims changes, refusal fragment or None for accepted); each issuer's longest lifetime.
LIFETIME_CASES: list[tuple[str, JwtIssuer, dict[str, Any], str | None]] = [
    ("default: a day", JWKS_ISSUER, {"iat": N, "exp": N + 86400}, None),
    ("default: a day and a second", JWKS_ISSUER, {"iat": N, "exp": N + 86401}, "lives longer (exp - iat)"),
    ("default: exp 1e308", JWKS_ISSUER, {"exp": 1e308}, "past the year 9999"),
    ("default: exp 1e308, no iat", JWKS_ISSUER, {"iat": None, "exp": 1e308}, "past the year 9999"),
    ("default: exp in a year, no iat", JWKS_ISSUER, {"iat": None, "exp": N + 366 * 86400},
     "expires further ahead"),
    ("default: no iat, a day and the leeway", JWKS_ISSUER, {"iat": None, "exp": N + 86400 + 30}, None),
    ("default: no iat, one second more", JWKS_ISSUER, {"iat": None, "exp": N + 86400 + 31}, "expires further ahead"),
    ("an hour: an hour", HOUR_ISSUER, {"iat": N, "exp": N + 3600}, None),
    ("an hour: an hour and a second", HOUR_ISSUER, {"iat": N, "exp": N + 3601}, "lives longer (exp - iat)"),
    ("an hour: issued two hours ago, a minute left", HOUR_ISSUER, {"iat": N - 7200, "exp": N + 60},
     "lives longer (exp - iat)"),
    ("an hour: no iat, two hours ahead", HOUR_ISSUER, {"iat": None, "exp": N + 7200}, "expires further ahead"),
    ("an hour: a fractional exp", HOUR_ISSUER, {"iat": N, "exp": N + 3599.5}, None),
    ("an hour: iat 1e308", HOUR_ISSUER, {"iat": 1e308}, "past the year 9999"),
    ("an hour: nbf -1e308", HOUR_ISSUER, {"nbf": -1e308}, "past the year 9999"),
]


@pytest.mark.parametrize(("issuer", "changes", "refused"), [c[1:] for c in LIFETIME_CASES],
                         ids=[c[0] for c in LIFETIME_CASES])
async def test_a_token_lives_no_longer_than_its_issuer_allows(
    signers: Signers, clock: FakeClock, issuer: JwtIssuer, changes: dict[str, Any], refused: str | None,
) -> None:
    verifier, _ = verifier_for(signers, clock, issuer)
    token = signers.rsa.sign(claims(**changes))
    if refused is None:
        verified = await verify(verifier, token)
        assert verified == GOOD
        # Remembered no longer than the token lives, nor than the issuer's longest lifetime from now.
        assert verified.valid_until <= NOW + issuer.max_lifetime_seconds + issuer.leeway_seconds
        expected = min(float(changes["exp"]), NOW + issuer.max_lifetime_seconds) + issuer.leeway_seconds
        assert verified.valid_until == expected
        return
    with pytest.raises(Unauthenticated) as refusal:
        await verify(verifier, token)
    assert refusal.value.code == "InvalidToken"
    assert refused in refusal.value.message
    assert "1e+308" not in refusal.value.message
