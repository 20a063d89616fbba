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

Key-service calls run on a small thread pool (the clients block) and each is
counted in the metrics and recorded in the request's audit line.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar
from urllib.parse import quote
from xml.sax.saxutils import unescape

from aiohttp import web
from multidict import CIMultiDict

from proxy.api import UpstreamSigner
from proxy.audit import RecordedKeyRelease
from proxy.crypto.envelope import METADATA_HEADER, Envelope, binding, parse_header, segment_info
from proxy.crypto.etags import presented, stored_conditions
from proxy.crypto.keyservice import CachingKeyService, Justification, KeyService
from proxy.crypto.plan import Copy, ObjectRef, Open, OpenHead, Plan, Seal, Wanted, stored_range
from proxy.crypto.segments import (
    NONCE_PREFIX_SIZE,
    SALT_SIZE,
    Opener,
    Sealer,
    SegmentCipher,
    ciphertext_length,
    segment_count,
    span,
)
from proxy.errors import (
    BadRequest,
    EncryptedObjectInvalid,
    KeyReleaseRefused,
    KeyServiceUnavailable,
    NotImplementedHere,
    ObjectNotEncrypted,
    PreconditionFailed,
    RangeNotSatisfiable,
    RequestRefused,
    UpstreamFailure,
)
from proxy.metrics import Metrics
from proxy.storage.xmltext import xml_text
from proxy.tags import response_headers
from proxy.upstream import Answered, BodyStream, Transfer, Upstream

log = logging.getLogger("bailiwick.encryption")

T = TypeVar("T")
_CONTENT_RANGE = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19})")
# Headers that describe the stored bytes, not the plaintext: never passed on for an encrypted object.
_STORED_ONLY = ("Content-Length", "Content-Range", "Content-MD5", "x-amz-checksum-crc32", "x-amz-checksum-crc32c",
                "x-amz-checksum-crc64nvme", "x-amz-checksum-sha1", "x-amz-checksum-sha256", "x-amz-checksum-type")
# Request headers about the plaintext's integrity: checked here, never forwarded (the server sees ciphertext).
_CHECKED_HERE = ("Content-MD5", "x-amz-checksum-crc32", "x-amz-checksum-sha1", "x-amz-checksum-sha256",
                 "x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm", "x-amz-trailer", METADATA_HEADER)
_KEY_THREADS = 4
# A read holds its storage connection while the key service answers: at most this share of the pool does at
# once (the rest wait for a place before taking a connection).
_KEY_WAIT_SHARE = 4
# How long a request waits for the key service (a hung HSM holds no request longer; Transit's own HTTP timeout,
# 5 s a request by default, is shorter).
KEY_CALL_TIMEOUT_SECONDS = 30.0
_STORED_CHECKSUMS = tuple(name for name in _STORED_ONLY if name.startswith("x-amz-checksum"))
# Conditions naming an encrypted object's ETag as callers see it (`proxy.crypto.etags`): turned back into the
# stored ETag before they are forwarded.
_CONDITIONS = ("If-Match", "If-None-Match", "If-Range", "x-amz-copy-source-if-match",
               "x-amz-copy-source-if-none-match")


class KeyUse(Protocol):
    """Where the request's key-service call is recorded (`proxy.recording.Exchange`)."""

    key_release: RecordedKeyRelease | None


class _Crc32:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


def _hasher(algorithm: str) -> Any:
    if algorithm == "crc32":
        return _Crc32()
    return hashlib.new({"payload-sha256": "sha256"}.get(algorithm, algorithm))


_MISMATCH = {
    "md5": ("BadDigest", "The Content-MD5 you specified did not match what was received"),
    "payload-sha256": ("XAmzContentSHA256Mismatch", "The x-amz-content-sha256 you specified did not match what "
                                                    "was received"),
}


