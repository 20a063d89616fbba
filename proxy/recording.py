"""The end of every request, whatever happened: its audit line, its metrics and its access-log line.

`Recorder.record` is called exactly once per request by the gateway
(`proxy.gateway`), from one place, once the answer is known (or the
exchange was cut). The audit line is queued: its writer thread does the
I/O, so recording costs the event loop no write.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.accesslog import AccessEntry, AccessLog
from proxy.api import ParsedRequest, StorageApi
from proxy.audit import (
    AuditLog,
    AuditOutcome,
    AuditRecord,
    RecordedCaller,
    RecordedKeyRelease,
    RecordedRequest,
    UtcClock,
    deciding_access,
    outcome_of,
)
from proxy.cors import AnsweredPreflight
from proxy.domain import Action, Caller
from proxy.errors import RequestRefused
from proxy.evaluate import RequestHead
from proxy.handshake import HandshakeFailure, RefusedHandshake
from proxy.metrics import Metrics
from proxy.policy.decision import Decision
from proxy.policy.model import Policy
from proxy.upstream import Transfer

# The operation an answered CORS preflight's audit line names.
PREFLIGHT_OPERATION = "CorsPreflight"

# The audit line of a refused client certificate: its error code, its operation, and its status, nginx's
# log codes for the case (495 a certificate that does not verify, 496 none presented; the client got a
# TLS alert, not an HTTP answer).
HANDSHAKE_CODE = "ClientCertificateRefused"
HANDSHAKE_OPERATION = "TlsHandshake"
HANDSHAKE_STATUS = {True: 496, False: 495}   # by whether no certificate was presented


# A decision id is 16 random bytes in hex; they are drawn from the system's generator this many at a time.
_ID_BYTES = 16
_IDS_PER_DRAW = 256


class DecisionIds:
    """Random decision ids, 16 bytes from ``os.urandom`` each, drawn 256 at a time: one system call for
    256 requests instead of one each. A forked process starts a draw of its own (`os.register_at_fork`),
    so no two processes ever hand out the same bytes."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._at = b"", 0

    def next(self) -> str:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(_ID_BYTES * _IDS_PER_DRAW), 0
        self._at = at + _ID_BYTES
        return self._pool[at:at + _ID_BYTES].hex()


new_decision_id = DecisionIds().next


@dataclass(slots=True)
class Exchange:
    """What the audit line needs to know about one request, filled in as it goes."""

    decision_id: str
    head: RequestHead
    started: float
    transfer: Transfer
    caller: Caller | None = None
    parsed: ParsedRequest | None = None
    decision: Decision | None = None
    key_release: RecordedKeyRelease | None = None   # the key-service call of an encrypted object's request
    preflight: AnsweredPreflight | None = None   # a CORS preflight the proxy answered from the policy


