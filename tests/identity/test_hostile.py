"""Hostile tokens, end to end through `IdentityResolver.identify`: every hostile-token case the proxy must refuse.

Every case is a request a caller could send; each must be refused with
``InvalidToken`` (``ExpiredToken`` for expiry), without fetching anything and
without any error other than `Unauthenticated` (a `RecursionError` fails the
test). Some cases repeat unit tests of the modules; here they all go through
the one entry point the server uses, so the list is complete in one place.

Decisions recorded here:

- ``exp`` follows RFC 7519 (the token is good while ``now < exp``) plus the
  leeway: the last accepted second is ``exp + leeway - 1``; at
  ``now == exp + leeway`` it has expired (as in pyjwt). ``nbf`` and ``iat``
  are accepted exactly at the leeway and refused one second past it;
- ``iat`` in the future beyond the leeway is refused: a token cannot have
  been issued later than now, so its issuer's clock (or the token) is wrong;
- a token may live at most its issuer's ``max_lifetime_seconds`` (a day
  here): ``exp - iat`` at most that, and ``exp - now`` at most that plus the
  leeway (the only bound for a token without ``iat``); time claims past the
  year 9999 either way (``1e308``) are refused as malformed;
- a member named twice in the header or payload is refused ("duplicate
  claim"), whichever value comes first and even if both are equal;
- JSON nested deeper than `MAX_JSON_DEPTH` is refused, before and after
  verification alike.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from jwt import PyJWK
from jwt.utils import base64url_decode
from multidict import CIMultiDictProxy

from proxy.config import IdentityConfig, JwtIssuer
from proxy.domain import Caller
from proxy.errors import Unauthenticated
from proxy.identity import IdentityResolver
from proxy.identity.extract import MAX_TOKEN_CHARS, MORE_THAN_ONE
from proxy.identity.jwks import NO_KID, UNKNOWN_KID
from proxy.identity.keyset import parse_jwks
from proxy.identity.resolver import UNKNOWN_ISSUER
from proxy.identity.unverified import MAX_JSON_DEPTH
from proxy.identity.verifier import IssuerVerifier

from .support import (
    AUDIENCE,
    ISSUER,
    NOW,
    FakeClock,
    JwksServer,
    SigningKey,
    b64,
    b64json,
    bearer,
    claims,
    ec_key,
    forge,
    forge_hmac,
    headers,
    jwks,
    rsa_key,
)

URL_ISS = ISSUER  # RS256, ES256 and EdDSA keys (rsa-1, ec-1, ed-1) at a JWKS URL
EC_ISS = "https://ec.example.ie"  # ES256 only: the EC key, from a JWKS file
PS_ISS = "https://ps.example.ie"  # RS256 and PS256 allowed; its only key is published for RS256
COOLDOWN = 30.0
LEEWAY = 30
FETCH_TIMEOUT = 2.0   # the first fetch must not time out on a loaded machine; only the "hang" case waits it out
PEER = "198.51.100.7"
T = int(NOW)

ONE_MB = 1024 * 1024
DEEP = 10_000
DEEP_OBJECTS = b'{"a":' * DEEP + b"1" + b"}" * DEEP
UNCLOSED_OBJECTS = b'{"":' * 2400


@dataclass(frozen=True)
class Ctx:
    """What a case can use to build its request."""

    rsa: SigningKey
    ec: SigningKey
    ed: SigningKey
    rogue_rsa: SigningKey  # an RSA key never published, under the issuer's kid rsa-1
    rogue_ec: SigningKey  # an EC key never published, kid "attacker"
    base: str  # the JWKS server, which also answers any other path


Request = str | CIMultiDictProxy[str]  # a token (sent as Bearer), or the request's headers
Make = Callable[[Ctx], Request]


@pytest.fixture(scope="module")
def rogues() -> tuple[SigningKey, SigningKey]:
    return rsa_key("rsa-1"), ec_key("attacker")


@pytest.fixture
def ctx(
    rsa: SigningKey, ec: SigningKey, ed: SigningKey, rogues: tuple[SigningKey, SigningKey], jwks_server: JwksServer
) -> Ctx:
    return Ctx(rsa, ec, ed, rogues[0], rogues[1], jwks_server.base)


@pytest.fixture
async def resolver(
    tmp_path: Path, jwks_server: JwksServer, clock: FakeClock, ctx: Ctx
) -> AsyncIterator[IdentityResolver]:
    (tmp_path / "ec.json").write_bytes(jwks(ctx.ec))
    (tmp_path / "ps.json").write_bytes(jwks(ctx.rsa))
    jwks_server.document = jwks(ctx.rsa, ctx.ec, ctx.ed)
    identity = IdentityConfig(
        jwt=(
            JwtIssuer(
                issuer=URL_ISS, audience=AUDIENCE, algorithms=("RS256", "ES256", "EdDSA"),
                jwks_url=jwks_server.url, jwks_refresh_cooldown_seconds=COOLDOWN,
                jwks_fetch_timeout_seconds=FETCH_TIMEOUT, leeway_seconds=LEEWAY,
            ),
            JwtIssuer(issuer=EC_ISS, audience=AUDIENCE, algorithms=("ES256",), jwks_file=tmp_path / "ec.json"),
            JwtIssuer(
                issuer=PS_ISS, audience=AUDIENCE, algorithms=("RS256", "PS256"), jwks_file=tmp_path / "ps.json"
            ),
        ),
    )
    started = IdentityResolver(identity, clock=clock)
    try:
        await started.start()
        assert jwks_server.hits == 1
        yield started
    finally:
        jwks_server.release.set()
        await started.close()


CALLER = Caller(subject="alice@example.ie", jurisdiction="IE", source=PEER, method="jwt")


def as_headers(request: Request) -> CIMultiDictProxy[str]:
    return bearer(request) if isinstance(request, str) else request


async def refusal(resolver: IdentityResolver, request: Request) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as refused:
        await resolver.identify(as_headers(request), PEER)
    return refused.value


# --- building hostile tokens ----------------------------------------------------------------------


def with_member(document: dict[str, Any], name: str, value: Any) -> bytes:
    """`document` as JSON text with one more member `name`, even if it already has one."""
    text = json.dumps(document)
    return f"{text[:-1]}, {json.dumps(name)}: {json.dumps(value)}}}".encode()


def rsa_header(**extra: Any) -> bytes:
    return json.dumps({"alg": "RS256", "typ": "JWT", "kid": "rsa-1", **extra}).encode()


def nested(levels: int) -> Any:
    value: Any = "IE"
    for _ in range(levels):
        value = [value]
    return value


def nested_json(levels: int) -> bytes:
    """JSON text of `levels` nested arrays (json.dumps would recurse too deep to write it)."""
    return b"[" * levels + b'"IE"' + b"]" * levels


def with_raw_claim(name: str, value: bytes) -> bytes:
    """The good claims, as JSON text, with claim `name` set to the JSON text `value`, as it is."""
    others = {claim: given for claim, given in claims().items() if claim != name}
    return json.dumps(others)[:-1].encode() + f", {json.dumps(name)}: ".encode() + value + b"}"


def unsigned(alg: str, signature: str | None) -> Make:
    def make(c: Ctx) -> Request:
        head = f"{b64json({'alg': alg, 'kid': 'rsa-1'})}.{b64json(claims())}"
        return head if signature is None else f"{head}.{signature}"

    return make


def hmac_with_public_key(alg: str, form: str, issuer: str, key_name: str, with_kid: bool = True) -> Make:
    def make(c: Ctx) -> Request:
        key: SigningKey = getattr(c, key_name)
        secret = {
            "pem": key.public_pem(),
            "der": key.public_der(),
            "jwk": json.dumps(key.public_jwk()).encode(),
        }[form]
        header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
        if with_kid:
            header["kid"] = key.kid
        return forge_hmac(header, claims(iss=issuer), secret)

    return make


def signed(key_name: str, **changes: Any) -> Make:
    """A token signed by `key_name` with `changes` to the good claims (None removes a claim)."""

    def make(c: Ctx) -> Request:
        key: SigningKey = getattr(c, key_name)
        return key.sign(claims(**changes))

    return make


def with_claim(name: str, value: Any, **changes: Any) -> Make:
    """A token signed by the RSA key whose claim `name` is exactly `value` (None is JSON null).

    `changes` go to the other claims, as in `signed`.
    """

    def make(c: Ctx) -> Request:
        # Signed over json.dumps's text, which pyjwt's encoder would refuse for some values.
        return c.rsa.sign_raw(rsa_header(), json.dumps({**claims(**changes), name: value}).encode())

    return make


def with_kid(kid: Any, issuer: str = URL_ISS, key_name: str = "rsa") -> Make:
    def make(c: Ctx) -> Request:
        key: SigningKey = getattr(c, key_name)
        if not isinstance(kid, str):  # pyjwt will not make these; sign the header as it is
            header = json.dumps({"alg": key.alg, "typ": "JWT", "kid": kid}).encode()
            return key.sign_raw(header, json.dumps(claims(iss=issuer)).encode())
        return key.sign(claims(iss=issuer), kid=kid)

    return make


def raw_payload(payload: bytes, header: bytes | None = None) -> Make:
    """A token validly signed by the issuer's RSA key over exactly these bytes."""

    def make(c: Ctx) -> Request:
        return c.rsa.sign_raw(header if header is not None else rsa_header(), payload)

    return make


