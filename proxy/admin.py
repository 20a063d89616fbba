"""The admin listener: /healthz, /readyz and /metrics, never served on the data port.

/healthz says the process answers; /readyz says whether requests would be
forwarded now (a policy is loaded, the proxy is not draining, the audit log
takes lines and its shipping is not overdue, the storage server answers):
a proxy that refuses every request must be taken out of its Service, not
sent a share of the traffic to refuse. With TLS on the data listener, a
certificate on disk that does not load, or one in service that has expired,
makes it not ready too (`proxy.tlsserver`). /metrics is the Prometheus exposition.

The region's key service is reported by /readyz but does not make it fail
(as Envoy's /ready does not follow its clusters' health, nor OPA's /health
its plugins' unless asked with ?plugins): it serves only the encrypted
datasets, and a freeze is meant to refuse their requests with an audited 403,
not to take every replica out of its Service, unencrypted datasets with them.
`/readyz?key_service` makes it count, for a proxy that serves encrypted
datasets only. The probe runs in the background at most every 10 seconds, so
a key service that hangs never holds /readyz past the orchestrator's timeout.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from proxy.gateway import Gateway
from proxy.tlsserver import ListenerTls

KEY_PROBE_EVERY_SECONDS = 10.0


class KeyServiceState:
    """The last answer of the key service's probe, refreshed in the background once it is a period old."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.problem: str | None = None
        self.probed = False
        self._at = -KEY_PROBE_EVERY_SECONDS
        self._task: asyncio.Task[None] | None = None

    def report(self) -> dict[str, str] | None:
        """The key service as /readyz shows it (None: none is configured)."""
        stage = self.gateway.encryption
        if stage is None:
            return None
        if self._task is None and time.monotonic() - self._at >= KEY_PROBE_EVERY_SECONDS:
            self._task = asyncio.ensure_future(self._probe())
        status = "unknown" if not self.probed else "problem" if self.problem else "ok"
        report = {"key": stage.service.key_ref, "status": status}
        if self.problem:
            report["reason"] = self.problem
        return report

    async def _probe(self) -> None:
        stage = self.gateway.encryption
        try:
            if stage is not None:
                self.problem = await asyncio.to_thread(stage.service.probe)
                self.probed = True
        finally:
            self._at, self._task = time.monotonic(), None


async def admin_app(gateway: Gateway, tls: ListenerTls | None = None) -> web.Application:
    key_service = KeyServiceState(gateway)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        policy = gateway.policy
        if gateway.stopping:
            return web.json_response({"status": "not ready", "reason": "shutting down"}, status=503)
        if policy is None:
            return web.json_response({"status": "not ready", "reason": "no valid policy is loaded"}, status=503)
        refusing = gateway.refusing_all()
        if refusing is not None:
            return web.json_response({"status": "not ready", "reason": refusing}, status=503)
        if tls is not None:
            tls.check()
            problem = tls.problem()
            if problem is not None:
                return web.json_response({"status": "not ready", "reason": problem, "tls": tls.report()}, status=503)
        problem = await gateway.upstream_problem()
        if problem is not None:
            return web.json_response({"status": "not ready", "reason": problem}, status=503)
        keys = key_service.report()
        extra: dict[str, object] = {} if keys is None else {"key_service": keys}
        if tls is not None:
            extra["tls"] = tls.report()
        if keys is not None and keys["status"] != "ok" and "key_service" in request.query:
            why = keys.get("reason", "not probed yet")
            return web.json_response({"status": "not ready", "reason": f"key service: {why}", **extra}, status=503)
        return web.json_response({"status": "ready", "policy_version": policy.version, **extra})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=gateway.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