class Recorder:
    """Feeds the audit log, the metrics and the access log, one request at a time."""

    def __init__(
        self, audit: AuditLog, access_log: AccessLog, metrics: Metrics, api: StorageApi,
        policy: Callable[[], Policy | None],
    ) -> None:
        """`policy`: the policy in force now (the audit line of a request refused before its decision names it)."""
        self.audit = audit
        self.access_log = access_log
        self.metrics = metrics
        self.api = api
        self._policy = policy
        self._clock = UtcClock()

    def record(self, ex: Exchange, status: int, refusal: RequestRefused | None = None) -> None:
        """The end of a request: its audit line, its metrics and, if one is kept, its access-log line."""
        if ex.preflight is not None and refusal is None:
            self._answered_preflight(ex, ex.preflight, status)
            return
        outcome, action = self._write_audit(ex, status, refusal)   # queued: the writer thread does the I/O
        decision = ex.decision
        duration = time.perf_counter() - ex.started
        self.metrics.request(
            action=action.value if action else None,
            decision=outcome,
            caller_jurisdiction=ex.caller.jurisdiction if ex.caller else None,
            data_region=decision.deciding.region if decision else None,
            duration=duration,
            code=refusal.code if refusal else None,
        )
        if self.access_log.enabled:
            self._log_access(ex, status, outcome, refusal, duration)

    def handshake_refused(self, refused: RefusedHandshake) -> None:
        """A TLS handshake that failed: counted by reason; a refused client certificate is audited too."""
        self.metrics.tls_handshake_failed(refused.failure)
        if not refused.failure.refuses_certificate or not self.audit.enabled:
            return
        self._write_unparsed(
            new_decision_id(), AuditOutcome.DENY, refused.reason, None, None, refused.peer, "",
            HANDSHAKE_OPERATION, None, 0, HANDSHAKE_CODE,
            HANDSHAKE_STATUS[refused.failure is HandshakeFailure.NO_CERTIFICATE],
        )

    def _answered_preflight(self, ex: Exchange, answered: AnsweredPreflight, status: int) -> None:
        """A CORS preflight answered from a dataset's rule: allowed by it, nothing forwarded, no data reached.

        Not a request of the request metrics (a page's preflights are no refusals, nor forwarded requests):
        ``bailiwick_cors_preflights_total`` counts them.
        """
        self.metrics.cors_preflights.inc()
        if self.audit.enabled:
            self._write_unparsed(
                ex.decision_id, AuditOutcome.ALLOW,
                f"CORS preflight answered by rule {answered.rule} of the dataset's cors rules; nothing was forwarded",
                answered.dataset, f"cors {answered.rule}", ex.head.peer, ex.head.method, PREFLIGHT_OPERATION,
                str(answered.resource), 1, None, status,
            )
        if self.access_log.enabled:
            self._log_access(ex, status, AuditOutcome.ALLOW, None, time.perf_counter() - ex.started)

    def _write_unparsed(
        self, decision_id: str, outcome: AuditOutcome, reason: str, dataset: str | None, rule: str | None,
        source: str, method: str, operation: str, resource: str | None, resources: int, code: str | None,
        status: int,
    ) -> None:
        """The audit line of an exchange the policy's evaluation never saw (a refused handshake, an answered
        preflight): no identified caller, no action, under the policy in force."""
        policy = self._policy()
        self.audit.write(AuditRecord(
            self._clock.now(), decision_id, outcome, reason, dataset, rule, policy.version if policy else None,
            RecordedCaller(None, source, None),
            RecordedRequest(None, self.api.name, None, method, operation, resource, resources, False),
            code, status,
        ))

    def _log_access(
        self, ex: Exchange, status: int, outcome: str, refusal: RequestRefused | None, duration: float,
    ) -> None:
        transfer = ex.transfer
        forwarded = transfer.upstream_seconds > 0
        self.access_log.write(AccessEntry(
            time=self._clock.now(), request_id=ex.decision_id, source=ex.head.peer, method=ex.head.method,
            path=ex.head.target, status=status, decision=outcome,
            error_code=refusal.code if refusal else None,
            caller_jurisdiction=ex.caller.jurisdiction if ex.caller else None,
            bytes_in=transfer.up_bytes, bytes_out=transfer.down_bytes, duration_ms=duration * 1000,
            upstream_ms=transfer.upstream_seconds * 1000 if forwarded else None,
            user_agent=ex.head.headers.get("User-Agent", ""),
        ))

    def _write_audit(
        self, ex: Exchange, status: int, refusal: RequestRefused | None,
    ) -> tuple[AuditOutcome, Action | None]:
        """Write the audit line; returns its outcome and the deciding action, for the metrics."""
        decision, parsed = ex.decision, ex.parsed
        if not self.audit.enabled:
            target = deciding_access(decision, parsed)
            return outcome_of(decision, refusal), target.action if target else None
        policy = self._policy()
        head = ex.head
        record = AuditRecord.of(
            time=self._clock.now(), decision_id=ex.decision_id, api=self.api.name, method=head.method,
            source=head.peer, caller=ex.caller, decision=decision, parsed=parsed, refusal=refusal, status=status,
            policy_in_force=policy.version if policy else None, key_release=ex.key_release,
        )
        self.audit.write(record)
        return record.decision, record.request.action