def case(case_id: str, make: Make, message: str, code: str = "InvalidToken") -> Any:
    return pytest.param(make, code, message, id=case_id)


ALG_NONE = [
    case(f"alg {alg}, {shape}", unsigned(alg, signature), message)
    for alg in ("none", "None", "NONE", "nOnE")
    for shape, signature, message in (
        ("with a signature", b64(b"forged"), "alg none"),
        ("empty signature", "", "not a JWT"),
        ("no signature part", None, "not a JWT"),
    )
]

HMAC_WITH_PUBLIC_KEY = [
    case(f"{alg} keyed with the {issuer_name} public key as {form}",
         hmac_with_public_key(alg, form, issuer, key_name), "not allowed for its issuer")
    for issuer_name, issuer, key_name in (("RS256 issuer's", URL_ISS, "rsa"), ("ES256 issuer's", EC_ISS, "ec"))
    for alg in ("HS256", "HS384", "HS512")
    for form in ("pem", "der", "jwk")
] + [
    case("HS256 keyed with the RSA PEM, no kid", hmac_with_public_key("HS256", "pem", URL_ISS, "rsa", False),
         "not allowed for its issuer"),
    case("HS256 keyed with the EC PEM, no kid", hmac_with_public_key("HS256", "pem", EC_ISS, "ec", False),
         "not allowed for its issuer"),
]

