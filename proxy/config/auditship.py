"""The `audit.ship` section: where the proxy uploads its audit chain (an S3 bucket with Object Lock), read once.

Why a section of its own: shipping is a small service of its own (`proxy.audit.ship`) with
its own store, credentials and deadlines, and none of it changes how lines are written.
The section is read here, each error naming its key; what spans sections (an audit file to
ship from, the proxy's region) is checked in `proxy.config.load`. Credentials are never in
the file: the shipper takes them from the standard AWS chain (environment, web identity,
instance role), as botocore finds them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:   # at run time the reader is passed in: importing it here would be a cycle through the model
    from proxy.config.reader import Reader

SHIP_KEYS = frozenset({"bucket", "prefix", "endpoint_url", "region", "interval_seconds", "retention_days", "mode",
                       "max_lag_seconds", "required", "shutdown_seconds"})
# S3's rules for a bucket's name (3 to 63 lowercase letters, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class RetentionMode(StrEnum):
    """The Object Lock mode of every shipped piece (`audit.ship.mode`)."""

    COMPLIANCE = "COMPLIANCE"   # nobody, not even the account's root, can shorten it or delete the piece
    GOVERNANCE = "GOVERNANCE"   # who holds s3:BypassGovernanceRetention can


@dataclass(frozen=True, slots=True)
class AuditShipConfig:
    """Shipping the audit chain to WORM object storage in the proxy's region (`audit.ship`)."""

    bucket: str
    prefix: str = ""                  # used as written: empty, or ending with "/"
    endpoint_url: str | None = None   # None: AWS's own endpoint for the region
    region: str | None = None         # None: the proxy's `region` (the bucket must be in it)
    interval_seconds: float = 60.0    # the open file's new lines are shipped at least this often
    retention_days: int = 365         # each piece's retain-until date: its upload time plus this
    mode: RetentionMode = RetentionMode.COMPLIANCE
    max_lag_seconds: float = 600.0    # the age of the oldest line not shipped past which shipping is lagging
    required: bool = False            # lagging refuses every request (fail closed) until shipping catches up
    shutdown_seconds: float = 20.0    # on SIGTERM, how long the tail may take to ship before the process exits


def read_ship(r: Reader, value: Any) -> AuditShipConfig | None:
    """`audit.ship` (None when absent or null: no shipping); what is left out takes the field's default."""
    if value is None:
        return None
    section = r.section(value, "audit.ship", AuditShipConfig, SHIP_KEYS)
    if "bucket" not in section.raw:
        raise r.fail("audit.ship.bucket", "is required to ship the audit log (the name of an S3 bucket with "
                                          "Object Lock, in the proxy's region)")
    bucket = r.string(section.raw["bucket"], "audit.ship.bucket")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise r.fail("audit.ship.bucket", f"{bucket!r} is not an S3 bucket name (3 to 63 lowercase letters, digits, "
                                          "dots and hyphens)")
    prefix = section.get("prefix")
    if not isinstance(prefix, str):
        raise r.fail("audit.ship.prefix", f"expected a string, got {prefix!r}")
    if prefix and (not prefix.endswith("/") or prefix.startswith("/")):
        raise r.fail("audit.ship.prefix", f"audit.ship.prefix must end with / (and not start with one), "
                                          f"got {prefix!r}")
    endpoint = section.optional_string("endpoint_url")
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise r.fail("audit.ship.endpoint_url", f"expected scheme://host[:port], got {endpoint!r}")
    interval = section.number("interval_seconds", low=1, high=86400)
    max_lag = section.number("max_lag_seconds", low=1, high=31 * 86400)
    if max_lag <= interval:
        raise r.fail("audit.ship.max_lag_seconds", f"must be more than audit.ship.interval_seconds ({interval:g}), "
                                                   f"or every line would count as lagging; got {max_lag:g}")
    return AuditShipConfig(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint,
        region=section.optional_string("region"),
        interval_seconds=interval,
        retention_days=section.count("retention_days", high=36500),
        mode=section.choice("mode", RetentionMode),
        max_lag_seconds=max_lag,
        required=section.boolean("required"),
        shutdown_seconds=section.number("shutdown_seconds", low=0, high=3600),
    )
