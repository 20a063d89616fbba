"""The proxy: one handler that walks every request through the same steps.

    identity -> resources -> policy -> forward -> record

    step       where                                     awaited?
    identity   proxy.identity (the caller)               yes: JWKS may be fetched
    resources  proxy.evaluate -> StorageApi.parse        no (a body it needs is read first; a form
                                                         upload's fields before identity)
    policy     proxy.evaluate -> proxy.policy.engine     no
    forward    proxy.upstream, as proxy.evaluate chose   yes
    record     proxy.recording (audit, metrics, access)  no (the audit writer is a thread)

`Gateway.handle` is a thin aiohttp adapter: it reads the request head into
plain values (`RequestHead`), awaits what needs the network (the caller's
identity, a body the decision depends on, the storage server), and asks
`proxy.evaluate` (synchronous, no I/O) what to do in between. It is the
only place where a refusal (`RequestRefused`) becomes an HTTP response,
through the storage API's error renderer, and where an unexpected exception
becomes a 500 instead of a forwarded request (fail closed). The data port
is served by aiohttp's low-level `web.Server` (`proxy.limiter`), with no
router in between, so the handler sees the request-target exactly as sent.
A browser's form upload (S3's POST Object) names its key, and may sign its
caller's POST policy, in form fields before its file: those are read first
(`proxy.formupload`, bounded as every body read before a decision), then
identity and the decision take them, and the file streams through after.
A request with an ``Origin`` to a dataset with CORS rules is looked at by
`proxy.cors` before identity: a preflight is answered there from the policy
(it carries no identity and is never forwarded), and any other request is
told which ``Access-Control-*`` headers its answer gets, set by the response
hook of `proxy.cors.HookedRequest` whatever the answer turns out to be.
The module is longer than most (about 430 lines) because it is the one place
the steps are ordered; each step's work is in the modules named above.
The admin endpoints (`proxy.admin`) live on a separate listener and never
on the data port; starting and stopping is `proxy.lifecycle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from proxy.accesslog import AccessLog
from proxy.api import ParsedRequest, make_api
from proxy.audit import AuditLog
from proxy.bodies import PINNED_BYTES, BodyBudget, Hold, read_inspected
from proxy.config import Config
from proxy.cors import ORIGIN, cors_answer
from proxy.crypto.keyservice import Justification
from proxy.crypto.services import make_key_service
from proxy.crypto.stage import EncryptionStage
from proxy.errors import (
    AuditLogFull,
    ConfigError,
    InternalError,
    NotImplementedHere,
    NotReady,
    RequestRefused,
    StreamInterrupted,
    UpstreamFailure,
    UpstreamTimeout,
    UpstreamTlsRefused,
)
from proxy.evaluate import (
    Evaluator,
    Forward,
    ReadBody,
    Refuse,
    RequestHead,
    check_version,
    expects_continue,
    internal_failure,
)
from proxy.formupload import FormUpload, read_upload
from proxy.identity.resolver import Identified, IdentityResolver
from proxy.metrics import Metrics
from proxy.peercert import connection_certificate
from proxy.peers import peer_key
from proxy.policy.model import Policy
from proxy.recording import Exchange, Recorder, new_decision_id
from proxy.s3.destinations import LARGE_BODY
from proxy.tags import TagSigner
from proxy.upstream import BodyStream, Transfer, Upstream

if TYPE_CHECKING:
    from proxy.audit.ship import Shipper

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# /readyz asks the storage server at most this often, and waits this long for it.
_PROBE_EVERY_SECONDS = 1.0
_PROBE_TIMEOUT_SECONDS = 2.0
# A body this small is evaluated on the event loop: well under a millisecond, less than a thread hop
# (and the size up to which proxy.s3.delete never pauses a parse to let other threads run).
_PARSE_INLINE_BYTES = 16 * 1024


def _inspected_share(config: Config) -> int:
    """What one peer's bodies read before the decision may hold at once.

    Its share of the connections (`limits.max_connections_per_peer` of
    `limits.max_connections`, all of it for a sidecar that sets them equal)
    of the budget, and never less than the largest one such body can hold.
    """
    limits = config.limits
    share = limits.max_inspected_bytes * limits.max_connections_per_peer // limits.max_connections
    return max(share, config.s3.max_delete_body_bytes, LARGE_BODY, PINNED_BYTES)


def request_head(request: web.BaseRequest) -> RequestHead:
    """The plain values `proxy.evaluate` decides on, read from aiohttp's request (nothing is copied)."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport else None
    tls = transport.get_extra_info("ssl_object") if transport else None
    headers = request.headers
    version = request.version
    return RequestHead(
        request.method, request.raw_path, version, headers, str(peername[0]) if peername else "",
        request.body_exists, expects_continue(version, headers),
        None if tls is None else connection_certificate(tls),
    )