ALG_NOT_THE_KEYS = [
    case("RS256 token whose kid is the EC key", with_kid("ec-1"), "not the algorithm of its key"),
    case("RS256 token whose kid is the Ed25519 key", with_kid("ed-1"), "not the algorithm of its key"),
    case("ES256 token whose kid is the RSA key", with_kid("rsa-1", key_name="ec"), "not the algorithm of its key"),
    case(
        "PS256 token with an RS256-only key",
        lambda c: jwt.encode(claims(iss=PS_ISS), c.rsa.private, algorithm="PS256", headers={"kid": "rsa-1"}),
        "not the algorithm of its key",
    ),
    case(
        "PS256 token to an issuer that does not allow it",
        lambda c: jwt.encode(claims(), c.rsa.private, algorithm="PS256", headers={"kid": "rsa-1"}),
        "not allowed for its issuer",
    ),
    case(
        "RS256 header over an ES256 signature",
        lambda c: forge(
            {"alg": "RS256", "kid": "rsa-1"}, claims(), base64url_decode(c.ec.sign(claims()).split(".")[2])
        ),
        "signature does not verify",
    ),
]

HOSTILE_KIDS = [
    *[
        case(f"kid {kid!r} ({where})", with_kid(kid, issuer, key_name), UNKNOWN_KID)
        for kid in (
            "../../etc/passwd", "/dev/null", "..\\..\\windows\\win.ini", "file:///etc/passwd",
            "rsa-1\x00", "a\x00b", "rsa-1\r\nX-Injected: 1", "a\r\nb", "*", "rsa-1 ",
        )
        for where, issuer, key_name in (("JWKS URL", URL_ISS, "rsa"), ("JWKS file", EC_ISS, "ec"))
    ],
    case("kid of 10 KB", with_kid("k" * 10 * 1024), "key id (kid)"),
    case("kid of 257 characters", with_kid("k" * 257), "key id (kid)"),
    case("kid null", with_kid(None), "key id (kid)"),
    case("kid a list", with_kid(["rsa-1"]), "key id (kid)"),
    case("kid an object", with_kid({"$ref": "rsa-1"}), "key id (kid)"),
    case("kid empty", with_kid(""), "key id (kid)"),
]