async def _sealed(pieces: AsyncIterator[bytes], sealer: Sealer, digests: Mapping[str, bytes]) -> AsyncIterator[bytes]:
    """The caller's plaintext pieces as sealed segments; the last one only once every digest matches."""
    hashers = {algorithm: _hasher(algorithm) for algorithm in digests}
    try:
        async for piece in pieces:
            for hasher in hashers.values():
                hasher.update(piece)
            for sealed in sealer.feed_segments(piece):
                yield sealed
        tail = sealer.finish()
    except ValueError as exc:
        raise BadRequest(f"the request body does not match its Content-Length: {exc}", code="IncompleteBody") from None
    for algorithm, hasher in hashers.items():
        if not hmac.compare_digest(hasher.digest(), digests[algorithm]):
            code, message = _MISMATCH.get(algorithm, ("BadDigest", f"The {algorithm.upper()} checksum you specified "
                                                                   "did not match what was received"))
            raise BadRequest(message + "; nothing was stored", code=code)
    yield tail


class EncryptionStage:
    """Seals and opens the objects of encrypted datasets, with the region's one key service."""

    def __init__(self, service: KeyService, metrics: Metrics, signer: UpstreamSigner | None,
                 upstream: Upstream) -> None:
        self.service = service
        self.metrics = metrics
        self.signer = signer
        self.upstream = upstream
        self._threads = ThreadPoolExecutor(max_workers=_KEY_THREADS, thread_name_prefix="bailiwick-keys")
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
        if isinstance(plan, Seal):
            return await self._seal(request, plan, target, headers, body, transfer, peer, why, use)
        if isinstance(plan, Copy):
            return await self._copy(request, plan, target, headers, transfer, peer, why, use)
        original = headers.copy() if isinstance(plan, Open) and plan.wanted is not None and plan.obj.migrating \
            else None
        if isinstance(plan, Open) and plan.wanted is not None:
            headers["Range"] = stored_range(plan.wanted)
        self._sign(request.method, target, headers)

        async with _Place(self._key_waits) as place:
            async def answered(answer: Answered) -> web.StreamResponse:
                return await self._open(answer, plan, target, original, peer, why, use, place)

            return await self.upstream.forward(request, headers, None, transfer, None, peer, target=target,
                                               answered=answered)

    def _sign(self, method: str, target: str, headers: CIMultiDict[str]) -> None:
        if self.signer is not None:
            self.signer.sign(method, target, headers)

    async def _call(self, operation: str, call: Callable[[], T], use: KeyUse,
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

    async def _unwrap(self, wrapped: str, bound: bytes, why: Justification, use: KeyUse) -> bytes:
        service = self.service
        if not isinstance(service, CachingKeyService):
            return await self._call("unwrap", lambda: service.unwrap(wrapped, bound, why), use)
        # A key released from the proxy's cache is recorded as "cached": the key service was not asked
        # (and its own audit did not see it).
        key, _ = await self._call("unwrap", lambda: service.unwrap_cached(wrapped, bound, why), use,
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
        bound = _binding(envelope, plan.obj)
        data_key = await self._call("generate", lambda: service.generate(bound, why), use)
        _same_key(service, envelope)
        envelope = envelope._replace(wrapped=data_key.wrapped)
        for name in _CHECKED_HERE:
            headers.popall(name, None)
        headers[METADATA_HEADER] = envelope.to_header()
        headers["Content-Length"] = str(ciphertext_length(plan.length))
        headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        self._sign(request.method, target, headers)
        sealer = Sealer(SegmentCipher(data_key.plaintext, envelope.salt, envelope.nonce_prefix,
                                      _segment_info(envelope, plan.obj)), plan.length)
        stream = await body()
        data: bytes | BodyStream
        if stream is None:
            # No body (Content-Length: 0): one empty segment, checked against its digests like any other.
            data = b"".join([piece async for piece in _sealed(_nothing(), sealer, plan.digests)])
        else:
            stream.then(lambda pieces: _sealed(pieces, sealer, plan.digests))
            data = stream
        return await self.upstream.forward(request, headers, data, transfer, None, peer, target=target,
                                           answered=_with_presented_etag)

    # ---- copies ------------------------------------------------------------------------------------

    async def _copy(
        self, request: web.BaseRequest, plan: Copy, target: str, headers: CIMultiDict[str], transfer: Transfer,
        peer: str, why: Justification, use: KeyUse,
    ) -> web.StreamResponse:
        """CopyObject as the proxy does it: read the source (opened if encrypted), write the destination
        (sealed if its dataset is encrypted), answer as S3 answers a copy."""
        host = headers.get("Host", "")
        read: CIMultiDict[str] = CIMultiDict(Host=host)
        for name, value in headers.items():
            lower = name.lower()
            if lower in _COPY_CONDITIONS:
                read.add(_COPY_CONDITIONS[lower], value)
            elif lower.startswith("x-bailiwick-"):
                read.add(name, value)   # the proxy's own tags: the storage side sees who read
        read["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        self._sign("GET", plan.source_target, read)

        async def source_read(answer: Answered) -> web.StreamResponse:
            return await self._copy_from(answer, request, plan, target, headers, transfer, peer, why, use)

        return await self.upstream.forward(request, read, None, transfer, None, peer, target=plan.source_target,
                                           answered=source_read, method="GET")

    async def _copy_from(
        self, source: Answered, request: web.BaseRequest, plan: Copy, target: str, headers: CIMultiDict[str],
        transfer: Transfer, peer: str, why: Justification, use: KeyUse,
    ) -> web.StreamResponse:
        head = source.head
        if head.status == 304:
            raise PreconditionFailed("At least one of the pre-conditions you specified did not hold")
        if head.status != 200:
            _not_a_success(head.status)
            return await source.pass_on()   # NoSuchKey, 412, ...: as S3 answers a copy whose source fails
        value = head.headers.get(METADATA_HEADER)
        plain: AsyncIterator[bytes]
        if value is not None:
            if not plan.source_encrypted:
                raise NotImplementedHere("the copy's source carries encryption metadata but is in no encrypted "
                                         "dataset; it is not copied")
            envelope = parse_header(value)
            stored = self._stored_length(source, envelope)
            if envelope.key_ref != self.service.key_ref:
                self.metrics.encryption_failures.labels("foreign_key").inc()
                raise KeyReleaseRefused(f"the copy's source was encrypted under {envelope.key_ref}, not under this "
                                        f"region's key ({self.service.key_ref})")
            bound = _binding(envelope, plan.source)
            # Released for the source's dataset (the request's justification names the destination's).
            data_key = await self._unwrap(envelope.wrapped, bound, why._replace(dataset=plan.source.dataset), use)
            length = envelope.plaintext_length
            cipher = SegmentCipher(data_key, envelope.salt, envelope.nonce_prefix,
                                   _segment_info(envelope, plan.source))
            reader = _PlainReader(source, cipher, length, 0, max(length - 1, 0), stored, self.metrics)
            plain = reader.pieces(await reader.next())
        else:
            if plan.source_encrypted and not plan.source.migrating:
                self.metrics.encryption_failures.labels("plaintext").inc()
                raise ObjectNotEncrypted(
                    f"the copy's source is stored unencrypted in dataset {plan.source.dataset!r}, which requires "
                    "encryption, so it is not copied", resource=f"s3://{plan.source.bucket}/{plan.source.key}")
            if head.length is None:
                raise EncryptedObjectInvalid("the storage server did not say how long the copy's source is")
            length = head.length
            plain = _raw(source)
        write = _copy_headers(headers, head.headers, plan)
        if plan.replace_tags is False and int(head.headers.get("x-amz-tagging-count", "0") or 0):
            write["x-amz-tagging"] = await self._source_tags(request, plan, headers.get("Host", ""), transfer, peer)
        body = _Piped(plain)
        if plan.dest_encrypted:
            service = self.service
            envelope = Envelope(length, os.urandom(SALT_SIZE), os.urandom(NONCE_PREFIX_SIZE), service.kind,
                                service.key_ref, "")
            dest_bound = _binding(envelope, plan.obj)
            made = await self._call("generate", lambda: service.generate(dest_bound, why), use)
            _same_key(service, envelope)
            envelope = envelope._replace(wrapped=made.wrapped)
            write[METADATA_HEADER] = envelope.to_header()
            write["Content-Length"] = str(ciphertext_length(length))
            sealer = Sealer(SegmentCipher(made.plaintext, envelope.salt, envelope.nonce_prefix,
                                          _segment_info(envelope, plan.obj)), length)
            body = _Piped(_sealed(plain, sealer, {}))
        else:
            write["Content-Length"] = str(length)
        self._sign("PUT", target, write)
        copied_version = head.headers.get("x-amz-version-id")

        async def written(answer: Answered) -> web.StreamResponse:
            return await _copy_result(answer, copied_version, presented if plan.dest_encrypted else str)

        return await self.upstream.forward(request, write, body, transfer, None, peer, target=target,
                                           answered=written, method="PUT")

    async def _source_tags(self, request: web.BaseRequest, plan: Copy, host: str, transfer: Transfer,
                           peer: str) -> str:
        """The source's tags, for a copy that keeps them (S3's default), as an x-amz-tagging value."""
        path, _, query = plan.source_target.partition("?")
        tagging = f"{path}?tagging" + (f"&{query}" if query else "")
        ask: CIMultiDict[str] = CIMultiDict(Host=host)
        ask["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        self._sign("GET", tagging, ask)

        found: list[str] = []

        async def tags(answer: Answered) -> web.StreamResponse:
            if answer.head.status != 200:
                raise UpstreamFailure(f"the copy's source tags could not be read (the storage server answered "
                                      f"{answer.head.status})")
            found.append(_tag_set(await answer.read_whole(_MAX_TAGGING_BYTES)))
            return web.Response()   # read by the proxy: never sent

        await self.upstream.forward(request, ask, None, Transfer(), None, peer, target=tagging, answered=tags,
                                    method="GET")
        return found[0]

    # ---- reads -------------------------------------------------------------------------------------

    async def _open(
        self, answer: Answered, plan: Open | OpenHead, target: str, original: CIMultiDict[str] | None, peer: str,
        why: Justification, use: KeyUse, place: _Place | None = None,
    ) -> web.StreamResponse:
        head = answer.head
        if place is not None and (head.status not in (200, 206) or isinstance(plan, OpenHead)
                                  or METADATA_HEADER not in head.headers):
            place.release()   # this answer needs nothing of the key service
        wanted = plan.wanted if isinstance(plan, Open) else None
        if head.status == 416 and wanted is not None:
            return await self._unsatisfiable(answer)
        if head.status == 304:
            return await _with_presented_etag(answer)
        if head.status not in (200, 206):
            _not_a_success(head.status)
            return await answer.pass_on()   # errors and 412: nothing of the object is in them
        if head.status == 200:
            # The whole object although a range was asked: an If-Range that did not hold, as for S3.
            wanted = None
        value = head.headers.get(METADATA_HEADER)
        if value is None:
            return await self._plaintext(answer, plan, target, original, peer)
        # A failure from here until the answer is handed on cuts the storage server's connection
        # (`Upstream.forward` discards the answer), and is a clean refusal to the caller.
        envelope = parse_header(value)
        stored = self._stored_length(answer, envelope)
        if envelope.key_ref != self.service.key_ref:
            # Never asked of the key service, so not a key-release failure: an object of another KEK (copied
            # from another region, or written before the key service changed) is counted here.
            self.metrics.encryption_failures.labels("foreign_key").inc()
            raise KeyReleaseRefused(
                f"the object was encrypted under {envelope.key_ref}, not under this region's key "
                f"({self.service.key_ref}): only a proxy of the region that holds that key can open it")
        bound = _binding(envelope, plan.obj)
        length = envelope.plaintext_length
        if isinstance(plan, OpenHead):
            headers = _plain_headers(answer)
            headers["Content-Length"] = str(length)
            return await answer.stream(head.status, headers, None, bodiless=True)
        first_byte, last_byte = _resolve(wanted, length)
        data_key = await self._unwrap(envelope.wrapped, bound, why, use)
        if place is not None:
            place.release()   # the key service has answered: the next read may wait for it
        cipher = SegmentCipher(data_key, envelope.salt, envelope.nonce_prefix, _segment_info(envelope, plan.obj))
        reader = _PlainReader(answer, cipher, length, first_byte, last_byte, stored, self.metrics)
        # The first segment is verified before the answer's head is sent: a failure here is a clean error.
        first = await reader.next()
        headers = _plain_headers(answer)
        headers["Content-Length"] = str(last_byte - first_byte + 1 if length else 0)
        status = 200
        if wanted is not None:
            status = 206
            headers["Content-Range"] = f"bytes {first_byte}-{last_byte}/{length}"
        return await answer.stream(status, headers, reader.pieces(first))

    def _stored_length(self, answer: Answered, envelope: Envelope) -> tuple[int, int]:
        """Where the answer's bytes start in the stored object, and the stored object's length (checked)."""
        head = answer.head
        if head.status == 206:
            match = _CONTENT_RANGE.fullmatch(head.headers.get("Content-Range", "").strip())
            if match is None:
                raise EncryptedObjectInvalid("the storage server's partial answer has no readable Content-Range")
            start, total = int(match[1]), int(match[3])
        else:
            start, total = 0, head.length if head.length is not None else -1
        if total != ciphertext_length(envelope.plaintext_length):
            self.metrics.encryption_failures.labels("invalid").inc()
            raise EncryptedObjectInvalid(
                f"the stored object is {total} bytes, not the {ciphertext_length(envelope.plaintext_length)} its "
                "encryption metadata stands for: it was truncated or replaced; nothing of it was sent")
        return start, total

    @staticmethod
    async def _unsatisfiable(answer: Answered) -> web.StreamResponse:
        """The storage server found the stored range outside the object: so is the plaintext one (a range
        that starts inside the stored object starts inside or just past the plaintext)."""
        raise RangeNotSatisfiable("The requested range is not satisfiable")

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
        self._sign(answer.request.method, target, original)
        return await self.upstream.forward(answer.request, original, None, answer.transfer, None, peer,
                                           target=target)


_COPY_CONDITIONS = {
    "x-amz-copy-source-if-match": "If-Match",
    "x-amz-copy-source-if-none-match": "If-None-Match",
    "x-amz-copy-source-if-modified-since": "If-Modified-Since",
    "x-amz-copy-source-if-unmodified-since": "If-Unmodified-Since",
}
# What a copy carries over from its source unless x-amz-metadata-directive is REPLACE (as S3 does).
_COPIED = ("Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language", "Cache-Control",
           "Expires", "x-amz-website-redirect-location")
_MAX_TAGGING_BYTES = 64 * 1024
_TAG = re.compile(rb"<Tag>\s*<Key>([^<]*)</Key>\s*<Value>([^<]*)</Value>\s*</Tag>")


def _tag_set(body: bytes) -> str:
    pairs = [(unescape(k.decode()), unescape(v.decode())) for k, v in _TAG.findall(body)]
    if body.count(b"<Tag>") != len(pairs):
        raise UpstreamFailure("the copy's source tags could not be read unambiguously")
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def _copy_headers(request: CIMultiDict[str], source: Mapping[str, str], plan: Copy) -> CIMultiDict[str]:
    """The destination's write: the copy request's headers without the copy's own, and the source's
    metadata unless the caller replaces it."""
    write: CIMultiDict[str] = CIMultiDict()
    for name, value in request.items():
        lower = name.lower()
        if lower.startswith("x-amz-copy-source") or lower in ("x-amz-metadata-directive", "x-amz-tagging-directive",
                                                              "content-length", "x-amz-content-sha256",
                                                              "content-md5") or lower == METADATA_HEADER:
            continue
        if not plan.replace_metadata and (lower.startswith("x-amz-meta-") or lower in _COPIED_LOWER):
            continue
        if not plan.replace_tags and lower == "x-amz-tagging":
            continue
        write.add(name, value)
    if not plan.replace_metadata:
        for name, value in source.items():
            lower = name.lower()
            if (lower.startswith("x-amz-meta-") and lower != METADATA_HEADER) or lower in _COPIED_LOWER:
                write.add(name, value)
    write["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    return write


_COPIED_LOWER = frozenset(name.lower() for name in _COPIED)


async def _copy_result(answer: Answered, copied_version: str | None,
                       etag_of: Callable[[str], str]) -> web.StreamResponse:
    """S3's answer to a copy, made from the destination's write (its errors passed on as they are)."""
    head = answer.head
    if head.status != 200:
        return await answer.pass_on()
    etag = etag_of(head.headers.get("ETag", ""))
    await answer.read_whole(_MAX_TAGGING_BYTES)   # a write's answer has no body to speak of
    modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<CopyObjectResult xmlns="http://s3.amazonaws.com/doc/'
            f'2006-03-01/"><LastModified>{modified}</LastModified><ETag>{xml_text(etag)}</ETag></CopyObjectResult>'
            ).encode()
    headers: CIMultiDict[str] = CIMultiDict()
    for name in ("x-amz-version-id", "x-amz-server-side-encryption", "x-amz-request-id", "x-amz-id-2"):
        value = head.headers.get(name)
        if value is not None:
            headers[name] = value
    if copied_version is not None:
        headers["x-amz-copy-source-version-id"] = copied_version
    headers["Content-Type"] = "application/xml"
    return web.Response(status=200, headers=headers, body=body)


async def _raw(answer: Answered) -> AsyncIterator[bytes]:
    """A plaintext source's body as it arrives."""
    while chunk := await answer.conn.read_chunk():
        yield chunk


class _Piped:
    """A body the proxy makes (a copy's), forwarded as it streams (`proxy.upstream.body.StreamedBody`)."""

    def __init__(self, pieces: AsyncIterator[bytes]) -> None:
        self._pieces = pieces
        self.received = 0

    async def _counted(self) -> AsyncIterator[bytes]:
        async for piece in self._pieces:
            self.received += len(piece)
            yield piece

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._counted()

    @staticmethod
    def refusal() -> RequestRefused | None:
        return None


def _same_key(service: KeyService, envelope: Envelope) -> None:
    """The key that wrapped the data key is the one the envelope names (a key file can change in between)."""
    if service.key_ref != envelope.key_ref:
        raise KeyServiceUnavailable(f"the region's key changed ({envelope.key_ref} -> {service.key_ref}) while "
                                    "the object was written; nothing was stored, send it again")


def _not_a_success(status: int) -> None:
    """Refuse a success other than 200/206 to a read of an encrypted object: its body would go to the caller
    unverified (errors and redirects are passed on: nothing of the object is in them)."""
    if status < 300:
        raise EncryptedObjectInvalid(f"the storage server answered {status} to a read of an encrypted object; "
                                     "nothing of its answer was sent")


def _binding(envelope: Envelope, obj: ObjectRef) -> bytes:
    return binding(envelope, dataset=obj.dataset, region=obj.region, bucket=obj.bucket, key=obj.key)


def _segment_info(envelope: Envelope, obj: ObjectRef) -> bytes:
    return segment_info(envelope, dataset=obj.dataset, region=obj.region, bucket=obj.bucket, key=obj.key)


def _plain_headers(answer: Answered) -> CIMultiDict[str]:
    headers = response_headers(answer.head.headers)
    for name in _STORED_ONLY:
        headers.popall(name, None)
    if "ETag" in headers:
        headers["ETag"] = presented(headers["ETag"])
    return headers


async def _with_presented_etag(answer: Answered) -> web.StreamResponse:
    """The storage server's answer as it is, but for what it says of the ciphertext: its ETag (presented as
    not an MD5) and its checksums (left out)."""
    headers = response_headers(answer.head.headers)
    if "ETag" not in headers and not any(name in headers for name in _STORED_CHECKSUMS):
        return await answer.pass_on()
    for name in _STORED_CHECKSUMS:
        headers.popall(name, None)
    if "ETag" in headers:
        headers["ETag"] = presented(headers["ETag"])
    bodiless = answer.request.method == "HEAD" or answer.head.status in (204, 304)
    return await answer.stream(answer.head.status, headers, None, bodiless=bodiless)


def _resolve(wanted: Wanted | None, length: int) -> tuple[int, int]:
    """The plaintext bytes (first, last inclusive) a Range asks of an object of `length` bytes."""
    if wanted is None:
        return 0, max(length - 1, 0)
    if wanted.suffix is not None:
        first, last = max(length - wanted.suffix, 0), length - 1
    else:
        first = wanted.start
        last = length - 1 if wanted.end is None else min(wanted.end, length - 1)
    if length == 0 or first >= length:
        raise RangeNotSatisfiable("The requested range is not satisfiable")
    return first, last


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


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


class _PlainReader:
    """Reads the stored segments of a range from the answer and hands on verified plaintext of the range."""

    def __init__(self, answer: Answered, cipher: SegmentCipher, length: int, first_byte: int, last_byte: int,
                 stored: tuple[int, int], metrics: Metrics) -> None:
        self._answer = answer
        self._metrics = metrics
        count = segment_count(length)
        if length:
            where = span(first_byte, last_byte, length)
            first, last, stored_start, stored_end, skip = where
        else:
            first, last, stored_start, stored_end, skip = 0, 0, 0, ciphertext_length(0) - 1, 0
        self._opener = Opener(cipher, count, first, last)
        answer_start = stored[0]
        if answer_start > stored_start:
            raise EncryptedObjectInvalid("the storage server answered a range that does not hold the segments asked")
        self._discard = stored_start - answer_start         # stored bytes before the first segment wanted
        self._remaining = stored_end - stored_start + 1     # stored bytes of the segments wanted
        self._skip = skip                                   # plaintext bytes before the range
        self._left = last_byte - first_byte + 1 if length else 0   # plaintext bytes still to hand on
        self._pending: deque[bytes] = deque()   # segments opened and not yet handed on
        self._done = False

    async def next(self) -> bytes:
        """The next verified plaintext of the range (b"" at its end)."""
        try:
            return await self._next()
        except EncryptedObjectInvalid:
            self._metrics.encryption_failures.labels("invalid").inc()
            raise

    async def _next(self) -> bytes:
        pending = self._pending
        while not pending and not self._done:
            if self._remaining:
                chunk = await self._answer.conn.read_chunk()
                if not chunk:
                    # The answer ended before the segments wanted: shorter than its metadata says.
                    raise EncryptedObjectInvalid("the stored object ended before its last segment: it was "
                                                 "truncated; nothing unverified was sent")
                view = memoryview(chunk)
                if self._discard:
                    cut = min(self._discard, len(view))
                    view = view[cut:]
                    self._discard -= cut
                    if not view:
                        continue
                take = view[: self._remaining]
                self._remaining -= len(take)
                pending.extend(self._opener.feed_segments(take))
            else:
                pending.append(self._opener.finish())
                self._done = True
        if len(pending) > 1 and not self._skip:
            total = sum(map(len, pending))
            if total <= self._left:
                plain = b"".join(pending)
                pending.clear()
                self._left -= total
                return plain
        while pending:
            plain = pending.popleft()
            if self._skip:
                cut = min(self._skip, len(plain))
                plain = plain[cut:]
                self._skip -= cut
            plain = plain[: self._left]
            self._left -= len(plain)
            if plain:
                return plain
        return b"" if self._done else await self._next()

    async def pieces(self, first: bytes) -> AsyncIterator[bytes]:
        if first:
            yield first
        while piece := await self.next():
            yield piece