async def _nothing() -> None:
    return None


class Gateway:
    """The enforcing proxy for one upstream storage server."""

    def __init__(self, config: Config, policy: Policy | None, worker: int | None = None) -> None:
        self.config = config
        # Replaced whole on reload; each request reads it once. None: no valid policy was
        # ever loaded, and every request is refused (fail closed) while /readyz says so.
        self.policy = policy
        self.api = api = make_api(config)
        self.metrics = Metrics(api.name)
        self.identity = IdentityResolver(config.identity, on_jwks_fetch=self.metrics.jwks_fetch,
                                         storage_bearer=api.storage_bearer,
                                         virtual_bucket=api.signed_bucket(config.identity),
                                         on_geoip_lookup=self.metrics.geoip_lookup)
        if policy is not None:
            self.metrics.policy_loaded(policy)
        self.upstream = Upstream(config.upstream, self.metrics)
        audit = config.audit
        self.audit = AuditLog(audit.path, worker, max_bytes=audit.max_bytes, checkpoint_every=audit.checkpoint_every,
                              checkpoint_key=audit.checkpoint_key, reserve_bytes=audit.reserve_bytes,
                              on_reserve=self.metrics.audit_space, on_dropped=self.metrics.audit_line_dropped)
        # Uploads the audit chain to its bucket from a thread of its own (None: audit.ship is not set).
        ship_region = audit.ship and (audit.ship.region or config.region)
        self.shipper: Shipper | None = None
        if audit.ship is not None and ship_region and self.audit.enabled:
            # Imported only then: the shipper's AWS SDK (botocore) stays out of a proxy that does not ship.
            from proxy.audit.ship import Shipper

            self.shipper = Shipper(audit.ship, ship_region, self.audit, self.metrics)
        self.access_log = AccessLog(config.access_log)
        self.recorder = Recorder(self.audit, self.access_log, self.metrics, api, lambda: self.policy)
        self.stopping = False   # draining: /readyz says so
        self.cutting = False    # the drain's grace is over: requests still running are cut
        self.active = 0         # requests being handled now
        self._idle: asyncio.Event | None = None   # set when `active` drops to 0, while draining
        self._probed_at = -_PROBE_EVERY_SECONDS
        self._probe_result: str | None = None
        key = config.tag.signing_key
        signer = TagSigner(key, config.tag.ttl_seconds) if key else None
        self.evaluator = Evaluator(config, api, signer, api.upstream_signer(config))
        # Objects of encrypted datasets go through the region's key service (None: none configured).
        service = make_key_service(config, on_cache_lookup=self.metrics.key_cache_lookup)
        self.encryption = None if service is None else EncryptionStage(service, self.metrics,
                                                                       self.evaluator.resigner, self.upstream)
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

    def refusing_all(self) -> str | None:
        """Why every request is refused now, whatever it asks (None: not for such a reason), for /readyz: an
        orchestrator then sends the traffic to the replicas that serve."""
        if self.audit.failed:
            return "the audit log cannot be written"
        if self.audit.out_of_space:
            return "the audit log's disk is full (no space can be reserved for new lines)"
        return self.shipping_overdue()

    def shipping_overdue(self) -> str | None:
        """Why requests are refused for the audit log's shipping (None: it is not required, or keeps up): the
        one wording /readyz gives and each refused request carries."""
        if self.shipper is not None and self.shipper.overdue:
            return (f"the audit log has lines not shipped for over {self.shipper.config.max_lag_seconds:g}s "
                    "(audit.ship.required)")
        return None

    def install_policy(self, policy: Policy) -> None:
        """Swap in a new policy (one assignment: requests read it once when they start)."""
        self.policy = policy
        self.metrics.policy_loaded(policy)

    async def start(self) -> None:
        await self.identity.start()
        await self.upstream.start()
        if self.shipper is not None:
            try:   # a bucket in another region stops the start, named where the configuration set it
                await asyncio.to_thread(self.shipper.check_region)
            except ConfigError as err:
                raise self.config.origins.error("audit.ship.bucket", str(err)) from None
            self.shipper.start()

    async def close(self) -> None:
        self._parsers.shutdown(wait=False, cancel_futures=True)
        if self.encryption is not None:
            self.encryption.close()
        await self.upstream.close()
        await self.identity.close()
        self.audit.close()
        if self.shipper is not None:
            await asyncio.to_thread(self.shipper.finish)   # the tail, up to the closing checkpoint
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
        head = request_head(request)
        ex = Exchange(decision_id=new_decision_id(), head=head, started=time.perf_counter(), transfer=Transfer())
        peer = peer_key(head.peer)   # whose shares (inspected bodies, upstream pool) this request takes
        self.metrics.in_flight.inc()
        self.active += 1
        body_read = False
        # What this request holds of the inspected-body budget, until it ends (a form: until its fields are forwarded).
        held: Hold | None = None
        try:
            if self.audit.failed:
                self.metrics.audit_failed.set(1)
                raise InternalError("the audit log cannot be written, so no request is forwarded")
            # Room on disk for this request's line, claimed before anything else can refuse it: the writer takes
            # every line but an AuditLogFull refusal's as the end of an admitted request, which settles a claim.
            no_room = self.audit.admit()
            if no_room is not None:
                raise AuditLogFull(no_room)
            overdue = self.shipping_overdue()
            if overdue is not None:
                raise NotReady(f"{overdue}, so no request is forwarded")
            policy = self.policy
            if policy is None:
                raise NotReady("no valid policy is loaded, so no request is forwarded")
            check_version(head)
            if policy.cors and ORIGIN in head.headers:
                answered = cors_answer(self.api, policy, request, head.method, head.target, head.headers)
                if answered is not None:
                    ex.preflight = answered
                    self._finish(ex, answered.response.status)
                    return answered.response
            upload: FormUpload | None = None
            if head.method == "POST":
                form_request = self.api.form_upload(head.method, head.target, head.headers)
                if form_request is not None:
                    # A form upload: the fields before its file name the key and may sign the caller's policy.
                    ex.parsed = form_request
                    held = self.bodies.hold(peer)
                    upload = await self._read_form(request, head, form_request, held, policy, ex)
            identified = await self.identity.identify(head.headers, head.peer or None, head.target,   # identity
                                                      head.method, head.peer_certificate,
                                                      None if upload is None else upload.signed)
            ex.caller = identified.caller
            outcome = self.evaluator.evaluate(head, identified, policy, ex.decision_id,   # resources, policy
                                              None if upload is None else upload.form)
            if isinstance(outcome, ReadBody):
                ex.parsed = outcome.parsed
                limits = self.config.limits
                held = self.bodies.hold(peer)
                body = await read_inspected(
                    request, outcome.limit, held,
                    deadline=limits.body_read_timeout_seconds, idle=limits.body_idle_timeout_seconds,
                    before_reading=functools.partial(self._continue, request) if outcome.send_continue else _nothing,
                )
                body_read = True
                outcome = await self._evaluate_body(head, identified, policy, ex.decision_id, outcome, body)
            ex.parsed = outcome.parsed
            ex.decision = outcome.decision
            if outcome.decided_in is not None:
                self.metrics.decision_duration.observe(outcome.decided_in)
            if isinstance(outcome, Refuse):
                raise outcome.error
            signed_chunks = identified.body is not None and identified.body.chunks is not None
            if held is None and outcome.stream_body and signed_chunks:
                # A chunk held for its signature takes its bytes from the budget of bodies the proxy holds.
                held = self.bodies.hold(peer)
            if outcome.seal is not None:
                if upload is not None:   # refused by the encryption plan; its stage would read the body anew
                    raise InternalError("a form upload reached the encryption stage; it was not forwarded")
                response = await self._sealed(request, outcome, identified, policy, peer, ex, held)
            elif outcome.pager is not None:
                response = await outcome.pager.answer(self.upstream, request, ex.transfer, peer)
            else:
                sent = (await self._body(request, outcome, identified, held) if upload is None
                        else upload.body(identified.form_limits))
                response = await self.upstream.forward(request, outcome.headers, sent,              # forward
                                                       ex.transfer, outcome.rewrite, peer=peer,
                                                       target=outcome.target)
        except RequestRefused as err:
            if isinstance(err, UpstreamFailure):
                self.metrics.upstream_error("timeout" if isinstance(err, UpstreamTimeout)
                                            else "tls" if isinstance(err, UpstreamTlsRefused) else "failure")
            self._finish(ex, err.status, refusal=err)                                       # record
            return self._refusal(err, ex.decision_id, force_close=not body_read)
        except StreamInterrupted as err:
            if ex.transfer.send_timed_out:
                self._finish(ex, 0, refusal=self._send_timeout(ex.transfer))
            else:
                self.metrics.upstream_error("interrupted")
                self._finish(ex, 0, refusal=RequestRefused(f"stream interrupted: {err}", code="StreamInterrupted"))
            return cast(web.StreamResponse, err.response)
        except asyncio.CancelledError:
            if ex.transfer.send_timed_out:
                cut = self._send_timeout(ex.transfer)
            elif self.cutting:
                cut = RequestRefused("the proxy shut down before the request finished", code="ShutdownCut")
            else:
                cut = RequestRefused("the caller went away", code="ClientClosed")
            self._finish(ex, 0, refusal=cut)
            raise
        except Exception:
            internal = internal_failure(ex.decision_id)
            self._finish(ex, internal.status, refusal=internal)
            return self._refusal(internal, ex.decision_id, force_close=True)
        finally:
            if held is not None:
                held.release()
        self._finish(ex, response.status)
        return response

    async def _body(
        self, request: web.BaseRequest, outcome: Forward, identified: Identified, held: Hold | None,
    ) -> Any:
        """What is forwarded as the body: the one read for the decision, or the caller's as it streams."""
        if not outcome.stream_body:
            return outcome.body
        if outcome.send_continue:
            await self._continue(request)
        # A signed body is checked as it streams; its last piece waits for the whole check.
        check = None
        if identified.body is not None:
            check = functools.partial(identified.body.stream, budget=held)
        limits = self.config.limits
        return BodyStream(request, limits.body_idle_timeout_seconds, check,
                          min_rate=limits.min_receive_rate_bytes_per_second, window=limits.min_rate_window_seconds)

    async def _read_form(
        self, request: web.BaseRequest, head: RequestHead, parsed: ParsedRequest, held: Hold, policy: Policy,
        ex: Exchange,
    ) -> FormUpload:
        """A form upload's fields (`proxy.formupload.read_upload`); the audit line names the object it asks for."""
        if self.evaluator.resigner is not None:
            raise NotImplementedHere("form uploads are not accepted in re-sign mode: their signature is in the form, "
                                     "and the proxy does not rewrite a body it forwards")
        upload, ex.parsed = await read_upload(
            request, parsed, held, self.api, policy, self.config.limits,
            functools.partial(self._continue, request) if head.expects_continue else _nothing)
        return upload

    async def _sealed(
        self, request: web.BaseRequest, outcome: Forward, identified: Identified, policy: Policy, peer: str,
        ex: Exchange, held: Hold | None,
    ) -> web.StreamResponse:
        """An object of an encrypted dataset: the encryption stage seals or opens it (`proxy.crypto.stage`)."""
        stage = self.encryption
        if stage is None or outcome.seal is None:
            raise InternalError("an object of an encrypted dataset reached a proxy without a key service")
        why = Justification(ex.decision_id, identified.caller.jurisdiction, outcome.seal.obj.dataset, policy.version)

        async def body() -> BodyStream | None:
            made = await self._body(request, outcome, identified, held)
            return made if isinstance(made, BodyStream) else None

        return await stage.forward(request, outcome.seal, target=outcome.target, headers=outcome.headers,
                                   body=body, transfer=ex.transfer, peer=peer, why=why, use=ex)

    async def _evaluate_body(
        self, head: RequestHead, identified: Identified, policy: Policy, decision_id: str,
        pending: ReadBody, body: bytearray,
    ) -> Forward | Refuse:
        """`Evaluator.evaluate_body`, off the event loop unless the body is small."""
        evaluate = functools.partial(self.evaluator.evaluate_body, head, identified, policy, decision_id, pending, body)
        if len(body) <= _PARSE_INLINE_BYTES:
            return evaluate()
        return await asyncio.get_running_loop().run_in_executor(self._parsers, evaluate)

    @staticmethod
    async def _continue(request: web.BaseRequest) -> None:
        # When: `proxy.evaluate` says (only once the request may go on).
        await request.writer.write(_CONTINUE)

    def _send_timeout(self, transfer: Transfer) -> RequestRefused:
        limits = self.config.limits
        if transfer.send_too_slow:
            return RequestRefused(
                f"stream interrupted: the caller read the answer slower than the minimum rate of "
                f"{limits.min_send_rate_bytes_per_second} bytes/s, so the exchange was cut", code="SendTimeout")
        seconds = limits.send_idle_timeout_seconds
        return RequestRefused(f"stream interrupted: the caller read nothing of the answer for {seconds:g}s, so the "
                              "exchange was cut", code="SendTimeout")

    def _refusal(self, err: RequestRefused, decision_id: str, *, force_close: bool) -> web.Response:
        status, headers, body = self.api.render_error(err, decision_id)
        response = web.Response(status=status, headers=headers, body=body)
        if force_close:
            # The caller's body was not read; closing is cheaper and safer than draining it.
            response.force_close()
        return response

    def _finish(self, ex: Exchange, status: int, refusal: RequestRefused | None = None) -> None:
        """The end of every request, whatever happened: the drain's count, then its record."""
        self.metrics.in_flight.dec()
        self.active -= 1
        if not self.active and self._idle is not None:
            self._idle.set()
        self.recorder.record(ex, status, refusal)
