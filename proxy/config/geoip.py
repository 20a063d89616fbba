"""Reading `identity.geoip`: where a MaxMind-format country database is, and what it is used for.

The database maps the client's address (the peer, or the client address in
``X-Forwarded-For`` from `identity.trusted_proxies` only) to a country. It is
off unless configured, and even then a country is not an identity unless
`use_as_jurisdiction` says so. The reader type is only named here (under
TYPE_CHECKING): the model imports this module, and the reader imports the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.config.reader import Reader

GEOIP_KEYS = frozenset({"database", "use_as_jurisdiction"})


@dataclass(frozen=True, slots=True)
class GeoIpConfig:
    """`database`: a MaxMind-format (``.mmdb``) country or city database, relative to the config file.

    `use_as_jurisdiction`: a caller identified by nothing else (no token, no access
    key, no `identity.networks` rule) takes its address's country as jurisdiction.
    """

    database: Path
    use_as_jurisdiction: bool = False


def read_geoip(r: Reader, value: Any) -> GeoIpConfig | None:
    """The `identity.geoip` section, or None when it is absent."""
    if value is None:
        return None
    raw = r.mapping(value, "identity.geoip", GEOIP_KEYS)
    if "database" not in raw:
        raise r.fail("identity.geoip.database", "is required (the path of a MaxMind-format .mmdb file)")
    database = Path(r.string(raw["database"], "identity.geoip.database"))
    if not database.is_file():
        raise r.fail("identity.geoip.database", f"{database} is not a readable file")
    use = r.boolean(raw.get("use_as_jurisdiction", False), "identity.geoip.use_as_jurisdiction")
    return GeoIpConfig(database=database, use_as_jurisdiction=use)
