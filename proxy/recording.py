"""The end of every request, whatever happened: its audit line, its metrics and its access-log line.

`Recorder.record` is called exactly once per request by the gateway
(`proxy.gateway`), from one place, once the answer is known (or the
exchange was cut). The audit line is queued: its writer thread does the
I/O, so recording costs the event loop no write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.accesslog import AccessEntry, AccessLog
from proxy.api import ParsedRequest, StorageApi
from proxy.audit import AuditLog, UtcClock
from proxy.domain import Access, Caller
from proxy.errors import RequestRefused
from proxy.evaluate import RequestHead
from proxy.forward import Transfer
from proxy.metrics import Metrics
from proxy.policy.decision import Decision
from proxy.policy.model import Policy


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

    @property
    def method(self) -> str:
        return self.head.method

    @property
    def peer(self) -> str:
        return self.head.peer


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

    @property
    def policy(self) -> Policy | None:
        return self._policy()

    def record(self, ex: Exchange, status: int, refusal: RequestRefused | None = None) -> None:
        """The end of a request: its audit line, its metrics and, if one is kept, its access-log line."""
        outcome, target = self._write_audit(ex, status, refusal)   # queued: the writer thread does the I/O
        decision = ex.decision
        duration = time.perf_counter() - ex.started
        self.metrics.request(
            action=target.action.value if target else None,
            decision=outcome,
            caller_jurisdiction=ex.caller.jurisdiction if ex.caller else None,
            data_region=decision.deciding.region if decision else None,
            duration=duration,
            code=refusal.code if refusal else None,
        )
        if self.access_log.enabled:
            self._log_access(ex, status, outcome, refusal, duration)

    def _log_access(
        self, ex: Exchange, status: int, outcome: str, refusal: RequestRefused | None, duration: float,
    ) -> None:
        transfer = ex.transfer
        forwarded = transfer.upstream_seconds > 0
        self.access_log.write(AccessEntry(
            time=self._clock.now(), request_id=ex.decision_id, source=ex.peer, method=ex.method,
            path=ex.head.target, status=status, decision=outcome,
            error_code=refusal.code if refusal else None,
            caller_jurisdiction=ex.caller.jurisdiction if ex.caller else None,
            bytes_in=transfer.up_bytes, bytes_out=transfer.down_bytes, duration_ms=duration * 1000,
            upstream_ms=transfer.upstream_seconds * 1000 if forwarded else None,
            user_agent=ex.head.headers.get("User-Agent", ""),
        ))

    def _write_audit(self, ex: Exchange, status: int, refusal: RequestRefused | None) -> tuple[str, Access | None]:
        """Write the audit line; returns the outcome and the access that decided, for the metrics."""
        decision = ex.decision
        parsed = ex.parsed
        if decision is not None:
            outcome = decision.outcome.value
            reason, dataset, rule = decision.reason, decision.dataset, decision.rule
        else:
            outcome = "error" if refusal is not None and refusal.status >= 500 else "deny"
            reason = refusal.message if refusal else ""
            dataset, rule = None, None
        if refusal is not None and decision is not None and decision.forwarded:
            outcome, reason = "error", refusal.message   # allowed, then failed upstream or internally
        target: Access | None
        if decision is not None:
            target = decision.deciding.access
        else:
            target = parsed.request.accesses[0] if parsed and parsed.request.accesses else None
        if not self.audit.enabled:
            return outcome, target
        copy_from = parsed.request.copy_from if parsed else None
        caller = ex.caller
        self.audit.write({
            "caller": {
                "jurisdiction": caller.jurisdiction if caller else None,
                "source": ex.peer,
                "subject": caller.subject if caller else None,
            },
            "dataset": dataset,
            "decision": outcome,
            "decision_id": ex.decision_id,
            "error_code": refusal.code if refusal else None,
            "policy_version": decision.policy_version if decision else (self.policy and self.policy.version),
            "reason": reason,
            "request": {
                "action": target.action.value if target else None,
                "api": self.api.name,
                "copy_from": str(copy_from) if copy_from else None,
                "method": ex.method,
                "operation": parsed.operation if parsed else None,
                "resource": str(target.resource) if target else None,
                "resources": len(parsed.request.accesses) if parsed else 0,
            },
            "rule": rule,
            "status": status,
            "time": self._clock.now(),
        })
        return outcome, target