KEYS_IN_THE_TOKEN = [
    case("jku to the attacker's keys", lambda c: c.rogue_ec.sign(claims(), jku=f"{c.base}/jku"), UNKNOWN_KID),
    case("x5u to the attacker's keys", lambda c: c.rogue_ec.sign(claims(), x5u=f"{c.base}/x5u"), UNKNOWN_KID),
    case(
        "embedded jwk of the signing key",
        lambda c: c.rogue_ec.sign(claims(), jwk=c.rogue_ec.public_jwk()), UNKNOWN_KID,
    ),
    case(
        "embedded jwk under the issuer's kid",
        lambda c: c.rogue_rsa.sign(claims(), jwk=c.rogue_rsa.public_jwk()), "signature does not verify",
    ),
    case(
        "jku under the issuer's kid",
        lambda c: c.rogue_rsa.sign(claims(), jku=f"{c.base}/jku"), "signature does not verify",
    ),
    case(
        "x5c under the issuer's kid",
        lambda c: c.rogue_rsa.sign(claims(), x5c=[b64(c.rogue_rsa.public_der())]), "signature does not verify",
    ),
    case(
        "embedded jwk, no kid, issuer with several keys",
        lambda c: jwt.encode(claims(), c.rogue_ec.private, algorithm="ES256",
                             headers={"jwk": c.rogue_ec.public_jwk()}),
        NO_KID,
    ),
    case(
        "embedded jwk, no kid, issuer with one key",
        lambda c: jwt.encode(claims(iss=EC_ISS), c.rogue_ec.private, algorithm="ES256",
                             headers={"jwk": c.rogue_ec.public_jwk()}),
        "signature does not verify",
    ),
]

CRIT = [
    case("crit naming a registered claim", lambda c: c.rsa.sign(claims(), crit=["exp"]), "critical (crit)"),
    case(
        "crit naming an unknown extension",
        lambda c: c.rsa.sign(claims(), crit=["urn:example:unknown"], **{"urn:example:unknown": True}),
        "critical (crit)",
    ),
    case("crit empty", lambda c: c.rsa.sign(claims(), crit=[]), "critical (crit)"),
    case("crit not a list", lambda c: c.rsa.sign(claims(), crit="b64"), "critical (crit)"),
    case(
        "crit b64 false",
        lambda c: forge({"alg": "RS256", "kid": "rsa-1", "crit": ["b64"], "b64": False}, claims()),
        "critical (crit)",
    ),
]

TIMES = [
    case("exp exactly leeway ago (RFC 7519: expired)", signed("rsa", exp=T - LEEWAY), "has expired",
         "ExpiredToken"),
    case("exp a second more than leeway ago", signed("rsa", exp=T - LEEWAY - 1), "has expired", "ExpiredToken"),
    case("exp an hour ago", signed("rsa", exp=T - 3600), "has expired", "ExpiredToken"),
    case("exp at the epoch", signed("rsa", exp=0), "has expired", "ExpiredToken"),
    case("exp negative", signed("rsa", exp=-1), "has expired", "ExpiredToken"),
    case("nbf a second past leeway", signed("rsa", nbf=T + LEEWAY + 1), "not valid yet"),
    case("iat a second past leeway", signed("rsa", iat=T + LEEWAY + 1), "issued in the future"),
    case("iat far in the future", signed("rsa", iat=T + 10 * 365 * 86400), "issued in the future"),
    case("exp missing", signed("rsa", exp=None), "no exp claim"),
    case("exp null", with_claim("exp", None), "no exp claim"),
    case("exp a numeric string", with_claim("exp", "9999999999"), "exp claim is not a number"),
    case("exp true", with_claim("exp", True), "exp claim is not a number"),
    case("exp false", with_claim("exp", False), "exp claim is not a number"),
    case("exp a list", with_claim("exp", [T + 60]), "exp claim is not a number"),
    case("exp an object", with_claim("exp", {"seconds": T + 60}), "exp claim is not a number"),
    case("exp Infinity", with_claim("exp", float("inf")), "exp claim is not a number"),
    case("exp -Infinity", with_claim("exp", float("-inf")), "exp claim is not a number"),
    case("exp NaN", with_claim("exp", float("nan")), "exp claim is not a number"),
    case("exp 1e400 (overflows to infinity)", raw_payload(with_raw_claim("exp", b"1e400")),
         "exp claim is not a number"),
    case("exp 10**400 (overflows a float)", with_claim("exp", 10**400), "exp claim is not a number"),
    case("nbf a string", with_claim("nbf", "0"), "nbf claim is not a number"),
    case("nbf NaN", with_claim("nbf", float("nan")), "nbf claim is not a number"),
    case("iat true", with_claim("iat", True), "iat claim is not a number"),
    case("iat Infinity", with_claim("iat", float("inf")), "iat claim is not a number"),
]

DAY = 86400  # the issuers' longest token lifetime (max_lifetime_seconds, default)

