"""Where a client's address is, by a MaxMind-format country database: an ISO code, or "unknown".

The answer is the record's ``country.iso_code`` (the country where the network
is used, in GeoLite2/GeoIP2 Country and City databases alike). It is never a
guess: an address the database does not hold, an address that is not public
(private, loopback, link-local, shared or reserved ranges: a database entry for
one says nothing about where the caller is), a record without a country, and a
code that is not an assigned ISO 3166-1 code are all "unknown". In particular
``registered_country`` (where the block's holder registered it) is not read: a
multinational's addresses are registered in one country and used in many.

The database is read whole into memory (a file replaced under an open memory
map would be read half old, half new) and read again when the file changes
(`proxy.watchedfile`); a file that cannot be read keeps the last good one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from proxy.errors import ConfigError
from proxy.identity.networks import IPAddress
from proxy.jurisdictions import is_country_code
from proxy.watchedfile import WatchedFile

UNKNOWN = "unknown"


class Lookup(StrEnum):
    """How one lookup ended: the label of ``bailiwick_geoip_lookups_total``."""

    FOUND = "found"
    NOT_FOUND = "not_found"        # the database holds no network with this address
    NOT_PUBLIC = "not_public"      # private, loopback, link-local, reserved...
    NO_COUNTRY = "no_country"      # a record without a (valid) country code
    NO_ADDRESS = "no_address"      # the peer is not an IP address (a Unix socket)


def open_database(path: Path) -> Any:
    """The database at `path`, read into memory. Raises `ConfigError` naming the file."""
    import maxminddb  # only with identity.geoip configured

    try:
        return maxminddb.open_database(str(path), maxminddb.MODE_MEMORY)
    except OSError as exc:
        raise ConfigError(f"identity.geoip.database: cannot read {path}: {exc.strerror or exc}") from exc
    except (maxminddb.InvalidDatabaseError, ValueError) as exc:
        raise ConfigError(f"identity.geoip.database: {path} is not a MaxMind database: {exc}") from exc


def country_of(record: Any) -> str | None:
    """The record's ``country.iso_code`` if it is an assigned ISO 3166-1 code, else None."""
    if not isinstance(record, dict):
        return None
    country = record.get("country")
    code = country.get("iso_code") if isinstance(country, dict) else None
    return code if isinstance(code, str) and is_country_code(code) else None


class GeoIp:
    """Country lookups against a database that is reloaded when its file changes."""

    def __init__(self, path: Path, *, on_lookup: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, interval: float = 1.0) -> None:
        """Open `path` now (raises `ConfigError`); `on_lookup` is told each lookup's `Lookup` value."""
        self._database: WatchedFile[Any] = WatchedFile(path, open_database, clock=clock, interval=interval)
        self._on_lookup = on_lookup

    def country(self, address: IPAddress | None) -> str:
        """The ISO 3166-1 code of the country `address` is in, or ``UNKNOWN``."""
        code, result = self._look_up(address)
        if self._on_lookup is not None:
            self._on_lookup(result)
        return code

    def _look_up(self, address: IPAddress | None) -> tuple[str, Lookup]:
        if address is None:
            return UNKNOWN, Lookup.NO_ADDRESS
        if not address.is_global:
            return UNKNOWN, Lookup.NOT_PUBLIC
        try:
            record = self._database.current().get(address)
        except ValueError:   # an IPv6 address in an IPv4-only database
            return UNKNOWN, Lookup.NOT_FOUND
        if record is None:
            return UNKNOWN, Lookup.NOT_FOUND
        code = country_of(record)
        if code is None:
            return UNKNOWN, Lookup.NO_COUNTRY
        return code, Lookup.FOUND
