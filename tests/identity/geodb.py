"""A MaxMind-format country database written at test time with mmdb-writer (no downloaded GeoLite2 file)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

IE_NETWORK, IE_ADDRESS = "87.32.0.0/16", "87.32.1.1"
US_NETWORK, US_ADDRESS = "8.8.8.0/24", "8.8.8.8"
# A record without `country` (only the continent), and one with only `registered_country`.
NO_COUNTRY_NETWORK, NO_COUNTRY_ADDRESS = "1.1.1.0/24", "1.1.1.1"
REGISTERED_ONLY_NETWORK, REGISTERED_ONLY_ADDRESS = "9.9.9.0/24", "9.9.9.9"
# A private network the database claims for IE: a private address says nothing of where the caller is.
PRIVATE_NETWORK, PRIVATE_ADDRESS = "10.0.0.0/8", "10.1.2.3"
ABSENT_ADDRESS = "5.5.5.5"

COUNTRIES: Mapping[str, dict[str, Any]] = {
    IE_NETWORK: {"country": {"iso_code": "IE"}, "registered_country": {"iso_code": "IE"}},
    US_NETWORK: {"country": {"iso_code": "US"}},
    NO_COUNTRY_NETWORK: {"continent": {"code": "OC"}},
    REGISTERED_ONLY_NETWORK: {"registered_country": {"iso_code": "CH"}},
    PRIVATE_NETWORK: {"country": {"iso_code": "IE"}},
}


def write_database(path: Path, networks: Mapping[str, dict[str, Any]] = COUNTRIES) -> Path:
    """Write `networks` (CIDR -> record) as a GeoIP2-Country database at `path`, replacing it whole."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    for network, record in networks.items():
        writer.insert_network(IPSet([network]), record)
    staging = path.with_name(path.name + ".new")
    writer.to_db_file(str(staging))
    os.replace(staging, path)   # a new inode, as a rotated Secret or a new download is
    return path