LIFETIMES = [
    case("exp 1e308", with_claim("exp", 1e308), "past the year 9999"),
    case("exp 1e308 without iat", with_claim("exp", 1e308, iat=None), "past the year 9999"),
    case("exp 2**63", with_claim("exp", 2**63), "past the year 9999"),
    case("exp just past the year 9999", with_claim("exp", 253_402_300_800), "past the year 9999"),
    case("exp -1e308", with_claim("exp", -1e308), "past the year 9999"),
    case("iat -1e308", with_claim("iat", -1e308), "past the year 9999"),
    case("nbf 1e308", with_claim("nbf", 1e308), "past the year 9999"),
    case("nbf -1e308", with_claim("nbf", -1e308), "past the year 9999"),
    case("exp in ten years", signed("rsa", exp=T + 10 * 365 * DAY), "lives longer (exp - iat)"),
    case("exp a day and a second after iat", signed("rsa", iat=T, exp=T + DAY + 1), "lives longer (exp - iat)"),
    case("iat two days ago, exp in a minute", signed("rsa", iat=T - 2 * DAY, exp=T + 60), "lives longer (exp - iat)"),
    case("iat at the epoch", signed("rsa", iat=0), "lives longer (exp - iat)"),
    case("iat negative", signed("rsa", iat=-1), "lives longer (exp - iat)"),
    case("no iat, exp in ten years", signed("rsa", iat=None, exp=T + 10 * 365 * DAY), "expires further ahead"),
    case("no iat, exp a second past a day and the leeway", signed("rsa", iat=None, exp=T + DAY + LEEWAY + 1),
         "expires further ahead"),
    case("iat in the future within leeway, exp a day after it plus a second",
         signed("rsa", iat=T + LEEWAY, exp=T + LEEWAY + DAY + 1), "lives longer (exp - iat)"),
]

ISSUERS_AND_AUDIENCES = [
    case("iss a substring", signed("rsa", iss=ISSUER[:-3]), UNKNOWN_ISSUER),
    case("iss a superstring", signed("rsa", iss=ISSUER + ".evil.example"), UNKNOWN_ISSUER),
    case("iss with a trailing slash", signed("rsa", iss=ISSUER + "/"), UNKNOWN_ISSUER),
    case("iss in upper case", signed("rsa", iss=ISSUER.upper()), UNKNOWN_ISSUER),
    case("iss padded", signed("rsa", iss=f" {ISSUER}"), UNKNOWN_ISSUER),
    case("iss a list", with_claim("iss", [ISSUER]), "no issuer"),
    case("iss missing", signed("rsa", iss=None), "no issuer"),
    case("iss null", with_claim("iss", None), "no issuer"),
    case("aud wrong", signed("rsa", aud="someone-else"), "not for this service"),
    case("aud a superstring", signed("rsa", aud=f"{AUDIENCE}-admin"), "not for this service"),
    case("aud a substring", signed("rsa", aud=AUDIENCE[:-1]), "not for this service"),
    case("aud a list without ours", signed("rsa", aud=["a", f"{AUDIENCE}-admin"]), "not for this service"),
    case("aud an empty list", signed("rsa", aud=[]), "no aud claim"),
    case("aud a number", signed("rsa", aud=7), "not for this service"),
    case("aud missing", signed("rsa", aud=None), "no aud claim"),
    case("aud null", with_claim("aud", None), "no aud claim"),
]

DUPLICATES = [
    case("two jurisdiction claims", raw_payload(with_member(claims(), "jurisdiction", "US")), "duplicate claim"),
    case("two equal jurisdiction claims", raw_payload(with_member(claims(), "jurisdiction", "IE")),
         "duplicate claim"),
    case("two iss claims, ours first", raw_payload(with_member(claims(), "iss", "https://evil.example")),
         "duplicate claim"),
    case("two iss claims, ours last",
         raw_payload(with_member(claims(iss="https://evil.example"), "iss", ISSUER)), "duplicate claim"),
    case("two exp claims", raw_payload(with_member(claims(), "exp", T + 10**9)), "duplicate claim"),
    case("two sub claims", raw_payload(with_member(claims(), "sub", "root")), "duplicate claim"),
    case("two aud claims", raw_payload(with_member(claims(), "aud", "other")), "duplicate claim"),
    case("a name spelled with an escape",
         raw_payload(json.dumps(claims())[:-1].encode() + b', "\\u006aurisdiction": "US"}'), "duplicate claim"),
    case("a duplicate inside a nested claim", raw_payload(with_raw_claim("ctx", b'{"a": 1, "a": 2}')),
         "duplicate claim"),
    case("two alg header parameters", raw_payload(json.dumps(claims()).encode(),
                                                  with_member({"alg": "none", "kid": "rsa-1"}, "alg", "RS256")),
         "header names a parameter twice"),
    case("two kid header parameters", raw_payload(json.dumps(claims()).encode(),
                                                  with_member({"alg": "RS256", "kid": "ec-1"}, "kid", "rsa-1")),
         "header names a parameter twice"),
]

