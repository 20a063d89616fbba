"""The proxy: one handler that walks every request through the same steps.

    identity -> resources -> policy -> forward -> audit

`Gateway.handle` is the only place where a refusal (`RequestRefused`) becomes
an HTTP response, through the storage API's error renderer, and where an
unexpected exception becomes a 500 instead of a forwarded request (fail
closed). The data port is served by aiohttp's low-level `web.Server`, with no
router in between, so the handler sees the request-target exactly as sent.
The admin endpoints live on a separate listener and never on the data port.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from multidict import CIMultiDictProxy, MultiMapping
from prometheus_client import CONTENT_TYPE_LATEST

from proxy.accesslog import AccessEntry, AccessLog
from proxy.api import ParsedRequest, StorageApi
from proxy.audit import AuditLog, UtcClock
from proxy.bodies import PINNED_BYTES, BodyBudget, Hold, read_inspected
from proxy.config import Config
from proxy.domain import Access, Caller, Resource
from proxy.errors import (
    AccessDenied,
    BadRequest,
    ConfigError,
    InternalError,
    NotReady,
    RequestRefused,
    StreamInterrupted,
    UpstreamFailure,
    UpstreamTimeout,
)
from proxy.identity.bodycheck import BodyCheck
from proxy.identity.resolver import IdentityResolver
from proxy.metrics import Metrics, process_exited, use_multiprocess_dir
from proxy.peers import peer_key
from proxy.policy.decision import Decision
from proxy.policy.engine import decide, refused_whatever_the_keys, visible_in_listing
from proxy.policy.model import ACCOUNT_LISTING, Policy
from proxy.reload import PolicyReloader, fingerprint, load_checked
from proxy.s3.api import S3Api
from proxy.s3.destinations import LARGE_BODY
from proxy.s3.resign import request_signer
from proxy.tags import TagSigner, add_tags, check_connection, request_headers
from proxy.upstream import BodyStream, Transfer, Upstream

log = logging.getLogger("bailiwick.server")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_HTTP_VERSIONS = frozenset({(1, 0), (1, 1)})
# /readyz asks the storage server at most this often, and waits this long for it.
_PROBE_EVERY_SECONDS = 1.0
_PROBE_TIMEOUT_SECONDS = 2.0
# A body this small is parsed on the event loop: well under a millisecond, less than a thread hop
# (and the size up to which proxy.s3.delete never pauses a parse to let other threads run).
_PARSE_INLINE_BYTES = 16 * 1024


def _virtual_bucket(config: Config) -> Callable[[MultiMapping[str]], str | None] | None:
    """How the bucket of a virtual-hosted S3 request is read, for SigV2 signatures (they sign it)."""
    if config.upstream.api != "s3" or not config.identity.access_keys:
        return None
    from proxy.s3.host import HostReader

    reader = HostReader(config.s3)
    return lambda headers: reader.bucket(cast(CIMultiDictProxy[str], headers))


def _inspected_share(config: Config) -> int:
    """What one peer's bodies read before the decision may hold at once.

    Its share of the connections (`limits.max_connections_per_peer` of
    `limits.max_connections`, all of it for a sidecar that sets them equal)
    of the budget, and never less than the largest one such body can hold.
    """
    limits = config.limits
    share = limits.max_inspected_bytes * limits.max_connections_per_peer // limits.max_connections
    return max(share, config.s3.max_delete_body_bytes, LARGE_BODY, PINNED_BYTES)


def make_api(config: Config) -> StorageApi:
    if config.upstream.api == "azure":
        # Imported here: an S3 proxy never loads the Azure package (and the reverse).
        from proxy.azure.api import AzureApi

        return AzureApi(config.azure)
    return S3Api(config.s3)


@dataclass(slots=True)
class _Exchange:
    """What the audit line needs to know about one request, filled in as it goes."""

    decision_id: str
    method: str
    peer: str
    started: float
    request: web.BaseRequest
    transfer: Transfer
    caller: Caller | None = None
    parsed: ParsedRequest | None = None
    decision: Decision | None = None


class Gateway:
    """The enforcing proxy for one upstream storage server."""

    def __init__(self, config: Config, policy: Policy | None, worker: int | None = None) -> None:
        self.config = config
        # Replaced whole on reload; each request reads it once. None: no valid policy was
        # ever loaded, and every request is refused (fail closed) while /readyz says so.
        self.policy = policy
        self.api = make_api(config)
        self.metrics = Metrics(self.api.name)
        self.identity = IdentityResolver(config.identity, on_jwks_fetch=self.metrics.jwks_fetch,
                                         storage_bearer=config.upstream.api == "azure",
                                         virtual_bucket=_virtual_bucket(config))
        if policy is not None:
            self.metrics.policy_loaded(policy)
        self.upstream = Upstream(config.upstream, self.metrics)
        audit = config.audit
        self.audit = AuditLog(audit.path, worker, max_bytes=audit.max_bytes, checkpoint_every=audit.checkpoint_every,
                              checkpoint_key=audit.checkpoint_key)
        self.access_log = AccessLog(config.access_log)
        self._clock = UtcClock()
        self.stopping = False   # draining: /readyz says so
        self.cutting = False    # the drain's grace is over: requests still running are cut
        self.active = 0         # requests being handled now
        self._idle: asyncio.Event | None = None   # set when `active` drops to 0, while draining
        self._probed_at = -_PROBE_EVERY_SECONDS
        self._probe_result: str | None = None
        key = config.tag.signing_key
        self.signer = TagSigner(key, config.tag.ttl_seconds) if key else None
        # Re-sign mode: the storage server sees the proxy's signature, not the caller's.
        self.resigner = request_signer(config)
        # Bodies read before the decision: the bytes they may hold at once, and one thread that
        # parses them, so that a parse never holds up the event loop and never runs twice at once.
        self.bodies = BodyBudget(config.limits.max_inspected_bytes, per_peer=_inspected_share(config))
        self._parsers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bailiwick-parse")

    async def upstream_problem(self) -> str | None:
        """Why the storage server is not answering (None: it is), asked at most once a second."""
        now = time.monotonic()
        if now - self._probed_at >= _PROBE_EVERY_SECONDS:
            self._probed_at = now
            self._probe_result = await self.upstream.probe(_PROBE_TIMEOUT_SECONDS)
        return self._probe_result

    def install_policy(self, policy: Policy) -> None:
        """Swap in a new policy (one assignment: requests read it once when they start)."""
        self.policy = policy
        self.metrics.policy_loaded(policy)

    async def start(self) -> None:
        await self.identity.start()
        await self.upstream.start()

    async def close(self) -> None:
        self._parsers.shutdown(wait=False, cancel_futures=True)
        await self.upstream.close()
        await self.identity.close()
        self.audit.close()
        self.access_log.close()

    async def drained(self, grace: float) -> bool:
        """Wait until no request is being handled, at most `grace` seconds; False if some still are."""
        if self.active:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        return not self.active

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        peername = request.transport.get_extra_info("peername") if request.transport else None
        ex = _Exchange(
            decision_id=secrets.token_hex(16), method=request.method,
            peer=str(peername[0]) if peername else "", started=time.perf_counter(),
            request=request, transfer=Transfer(),
        )
        peer = peer_key(ex.peer)   # whose shares (inspected bodies, upstream pool) this request takes
        self.metrics.in_flight.inc()
        self.active += 1
        body_read = False
        held: Hold | None = None   # what this request holds of the inspected-body budget, until it ends
        try:
            if self.audit.failed:
                self.metrics.audit_failed.set(1)
                raise InternalError("the audit log cannot be written, so no request is forwarded")
            policy = self.policy
            if policy is None:
                raise NotReady("no valid policy is loaded, so no request is forwarded")
            if request.version not in _HTTP_VERSIONS:
                # llhttp reads "HTTP/0.9" and "HTTP/2.0" request lines as HTTP/1.x; nothing else would.
                raise BadRequest("only HTTP/1.0 and HTTP/1.1 requests are accepted")
            identified = await self.identity.identify(request.headers, ex.peer or None, request.raw_path,  # identity
                                                      request.method)
            ex.caller = identified.caller
            check_connection(request.headers)                                             # resources
            parsed = self.api.parse(request.method, request.raw_path, request.headers)
            ex.parsed = parsed
            if self.resigner is not None:
                self.resigner.check(request.raw_path, request.headers)
            body: bytearray | None = None
            if parsed.body_limit is not None:
                refused = self._refused_before_body(policy, ex.caller.jurisdiction, parsed)
                if refused is not None:
                    # Whatever the body says, the request is refused: it is never read.
                    ex.decision = refused
                    raise AccessDenied(refused.reason, resource=str(refused.deciding.access.resource))
                limits = self.config.limits
                held = self.bodies.hold(peer)
                body = await read_inspected(
                    request, parsed.body_limit, held,
                    deadline=limits.body_read_timeout_seconds, idle=limits.body_idle_timeout_seconds,
                    before_reading=lambda: self._continue_if_expected(request),
                )
                body_read = True
                # What the caller signed is checked before it is judged, both off the event loop.
                parsed = ex.parsed = await self._expand(parsed, body, identified.body)
            deciding = time.perf_counter()
            decision = ex.decision = decide(                                             # policy
                policy, ex.caller.jurisdiction, parsed.request,
                proxy_region=self.config.region,
                unmatched_allow=self.config.unmatched_allow,
                force_dry_run=self.config.dry_run,
            )
            self.metrics.decision_duration.observe(time.perf_counter() - deciding)
            if not decision.forwarded:
                raise AccessDenied(decision.reason, resource=str(decision.deciding.access.resource))
            rewrite = self._listing_filter(policy, ex.caller.jurisdiction, parsed, decision)
            headers = request_headers(request.headers, identified.token_headers)
            target = request.raw_path
            if self.resigner is not None:
                # Path-style, as every storage server reads it; before the signed tag binds Host and target.
                target = self.resigner.rewrite(headers, target)
            add_tags(
                headers, caller=ex.caller, decision_id=ex.decision_id,
                policy_version=policy.version, method=request.method,
                path=target, signer=self.signer,
            )
            if self.resigner is not None:
                self.resigner.sign(request.method, target, headers)
            if body is None and request.body_exists:
                await self._continue_if_expected(request)
                # A signed body is checked as it streams; its last piece waits for the whole check. A chunk
                # held for its signature takes its bytes from the budget of bodies the proxy holds.
                check = None
                if identified.body is not None:
                    if identified.body.chunks is not None:
                        held = self.bodies.hold(peer)
                    check = functools.partial(identified.body.stream, budget=held)
                limits = self.config.limits
                data: Any = BodyStream(request, limits.body_idle_timeout_seconds, check,
                                       min_rate=limits.min_receive_rate_bytes_per_second,
                                       window=limits.min_rate_window_seconds)
            else:
                if body is None and identified.body is not None:
                    identified.body.whole(b"")
                data = body
            response = await self.upstream.forward(request, headers, data, ex.transfer, rewrite,   # forward
                                                   peer=peer, target=target)
        except RequestRefused as err:
            if isinstance(err, UpstreamFailure):
                self.metrics.upstream_error("timeout" if isinstance(err, UpstreamTimeout) else "failure")
            self._record(ex, err.status, refusal=err)                                       # audit
            return self._refusal(err, ex.decision_id, force_close=not body_read)
        except StreamInterrupted as err:
            if ex.transfer.send_timed_out:
                self._record(ex, 0, refusal=self._send_timeout(ex.transfer))
            else:
                self.metrics.upstream_error("interrupted")
                self._record(ex, 0, refusal=RequestRefused(f"stream interrupted: {err}", code="StreamInterrupted"))
            return cast(web.StreamResponse, err.response)
        except asyncio.CancelledError:
            if ex.transfer.send_timed_out:
                cut = self._send_timeout(ex.transfer)
            elif self.cutting:
                cut = RequestRefused("the proxy shut down before the request finished", code="ShutdownCut")
            else:
                cut = RequestRefused("the caller went away", code="ClientClosed")
            self._record(ex, 0, refusal=cut)
            raise
        except Exception:
            log.exception("internal error on request %s", ex.decision_id)
            internal = InternalError("the proxy failed to handle this request; it was not forwarded")
            self._record(ex, internal.status, refusal=internal)
            return self._refusal(internal, ex.decision_id, force_close=True)
        finally:
            if held is not None:
                held.release()
        self._record(ex, response.status)
        return response

    def _send_timeout(self, transfer: Transfer) -> RequestRefused:
        limits = self.config.limits
        if transfer.send_too_slow:
            return RequestRefused(
                f"stream interrupted: the caller read the answer slower than the minimum rate of "
                f"{limits.min_send_rate_bytes_per_second} bytes/s, so the exchange was cut", code="SendTimeout")
        seconds = limits.send_idle_timeout_seconds
        return RequestRefused(f"stream interrupted: the caller read nothing of the answer for {seconds:g}s, so the "
                              "exchange was cut", code="SendTimeout")

    def _listing_filter(
        self, policy: Policy, jurisdiction: str, parsed: ParsedRequest, decision: Decision,
    ) -> Callable[[bytes], bytes] | None:
        """For an account listing, what its answer goes through: only what the caller may list stays."""
        if decision.rule != ACCOUNT_LISTING:
            return None
        if not parsed.account_listing:
            # Allowed only because the answer is filtered: never forwarded without the filter.
            raise InternalError("an account listing was allowed that the proxy cannot filter; it was not forwarded")
        config = self.config

        def visible(resource: Resource) -> bool:
            return visible_in_listing(policy, jurisdiction, resource, proxy_region=config.region,
                                      unmatched_allow=config.unmatched_allow, force_dry_run=config.dry_run)

        api = self.api
        return lambda body: api.filter_account_listing(parsed, body, visible)

    @staticmethod
    async def _continue_if_expected(request: web.BaseRequest) -> None:
        # Sent only once the request may go on: after the decision for an upload, so a
        # refused one never sends its body; before reading a body the decision depends
        # on (a multi-object delete), after identity and parsing.
        if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(_CONTINUE)

    def _refused_before_body(self, policy: Policy, jurisdiction: str, parsed: ParsedRequest) -> Decision | None:
        """The refusal that stands whatever the body says, decided before a byte of it is read."""
        config = self.config
        if parsed.body_names_keys:
            return refused_whatever_the_keys(
                policy, jurisdiction, parsed.request, proxy_region=config.region,
                unmatched_allow=config.unmatched_allow, force_dry_run=config.dry_run,
            )
        # The body only adds to the request (CreateBucket's region adds the placement check):
        # what the request is refused for without it, it is refused for with any body.
        decision = decide(policy, jurisdiction, parsed.request, proxy_region=config.region,
                          unmatched_allow=config.unmatched_allow, force_dry_run=config.dry_run)
        return decision if not decision.forwarded else None

    async def _expand(self, parsed: ParsedRequest, body: bytearray, signed: BodyCheck | None) -> ParsedRequest:
        """The request with what its body adds, parsed off the event loop unless the body is small.

        With `signed` (access-key mode), the body is first checked against the caller's signature.
        """
        api = self.api

        def expand() -> ParsedRequest:
            if signed is not None:
                signed.whole(bytes(body))
            return api.expand(parsed, body)

        if len(body) <= _PARSE_INLINE_BYTES:
            return expand()
        return await asyncio.get_running_loop().run_in_executor(self._parsers, expand)

    def _refusal(self, err: RequestRefused, decision_id: str, *, force_close: bool) -> web.Response:
        status, headers, body = self.api.render_error(err, decision_id)
        response = web.Response(status=status, headers=headers, body=body)
        if force_close:
            # The caller's body was not read; closing is cheaper and safer than draining it.
            response.force_close()
        return response

    def _record(self, ex: _Exchange, status: int, refusal: RequestRefused | None = None) -> None:
        """The end of every request, whatever happened: its audit line and its metrics."""
        metrics = self.metrics
        metrics.in_flight.dec()
        self.active -= 1
        if not self.active and self._idle is not None:
            self._idle.set()
        outcome, target = self._write_audit(ex, status, refusal)   # queued: the writer thread does the I/O
        decision = ex.decision
        duration = time.perf_counter() - ex.started
        metrics.request(
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
        self, ex: _Exchange, status: int, outcome: str, refusal: RequestRefused | None, duration: float,
    ) -> None:
        transfer = ex.transfer
        forwarded = transfer.upstream_seconds > 0
        self.access_log.write(AccessEntry(
            time=self._clock.now(), request_id=ex.decision_id, source=ex.peer, method=ex.method,
            path=ex.request.raw_path, status=status, decision=outcome,
            error_code=refusal.code if refusal else None,
            caller_jurisdiction=ex.caller.jurisdiction if ex.caller else None,
            bytes_in=transfer.up_bytes, bytes_out=transfer.down_bytes, duration_ms=duration * 1000,
            upstream_ms=transfer.upstream_seconds * 1000 if forwarded else None,
            user_agent=ex.request.headers.get("User-Agent", ""),
        ))

    def _write_audit(self, ex: _Exchange, status: int, refusal: RequestRefused | None) -> tuple[str, Access | None]:
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


async def _admin_app(gateway: Gateway) -> web.Application:
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


# After the shutdown grace, how long aiohttp gives requests still running to stop once cut.
_CUT_SECONDS = 0.1


class RunningProxy:
    """A started proxy: data and admin listeners, and how to stop them."""

    def __init__(
        self, gateway: Gateway, data: web.BaseRunner, admin: web.BaseRunner, reloader: PolicyReloader,
    ) -> None:
        self.gateway = gateway
        self.reloader = reloader
        self._data = data
        self._admin = admin

    @property
    def data_address(self) -> tuple[str, int]:
        host, port = self._data.addresses[0][:2]
        return str(host), int(port)

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


# Unsent bytes the kernel holds for a caller's connection when a minimum send rate is set
# (TCP_NOTSENT_LOWAT): what leaves the proxy's buffer then follows what the caller reads,
# in steps of at most about this much, instead of in steps of a third of a multi-MiB
# autotuned send buffer. 16 KiB, as large HTTP/2 front ends use it: on loopback a streamed
# answer goes at about 1 GB/s with it as without it.
_NOTSENT_LOWAT = 16 * 1024
_TCP_NOTSENT_LOWAT: int | None = getattr(socket, "TCP_NOTSENT_LOWAT", None)   # Linux, macOS


class _LimitedServer(web.Server):
    """aiohttp's low-level server with caps on connections held at once, and a deadline on unread answers.

    Connections are capped in all and per peer (`proxy.peers.peer_key` of the
    socket's address), so that one address cannot take every place; a connection
    over either cap is answered 503 and closed as soon as it is accepted, before
    anything of it is read.

    Send deadline: a connection whose answer bytes wait in the proxy, unsent,
    without moving for `send_idle_timeout` seconds (its caller stopped reading)
    is cut. One timer for the whole server looks at every connection's write
    buffer a few times per deadline: nothing is added per request, and a
    paused reader can hold neither an exchange with the storage server nor a
    connection for ever (streamed answers, small ones written after the
    handler, pipelined ones). `on_send_timeout` is told first, so that the
    exchange is audited as cut for that reason.

    Send rate: a caller that reads, but a trickle (a byte now and then, which
    resets no idle deadline), is cut the same way. While answer bytes wait
    unsent, a connection has a credit of bytes: it starts at
    `min_rate_window` seconds' worth of `min_send_rate` plus `_NOTSENT_LOWAT`
    (what leaves moves in steps about that large), loses `min_send_rate` a
    second, gains what leaves the proxy, never exceeds where it started (no
    banking a fast start for a later trickle), and the connection is cut when
    it runs out. What left is what was handed to the connection (`handed`,
    the streamed answer's count) less what still waits; the same timer
    measures it, so the cost per request stays nil.
    """

    _REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: 39\r\n\r\nbailiwick: too many connections, retry\n")
    _PEER_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"Content-Length: 57\r\n\r\nbailiwick: too many connections from your address, retry\n")

    def __init__(
        self, handler: Any, *, max_connections: int, max_connections_per_peer: int, send_idle_timeout: float,
        on_send_timeout: Callable[[object, bool], None], metrics: Metrics,
        min_send_rate: float = 0.0, min_rate_window: float = 5.0,
        handed: Callable[[object], int | None] = lambda connection: None, **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        closed = metrics.connections_closed
        self._closed_over_cap = closed.labels("max_connections")
        self._closed_over_peer_cap = closed.labels("max_connections_per_peer")
        self._closed_send_timeout = closed.labels("send_timeout")
        self._max_connections = max_connections
        self._max_per_peer = max_connections_per_peer
        self._per_peer: dict[str, int] = {}   # connections held, by peer (absent: none)
        self._open: dict[object, tuple[str, asyncio.Transport]] = {}   # protocol -> (peer, transport)
        self._send_idle = send_idle_timeout
        self._on_send_timeout = on_send_timeout
        # A stall is seen at most this late: cut between the deadline and the deadline plus this.
        self._sweep_every = min(1.0, send_idle_timeout / 4, min_rate_window / 4)
        self._sweeper: asyncio.TimerHandle | None = None
        self._stuck: dict[object, tuple[int, float]] = {}   # protocol -> (bytes waiting, since when)
        self._min_rate = min_send_rate
        self._handed = handed
        self._allowance = min_send_rate * min_rate_window + _NOTSENT_LOWAT
        # protocol -> (when measured, bytes handed then (None: not a streamed answer), bytes waiting then, credit)
        self._pace: dict[object, tuple[float, int | None, int, float]] = {}

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        peername = transport.get_extra_info("peername")
        peer = peer_key(str(peername[0])) if peername else ""
        held = self._per_peer.get(peer, 0) + 1
        self._per_peer[peer] = held
        self._open[handler] = (peer, transport)
        if self._min_rate and _TCP_NOTSENT_LOWAT is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError, AttributeError):
                    sock.setsockopt(socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, _NOTSENT_LOWAT)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)
        if len(self.connections) > self._max_connections:
            transport.write(self._REFUSAL)
            transport.close()
            self._closed_over_cap.inc()
        elif held > self._max_per_peer:
            transport.write(self._PEER_REFUSAL)
            transport.close()
            self._closed_over_peer_cap.inc()

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        entry = self._open.pop(handler, None)
        if entry is not None:
            peer = entry[0]
            held = self._per_peer[peer] - 1
            if held:
                self._per_peer[peer] = held
            else:
                del self._per_peer[peer]
            self._stuck.pop(handler, None)
            self._pace.pop(handler, None)
        super().connection_lost(handler, exc)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self._loop.time()
        stuck = self._stuck
        pace = self._pace
        rate = self._min_rate
        cut: list[tuple[object, asyncio.Transport, bool]] = []
        for handler, (_, transport) in self._open.items():
            waiting = transport.get_write_buffer_size()
            if not waiting:
                if stuck:
                    stuck.pop(handler, None)
                    pace.pop(handler, None)
                continue
            seen = stuck.get(handler)
            if seen is None or seen[0] != waiting:
                stuck[handler] = (waiting, now)   # new, or it moved: the caller reads
            elif now - seen[1] >= self._send_idle:
                cut.append((handler, transport, False))
                continue
            if rate and self._too_slow(handler, waiting, now):
                cut.append((handler, transport, True))
        for handler, transport, slow in cut:
            stuck.pop(handler, None)
            pace.pop(handler, None)
            self._on_send_timeout(handler, slow)
            transport.abort()
            self._closed_send_timeout.inc()
        if self._open:
            self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)

    def _too_slow(self, handler: object, waiting: int, now: float) -> bool:
        """Whether the caller of `handler`, with `waiting` bytes unsent, has run out of send-rate credit."""
        handed = self._handed(handler)
        seen = self._pace.get(handler)
        credit = self._allowance
        if seen is not None:
            then, handed_then, waiting_then, credit = seen
            if (handed is None) != (handed_then is None) or (handed or 0) < (handed_then or 0):
                pass   # another answer on the connection: what left cannot be told, so measuring starts again
            elif handed is None and waiting > waiting_then:
                pass   # bytes of an answer written whole were added: likewise
            else:
                left = (handed or 0) - (handed_then or 0) - (waiting - waiting_then)
                credit = min(self._allowance, credit + left - self._min_rate * (now - then))
                if credit < 0:
                    return True
        self._pace[handler] = (now, handed, waiting, credit)
        return False

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp's signature
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await super().shutdown(timeout)


async def start_proxy(config: Config, policy: Policy | None = None, worker: int | None = None) -> RunningProxy:
    """Load the policy (unless given), start the gateway and both listeners.

    A policy that does not load does not stop the start: the proxy serves,
    refuses every request with 503 and reports not ready, so that a bad
    policy is visible (logs, /readyz) and never fails open.
    """
    seen: str | None = None
    if policy is None:
        # The same checks as a reload (load, then the policy tests); the fingerprint is taken
        # first, so that an edit made while the policy loads is reloaded on the first poll.
        seen = fingerprint(config.policies)
        outcome = load_checked(config.policies, config.reload.run_tests)
        policy = outcome.policy
        for problem in outcome.problems:
            log.error("policy not loaded: %s", problem)
        if policy is None:
            log.error("no valid policy: every request will be refused until one loads")
    gateway = Gateway(config, policy, worker)
    if policy is None:
        gateway.metrics.policy_failed()
    await gateway.start()
    limits = config.limits
    server = _LimitedServer(
        gateway.handle,
        max_connections=limits.max_connections,
        max_connections_per_peer=limits.max_connections_per_peer,
        send_idle_timeout=limits.send_idle_timeout_seconds,
        on_send_timeout=gateway.upstream.send_timed_out,
        min_send_rate=limits.min_send_rate_bytes_per_second,
        min_rate_window=limits.min_rate_window_seconds,
        handed=gateway.upstream.handed,
        metrics=gateway.metrics,
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
    await web.TCPSite(data, config.listen[0], config.listen[1], reuse_address=True, reuse_port=shared).start()
    admin = web.AppRunner(await _admin_app(gateway), handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await admin.setup()
    await web.TCPSite(
        admin, config.admin_listen[0], config.admin_listen[1], reuse_address=True, reuse_port=shared,
    ).start()
    reloader = PolicyReloader(
        config.policies, interval=config.reload.interval_seconds, run_tests=config.reload.run_tests,
        install=gateway.install_policy, failed=gateway.metrics.policy_failed,
    )
    await reloader.start(gateway.policy, seen)
    return RunningProxy(gateway, data, admin, reloader)


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


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(config: Config) -> None:
    """Serve with `config.workers` processes until SIGTERM or SIGINT.

    Extra workers are forked before any event loop exists; each serves the
    same ports (SO_REUSEPORT) with its own loop, upstream pool and audit
    chain, and writes its metrics to a shared directory (prometheus-client's
    multiprocess mode: ``$PROMETHEUS_MULTIPROC_DIR`` if set, else a temporary
    one) so that ``/metrics`` on any of them reports the sum. The first
    process stops the others when it is told to stop.
    """
    children: list[int] = []
    worker: int | None = 0 if config.workers > 1 else None
    made_metrics_dir: str | None = None
    if config.workers > 1:
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if metrics_dir:
            for stale in Path(metrics_dir).glob("*.db"):   # figures of an earlier run
                stale.unlink()
        else:
            metrics_dir = made_metrics_dir = tempfile.mkdtemp(prefix="bailiwick-metrics-")
        use_multiprocess_dir(metrics_dir)
    for number in range(1, config.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                install_uvloop()
                asyncio.run(serve_forever(config, number))
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    try:
        install_uvloop()
        asyncio.run(serve_forever(config, worker, tuple(children)))
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            os.waitpid(pid, 0)
            process_exited(pid)
        if made_metrics_dir is not None:
            shutil.rmtree(made_metrics_dir, ignore_errors=True)


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
    await stop.wait()
    log.info("stopping: no new connections; requests in flight have up to %gs to finish",
             config.shutdown_grace_seconds)
    await running.stop()
    log.info("stopped")


class ProxyThread:
    """The proxy on its own event loop in a background thread (for the demo and tests)."""

    def __init__(self, config: Config, policy: Policy | None = None) -> None:
        self._config = config
        self._policy = policy
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bailiwick", daemon=True)
        self.running: RunningProxy | None = None

    def start(self) -> ProxyThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_proxy(self._config, self._policy), self._loop)
        self.running = future.result(timeout=30)
        return self

    @property
    def url(self) -> str:
        assert self.running is not None
        host, port = self.running.data_address
        return f"http://{host}:{port}"

    @property
    def admin_url(self) -> str:
        assert self.running is not None
        host, port = self.running.admin_address
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self.running is not None:
            asyncio.run_coroutine_threadsafe(self.running.stop(), self._loop).result(timeout=30)
            self.running = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        with contextlib.suppress(RuntimeError):
            self._loop.close()

