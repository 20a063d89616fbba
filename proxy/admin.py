"""The admin listener: /healthz, /readyz and /metrics, never served on the data port.

/healthz says the process answers; /readyz says whether requests would be
forwarded now (a policy is loaded, the proxy is not draining, the storage
server answers); /metrics is the Prometheus exposition.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from proxy.gateway import Gateway


async def admin_app(gateway: Gateway) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        policy = gateway.policy
        if gateway.stopping:
            return web.json_response({"status": "not ready", "reason": "shutting down"}, status=503)
        if policy is None:
            return web.json_response({"status": "not ready", "reason": "no valid policy is loaded"}, status=503)
        problem = await gateway.upstream_problem()
        if problem is not None:
            return web.json_response({"status": "not ready", "reason": problem}, status=503)
        return web.json_response({"status": "ready", "policy_version": policy.version})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=gateway.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