JURISDICTIONS = [
    case("jurisdiction a list", signed("rsa", jurisdiction=["IE"]), "jurisdiction claim is a list"),
    case("jurisdiction an empty list", signed("rsa", jurisdiction=[]), "jurisdiction claim is a list"),
    case("jurisdiction lower case", signed("rsa", jurisdiction="ie"), "upper case"),
    case("jurisdiction mixed case", signed("rsa", jurisdiction="Ie"), "upper case"),
    case("jurisdiction padded before", signed("rsa", jurisdiction=" IE"), "spaces around"),
    case("jurisdiction padded after", signed("rsa", jurisdiction="IE "), "spaces around"),
    case("jurisdiction with a newline", signed("rsa", jurisdiction="IE\n"), "spaces around"),
    case("jurisdiction with a NUL", signed("rsa", jurisdiction="IE\x00"), "not an assigned"),
    case("jurisdiction missing", signed("rsa", jurisdiction=None), "no jurisdiction claim"),
    case("jurisdiction null", with_claim("jurisdiction", None), "must be an ISO 3166-1 alpha-2 code"),
    case("jurisdiction an integer", signed("rsa", jurisdiction=372), "must be an ISO 3166-1 alpha-2 code"),
    case("jurisdiction true", signed("rsa", jurisdiction=True), "must be an ISO 3166-1 alpha-2 code"),
    case("jurisdiction an object", signed("rsa", jurisdiction={"code": "IE"}), "must be an ISO 3166-1 alpha-2"),
    case("jurisdiction UK", signed("rsa", jurisdiction="UK"), "not an assigned"),
    case("jurisdiction EU", signed("rsa", jurisdiction="EU"), "not an assigned"),
    case("jurisdiction alpha-3", signed("rsa", jurisdiction="IRL"), "not an assigned"),
    case("jurisdiction empty", signed("rsa", jurisdiction=""), "not an assigned"),
    case("jurisdiction a wildcard", signed("rsa", jurisdiction="*"), "not an assigned"),
]

SIZE_AND_DEPTH = [
    case("1 MB token in Authorization", signed("rsa", pad="x" * ONE_MB), f"at most {MAX_TOKEN_CHARS}"),
    case("1 MB token in X-Bailiwick-Token",
         lambda c: headers(("X-Bailiwick-Token", c.rsa.sign(claims(pad="x" * ONE_MB)))), f"at most {MAX_TOKEN_CHARS}"),
    case("10,000-deep arrays", lambda c: f"{b64json({'alg': 'RS256'})}.{b64(nested_json(DEEP))}.c2ln",
         f"at most {MAX_TOKEN_CHARS}"),
    case("10,000-deep objects",
         lambda c: f"{b64json({'alg': 'RS256'})}.{b64(DEEP_OBJECTS)}.c2ln",
         f"at most {MAX_TOKEN_CHARS}"),
    case("10,000 unclosed arrays in the payload", lambda c: f"{b64json({'alg': 'RS256'})}.{b64(b'[' * DEEP)}.c2ln",
         "payload is not valid"),
    case("2,400 unclosed objects in the payload",
         lambda c: f"{b64json({'alg': 'RS256'})}.{b64(UNCLOSED_OBJECTS)}.c2ln", "payload is not valid"),
    case("10,000 unclosed arrays in the header",
         lambda c: f"{b64(b'[' * DEEP)}.{b64json(claims())}.c2ln", "header is not valid"),
    case("2,000-deep arrays in a claim",
         lambda c: f"{b64(rsa_header())}.{b64(with_raw_claim('deep', nested_json(2000)))}.c2ln",
         "payload is not valid"),
    case("500-deep arrays in a signed claim", signed("rsa", deep=nested(500)), f"more than {MAX_JSON_DEPTH} levels"),
    case("a signed claim one level too deep", signed("rsa", deep=nested(MAX_JSON_DEPTH)),
         f"more than {MAX_JSON_DEPTH} levels"),
    case("a header one level too deep", lambda c: c.rsa.sign(claims(), x=nested(MAX_JSON_DEPTH)),
         f"header is nested more than {MAX_JSON_DEPTH}"),
]

