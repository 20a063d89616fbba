"""`load_config`: the merged settings checked, section by section, into one `Config`.

Either a `Config` the rest of the program can trust comes out, or a
`ConfigError` naming the file and key at fault (as uvicorn's ``Config.load``
does). Checks that span sections (access keys need S3; the inspected-bytes
budget must hold the largest delete body; names AWS S3 would misread; a key
service needs an S3 upstream in re-sign mode) are here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proxy.config.auditship import SHIP_KEYS
from proxy.config.encryption import (
    ENCRYPTION_KEYS,
    KEY_CACHE_KEYS,
    KEY_FILE_KEYS,
    PKCS11_KEYS,
    TRANSIT_KEYS,
    read_encryption,
)
from proxy.config.geoip import GEOIP_KEYS
from proxy.config.identity import ACCESS_KEY_KEYS, IDENTITY_KEYS, ISSUER_KEYS, NETWORK_KEYS, read_identity
from proxy.config.model import Config, EncryptionConfig, S3Settings, Unmatched, UpstreamApi, UpstreamConfig
from proxy.config.operation import (
    AUDIT_KEYS,
    LIMITS_KEYS,
    RELOAD_KEYS,
    TAG_KEYS,
    read_audit,
    read_limits,
    read_reload,
    read_tag,
)
from proxy.config.reader import Reader, defaults
from proxy.config.sources import merged_settings
from proxy.config.storage import (
    AZURE_KEYS,
    S3_KEYS,
    SIGNING_KEYS,
    UPSTREAM_KEYS,
    check_aws_hosts,
    read_azure,
    read_s3,
    read_upstream,
)
from proxy.config.tls import LISTEN_TLS_KEYS, read_listen_tls
from proxy.config.workloads import WORKLOAD_KEYS, XFCC_KEYS
from proxy.errors import ConfigError
from proxy.storage.pagetoken import read_key_file

TOP_KEYS = frozenset({"listen", "admin_listen", "region", "policies", "unmatched", "dry_run", "workers", "upstream",
                      "s3", "azure", "identity", "limits", "tag", "audit", "reload", "access_log",
                      "shutdown_grace_seconds", "encryption", "listen_tls", "listing_token_key_file"})

# Every key the file may hold, by the section it is written in ("[]": each item of a list).
SETTINGS: Mapping[str, frozenset[str]] = {
    "": TOP_KEYS,
    "listen_tls": LISTEN_TLS_KEYS,
    "upstream": UPSTREAM_KEYS,
    "s3": S3_KEYS,
    "s3.sign": SIGNING_KEYS,
    "azure": AZURE_KEYS,
    "identity": IDENTITY_KEYS,
    "identity.jwt[]": ISSUER_KEYS,
    "identity.networks[]": NETWORK_KEYS,
    "identity.access_keys[]": ACCESS_KEY_KEYS,
    "identity.workloads[]": WORKLOAD_KEYS,
    "identity.xfcc": XFCC_KEYS,
    "identity.geoip": GEOIP_KEYS,
    "limits": LIMITS_KEYS,
    "tag": TAG_KEYS,
    "audit": AUDIT_KEYS,
    "audit.ship": SHIP_KEYS,
    "reload": RELOAD_KEYS,
    "encryption": ENCRYPTION_KEYS,
    "encryption.transit": TRANSIT_KEYS,
    "encryption.pkcs11": PKCS11_KEYS,
    "encryption.key_file": KEY_FILE_KEYS,
    "encryption.key_cache": KEY_CACHE_KEYS,
}


def load_config(
    path: Path | None = None,
    *,
    overrides: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, merge and validate the configuration. Raises `ConfigError`."""
    env = os.environ if environ is None else environ
    raw, origins = merged_settings(path, overrides or {}, env)
    return read_config(Reader(origins, env), raw)


