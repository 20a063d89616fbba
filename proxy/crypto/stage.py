"""The encryption stage: between the decision and the storage server, for objects of encrypted datasets.

    decision -> plan (proxy.crypto.plan) -> key service -> seal / open -> storage server

`proxy.evaluate` decides and plans (pure); the gateway hands a request with a
plan here instead of forwarding it itself. This stage does the I/O the plan
needs, in order:

- a write (`Seal`): a fresh data key from the region's key service (one call
  per object, bound to the object), the envelope in the object's metadata,
  the proxy's signature (made last, over exactly what is forwarded), then
  the body sealed segment by segment as it streams. The digests the caller
  sent (Content-MD5, x-amz-checksum-*, a SHA-256 payload hash) are checked
  against the plaintext, and the last segment is held until they match, so
  the storage server never receives the whole of a body the proxy refused;
- a read (`Open`, `OpenHead`): the stored segments a Range needs; from the
  answer's head, the envelope, then the data key released by the key
  service (bound to the object as the policy sees it: another object's,
  dataset's or region's ciphertext does not open), then only verified
  plaintext. The first segment is verified before the answer's head is
  sent, so an object that fails at once gets a clean error; a failure later
  cuts the connection, never a clean short body.

- a copy (`Copy`): `proxy.crypto.copying`, a read and a write through here;
- a step of a multipart upload (`CreateUpload`, `SealPart`, `CopyPart`,
  `CompleteUpload`, `ListUploadParts`, `AbortUpload`): `proxy.crypto.multipart`,
  each part sealed as a PutObject is, under the upload's key.

Key-service calls run on a small thread pool (the clients block), at most 30 s
each, and each is counted in the metrics and recorded in the request's audit
line. The parts are modules of their own: `digests` (a write's plaintext
sealed and checked), `reading` (verified plaintext handed on), `parted` (a
multipart upload's object read), `copying` and `sources` (a copy's source
read), `bindings` (what an object's keys are bound to), `multipart` and
`partcopy` (a multipart upload's steps).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from aiohttp import web
from multidict import CIMultiDict

from proxy.api import UpstreamSigner
from proxy.audit import RecordedKeyRelease
from proxy.crypto.bindings import bind, of_this_key, same_key, segments_of, stored_as_said
from proxy.crypto.copying import Copier
from proxy.crypto.dechunk import without_framing
from proxy.crypto.digests import CHECKED_HERE, sealed, sealed_empty
from proxy.crypto.envelope import METADATA_HEADER, Envelope, PartedEnvelope, parse_any
from proxy.crypto.etags import stored_conditions
from proxy.crypto.keyservice import CachingKeyService, Justification, KeyService
from proxy.crypto.multipart import Multiparts
from proxy.crypto.parted import PartedObject, Version, carried_headers, open_parted
from proxy.crypto.plan import MULTIPART_PLANS, Copy, Open, OpenHead, Plan, Seal, SealPart, stored_range
from proxy.crypto.reading import (
    PlainReader,
    not_a_success,
    plain_headers,
    resolve,
    stored_extent,
    with_presented_etag,
)
from proxy.crypto.segments import (
    NONCE_PREFIX_SIZE,
    SALT_SIZE,
    Sealer,
    SegmentCipher,
    ciphertext_length,
)
from proxy.errors import (
    EncryptedObjectInvalid,
    KeyReleaseRefused,
    KeyServiceUnavailable,
    ObjectNotEncrypted,
    RangeNotSatisfiable,
)
from proxy.metrics import Metrics
from proxy.upstream import Answered, BodyStream, Transfer, Upstream

log = logging.getLogger("bailiwick.encryption")

T = TypeVar("T")
_KEY_THREADS = 4
# A read holds its storage connection while the key service answers: at most this share of the pool does at
# once (the rest wait for a place before taking a connection).
_KEY_WAIT_SHARE = 4
# How long a request waits for the key service (a hung HSM holds no request longer; Transit's own HTTP timeout,
# 5 s a request by default, is shorter).
KEY_CALL_TIMEOUT_SECONDS = 30.0
# Conditions naming an encrypted object's ETag as callers see it (`proxy.crypto.etags`): turned back into the
# stored ETag before they are forwarded.
_CONDITIONS = ("If-Match", "If-None-Match", "If-Range", "x-amz-copy-source-if-match",
               "x-amz-copy-source-if-none-match")


class KeyUse(Protocol):
    """Where the request's key-service call is recorded (`proxy.recording.Exchange`)."""

    key_release: RecordedKeyRelease | None