TWO_TOKENS = [
    case("Bearer and X-Bailiwick-Token",
         lambda c: headers(("Authorization", f"Bearer {c.rsa.sign(claims())}"),
                           ("X-Bailiwick-Token", c.rsa.sign(claims()))), MORE_THAN_ONE),
    case("Bearer and a bad X-Bailiwick-Token",
         lambda c: headers(("Authorization", f"Bearer {c.rsa.sign(claims())}"),
                           ("X-Bailiwick-Token", c.rsa.sign(claims(jurisdiction="US", sub="mallory"))),
                           ), MORE_THAN_ONE),
    case("X-Bailiwick-Token twice",
         lambda c: headers(("X-Bailiwick-Token", c.rsa.sign(claims())),
                           ("X-Bailiwick-Token", c.ec.sign(claims()))), MORE_THAN_ONE),
    case("Authorization: Bearer twice",
         lambda c: headers(("Authorization", f"Bearer {c.rsa.sign(claims())}"),
                           ("Authorization", f"Bearer {c.ec.sign(claims())}")), MORE_THAN_ONE),
    case("two tokens in one Bearer value",
         lambda c: headers(("Authorization", f"Bearer {c.rsa.sign(claims())} {c.ec.sign(claims())}")),
         "not a JWT"),
    case("two tokens in one X-Bailiwick-Token value",
         lambda c: headers(("X-Bailiwick-Token", f"{c.rsa.sign(claims())},{c.ec.sign(claims())}")), "not a JWT"),
]


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        *ALG_NONE,
        *HMAC_WITH_PUBLIC_KEY,
        *ALG_NOT_THE_KEYS,
        *HOSTILE_KIDS,
        *KEYS_IN_THE_TOKEN,
        *CRIT,
        *TIMES,
        *LIFETIMES,
        *ISSUERS_AND_AUDIENCES,
        *DUPLICATES,
        *JURISDICTIONS,
        *SIZE_AND_DEPTH,
        *TWO_TOKENS,
    ],
)
async def test_hostile_tokens_are_refused(
    resolver: IdentityResolver, jwks_server: JwksServer, ctx: Ctx, make: Make, code: str, message: str
) -> None:
    # Whatever a token points at, on the JWKS server or elsewhere, serves the attacker's keys.
    jwks_server.document = jwks(ctx.rogue_rsa, ctx.rogue_ec)
    request = make(ctx)
    refused = await refusal(resolver, request)
    assert (refused.code, message in refused.message) == (code, True), refused.message
    # Nothing was fetched: not the URLs in the token, not the issuer's JWKS again.
    assert jwks_server.paths == ["/jwks"]
    # Refusals never quote the token.
    for _, value in as_headers(request).items():
        for part in value.replace(",", " ").split():
            for segment in part.split("."):
                assert len(segment) < 8 or segment not in refused.message


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(signed("rsa"), id="RS256"),
        pytest.param(signed("ec"), id="ES256"),
        pytest.param(signed("ed"), id="EdDSA"),
        pytest.param(signed("ec", iss=EC_ISS), id="ES256, JWKS file"),
        pytest.param(signed("rsa", iss=PS_ISS), id="RS256 at an issuer that also allows PS256"),
        pytest.param(lambda c: headers(("X-Bailiwick-Token", c.rsa.sign(claims()))), id="X-Bailiwick-Token"),
        pytest.param(signed("rsa", exp=T - LEEWAY + 1), id="exp: the last second within leeway"),
        pytest.param(signed("rsa", exp=T + 0.5), id="exp a fraction"),
        pytest.param(signed("rsa", nbf=T + LEEWAY), id="nbf exactly at leeway"),
        pytest.param(signed("rsa", iat=T + LEEWAY), id="iat exactly at leeway"),
        pytest.param(signed("rsa", iat=None), id="iat missing"),
        pytest.param(signed("rsa", iat=T, exp=T + DAY), id="a lifetime of exactly a day"),
        pytest.param(signed("rsa", iat=T - DAY + 60, exp=T + 60), id="a day-long token near its end"),
        pytest.param(signed("rsa", iat=None, exp=T + DAY + LEEWAY), id="no iat, exp a day and the leeway ahead"),
        pytest.param(signed("rsa", iat=T + LEEWAY, exp=T + LEEWAY + DAY), id="a day from an iat within leeway"),
        pytest.param(signed("rsa", aud=["other", AUDIENCE]), id="aud a list with ours"),
        pytest.param(signed("rsa", deep=nested(MAX_JSON_DEPTH - 1)), id="nesting at the limit"),
        pytest.param(lambda c: c.rsa.sign(claims(), x=nested(MAX_JSON_DEPTH - 1)), id="header nesting at the limit"),
        pytest.param(lambda c: c.rsa.sign(claims(), jku=f"{c.base}/jku", x5u=f"{c.base}/x5u"),
                     id="jku and x5u ignored"),
        pytest.param(lambda c: c.rsa.sign(claims(), jwk=c.rogue_rsa.public_jwk()), id="embedded jwk ignored"),
    ],
)
async def test_good_tokens_beside_them_are_accepted(
    resolver: IdentityResolver, jwks_server: JwksServer, ctx: Ctx, make: Make
) -> None:
    """The controls: the same resolver accepts good tokens, and the boundaries on their good side."""
    identified = await resolver.identify(as_headers(make(ctx)), PEER)
    assert identified.caller == CALLER
    assert jwks_server.paths == ["/jwks"]