def read_config(r: Reader, raw: dict[str, Any]) -> Config:
    """The whole configuration from the merged settings (`proxy.config.sources`)."""
    top = r.section(raw, "", Config, TOP_KEYS)
    unmatched = top.choice("unmatched", Unmatched)
    dry_run = top.get("dry_run")
    if isinstance(dry_run, str) and dry_run.lower() in ("true", "false", "1", "0"):
        dry_run = dry_run.lower() in ("true", "1")  # from BAILIWICK_DRY_RUN
    dry_run = r.boolean(dry_run, "dry_run")
    upstream = read_upstream(r, top.raw.get("upstream"))
    region = top.optional_string("region")
    identity = read_identity(r, top.raw.get("identity"), region)
    if identity.access_keys and upstream.api is not UpstreamApi.S3:
        raise r.fail("identity.access_keys", f"access keys are S3's; upstream.api is {str(upstream.api)!r}")
    s3 = read_s3(r, top.raw.get("s3"))
    limits = read_limits(r, top.raw.get("limits"))
    if limits.max_inspected_bytes < s3.max_delete_body_bytes:
        raise r.fail("limits.max_inspected_bytes",
                     f"must be at least s3.max_delete_body_bytes ({s3.max_delete_body_bytes}), "
                     f"or no multi-object delete of the largest size could ever be read")
    encryption = read_encryption(r, top.raw.get("encryption"))
    _check_encryption(r, encryption, upstream, s3, region)
    default = defaults(Config)
    config = Config(
        listen=r.address(top.raw["listen"], "listen") if "listen" in top.raw else default["listen"],
        listen_tls=read_listen_tls(r, top.raw.get("listen_tls")),
        admin_listen=(
            r.address(top.raw["admin_listen"], "admin_listen") if "admin_listen" in top.raw
            else default["admin_listen"]
        ),
        region=region,
        policies=Path(top.string("policies")),
        unmatched=unmatched,
        dry_run=dry_run,
        workers=top.count("workers", high=64),
        upstream=upstream,
        s3=s3,
        azure=read_azure(r, top.raw.get("azure")),
        identity=identity,
        limits=limits,
        tag=read_tag(r, top.raw.get("tag")),
        audit=read_audit(r, top.raw.get("audit")),
        reload=read_reload(r, top.raw.get("reload")),
        encryption=encryption,
        access_log=top.optional_string("access_log"),
        listing_token_key_file=_listing_token_key_file(r, top.optional_string("listing_token_key_file")),
        shutdown_grace_seconds=top.number("shutdown_grace_seconds", low=0, high=3600),
        origins=r.origins,
    )
    check_aws_hosts(r, config)
    _check_ship(r, config)
    return config



def _listing_token_key_file(r: Reader, text: str | None) -> Path | None:
    """The key file of paged listings' tokens, read once here so that a bad one stops the start."""
    if text is None:
        return None
    try:
        read_key_file(Path(text))
    except ConfigError as exc:
        raise r.fail("listing_token_key_file", exc.args[0]) from exc
    return Path(text)


def _check_encryption(r: Reader, encryption: EncryptionConfig, upstream: UpstreamConfig, s3: S3Settings,
                      region: str | None) -> None:
    """A key service works only where the proxy writes the bodies it forwards (S3, in re-sign mode), and is the
    key service of one region: the proxy's."""
    if not encryption.enabled:
        return
    if region is None:
        raise r.fail("encryption.key_service", "a key service is the key service of one region: set `region` to "
                                               "the region whose key service this is (only that region's encrypted "
                                               "datasets are sealed or opened with it)")
    if upstream.api is UpstreamApi.AZURE:
        raise r.fail("encryption.key_service", "encrypted datasets are not supported on an Azure Blob upstream yet")
    if s3.sign is None:
        raise r.fail("encryption.key_service", "encryption requires re-sign mode (s3.sign): a caller's signature "
                                               "cannot cover a body the proxy encrypts")


def _check_ship(r: Reader, config: Config) -> None:
    """Shipping reads the audit log's files, and keeps the audit trail of a region in that region."""
    ship = config.audit.ship
    if ship is None:
        return
    if config.audit.path in (None, "-"):
        raise r.fail("audit.ship", "shipping uploads the audit log's files: set audit.path to a file (not \"-\" "
                                   "or null)")
    if ship.region is None and config.region is None:
        raise r.fail("audit.ship.region", "the bucket must be in the proxy's region: set `region` (or "
                                          "audit.ship.region)")
    if ship.region is not None and config.region is not None and ship.region != config.region:
        raise r.fail("audit.ship.region", f"is {ship.region}, but the proxy's region is {config.region}: the "
                                          "audit trail of a region stays in that region")
