"""GeoIP in the resolver: the last resort for who, and where every caller is seen from."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from proxy.config import IdentityConfig, JwtIssuer, NetworkRule
from proxy.config.geoip import GeoIpConfig
from proxy.config.workloads import MatchKind, WorkloadRule, XfccConfig
from proxy.errors import NoIdentity, Unauthenticated
from proxy.identity import IdentityResolver

from .geodb import ABSENT_ADDRESS, IE_ADDRESS, IE_NETWORK, US_ADDRESS, US_NETWORK, write_database
from .support import AUDIENCE, ISSUER, NOW, SECRET, FakeClock, claims, headers

IE_ID = "spiffe://cluster.local/ns/mail/sa/reader"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
RELOAD_WAIT_SECONDS = 10.0


def resolver(database: Path, *, identifies: bool = True, networks: tuple[NetworkRule, ...] = (),
             xfcc: bool = False) -> IdentityResolver:
    config = IdentityConfig(
        jwt=(JwtIssuer(issuer=ISSUER, audience=AUDIENCE, algorithms=("HS256",), hs256_secret=SECRET),),
        networks=networks,
        trusted_proxies=(LOOPBACK,),
        workloads=(WorkloadRule(MatchKind.SPIFFE_PREFIX, "spiffe://cluster.local/ns/mail/", "IE"),),
        xfcc=XfccConfig(enabled=xfcc),
        geoip=GeoIpConfig(database=database, use_as_jurisdiction=identifies),
    )
    return IdentityResolver(config, clock=FakeClock())


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return write_database(tmp_path / "countries.mmdb")


def token(jurisdiction: str) -> str:
    return jwt.encode(claims(NOW, jurisdiction=jurisdiction), SECRET, algorithm="HS256")


async def test_a_token_names_the_caller_and_geoip_only_where_it_is_seen_from(database: Path) -> None:
    found = await resolver(database).identify(headers(("X-Bailiwick-Token", token("IE"))), US_ADDRESS)
    assert (found.caller.method, found.caller.jurisdiction, found.caller.location) == ("jwt", "IE", "US")


async def test_a_network_rule_comes_before_geoip(database: Path) -> None:
    networks = (NetworkRule(ipaddress.ip_network(US_NETWORK), "DE"),)
    found = await resolver(database, networks=networks).identify(headers(), US_ADDRESS)
    assert (found.caller.method, found.caller.jurisdiction, found.caller.location) == ("network", "DE", "US")


async def test_geoip_names_a_caller_nothing_else_names(database: Path) -> None:
    found = await resolver(database).identify(headers(), IE_ADDRESS)
    assert (found.caller.method, found.caller.subject, found.caller.jurisdiction) == ("geoip", "geoip:IE", "IE")


async def test_an_unknown_country_names_nobody(database: Path) -> None:
    with pytest.raises(Unauthenticated, match="country is unknown"):
        await resolver(database).identify(headers(), ABSENT_ADDRESS)


@pytest.mark.parametrize(
    ("identifies", "given", "refused_as"),
    [
        (True, headers(), NoIdentity),                                    # the country is unknown
        (False, headers(), NoIdentity),                                   # GeoIP only locates
        (True, headers(("X-Bailiwick-Token", "not.a.token")), Unauthenticated),   # a credential refused
    ],
)
async def test_nothing_presented_is_no_identity_and_a_refused_credential_is_not(
    database: Path, identifies: bool, given: Any, refused_as: type[Unauthenticated],
) -> None:
    with pytest.raises(Unauthenticated) as refused:
        await resolver(database, identifies=identifies).identify(given, ABSENT_ADDRESS)
    assert type(refused.value) is refused_as
    assert refused.value.code == "InvalidToken"


async def test_without_use_as_jurisdiction_geoip_only_locates(database: Path) -> None:
    with pytest.raises(Unauthenticated):
        await resolver(database, identifies=False).identify(headers(), IE_ADDRESS)
    found = await resolver(database, identifies=False).identify(headers(("X-Bailiwick-Token", token("IE"))),
                                                               IE_ADDRESS)
    assert found.caller.location == "IE"


@pytest.mark.parametrize(("forwarded", "location"), [(US_ADDRESS, "US"), (ABSENT_ADDRESS, "unknown")])
async def test_a_workload_wins_over_geoip_and_is_located(database: Path, forwarded: str, location: str) -> None:
    given = headers(("X-Forwarded-Client-Cert", f"URI={IE_ID}"), ("X-Forwarded-For", forwarded))
    found = await resolver(database, xfcc=True).identify(given, "127.0.0.1")
    assert (found.caller.method, found.caller.jurisdiction, found.caller.location) == ("xfcc", "IE", location)


async def test_a_remembered_token_is_located_again_when_the_database_changes(database: Path) -> None:
    resolving = resolver(database)
    given = headers(("X-Bailiwick-Token", token("IE")))
    assert (await resolving.identify(given, IE_ADDRESS)).caller.location == "IE"
    write_database(database, {IE_NETWORK: {"country": {"iso_code": "GB"}}, US_NETWORK: {"country": {"iso_code": "US"}}})
    deadline = time.monotonic() + RELOAD_WAIT_SECONDS
    while (await resolving.identify(given, IE_ADDRESS)).caller.location == "IE":   # looked at once a second
        assert time.monotonic() < deadline, "the replaced database was never read"
        await asyncio.sleep(0.1)
    assert (await resolving.identify(given, IE_ADDRESS)).caller.location == "GB"
