"""GeoIP lookups: an ISO code, or "unknown" and never a guess; the database reloaded when its file changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.identity.geoip import UNKNOWN, GeoIp, Lookup
from proxy.identity.networks import parse_address

from .geodb import (
    ABSENT_ADDRESS,
    IE_ADDRESS,
    IE_NETWORK,
    NO_COUNTRY_ADDRESS,
    PRIVATE_ADDRESS,
    REGISTERED_ONLY_ADDRESS,
    US_ADDRESS,
    write_database,
)


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def geoip(path: Path, results: list[str], clock: Ticks | None = None) -> GeoIp:
    return GeoIp(path, on_lookup=results.append, clock=clock or Ticks(), interval=1.0)


@pytest.mark.parametrize(
    ("address", "country", "result"),
    [
        (IE_ADDRESS, "IE", Lookup.FOUND),
        (US_ADDRESS, "US", Lookup.FOUND),
        (f"::ffff:{IE_ADDRESS}", "IE", Lookup.FOUND),
        (ABSENT_ADDRESS, UNKNOWN, Lookup.NOT_FOUND),
        ("2a00:1450::1", UNKNOWN, Lookup.NOT_FOUND),
        (NO_COUNTRY_ADDRESS, UNKNOWN, Lookup.NO_COUNTRY),
        (REGISTERED_ONLY_ADDRESS, UNKNOWN, Lookup.NO_COUNTRY),   # registered_country is not a location
        (PRIVATE_ADDRESS, UNKNOWN, Lookup.NOT_PUBLIC),           # even though the database lists it
        ("127.0.0.1", UNKNOWN, Lookup.NOT_PUBLIC),
        ("::1", UNKNOWN, Lookup.NOT_PUBLIC),
        ("192.168.1.1", UNKNOWN, Lookup.NOT_PUBLIC),
        ("100.64.0.1", UNKNOWN, Lookup.NOT_PUBLIC),
    ],
)
def test_lookups_answer_a_country_or_unknown(tmp_path: Path, address: str, country: str, result: Lookup) -> None:
    results: list[str] = []
    located = geoip(write_database(tmp_path / "c.mmdb"), results)
    assert located.country(parse_address(address)) == country
    assert results == [result]


def test_no_address_is_unknown(tmp_path: Path) -> None:
    results: list[str] = []
    assert geoip(write_database(tmp_path / "c.mmdb"), results).country(None) == UNKNOWN
    assert results == [Lookup.NO_ADDRESS]


@pytest.mark.parametrize("code", ["XX", "ie", "IRL", ""])
def test_a_code_that_is_no_assigned_country_is_unknown(tmp_path: Path, code: str) -> None:
    results: list[str] = []
    path = write_database(tmp_path / "c.mmdb", {IE_NETWORK: {"country": {"iso_code": code}}})
    assert geoip(path, results).country(parse_address(IE_ADDRESS)) == UNKNOWN
    assert results == [Lookup.NO_COUNTRY]


def test_a_replaced_database_gives_new_answers(tmp_path: Path) -> None:
    clock, results = Ticks(), list[str]()
    path = write_database(tmp_path / "c.mmdb")
    located = geoip(path, results, clock)
    address = parse_address(IE_ADDRESS)
    assert located.country(address) == "IE"
    write_database(path, {IE_NETWORK: {"country": {"iso_code": "GB"}}})
    assert located.country(address) == "IE"   # looked at once a second at most
    clock.now += 1.5
    assert located.country(address) == "GB"


def test_a_broken_replacement_keeps_the_last_good_database(tmp_path: Path) -> None:
    clock, results = Ticks(), list[str]()
    path = write_database(tmp_path / "c.mmdb")
    located = geoip(path, results, clock)
    path.write_bytes(b"not a database")
    clock.now += 1.5
    assert located.country(parse_address(IE_ADDRESS)) == "IE"


@pytest.mark.parametrize(("content", "problem"), [(None, "cannot read"), (b"garbage", "is not a MaxMind database")])
def test_an_unusable_database_at_start_is_a_config_error(tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "c.mmdb"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"identity.geoip.database: .*{problem}"):
        GeoIp(path)