class EncryptionStage:
    """Seals and opens the objects of encrypted datasets, with the region's one key service."""

    def __init__(self, service: KeyService, metrics: Metrics, signer: UpstreamSigner | None,
                 upstream: Upstream) -> None:
        self.service = service
        self.metrics = metrics
        self.signer = signer
        self.upstream = upstream
        self._threads = ThreadPoolExecutor(max_workers=_KEY_THREADS, thread_name_prefix="bailiwick-keys")
        self._copier = Copier(self)
        self._multiparts = Multiparts(self)
        self._key_waits = asyncio.Semaphore(max(1, upstream.config.max_connections // _KEY_WAIT_SHARE))

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.service.close()

    async def forward(
        self, request: web.BaseRequest, plan: Plan, *, target: str, headers: CIMultiDict[str],
        body: Callable[[], Awaitable[BodyStream | None]], transfer: Transfer, peer: str, why: Justification,
        use: KeyUse,
    ) -> web.StreamResponse:
        """Carry out `plan` for `request`; `headers` are the forwarded ones, tagged and not yet signed."""
        for name in _CONDITIONS:
            values = headers.getall(name, [])
            if values:
                headers.popall(name)
                for value in values:
                    headers.add(name, stored_conditions(value))
        if isinstance(plan, Seal | SealPart) and plan.chunked is not None:
            without_framing(headers)   # the body is sent on de-chunked, sealed
        if isinstance(plan, Seal):
            return await self._seal(request, plan, target, headers, body, transfer, peer, why, use)
        if isinstance(plan, Copy):
            return await self._copier.copy(request, plan, target, headers, transfer, peer, why, use)
        if isinstance(plan, MULTIPART_PLANS):
            return await self._multiparts.forward(request, plan, target, headers, body, transfer, peer, why, use)
        original = headers.copy() if isinstance(plan, Open) and plan.wanted is not None and plan.obj.migrating \
            else None
        if isinstance(plan, Open) and plan.wanted is not None:
            headers["Range"] = stored_range(plan.wanted)
        carried = carried_headers(headers)   # for the sub-requests a multipart object's read may need
        self.sign(request.method, target, headers)

        async with _Place(self._key_waits) as place:
            async def answered(answer: Answered) -> web.StreamResponse:
                return await self._open(answer, plan, target, original, peer, why, use, carried, place)

            return await self.upstream.forward(request, headers, None, transfer, None, peer, target=target,
                                               answered=answered)

    def sign(self, method: str, target: str, headers: CIMultiDict[str]) -> None:
        if self.signer is not None:
            self.signer.sign(method, target, headers)

    async def call(self, operation: str, call: Callable[[], T], use: KeyUse,
                    result_of: Callable[[T], str] = lambda _: "released") -> T:
        """A key-service call on the key threads: timed, counted, and recorded for the audit line."""
        service = self.service
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self._threads, call),
                                            KEY_CALL_TIMEOUT_SECONDS)
        except TimeoutError:
            self._count(operation, "unavailable", use)
            raise KeyServiceUnavailable(f"the key service ({service.key_ref}) did not answer in "
                                        f"{KEY_CALL_TIMEOUT_SECONDS:g} s") from None
        except KeyReleaseRefused:
            self._count(operation, "refused", use)
            raise
        except KeyServiceUnavailable:
            self._count(operation, "unavailable", use)
            raise
        except Exception as exc:
            self._count(operation, "unavailable", use)
            log.exception("the key service (%s) failed", service.key_ref)
            raise KeyServiceUnavailable(f"the key service ({service.key_ref}) failed: {type(exc).__name__}") from exc
        finally:
            self.metrics.key_release_duration.labels(operation).observe(time.perf_counter() - started)
        self._count(operation, result_of(result), use)
        return result

    async def unwrap(self, wrapped: str, bound: bytes, why: Justification, use: KeyUse) -> bytes:
        service = self.service
        if not isinstance(service, CachingKeyService):
            return await self.call("unwrap", lambda: service.unwrap(wrapped, bound, why), use)
        # A key released from the proxy's cache is recorded as "cached": the key service was not asked
        # (and its own audit did not see it).
        key, _ = await self.call("unwrap", lambda: service.unwrap_cached(wrapped, bound, why), use,
                                  lambda found: "cached" if found[1] else "released")
        return key

    def _count(self, operation: str, result: str, use: KeyUse) -> None:
        self.metrics.key_releases.labels(operation, result).inc()
        if result in ("refused", "unavailable"):
            self.metrics.key_release_failures.labels(result).inc()
        recorded = operation
        previous = use.key_release
        if previous is not None and previous.operation != operation:
            # A copy: the source's key unwrapped, then the destination's generated; the line names both.
            recorded = f"{previous.operation}+{operation}"
        use.key_release = RecordedKeyRelease(self.service.kind, self.service.key_ref, recorded, result)

    # ---- writes ------------------------------------------------------------------------------------

    async def _seal(
        self, request: web.BaseRequest, plan: Seal, target: str, headers: CIMultiDict[str],
        body: Callable[[], Awaitable[BodyStream | None]], transfer: Transfer, peer: str, why: Justification,
        use: KeyUse,
    ) -> web.StreamResponse:
        service = self.service
        envelope = Envelope(plan.length, os.urandom(SALT_SIZE), os.urandom(NONCE_PREFIX_SIZE), service.kind,
                            service.key_ref, "")
        bound = bind(envelope, plan.obj)
        data_key = await self.call("generate", lambda: service.generate(bound, why), use)
        same_key(service, envelope)
        envelope = envelope._replace(wrapped=data_key.wrapped)
        for name in CHECKED_HERE:
            headers.popall(name, None)
        headers[METADATA_HEADER] = envelope.to_header()
        headers["Content-Length"] = str(ciphertext_length(plan.length))
        headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        self.sign(request.method, target, headers)
        sealer = Sealer(SegmentCipher(data_key.plaintext, envelope.salt, envelope.nonce_prefix,
                                      segments_of(envelope, plan.obj)), plan.length)
        stream = await body()
        data: bytes | BodyStream
        if stream is None:
            data = await sealed_empty(sealer, plan.digests, plan.chunked)
        else:
            stream.then(lambda pieces: sealed(pieces, sealer, plan.digests, plan.chunked))
            data = stream
        return await self.upstream.forward(request, headers, data, transfer, None, peer, target=target,
                                           answered=with_presented_etag)

    # ---- reads -------------------------------------------------------------------------------------

    async def _open(
        self, answer: Answered, plan: Open | OpenHead, target: str, original: CIMultiDict[str] | None, peer: str,
        why: Justification, use: KeyUse, carried: CIMultiDict[str], place: _Place | None = None,
    ) -> web.StreamResponse:
        head = answer.head
        if place is not None and (head.status not in (200, 206) or isinstance(plan, OpenHead)
                                  or METADATA_HEADER not in head.headers):
            place.release()   # this answer needs nothing of the key service
        wanted = plan.wanted if isinstance(plan, Open) else None
        if head.status == 416 and wanted is not None:
            if original is not None:
                # A plaintext object of a migrating dataset may hold the caller's range although not the
                # segments' one (it has no tags): it is asked again with the caller's own.
                return await self._asked_again(answer, target, original, peer)
            return await self._unsatisfiable(answer)
        if head.status == 304:
            return await with_presented_etag(answer)
        if head.status not in (200, 206):
            not_a_success(head.status)
            return await answer.pass_on()   # errors and 412: nothing of the object is in them
        if head.status == 200:
            # The whole object although a range was asked: an If-Range that did not hold, as for S3.
            wanted = None
        value = head.headers.get(METADATA_HEADER)
        if value is None:
            return await self._plaintext(answer, plan, target, original, peer)
        # A failure from here until the answer is handed on cuts the storage server's connection
        # (`Upstream.forward` discards the answer), and is a clean refusal to the caller.
        envelope = parse_any(value)
        if isinstance(envelope, PartedEnvelope):
            self.of_this_key(envelope)
            parted = PartedObject(Version.of(self, answer, target, carried, peer), envelope, plan.obj)
            return await open_parted(answer, plan, wanted, parted, why, use, place)
        stored = self.stored_length(answer, envelope)
        self.of_this_key(envelope)
        bound = bind(envelope, plan.obj)
        length = envelope.plaintext_length
        if isinstance(plan, OpenHead):
            headers = plain_headers(answer)
            headers["Content-Length"] = str(length)
            return await answer.stream(head.status, headers, None, bodiless=True)
        first_byte, last_byte = resolve(wanted, length)
        data_key = await self.unwrap(envelope.wrapped, bound, why, use)
        if place is not None:
            place.release()   # the key service has answered: the next read may wait for it
        cipher = SegmentCipher(data_key, envelope.salt, envelope.nonce_prefix, segments_of(envelope, plan.obj))
        reader = PlainReader.of_segments(answer, cipher, length, first_byte, last_byte, stored, self.metrics)
        # The first segment is verified before the answer's head is sent: a failure here is a clean error.
        first = await reader.next()
        headers = plain_headers(answer)
        headers["Content-Length"] = str(last_byte - first_byte + 1 if length else 0)
        status = 200
        if wanted is not None:
            status = 206
            headers["Content-Range"] = f"bytes {first_byte}-{last_byte}/{length}"
        return await answer.stream(status, headers, reader.pieces(first))

    def of_this_key(self, envelope: Envelope | PartedEnvelope, what: str = "the object") -> None:
        """Refuse an object whose data key another key wrapped, before the key service is asked."""
        try:
            of_this_key(self.service, envelope, what)
        except KeyReleaseRefused:
            # Never asked of the key service, so not a key-release failure: an object of another KEK (copied
            # from another region, or written before the key service changed) is counted here.
            self.metrics.encryption_failures.labels("foreign_key").inc()
            raise

    def stored_length(self, answer: Answered, envelope: Envelope) -> tuple[int, int]:
        """Where the answer's bytes start in the stored object, and the stored object's length (checked)."""
        start, total = stored_extent(answer)
        try:
            stored_as_said(total, envelope)
        except EncryptedObjectInvalid:
            self.metrics.encryption_failures.labels("invalid").inc()
            raise
        return start, ciphertext_length(envelope.plaintext_length)

    @staticmethod
    async def _unsatisfiable(answer: Answered) -> web.StreamResponse:
        """The storage server found the stored range outside the object: so is the plaintext one (a range
        that starts inside the stored object starts inside or just past the plaintext)."""
        raise RangeNotSatisfiable("The requested range is not satisfiable")

    async def _asked_again(self, answer: Answered, target: str, original: CIMultiDict[str],
                           peer: str) -> web.StreamResponse:
        """The caller's own Range on an object of a migrating dataset: passed on if the object is plaintext;
        an encrypted one's stored range was past its end, and so is the plaintext one."""
        answer.discard()
        self.sign(answer.request.method, target, original)

        async def plaintext_only(again: Answered) -> web.StreamResponse:
            if METADATA_HEADER in again.head.headers:
                raise RangeNotSatisfiable("The requested range is not satisfiable")
            return await again.pass_on()

        return await self.upstream.forward(answer.request, original, None, answer.transfer, None, peer,
                                           target=target, answered=plaintext_only)

    async def _plaintext(
        self, answer: Answered, plan: Open | OpenHead, target: str, original: CIMultiDict[str] | None, peer: str,
    ) -> web.StreamResponse:
        """An object stored without encryption: refused, unless its dataset is migrating."""
        if not plan.obj.migrating:
            self.metrics.encryption_failures.labels("plaintext").inc()
            raise ObjectNotEncrypted(
                f"the object is stored unencrypted in dataset {plan.obj.dataset!r}, which requires encryption, so "
                "it is not served; encrypt it in place with `bailiwick encrypt`",
                resource=f"s3://{plan.obj.bucket}/{plan.obj.key}")
        if original is None:
            return await answer.pass_on()
        # A Range was turned into whole segments; the plaintext object is asked again with the caller's own.
        answer.discard()
        self.sign(answer.request.method, target, original)
        return await self.upstream.forward(answer.request, original, None, answer.transfer, None, peer,
                                           target=target)




class _Place:
    """A place among the reads that may hold a storage connection while the key service answers."""

    __slots__ = ("_held", "_places")

    def __init__(self, places: asyncio.Semaphore) -> None:
        self._places = places
        self._held = False

    async def __aenter__(self) -> _Place:
        await self._places.acquire()
        self._held = True
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._places.release()


