"""Reading the sections about running the proxy: `limits`, `tag`, `audit` and `reload`.

Every bound here is checked against a range wide enough for any deployment
and narrow enough that a typo (a timeout in milliseconds, a size in
kilobytes) is refused at start rather than found in production.
"""

from __future__ import annotations

from typing import Any

from proxy.config.auditship import read_ship
from proxy.config.model import AuditConfig, Limits, ReloadConfig, TagConfig
from proxy.config.reader import Reader

LIMITS_KEYS = frozenset({"header_timeout_seconds", "body_idle_timeout_seconds", "max_connections", "max_header_bytes",
                         "max_headers", "max_connections_per_peer", "send_idle_timeout_seconds",
                         "body_read_timeout_seconds", "max_inspected_bytes", "min_send_rate_bytes_per_second",
                         "min_receive_rate_bytes_per_second", "min_rate_window_seconds"})
TAG_KEYS = frozenset({"signing_key_env", "ttl_seconds"})
AUDIT_KEYS = frozenset({"path", "max_bytes", "checkpoint_every", "checkpoint_key_env", "reserve_bytes",
                        "ship"})
RELOAD_KEYS = frozenset({"interval_seconds", "run_tests"})


def read_limits(r: Reader, value: Any) -> Limits:
    section = r.section(value, "limits", Limits, LIMITS_KEYS)
    return Limits(
        header_timeout_seconds=section.number("header_timeout_seconds", low=0.1, high=3600),
        body_idle_timeout_seconds=section.number("body_idle_timeout_seconds", low=0.1, high=3600),
        max_connections=section.whole("max_connections", low=1, high=1_000_000),
        max_header_bytes=section.whole("max_header_bytes", low=1024, high=65536),
        max_headers=section.whole("max_headers", low=16, high=1024),
        max_connections_per_peer=section.whole("max_connections_per_peer", low=1, high=1_000_000),
        send_idle_timeout_seconds=section.number("send_idle_timeout_seconds", low=0.1, high=3600),
        body_read_timeout_seconds=section.number("body_read_timeout_seconds", low=0.1, high=3600),
        max_inspected_bytes=section.whole("max_inspected_bytes", low=1024 * 1024, high=1 << 40),
        min_send_rate_bytes_per_second=section.whole("min_send_rate_bytes_per_second", low=0, high=1 << 30),
        min_receive_rate_bytes_per_second=section.whole("min_receive_rate_bytes_per_second", low=0, high=1 << 30),
        min_rate_window_seconds=section.number("min_rate_window_seconds", low=0.1, high=3600),
    )


def read_tag(r: Reader, value: Any) -> TagConfig:
    section = r.section(value, "tag", TagConfig, TAG_KEYS)
    key = None
    if "signing_key_env" in section.raw:
        key = r.secret_from_env(section.raw["signing_key_env"], "tag.signing_key_env")
    return TagConfig(signing_key=key, ttl_seconds=section.whole("ttl_seconds", low=1, high=3600))


def read_audit(r: Reader, value: Any) -> AuditConfig:
    section = r.section(value, "audit", AuditConfig, AUDIT_KEYS)
    key = None
    if "checkpoint_key_env" in section.raw:
        key = r.secret_from_env(section.raw["checkpoint_key_env"], "audit.checkpoint_key_env")
    max_bytes = section.whole("max_bytes", low=0, high=2**50)
    if 0 < max_bytes < 4096:
        raise r.fail("audit.max_bytes", f"must be 0 (no rotation) or at least 4096, got {max_bytes}")
    reserve_bytes = section.whole("reserve_bytes", low=0, high=2**40)
    if 0 < reserve_bytes < 16384:
        raise r.fail("audit.reserve_bytes", f"must be 0 (no reserve) or at least 16384, got {reserve_bytes}")
    return AuditConfig(
        path=section.optional_string("path"),
        max_bytes=max_bytes,
        checkpoint_every=section.count("checkpoint_every", high=10_000_000),
        checkpoint_key=key,
        reserve_bytes=reserve_bytes,
        ship=read_ship(r, section.raw.get("ship")),
    )


def read_reload(r: Reader, value: Any) -> ReloadConfig:
    section = r.section(value, "reload", ReloadConfig, RELOAD_KEYS)
    run_tests = section.boolean("run_tests")
    interval = section.number("interval_seconds", low=0, high=3600)
    if 0 < interval < 0.1:
        raise r.fail("reload.interval_seconds", f"must be 0 (no polling) or at least 0.1, got {interval:g}")
    return ReloadConfig(interval_seconds=interval, run_tests=run_tests)