async def test_a_new_kid_per_request_fetches_at_most_once_per_cooldown(
    resolver: IdentityResolver, jwks_server: JwksServer, clock: FakeClock, ctx: Ctx
) -> None:
    step = 0.25  # 200 requests over 50 seconds: the cooldown ends once
    for count in range(1, 201):
        clock.advance(step)
        token = ctx.rsa.sign(claims(), kid=secrets.token_urlsafe(12))
        refused = await refusal(resolver, token)
        assert (refused.code, refused.message) == ("InvalidToken", UNKNOWN_KID)
        assert jwks_server.hits <= 1 + (count * step) // COOLDOWN
    assert jwks_server.hits == 2
    assert (await resolver.identify(bearer(ctx.rsa.sign(claims())), PEER)).caller == CALLER


@pytest.mark.parametrize("failure", ["500", "hang", "redirect", "5000 keys", "non-JSON", "no usable keys"])
async def test_a_failing_jwks_endpoint_keeps_the_last_good_keys(
    resolver: IdentityResolver, jwks_server: JwksServer, clock: FakeClock, ctx: Ctx, failure: str
) -> None:
    newcomer = ec_key("newcomer")
    good_document = jwks(ctx.rsa, ctx.ec, ctx.ed, newcomer)  # what a fetch that worked would load
    if failure == "500":
        jwks_server.status, jwks_server.document = 500, good_document
    elif failure == "hang":
        jwks_server.hold, jwks_server.document = True, good_document
    elif failure == "redirect":
        jwks_server.redirect_to, jwks_server.document = "/elsewhere", good_document
    elif failure == "5000 keys":
        jwks_server.document = json.dumps({"keys": [newcomer.public_jwk()] * 5000}).encode()
    elif failure == "non-JSON":
        jwks_server.document = b"<html>" + good_document + b"</html>"
    else:
        jwks_server.document = jwks(rsa_key("newcomer", alg="RS512"))
    clock.advance(COOLDOWN)

    unknown = asyncio.create_task(resolver.identify(bearer(newcomer.sign(claims())), PEER))
    await jwks_server.wait_for_hits(2)
    # While the fetch is under way (or hangs), tokens signed with the known keys are answered.
    for key in (ctx.rsa, ctx.ec, ctx.ed):
        assert (await resolver.identify(bearer(key.sign(claims())), PEER)).caller == CALLER
    if failure == "hang":
        assert not unknown.done()  # only the request that needs the new keys waits, up to the fetch timeout
    with pytest.raises(Unauthenticated) as refused:
        await unknown
    assert (refused.value.code, refused.value.message) == ("InvalidToken", UNKNOWN_KID)
    assert jwks_server.paths == ["/jwks", "/jwks"]  # a redirect is not followed

    # Within the cooldown, unknown kids do not fetch again; known keys keep working.
    await refusal(resolver, newcomer.sign(claims()))
    assert jwks_server.hits == 2
    assert (await resolver.identify(bearer(ctx.rsa.sign(claims())), PEER)).caller == CALLER


class OneKey:
    """A `KeySource` holding one published key."""

    def __init__(self, key: SigningKey) -> None:
        self.keys = parse_jwks(jwks(key), (key.alg,))

    async def key_for(self, kid: str | None) -> PyJWK:
        found = self.keys.find(kid)
        assert found is not None
        return found

    def key_at_hand(self, kid: str | None) -> PyJWK | None:
        return self.keys.find(kid)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(with_member(claims(), "jurisdiction", "US"), "duplicate claim", id="duplicate claim"),
        pytest.param(json.dumps(claims(deep=nested(MAX_JSON_DEPTH))).encode(), "nested more than", id="too deep"),
    ],
)
async def test_verification_reads_the_payload_as_strictly_as_peek(
    rsa: SigningKey, clock: FakeClock, payload: bytes, message: str
) -> None:
    """pyjwt's reading, after the signature, refuses what `peek` refuses, even when `peek` is skipped."""
    verifier = IssuerVerifier(JwtIssuer(issuer=URL_ISS, audience=AUDIENCE, algorithms=("RS256",)),
                              OneKey(rsa), clock=clock)
    header = {"alg": "RS256", "kid": "rsa-1"}
    token = rsa.sign_raw(json.dumps(header).encode(), payload)
    with pytest.raises(Unauthenticated) as refused:
        await verifier.verify(token, header)
    assert refused.value.code == "InvalidToken"
    assert message in refused.value.message
