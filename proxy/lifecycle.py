"""A proxy's life: start (the gateway and both listeners), serve until told to stop, drain, stop.

`start_proxy` builds one running proxy in the current event loop;
`serve_forever` runs one until SIGTERM or SIGINT (SIGHUP reloads the
policy); `RunningProxy.stop` drains it. `proxy.workers` runs one in each
worker process; `proxy.harness` runs one in a thread, for tests and the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Mapping

from aiohttp import web

from proxy.admin import admin_app
from proxy.config import Config
from proxy.config.region import check_region, region_problem
from proxy.cors import make_request
from proxy.errors import ConfigError
from proxy.gateway import Gateway
from proxy.handshake import Handshakes
from proxy.limiter import ConnectionCaps, LimitedServer
from proxy.policy.encryption import encryption_problem
from proxy.policy.model import Policy
from proxy.reload import PolicyReloader, fingerprint, load_checked
from proxy.tlsserver import ListenerTls

log = logging.getLogger("bailiwick.server")


# After the shutdown grace, how long aiohttp gives requests still running to stop once cut.
_CUT_SECONDS = 0.1


class RunningProxy:
    """A started proxy: data and admin listeners, and how to stop them."""

    def __init__(
        self, gateway: Gateway, data: web.BaseRunner, admin: web.BaseRunner, reloader: PolicyReloader,
        tls: ListenerTls | None = None,
    ) -> None:
        self.gateway = gateway
        self.reloader = reloader
        self.tls = tls
        self._data = data
        self._admin = admin

    @property
    def data_address(self) -> tuple[str, int]:
        host, port = self._data.addresses[0][:2]
        return str(host), int(port)

    @property
    def connection_caps(self) -> ConnectionCaps:
        """The data listener's connections held now, in all and by peer (counted from accept to close)."""
        server = self._data.server
        assert isinstance(server, LimitedServer)
        return server.caps

    @property
    def admin_address(self) -> tuple[str, int]:
        host, port = self._admin.addresses[0][:2]
        return str(host), int(port)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to the shutdown grace), then close.

        ``/readyz`` answers 503 from the start of the drain, so that a load
        balancer stops sending; kept-alive connections are closed once their
        request is done; requests still running when the grace ends are cut
        (audited as ``ShutdownCut``); the audit log is flushed last.
        """
        gateway = self.gateway
        gateway.stopping = True
        await self.reloader.stop()
        if self.tls is not None:
            await self.tls.stop()
        for site in list(self._data.sites):
            await site.stop()
        if self._data.server is not None:
            self._data.server.pre_shutdown()
        await gateway.drained(gateway.config.shutdown_grace_seconds)
        # aiohttp's own shutdown waits its timeout twice per connection (for the handler,
        # then for it to take a cancellation): the grace is counted here instead, and what
        # is left is cut at once.
        gateway.cutting = True
        await self._data.cleanup()
        await self._admin.cleanup()
        await self.gateway.close()


async def start_proxy(config: Config, policy: Policy | None = None, worker: int | None = None) -> RunningProxy:
    """Load the policy (unless given), start the gateway and both listeners.

    A policy that does not load does not stop the start: the proxy serves,
    refuses every request with 503 and reports not ready, so that a bad
    policy is visible (logs, /readyz) and never fails open.
    A policy that loads but does not know the configured `region` does
    stop it (`UnknownRegion`): that is the configuration's mistake.
    """
    seen: str | None = None

    def fits(loaded: Policy) -> str | None:
        return region_problem(loaded.regions, config) or encryption_problem(loaded, config)

    def fits_at_start(loaded: Policy) -> str | None:
        # A region the policy does not know is the configuration's mistake: the start is refused (exit 2).
        check_region(loaded.regions, config)
        return fits(loaded)

    if policy is None:
        # The same checks as a reload (load, then the policy tests); the fingerprint is taken
        # first, so that an edit made while the policy loads is reloaded on the first poll.
        seen = fingerprint(config.policies)
        outcome = load_checked(config.policies, config.reload.run_tests, fits_at_start)
        policy = outcome.policy
        for problem in outcome.problems:
            log.error("policy not loaded: %s", problem)
        if policy is None:
            log.error("no valid policy: every request will be refused until one loads")
    # Before anything listens: a certificate that does not load stops the start (ConfigError).
    tls = None if config.listen_tls is None else ListenerTls(config.listen_tls)
    gateway = Gateway(config, policy, worker)
    if tls is not None:
        tls.report_to(gateway.metrics)
    if policy is None:
        gateway.metrics.policy_failed()
    await gateway.start()
    limits = config.limits
    server = LimitedServer(
        gateway.handle,
        request_factory=make_request,   # every answer passes the response hook (CORS headers: proxy.cors)
        max_connections=limits.max_connections,
        max_connections_per_peer=limits.max_connections_per_peer,
        send_idle_timeout=limits.send_idle_timeout_seconds,
        on_send_timeout=gateway.upstream.send_timed_out,
        min_send_rate=limits.min_send_rate_bytes_per_second,
        min_rate_window=limits.min_rate_window_seconds,
        handed=gateway.upstream.handed,
        metrics=gateway.metrics,
        # The TLS handshake has the request head's deadline (slowloris), before the head's own.
        handshakes=None if tls is None else Handshakes(tls.context, gateway.recorder.handshake_refused,
                                                       timeout=limits.header_timeout_seconds),
        handler_cancellation=True,
        access_log=None,
        # The body forwarded must be the body received, byte for byte.
        auto_decompress=False,
        # aiohttp closes a connection that has not delivered a complete request head this
        # long after it opened or after its last response: the header deadline.
        keepalive_timeout=limits.header_timeout_seconds,
        max_line_size=limits.max_header_bytes,
        max_field_size=limits.max_header_bytes,
        max_headers=limits.max_headers,
    )
    data = web.ServerRunner(server, handle_signals=False, shutdown_timeout=_CUT_SECONDS)
    await data.setup()
    shared = config.workers > 1  # SO_REUSEPORT: the kernel spreads connections over the workers
    await web.TCPSite(
        data, config.listen[0], config.listen[1], reuse_address=True, reuse_port=shared,
    ).start()   # TLS, if any, is the server's own handshake (`proxy.handshake`), so that a refused one is seen
    if tls is not None:
        tls.start()
    admin = web.AppRunner(await admin_app(gateway, tls), handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await admin.setup()
    await web.TCPSite(
        admin, config.admin_listen[0], config.admin_listen[1], reuse_address=True, reuse_port=shared,
    ).start()
    reloader = PolicyReloader(
        config.policies, interval=config.reload.interval_seconds, run_tests=config.reload.run_tests,
        install=gateway.install_policy, failed=gateway.metrics.policy_failed, fits=fits,
    )
    await reloader.start(gateway.policy, seen)
    return RunningProxy(gateway, data, admin, reloader, tls)


def check_http_parser(environ: Mapping[str, str] = os.environ) -> str:
    """Which HTTP parser aiohttp serves the data port with; raises `ConfigError` if it is not the expected one.

    The framing refusals (CL.TE, obfuscated Transfer-Encoding, bare LF ...) are tested
    under both of aiohttp's parsers, but a deployment should not fall back to the
    pure-Python one silently because the C extension failed to build or load: that
    is allowed only when asked for with ``AIOHTTP_NO_EXTENSIONS``.
    """
    from aiohttp import http_parser, web_protocol

    # web_protocol binds the class at import; that binding is what serves requests.
    if vars(web_protocol)["HttpRequestParser"] is not http_parser.HttpRequestParserPy:
        return "C HTTP parser (llhttp)"
    if environ.get("AIOHTTP_NO_EXTENSIONS"):
        return "pure-Python HTTP parser (AIOHTTP_NO_EXTENSIONS is set)"
    raise ConfigError(
        "aiohttp's C HTTP parser (llhttp) is not loaded, so requests would be read by its pure-Python parser; "
        "install aiohttp with its C extensions, or set AIOHTTP_NO_EXTENSIONS=1 to choose the pure-Python parser"
    )


async def serve_forever(config: Config, worker: int | None = None, children: tuple[int, ...] = ()) -> None:
    """Run until SIGTERM or SIGINT, then drain; SIGHUP reloads the policy. Both are passed on to `children`."""
    running = await start_proxy(config, worker=worker)
    # What start built (modules, the policy's tables, keys) lives as long as the process:
    # moved out of the collector's sight, a full collection no longer walks it, which took
    # ~14 ms pauses in the middle of serving (measured with gc.callbacks on the benchmark).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def terminate() -> None:
        # The workers drain at the same time as this process, not after it.
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate)
    reloads: set[asyncio.Task[bool | None]] = set()

    def hangup() -> None:
        log.info("SIGHUP: reloading the policy from %s", config.policies)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)
        task = asyncio.ensure_future(running.reloader.reload(force=True))
        reloads.add(task)
        task.add_done_callback(reloaded)

    def reloaded(task: asyncio.Task[bool | None]) -> None:
        reloads.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SIGHUP reload failed; the policy in force stays", exc_info=task.exception())

    loop.add_signal_handler(signal.SIGHUP, hangup)
    host, port = running.data_address
    ahost, aport = running.admin_address
    log.info("bailiwick serving %s:%d -> %s (admin %s:%d, policy %s, %s)", host, port,
             config.upstream.url, ahost, aport,
             running.gateway.policy.version if running.gateway.policy else "NONE (refusing all requests)",
             check_http_parser())
    if running.tls is not None:
        served, settings = running.tls.served, running.tls.settings
        log.info("TLS %s+ on the data listener: certificate serial %x, valid until %s; client certificates %s",
                 settings.min_version, served.serial, served.not_after.isoformat(),
                 "required" if settings.client_ca else "not asked for")
    stage = running.gateway.encryption
    if stage is not None:
        # Said once at start, so that a key that is missing, not derived, or that the token may not read is in
        # the log before the first encrypted request meets it. Not a reason to stop: the key service may be
        # down for a while, or the key frozen on purpose, and unencrypted datasets are served meanwhile.
        problem = await asyncio.to_thread(stage.service.probe)
        if problem is None:
            log.info("key service %s answers", stage.service.key_ref)
        else:
            log.warning("key service: %s; objects of encrypted datasets cannot be read or written until it is "
                        "fixed (docs/encryption.md)", problem)
    await stop.wait()
    log.info("stopping: no new connections; requests in flight have up to %gs to finish",
             config.shutdown_grace_seconds)
    await running.stop()
    log.info("stopped")
