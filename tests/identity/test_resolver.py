"""The resolver end to end: tokens from HMAC, JWKS files and JWKS URLs; networks; X-Forwarded-For."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import jwt
import pytest
from multidict import CIMultiDictProxy

from proxy.config import IdentityConfig, JwtIssuer, NetworkRule
from proxy.domain import Caller
from proxy.errors import ConfigError, NoIdentity, Unauthenticated
from proxy.identity import Identified, IdentityResolver
from proxy.identity.extract import MAX_TOKEN_CHARS
from proxy.identity.resolver import NO_IDENTITY, UNKNOWN_ISSUER

from .support import (
    AUDIENCE,
    ISSUER,
    NOW,
    SECRET,
    FakeClock,
    JwksServer,
    SigningKey,
    bearer,
    claims,
    ec_key,
    forge,
    headers,
    jwks,
)

HMAC_ISS = "https://hmac.example.de"
FILE_ISS = "https://file.example.ie"
URL_ISS = ISSUER
COOLDOWN = 30.0
PEER = "198.51.100.7"
PROXY_PEER = "10.99.0.1"

SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/eu-west-1/s3/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=abcdef0123456789"
)


def net(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr)


NETWORKS = (
    NetworkRule(net("10.20.0.0/16"), "IE"),
    NetworkRule(net("10.20.5.0/24"), "DE"),
    NetworkRule(net("2001:db8::/32"), "FR"),
)


def config(jwks_file: Path, jwks_url: str) -> IdentityConfig:
    return IdentityConfig(
        jwt=(
            JwtIssuer(issuer=HMAC_ISS, audience=AUDIENCE, algorithms=("HS256",), hs256_secret=SECRET),
            JwtIssuer(
                issuer=FILE_ISS, audience=AUDIENCE, algorithms=("RS256", "ES256", "EdDSA"),
                jwks_file=jwks_file,
            ),
            JwtIssuer(
                issuer=URL_ISS, audience=AUDIENCE, algorithms=("RS256", "ES256", "EdDSA"),
                jwks_url=jwks_url, jwks_refresh_cooldown_seconds=COOLDOWN,
            ),
        ),
        networks=NETWORKS,
        trusted_proxies=(net("10.99.0.0/16"),),
    )


Start = Callable[..., Awaitable[IdentityResolver]]


@pytest.fixture
async def start(
    tmp_path: Path, jwks_server: JwksServer, clock: FakeClock
) -> AsyncIterator[Start]:
    """Starts resolvers over the test JWKS file and server; closes them afterwards."""
    made: list[IdentityResolver] = []

    async def started(identity: IdentityConfig | None = None) -> IdentityResolver:
        if identity is None:
            identity = config(tmp_path / "idp.jwks.json", jwks_server.url)
        resolver = IdentityResolver(identity, clock=clock)
        made.append(resolver)
        await resolver.start()
        return resolver

    try:
        yield started
    finally:
        jwks_server.release.set()
        for resolver in made:
            await resolver.close()


@pytest.fixture
def keys_published(
    tmp_path: Path, jwks_server: JwksServer, rsa: SigningKey, ec: SigningKey, ed: SigningKey
) -> None:
    (tmp_path / "idp.jwks.json").write_bytes(jwks(rsa, ec, ed))
    jwks_server.document = jwks(rsa, ec, ed)


def jwt_caller(jurisdiction: str = "IE", source: str = PEER) -> Caller:
    return Caller(subject="alice@example.ie", jurisdiction=jurisdiction, source=source, method="jwt")


async def refusal(
    resolver: IdentityResolver, given: CIMultiDictProxy[str], peer: str | None = PEER
) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as refused:
        await resolver.identify(given, peer)
    return refused.value


# --- tokens ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("keys_published")
@pytest.mark.parametrize("issuer", [FILE_ISS, URL_ISS])
@pytest.mark.parametrize("key_name", ["rsa", "ec", "ed"])
async def test_jwks_tokens_identify_the_caller(
    start: Start, request: pytest.FixtureRequest, issuer: str, key_name: str
) -> None:
    key: SigningKey = request.getfixturevalue(key_name)
    resolver = await start()
    token = key.sign(claims(iss=issuer))
    assert await resolver.identify(bearer(token), PEER) == Identified(
        caller=jwt_caller(), token_headers=frozenset({"authorization"})
    )


@pytest.mark.usefixtures("keys_published")
async def test_hmac_token_in_either_header(start: Start) -> None:
    resolver = await start()
    token = jwt.encode(claims(iss=HMAC_ISS, jurisdiction="DE"), SECRET, algorithm="HS256")
    via_bearer = await resolver.identify(bearer(token), PEER)
    assert via_bearer == Identified(jwt_caller("DE"), frozenset({"authorization"}))
    via_header = await resolver.identify(
        headers(("Authorization", SIGV4), ("X-Bailiwick-Token", token)), PEER
    )
    # The storage signature stays: only the token's header is withheld from upstream.
    assert via_header == Identified(jwt_caller("DE"), frozenset({"x-bailiwick-token"}))


@pytest.mark.usefixtures("keys_published")
@pytest.mark.parametrize(
    ("iss", "message"),
    [
        ("https://unknown.example", UNKNOWN_ISSUER),
        (ISSUER + "/", UNKNOWN_ISSUER),  # superstring
        (ISSUER[:-3], UNKNOWN_ISSUER),  # substring
        (ISSUER.upper(), UNKNOWN_ISSUER),
    ],
)
async def test_issuer_must_match_exactly(start: Start, rsa: SigningKey, iss: str, message: str) -> None:
    resolver = await start()
    refused = await refusal(resolver, bearer(rsa.sign(claims(iss=iss))))
    assert (refused.code, refused.message) == ("InvalidToken", message)


@pytest.mark.usefixtures("keys_published")
async def test_keys_of_one_issuer_do_not_verify_another(start: Start, rsa: SigningKey) -> None:
    resolver = await start()
    # The RSA key is published by the JWKS issuers, not by the HMAC issuer.
    refused = await refusal(resolver, bearer(rsa.sign(claims(iss=HMAC_ISS))))
    assert "not allowed for its issuer" in refused.message
    # And the HMAC secret does not verify the JWKS issuers' tokens.
    forged = jwt.encode(claims(iss=URL_ISS), SECRET, algorithm="HS256", headers={"kid": "rsa-1"})
    refused = await refusal(resolver, bearer(forged))
    assert "not allowed for its issuer" in refused.message


@pytest.mark.usefixtures("keys_published")
@pytest.mark.parametrize(
    ("given", "code", "message"),
    [
        pytest.param(
            lambda t: headers(("Authorization", f"Bearer {t}"), ("X-Bailiwick-Token", t)),
            "InvalidToken", "more than one token", id="two tokens",
        ),
        pytest.param(
            lambda t: headers(("X-Bailiwick-Token", t), ("X-Bailiwick-Token", t)),
            "InvalidToken", "more than one token", id="repeated header",
        ),
        pytest.param(
            lambda t: bearer(t + "A" * MAX_TOKEN_CHARS), "InvalidToken", "at most 16384",
            id="oversized",
        ),
    ],
)
async def test_refuses_ambiguous_requests(
    start: Start,
    rsa: SigningKey,
    given: Callable[[str], CIMultiDictProxy[str]],
    code: str,
    message: str,
) -> None:
    resolver = await start()
    token = rsa.sign(claims())
    refused = await refusal(resolver, given(token))
    assert refused.code == code
    assert message in refused.message


@pytest.mark.usefixtures("keys_published")
async def test_expired_token_is_expired_token(start: Start, ec: SigningKey) -> None:
    resolver = await start()
    refused = await refusal(resolver, bearer(ec.sign(claims(exp=int(NOW) - 3600))))
    assert (refused.code, refused.message) == ("ExpiredToken", "the token has expired")


@pytest.mark.usefixtures("keys_published")
async def test_a_bad_token_never_falls_back_to_the_network(start: Start, rsa: SigningKey) -> None:
    resolver = await start()
    refused = await refusal(resolver, bearer(rsa.sign(claims(jurisdiction="ie"))), "10.20.0.1")
    assert "upper case" in refused.message


@pytest.mark.usefixtures("keys_published")
async def test_jku_and_x5u_are_never_fetched(
    start: Start, jwks_server: JwksServer, clock: FakeClock
) -> None:
    resolver = await start()
    attacker = ec_key("attacker")
    jwks_server.document = jwks(attacker)  # what the URLs in the token would serve
    hits = jwks_server.hits
    token = attacker.sign(
        claims(iss=FILE_ISS), jku=f"{jwks_server.base}/jku", x5u=f"{jwks_server.base}/x5u"
    )
    clock.advance(COOLDOWN)
    refused = await refusal(resolver, bearer(token))
    assert "not one of the issuer's keys" in refused.message
    assert jwks_server.hits == hits
    assert "/jku" not in jwks_server.paths
    assert "/x5u" not in jwks_server.paths


@pytest.mark.usefixtures("keys_published")
async def test_jwks_url_refetch_for_unknown_kid_respects_the_cooldown(
    start: Start, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey
) -> None:
    resolver = await start()
    assert jwks_server.hits == 1
    newcomer = ec_key("newcomer")
    token = newcomer.sign(claims())
    for _ in range(3):
        assert "not one of the issuer's keys" in (await refusal(resolver, bearer(token))).message
    assert jwks_server.hits == 1

    jwks_server.document = jwks(rsa, newcomer)
    clock.advance(COOLDOWN)
    identified = await resolver.identify(bearer(token), PEER)
    assert identified.caller == jwt_caller()
    assert jwks_server.hits == 2

    long_kid = ec_key("k" * 257).sign(claims())
    clock.advance(COOLDOWN)
    assert "key id (kid)" in (await refusal(resolver, bearer(long_kid))).message
    assert jwks_server.hits == 2


@pytest.mark.usefixtures("keys_published")
async def test_a_failed_first_fetch_is_not_fatal(
    start: Start, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey
) -> None:
    jwks_server.status = 500
    resolver = await start()
    token = rsa.sign(claims())
    assert "not available" in (await refusal(resolver, bearer(token))).message
    # Other issuers work meanwhile.
    assert (await resolver.identify(bearer(rsa.sign(claims(iss=FILE_ISS))), PEER)).caller == jwt_caller()

    jwks_server.status = 200
    clock.advance(COOLDOWN)
    assert (await resolver.identify(bearer(token), PEER)).caller == jwt_caller()


async def test_a_broken_jwks_file_stops_the_start(start: Start, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jwks.json"
    identity = IdentityConfig(
        jwt=(JwtIssuer(issuer=FILE_ISS, audience=AUDIENCE, algorithms=("RS256",), jwks_file=missing),)
    )
    with pytest.raises(ConfigError, match=f"^{missing}: cannot read the JWKS file"):
        await start(identity)


def test_an_issuer_without_exactly_one_key_source_is_a_config_error(tmp_path: Path) -> None:
    both = JwtIssuer(
        issuer=FILE_ISS, audience=AUDIENCE, algorithms=("RS256",),
        jwks_file=tmp_path / "a.json", jwks_url="http://127.0.0.1:9/jwks",
    )
    with pytest.raises(ConfigError, match="exactly one of"):
        IdentityResolver(IdentityConfig(jwt=(both,)))


@pytest.mark.usefixtures("keys_published")
async def test_messages_never_contain_the_token(start: Start, rsa: SigningKey) -> None:
    resolver = await start()
    bad_tokens = [
        rsa.sign(claims(jurisdiction=["IE"])),
        rsa.sign(claims(aud="x")),
        rsa.sign(claims(iss="https://nobody.example")),
        rsa.sign(claims(exp=int(NOW) - 100)),
        rsa.sign(claims(sub="")),
        forge({"alg": "none"}, claims(), b"x"),
    ]
    for token in bad_tokens:
        for carrier in (bearer(token), headers(("X-Bailiwick-Token", token))):
            refused = await refusal(resolver, carrier)
            for part in token.split("."):
                assert part not in refused.message


# --- networks and X-Forwarded-For --------------------------------------------------------------


@pytest.mark.usefixtures("keys_published")
@pytest.mark.parametrize(
    ("given", "peer", "subject", "jurisdiction", "source"),
    [
        (headers(), "10.20.0.9", "network:10.20.0.0/16", "IE", "10.20.0.9"),
        (headers(), "10.20.5.9", "network:10.20.5.0/24", "DE", "10.20.5.9"),
        (headers(), "::ffff:10.20.5.9", "network:10.20.5.0/24", "DE", "10.20.5.9"),
        (headers(), "2001:db8::5", "network:2001:db8::/32", "FR", "2001:db8::5"),
        # A storage signature is not a token: network identity, and nothing withheld.
        (headers(("Authorization", SIGV4)), "10.20.0.9", "network:10.20.0.0/16", "IE", "10.20.0.9"),
        # From an untrusted peer, X-Forwarded-For changes nothing.
        (headers(("X-Forwarded-For", "10.20.5.9")), "10.20.0.9", "network:10.20.0.0/16", "IE", "10.20.0.9"),
        # From a trusted proxy, the client it names is the caller.
        (headers(("X-Forwarded-For", "10.20.5.9")), PROXY_PEER, "network:10.20.5.0/24", "DE", "10.20.5.9"),
        (
            headers(("X-Forwarded-For", "10.20.5.9, 10.20.0.3, 10.99.7.7")),
            PROXY_PEER, "network:10.20.0.0/16", "IE", "10.20.0.3",
        ),
    ],
)
async def test_network_identity(
    start: Start,
    given: CIMultiDictProxy[str],
    peer: str,
    subject: str,
    jurisdiction: str,
    source: str,
) -> None:
    resolver = await start()
    assert await resolver.identify(given, peer) == Identified(
        caller=Caller(subject=subject, jurisdiction=jurisdiction, source=source, method="network"),
        token_headers=frozenset(),
    )


@pytest.mark.usefixtures("keys_published")
@pytest.mark.parametrize(
    ("given", "peer"),
    [
        (headers(), "203.0.113.5"),
        (headers(), None),
        (headers(), "not-an-address"),
        # An untrusted peer cannot borrow a network by naming it.
        (headers(("X-Forwarded-For", "10.20.0.9")), "203.0.113.5"),
        # A trusted proxy forwarding an outside client: that client has no network identity.
        (headers(("X-Forwarded-For", "203.0.113.5")), PROXY_PEER),
        (headers(("Authorization", SIGV4)), "203.0.113.5"),
    ],
)
async def test_no_identity(start: Start, given: CIMultiDictProxy[str], peer: str | None) -> None:
    resolver = await start()
    refused = await refusal(resolver, given, peer)
    # "Nothing was presented" is a type the resolver and its callers test, never a message's wording.
    assert (type(refused), refused.code, refused.message) == (NoIdentity, "InvalidToken", NO_IDENTITY)


@pytest.mark.usefixtures("keys_published")
async def test_token_callers_get_the_forwarded_source(start: Start, rsa: SigningKey) -> None:
    resolver = await start()
    token = rsa.sign(claims())
    trusted = headers(("Authorization", f"Bearer {token}"), ("X-Forwarded-For", "203.0.113.5"))
    assert (await resolver.identify(trusted, PROXY_PEER)).caller == jwt_caller(source="203.0.113.5")
    assert (await resolver.identify(trusted, PEER)).caller == jwt_caller(source=PEER)
    malformed = headers(("Authorization", f"Bearer {token}"), ("X-Forwarded-For", "203.0.113.5, junk"))
    refused = await refusal(resolver, malformed, PROXY_PEER)
    assert "X-Forwarded-For from a trusted proxy is malformed" in refused.message


async def test_identify_before_start_is_refused(tmp_path: Path, rsa: SigningKey) -> None:
    resolver = IdentityResolver(config(tmp_path / "none.json", "http://127.0.0.1:9/jwks"))
    refused = await refusal(resolver, bearer(rsa.sign(claims(iss=FILE_ISS))))
    assert "not available" in refused.message
    await resolver.close()


# --- the verified-token cache ----------------------------------------------------------------


@pytest.mark.usefixtures("keys_published")
async def test_a_remembered_token_still_expires(start: Start, clock: FakeClock, rsa: SigningKey) -> None:
    resolver = await start()
    token = rsa.sign(claims(iss=URL_ISS))  # exp = now + 300; leeway 30 s by default
    assert (await resolver.identify(bearer(token), PEER)).caller == jwt_caller()
    clock.advance(329)
    assert (await resolver.identify(bearer(token), PEER)).caller == jwt_caller()
    clock.advance(1)
    assert (await refusal(resolver, bearer(token))).code == "ExpiredToken"


@pytest.mark.usefixtures("keys_published")
async def test_a_remembered_token_stops_working_when_its_key_is_rotated_out(
    start: Start, clock: FakeClock, jwks_server: JwksServer, rsa: SigningKey, ec: SigningKey,
) -> None:
    resolver = await start()
    token = rsa.sign(claims(iss=URL_ISS, exp=int(NOW) + 80_000))
    assert (await resolver.identify(bearer(token), PEER)).caller == jwt_caller()
    jwks_server.document = jwks(ec)  # the RSA key is withdrawn
    hits = jwks_server.hits
    # Past the JWKS max age, a use of the key triggers a refresh in the background.
    clock.advance(400)
    assert (await resolver.identify(bearer(token), PEER)).caller == jwt_caller()
    await jwks_server.wait_for_hits(hits + 1)
    for url_keys in resolver._urls:
        await url_keys.wait_idle()
    assert (await refusal(resolver, bearer(token))).code == "InvalidToken"


@pytest.mark.usefixtures("keys_published")
async def test_the_cache_is_bounded(start: Start, rsa: SigningKey, monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.identity import resolver as module

    monkeypatch.setattr(module, "TOKEN_CACHE_SIZE", 5)
    resolver = await start()
    for n in range(20):
        await resolver.identify(bearer(rsa.sign(claims(iss=URL_ISS, sub=f"user-{n}"))), PEER)
    assert len(resolver._verified) == 5


@pytest.mark.usefixtures("keys_published")
async def test_a_refused_token_is_not_remembered(start: Start) -> None:
    resolver = await start()
    token = jwt.encode(claims(iss=HMAC_ISS), b"another secret that is long enough 0123456789", algorithm="HS256")
    for _ in range(3):
        assert (await refusal(resolver, bearer(token))).code == "InvalidToken"
    assert resolver._verified == {}


@pytest.mark.usefixtures("keys_published")
async def test_a_remembered_token_answers_for_each_source_and_header(start: Start, rsa: SigningKey) -> None:
    # A remembered token's answer is reused only for the same client source and token header.
    resolver = await start()
    token = rsa.sign(claims(iss=URL_ISS))
    first = await resolver.identify(bearer(token), PEER)
    assert first == Identified(jwt_caller(), frozenset({"authorization"}))
    assert await resolver.identify(bearer(token), PEER) is first
    other_peer = await resolver.identify(bearer(token), "192.0.2.9")
    assert other_peer == Identified(jwt_caller(source="192.0.2.9"), frozenset({"authorization"}))
    via_header = await resolver.identify(headers(("Authorization", SIGV4), ("X-Bailiwick-Token", token)), PEER)
    assert via_header == Identified(jwt_caller(), frozenset({"x-bailiwick-token"}))
    forwarded = headers(("Authorization", f"Bearer {token}"), ("X-Forwarded-For", "203.0.113.5"))
    assert (await resolver.identify(forwarded, PROXY_PEER)).caller == jwt_caller(source="203.0.113.5")
    malformed = headers(("Authorization", f"Bearer {token}"), ("X-Forwarded-For", "junk"))
    refused = await refusal(resolver, malformed, PROXY_PEER)
    assert "X-Forwarded-For from a trusted proxy is malformed" in refused.message
    assert await resolver.identify(bearer(token), PEER) == first


@pytest.mark.usefixtures("keys_published")
async def test_a_malformed_token_is_refused_before_the_forwarded_for_is_read(start: Start) -> None:
    resolver = await start()
    given = headers(("Authorization", "Bearer not.a-jwt"), ("X-Forwarded-For", "junk"))
    refused = await refusal(resolver, given, PROXY_PEER)
    assert "is not a JWT" in refused.message


@pytest.mark.usefixtures("keys_published")
async def test_a_remembered_token_of_a_file_issuer_or_secret_is_answered_at_hand(
    start: Start, rsa: SigningKey
) -> None:
    resolver = await start()
    for token in (rsa.sign(claims(iss=FILE_ISS)), jwt.encode(claims(iss=HMAC_ISS), SECRET, algorithm="HS256")):
        first = await resolver.identify(bearer(token), PEER)
        known = next(entry for entry in resolver._verified.values() if entry.last is first)
        assert known.verifier.key_is_current_at_hand(known.claims.kid, known.claims.key) is True
        assert await resolver.identify(bearer(token), PEER) is first
