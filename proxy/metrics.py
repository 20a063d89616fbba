"""Prometheus metrics: the figures docs/operations.md lists, plus what operators of a proxy expect.

Why a module of its own: the request path records one call per request
(`Metrics.request`) and never touches prometheus-client's API directly, so the
cost stays small and the label rules live in one place:

* label values are bounded: jurisdictions and regions must be named by the
  loaded policy, actions and decisions come from fixed sets; anything else is
  ``other``, so a caller cannot grow the series by sending odd tokens;
* children (one per label combination) are looked up in a plain dict after the
  first time, instead of through ``labels()`` on every request.

With ``--workers N`` every process writes its figures to memory-mapped files
in one directory (prometheus-client's multiprocess mode, chosen by
`use_multiprocess_dir` before any metric exists), and ``/metrics`` on any
worker reports the sum over all of them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from proxy.audit.record import AuditOutcome
from proxy.domain import Action
from proxy.handshake import HandshakeFailure
from proxy.identity.geoip import Lookup
from proxy.policy.model import Policy

OTHER = "other"
DECISIONS = frozenset(o.value for o in AuditOutcome)   # the audit line's decision values
ACTIONS = frozenset(a.value for a in Action)
# Latency buckets for a sidecar: most answers take well under a millisecond of proxy time.
_FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0, 30.0, 60.0)
_DECISION_BUCKETS = (0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_dir(path: str) -> None:
    """Switch prometheus-client to multiprocess mode: to be called before any metric is made."""
    os.environ[MULTIPROC_ENV] = path
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def multiprocess() -> bool:
    return MULTIPROC_ENV in os.environ


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


class Metrics:
    """The proxy's metrics, in a registry of its own (several proxies may share a process in tests)."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            "bailiwick_requests_total",
            "Requests decided, by action, decision, caller's jurisdiction and data's region.",
            ["api", "action", "decision", "caller_jurisdiction", "data_region"], registry=reg,
        )
        self.request_duration = Histogram(
            "bailiwick_request_duration_seconds", "Time from a request's head to the end of its answer.",
            ["api", "decision"], buckets=_FAST_BUCKETS, registry=reg,
        )
        self.upstream_duration = Histogram(
            "bailiwick_upstream_duration_seconds", "Time from sending a request upstream to the answer's head.",
            ["api", "status_class"], buckets=_FAST_BUCKETS, registry=reg,
        )
        self.decision_duration = Histogram(
            "bailiwick_decision_duration_seconds", "Time the policy engine took per decision.",
            buckets=_DECISION_BUCKETS, registry=reg,
        )
        self.policy_reloads = Counter(
            "bailiwick_policy_reloads_total", "Policy loads, at start and on reload, by result.", ["result"],
            registry=reg,
        )
        self.policy_last_success = Gauge(
            "bailiwick_policy_last_reload_success_timestamp_seconds",
            "When a policy last loaded successfully (Unix time).", registry=reg, multiprocess_mode="max",
        )
        self.policy_info = Gauge(
            "bailiwick_policy_info", "The policy in force: its version and number of datasets (value 1).",
            ["version", "datasets"], registry=reg, multiprocess_mode="max",
        )
        self.bytes = Counter(
            "bailiwick_bytes_total", "Body bytes forwarded: to the storage server (upstream) and to callers "
            "(downstream).", ["direction"], registry=reg,
        )
        self.in_flight = Gauge(
            "bailiwick_requests_in_flight", "Requests being handled now.", registry=reg, multiprocess_mode="livesum",
        )
        self.refusals = Counter(
            "bailiwick_refusals_total", "Requests refused or failed, by error code (a fixed set).",
            ["api", "code"], registry=reg,
        )
        self.upstream_errors = Counter(
            "bailiwick_upstream_errors_total", "Exchanges with the storage server that failed, by kind.",
            ["api", "kind"], registry=reg,
        )
        self.jwks_fetches = Counter(
            "bailiwick_jwks_fetches_total", "JWKS URL fetches (at start, on refresh and on unknown kids), by result.",
            ["issuer", "result"], registry=reg,
        )
        self.audit_failed = Gauge(
            "bailiwick_audit_failed", "1 once the audit log could not be written (or its disk stopped keeping "
            "up): from then on every request is refused.", registry=reg, multiprocess_mode="max",
        )
        self.audit_failed.set(0)
        self.audit_reserve = Gauge(
            "bailiwick_audit_reserve_bytes", "Disk space reserved ahead of the audit log file and not yet written "
            "into (audit.reserve_bytes; 0 without a reserve).", registry=reg, multiprocess_mode="livesum",
        )
        self.audit_reserve_exhausted = Gauge(
            "bailiwick_audit_reserve_exhausted", "1 while no space can be reserved for the audit log (its disk is "
            "full): new requests are refused with AuditLogFull until there is.", registry=reg,
            multiprocess_mode="max",
        )
        self.audit_reserve_exhausted.set(0)
        self.audit_lines_dropped = Counter(
            "bailiwick_audit_lines_dropped_total", "Audit lines not written for want of space: those of requests "
            "refused with AuditLogFull once no unclaimed reserve was left (no such request was forwarded).",
            registry=reg,
        )
        # Shipping the audit chain to object storage (`audit.ship`): set by the shipper's thread.
        self.audit_ship_lag = Gauge(
            "bailiwick_audit_ship_lag_seconds", "Age of the oldest audit line not yet shipped to the audit bucket "
            "(0 when everything is shipped, and without audit.ship).", registry=reg, multiprocess_mode="max",
        )
        self.audit_ship_lag.set(0)
        self.audit_ship_failures = Counter(
            "bailiwick_audit_ship_failures_total", "Attempts to ship the audit chain that failed (each is retried "
            "with backoff; nothing is lost while the local files are kept).", registry=reg,
        )
        self.audit_shipped_bytes = Counter(
            "bailiwick_audit_shipped_bytes_total", "Bytes of the audit chain shipped to the audit bucket.",
            registry=reg,
        )
        self.connections_closed = Counter(
            "bailiwick_connections_closed_total", "Connections the proxy closed to protect the others, by reason: "
            "over max_connections or max_connections_per_peer (refused when accepted), or send_timeout (the caller "
            "stopped reading its answer).", ["reason"], registry=reg,
        )
        self.key_releases = Counter(
            "bailiwick_key_releases_total", "Data keys made (generate) or released (unwrap) by the region's key "
            "service for encrypted objects, by result: released, cached (from the proxy's bounded cache), refused, "
            "unavailable.", ["operation", "result"], registry=reg,
        )
        self.key_release_failures = Counter(
            "bailiwick_key_release_failures_total", "Key-service calls that released no key, by reason: refused "
            "(the key is disabled, deleted or not the proxy's: the kill switch) or unavailable.", ["reason"],
            registry=reg,
        )
        self.key_release_duration = Histogram(
            "bailiwick_key_release_duration_seconds", "Time a call to the region's key service took.",
            ["operation"], buckets=_FAST_BUCKETS, registry=reg,
        )
        self.encryption_failures = Counter(
            "bailiwick_encrypted_object_failures_total", "Reads of encrypted objects refused for what was stored: "
            "invalid (did not authenticate: tampered, truncated, swapped), plaintext (in a dataset that requires "
            "encryption), foreign_key (wrapped under another key-encryption key: another region's) or changed (a "
            "multipart upload's object written again while it was read in several requests).", ["reason"],
            registry=reg,
        )
        self.geoip_lookups = Counter(
            "bailiwick_geoip_lookups_total", "Lookups of a client's address in the GeoIP database (identity.geoip), "
            "by result: found (a country), not_found (not in the database), not_public (a private, loopback or "
            "reserved address), no_country (a record without a country), no_address (the peer is no IP address).",
            ["result"], registry=reg,
        )
        self.key_cache = Counter(
            "bailiwick_key_cache_lookups_total", "Lookups in the proxy's cache of released data keys (off unless "
            "encryption.key_cache.max_keys is set), by result: hit or miss.", ["result"], registry=reg,
        )
        # TLS on the data listener (`listen_tls`): set by `proxy.tlsserver.ListenerTls`.
        self.tls_expiry = Gauge(
            "bailiwick_tls_certificate_expiry_timestamp_seconds", "When the data listener's certificate in "
            "service expires (its notAfter, Unix time; absent without listen_tls).", registry=reg,
            multiprocess_mode="min",
        )
        self.tls_reloads = Counter(
            "bailiwick_tls_reloads_total", "Changed certificate pairs and CRLs of the data listener loaded "
            "(success) or kept out of service, the last good one serving (failure).", ["result"], registry=reg,
        )
        for result in ("success", "failure"):
            self.tls_reloads.labels(result)
        self.cors_preflights = Counter(
            "bailiwick_cors_preflights_total", "CORS preflights the proxy answered from a dataset's cors rules "
            "(nothing forwarded; a preflight no rule allows is a refusal, AccessForbidden).", registry=reg,
        )
        self.tls_handshake_failures = Counter(
            "bailiwick_tls_handshake_failures_total", "TLS handshakes on the data listener that failed, by reason "
            "(a fixed set; a refused client certificate, certificate_* or no_certificate, is also audited).",
            ["reason"], registry=reg,
        )
        for failure in HandshakeFailure:
            self.tls_handshake_failures.labels(failure.value)
        # Every series of encryption is there from the start, at 0: a rate or an alert on a failure
        # that happens for the first time has a baseline (and a proxy without a key service shows 0s).
        for operation in ("generate", "unwrap"):
            self.key_release_duration.labels(operation)
            for result in ("released", "refused", "unavailable"):
                self.key_releases.labels(operation, result)
        self.key_releases.labels("unwrap", "cached")
        for reason in ("refused", "unavailable"):
            self.key_release_failures.labels(reason)
        for result in ("hit", "miss"):
            self.key_cache.labels(result)
        for lookup in Lookup:
            self.geoip_lookups.labels(lookup)
        for reason in ("invalid", "plaintext", "foreign_key", "changed"):
            self.encryption_failures.labels(reason)
        self.upstream_bytes = self.bytes.labels("upstream")
        self.downstream_bytes = self.bytes.labels("downstream")
        self._jurisdictions: frozenset[str] = frozenset()
        self._regions: frozenset[str] = frozenset()
        self._children: dict[tuple[object, ...], Any] = {}
        self._info: Any = None

    def policy_loaded(self, policy: Policy) -> None:
        """Record a successful load, and take the label values the policy names."""
        self.policy_reloads.labels("success").inc()
        self.policy_last_success.set(time.time())
        if self._info is not None:
            # In multiprocess mode a series cannot be removed from the other workers' files:
            # the old version is set to 0 instead.
            self._info.set(0)
            if not multiprocess():
                self.policy_info.clear()
        self._info = self.policy_info.labels(policy.version, str(len(policy.datasets)))
        self._info.set(1)
        self._jurisdictions = frozenset(_policy_jurisdictions(policy))
        self._regions = frozenset(policy.regions)
        self._children.clear()

    def audit_space(self, left: int, exhausted: bool) -> None:
        """How the audit log's reserve stands (called from its writer thread)."""
        self.audit_reserve.set(left)
        self.audit_reserve_exhausted.set(1 if exhausted else 0)

    def audit_line_dropped(self) -> None:
        self.audit_lines_dropped.inc()

    def key_cache_lookup(self, hit: bool) -> None:
        self.key_cache.labels("hit" if hit else "miss").inc()

    def policy_failed(self) -> None:
        self.policy_reloads.labels("failure").inc()

    def request(
        self, *, action: str | None, decision: str, caller_jurisdiction: str | None, data_region: str | None,
        duration: float, code: str | None,
    ) -> None:
        """One request, at its end: counted and timed, with bounded labels."""
        key = (action or OTHER, decision, caller_jurisdiction or OTHER, data_region or OTHER)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = self._make_children(*key)
        counter, histogram = children
        counter.inc()
        histogram.observe(duration)
        if code is not None:
            refused = self._children.get(("code", code))
            if refused is None:
                refused = self._children[("code", code)] = self.refusals.labels(self.api, code)
            refused.inc()

    def _make_children(self, action: str, decision: str, jurisdiction: str, region: str) -> tuple[Any, Any]:
        action = action if action in ACTIONS else OTHER
        decision = decision if decision in DECISIONS else AuditOutcome.ERROR
        jurisdiction = jurisdiction if jurisdiction in self._jurisdictions else OTHER
        region = region if region in self._regions else OTHER
        return (
            self.requests.labels(self.api, action, decision, jurisdiction, region),
            self.request_duration.labels(self.api, decision),
        )

    def upstream(self, status: int, duration: float) -> None:
        key = ("upstream", status // 100)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.upstream_duration.labels(self.api, status_class(status))
        child.observe(duration)

    def tls_reloaded(self, succeeded: bool, not_after: float) -> None:
        """A TLS reload's result, and the expiry (Unix time) of the certificate now in service."""
        self.tls_reloads.labels("success" if succeeded else "failure").inc()
        self.tls_expiry.set(not_after)

    def tls_handshake_failed(self, failure: HandshakeFailure) -> None:
        self.tls_handshake_failures.labels(failure.value).inc()

    def geoip_lookup(self, result: str) -> None:
        # `result` is one of `proxy.identity.geoip.Lookup`: a fixed set.
        self.geoip_lookups.labels(result).inc()

    def jwks_fetch(self, issuer: str, succeeded: bool) -> None:
        # Issuers come from the configuration, so the label is bounded.
        self.jwks_fetches.labels(issuer, "success" if succeeded else "failure").inc()

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors.labels(self.api, kind).inc()

    def exposition(self) -> bytes:
        """The text format for ``/metrics``: this process's figures, or all workers' summed."""
        if multiprocess():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def process_exited(pid: int) -> None:
    """Drop a stopped worker's live gauges (multiprocess mode)."""
    if multiprocess():
        mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _policy_jurisdictions(policy: Policy) -> Iterable[str]:
    yield from policy.regions.values()
    for members in policy.groups.values():
        yield from members
    for dataset in policy.datasets:
        for rule in dataset.rules:
            yield from rule.jurisdictions
