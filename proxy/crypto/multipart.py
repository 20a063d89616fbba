"""Multipart uploads into encrypted datasets, carried out by the encryption stage.

    CreateMultipartUpload   an upload key from the key service (bound to the object), the object's metadata
                            entry (format v=2), the caller answered a token as its UploadId
    UploadPart              the part sealed as it streams: a fresh part header, then its segments
    UploadPartCopy          the source read through the proxy, written as a sealed part (`proxy.crypto.partcopy`)
    CompleteMultipartUpload the parts named checked against the storage server's (ETags, the layout rule)
    ListParts               the token and the parts' plaintext sizes shown
    AbortMultipartUpload    the token turned back into the storage server's id

Every step is stateless: the token (`proxy.crypto.uploads`) carries the
storage server's upload id, the wrapped upload key and a seal binding the
one to the other (checked by every step but Abort), so the parts of one
upload may go through any proxy process of the region, in any order and in
parallel. A part's integrity headers are checked against its plaintext, as
a PutObject's are (`proxy.crypto.digests`); the storage server sees and
answers about ciphertext only, so its checksums are never passed on, and a
part's ETag (the MD5 of what it stores) is given back as it is: the caller
names it again in CompleteMultipartUpload, where the proxy compares it with
the storage server's list. The completed object's ETag is presented as an
encrypted object's (`proxy.crypto.etags`).

(Over 400 lines: the steps share the token's checks and the storage server's
answers, and read best side by side; UploadPartCopy is a module of its own.)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING
from xml.sax.saxutils import unescape

from aiohttp import web
from multidict import CIMultiDict

from proxy.crypto.bindings import bind_parted, same_key
from proxy.crypto.digests import CHECKED_HERE, sealed, sealed_empty
from proxy.crypto.envelope import METADATA_HEADER, PartedEnvelope, storable
from proxy.crypto.etags import presented
from proxy.crypto.keyservice import Justification
from proxy.crypto.partcopy import copy_part
from proxy.crypto.parted import carried_headers, part_ciphers
from proxy.crypto.parts import (
    MAX_PARTS,
    PartHeader,
    completed_length,
    fresh_header,
    part_plaintext_length,
    part_stored_length,
)
from proxy.crypto.plan import (
    AbortUpload,
    CompleteUpload,
    CreateUpload,
    ListUploadParts,
    Multipart,
    ObjectRef,
    SealPart,
)
from proxy.crypto.reading import STORED_ONLY
from proxy.crypto.segments import Sealer
from proxy.crypto.uploads import UploadToken, query_encoded, with_upload_id
from proxy.errors import BadRequest, EncryptedObjectInvalid, NoSuchUpload, UpstreamFailure
from proxy.s3.delete import local_name, parse_xml_body
from proxy.storage.xmltext import xml_text
from proxy.tags import response_headers
from proxy.upstream import Answered, BodyStream, Transfer

if TYPE_CHECKING:   # the stage makes its Multiparts of itself
    from proxy.crypto.stage import EncryptionStage, KeyUse

# What a caller may send to say how S3 should checksum the upload: S3 would checksum the ciphertext.
_UPLOAD_CHECKSUMS = ("x-amz-checksum-algorithm", "x-amz-checksum-type", "x-amz-sdk-checksum-algorithm")
# A CompleteMultipartUpload's headers about its body or the object's plaintext (x-amz-checksum-* too): the body
# forwarded is the proxy's, and the storage server would check the rest against the ciphertext.
_NOT_COMPLETED = ("content-md5", "content-encoding", "transfer-encoding", "x-amz-sdk-checksum-algorithm",
                  "x-amz-trailer", "x-amz-decoded-content-length", "x-amz-mp-object-size")
_STORED_CHECKSUMS = (*(name for name in STORED_ONLY if name.startswith("x-amz-checksum")),
                      "x-amz-checksum-algorithm")
MAX_COMPLETE_BYTES = 4 * 1024 * 1024
_MAX_ANSWER_BYTES = 1024 * 1024
_MAX_LISTING_BYTES = 8 * 1024 * 1024
_PAGE = 1000
_UPLOAD_ID = re.compile(rb"<UploadId>([^<]*)</UploadId>")
_PART = re.compile(rb"<Part>(.*?)</Part>", re.DOTALL)
_CHECKSUM = re.compile(rb"<(Checksum[A-Za-z0-9]*)>[^<]*</\1>|<Checksum[A-Za-z0-9]*\s*/>")
_ERROR = re.compile(rb"\s*(?:<\?xml[^>]*>\s*)?<Error[\s>]")
_RESULT_ETAG = re.compile(rb"<ETag>([^<]*)</ETag>")
_MARKERS = re.compile(rb"<(IsTruncated|NextPartNumberMarker)>([^<]*)</\1>")
_PART_FIELDS = re.compile(rb"<(PartNumber|ETag|Size)>([^<]*)</\1>")
_SIZE = re.compile(rb"<Size>([0-9]{1,19})</Size>")
_NUMBER = re.compile(r"[0-9]{1,19}")   # ASCII digits: str.isdigit() takes "²", which int() refuses


class Multiparts:
    """The multipart steps of one encryption stage (its key service, signer and storage server)."""

    def __init__(self, stage: EncryptionStage) -> None:
        self.stage = stage

    async def forward(
        self, request: web.BaseRequest, plan: Multipart, target: str, headers: CIMultiDict[str],
        body: Callable[[], Awaitable[BodyStream | None]], transfer: Transfer, peer: str, why: Justification,
        use: KeyUse,
    ) -> web.StreamResponse:
        """Carry out one step of a multipart upload; `headers` are the forwarded ones, tagged, not signed."""
        if isinstance(plan, CreateUpload):
            return await self._create(request, plan, target, headers, transfer, peer, why, use)
        if isinstance(plan, SealPart):
            return await self._seal_part(request, plan, target, headers, body, transfer, peer, why, use)
        if isinstance(plan, CompleteUpload | ListUploadParts):
            await self.upload_key(plan.obj, plan.upload, why, use)   # only an upload this proxy started: its seal
        if isinstance(plan, CompleteUpload):
            return await self._complete(request, plan, target, headers, body, transfer, peer)
        if isinstance(plan, ListUploadParts | AbortUpload):
            upstream = with_upload_id(target, plan.upload.upstream_id)
            self.stage.sign(request.method, upstream, headers)
            answered = _parts_listed(plan.upload) if isinstance(plan, ListUploadParts) else None
            return await self.stage.upstream.forward(request, headers, None, transfer, None, peer, target=upstream,
                                                     answered=answered)
        return await copy_part(self, request, plan, target, headers, transfer, peer, why, use)

    # ---- the upload key ----------------------------------------------------------------------------

    async def upload_key(self, obj: ObjectRef, upload: UploadToken, why: Justification,
                         use: KeyUse) -> tuple[PartedEnvelope, bytes]:
        """The upload's key, unwrapped for the object (the key service's cache applies); the token's seal checked."""
        service = self.stage.service
        if not storable(upload.wrapped):
            raise NoSuchUpload("the upload id does not carry a wrapped key this proxy wrote")
        envelope = PartedEnvelope(service.kind, service.key_ref, upload.wrapped)
        key = await self.stage.unwrap(upload.wrapped, bind_parted(envelope, obj), why, use)
        upload.check_seal(key)
        return envelope, key

    @staticmethod
    async def after(first: bytes, pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`first`, then `pieces` (a part's header before its segments)."""
        yield first
        async for piece in pieces:
            yield piece

    @staticmethod
    def part_sealer(envelope: PartedEnvelope, key: bytes, obj: ObjectRef, header: PartHeader) -> Sealer:
        """The sealer of a part about to be written (`header` fresh), keyed as a reader will key it."""
        return Sealer(part_ciphers(key, envelope, obj)(header), header.length)

    # ---- CreateMultipartUpload -----------------------------------------------------------------------

    async def _create(
        self, request: web.BaseRequest, plan: CreateUpload, target: str, headers: CIMultiDict[str],
        transfer: Transfer, peer: str, why: Justification, use: KeyUse,
    ) -> web.StreamResponse:
        service = self.stage.service
        envelope = PartedEnvelope(service.kind, service.key_ref, "")
        bound = bind_parted(envelope, plan.obj)
        made = await self.stage.call("generate", lambda: service.generate(bound, why), use)
        same_key(service, envelope)
        envelope = envelope._replace(wrapped=made.wrapped)
        for name in list(headers):
            lower = name.lower()
            # The proxy's own entry is replaced (as on PutObject); other user metadata is the caller's.
            if lower in _UPLOAD_CHECKSUMS or lower == METADATA_HEADER or lower in (
                    "content-length", "transfer-encoding", "content-md5"):
                headers.popall(name, None)
        headers[METADATA_HEADER] = envelope.to_header()
        headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        self.stage.sign(request.method, target, headers)

        async def created(answer: Answered) -> web.StreamResponse:
            if answer.head.status != 200:
                return await answer.pass_on()
            body = await answer.read_whole(_MAX_ANSWER_BYTES)
            found = _UPLOAD_ID.findall(body)
            if len(found) != 1 or not found[0]:
                raise UpstreamFailure("the storage server's answer to CreateMultipartUpload has no one UploadId")
            token = UploadToken.made(unescape(found[0].decode("utf-8")), made.wrapped, made.plaintext).encode()
            return _answer(answer, _UPLOAD_ID.sub(f"<UploadId>{token}</UploadId>".encode(), body), transfer)

        # No body: a CreateMultipartUpload has none to speak of, and the one sent is not forwarded.
        return await self.stage.upstream.forward(request, headers, b"", transfer, None, peer, target=target,
                                                 answered=created)

    # ---- UploadPart --------------------------------------------------------------------------------

    async def _seal_part(
        self, request: web.BaseRequest, plan: SealPart, target: str, headers: CIMultiDict[str],
        body: Callable[[], Awaitable[BodyStream | None]], transfer: Transfer, peer: str, why: Justification,
        use: KeyUse,
    ) -> web.StreamResponse:
        envelope, key = await self.upload_key(plan.obj, plan.upload, why, use)
        header = fresh_header(plan.number, plan.length)
        sealer = self.part_sealer(envelope, key, plan.obj, header)
        for name in (*CHECKED_HERE, *_UPLOAD_CHECKSUMS):
            headers.popall(name, None)
        headers["Content-Length"] = str(part_stored_length(plan.length))
        headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        upstream = with_upload_id(target, plan.upload.upstream_id)
        self.stage.sign(request.method, upstream, headers)
        first = header.to_bytes()
        stream = await body()
        data: bytes | BodyStream
        if stream is None:
            data = first + await sealed_empty(sealer, plan.digests, plan.chunked)
        else:
            stream.then(lambda pieces: self.after(first, sealed(pieces, sealer, plan.digests, plan.chunked)))
            data = stream
        return await self.stage.upstream.forward(request, headers, data, transfer, None, peer, target=upstream,
                                                 answered=without_checksums)

    # ---- CompleteMultipartUpload ---------------------------------------------------------------------

    async def _complete(
        self, request: web.BaseRequest, plan: CompleteUpload, target: str, headers: CIMultiDict[str],
        body: Callable[[], Awaitable[BodyStream | None]], transfer: Transfer, peer: str,
    ) -> web.StreamResponse:
        named = _named_parts(await _read_body(await body()))
        stored = await self._stored_parts(request, plan, target, headers, peer)
        if isinstance(stored, web.StreamResponse):
            return stored   # the storage server's refusal to list the upload (NoSuchUpload ...), as it is
        sizes = []
        for number, etag in named:
            found = stored.get(number)
            if found is None or _bare(found[0]) != _bare(etag):
                raise BadRequest(f"part {number} was not uploaded, or its ETag is not {etag!r}; One or more of the "
                                 "specified parts could not be found", code="InvalidPart")
            sizes.append(found[1])
        length = completed_length(sizes)   # the layout rule: refused with its reason if the parts are not cut so
        stated = headers.get("x-amz-mp-object-size")
        if stated is not None and stated.strip() != str(length):
            raise BadRequest(f"x-amz-mp-object-size is {stated.strip()!r}, and the parts named hold {length} bytes",
                             code="InvalidRequest")
        parts = "".join(f"<Part><PartNumber>{number}</PartNumber><ETag>{xml_text(stored[number][0])}</ETag></Part>"
                        for number, _ in named)
        forwarded = ('<?xml version="1.0" encoding="UTF-8"?>\n<CompleteMultipartUpload xmlns="http://s3.amazonaws.'
                     f'com/doc/2006-03-01/">{parts}</CompleteMultipartUpload>').encode()
        for name in list(headers):
            lower = name.lower()
            if lower.startswith("x-amz-checksum-") or lower in _NOT_COMPLETED:
                headers.popall(name, None)
        headers["X-Amz-Content-SHA256"] = hashlib.sha256(forwarded).hexdigest()
        upstream = with_upload_id(target, plan.upload.upstream_id)
        self.stage.sign(request.method, upstream, headers)

        async def completed(answer: Answered) -> web.StreamResponse:
            if answer.head.status != 200:
                return await answer.pass_on()
            answered = await answer.read_whole(_MAX_ANSWER_BYTES)
            if not _ERROR.match(answered):   # an <Error> sent with a 200, as S3 does, is passed on as it is
                answered = _CHECKSUM.sub(b"", _RESULT_ETAG.sub(_presented_etag, answered, count=1))
            return _answer(answer, answered, transfer)

        return await self.stage.upstream.forward(request, headers, forwarded, transfer, None, peer, target=upstream,
                                                 answered=completed)

    async def _stored_parts(self, request: web.BaseRequest, plan: CompleteUpload, target: str,
                            headers: CIMultiDict[str], peer: str) -> dict[int, tuple[str, int]] | web.StreamResponse:
        """The parts the storage server holds for the upload: {number: (ETag, stored size)}, read page by page;
        or the storage server's refusal to list them, handed on to the caller."""
        path = target.partition("?")[0]
        upload = query_encoded(plan.upload.upstream_id)
        found: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:   # at most MAX_PARTS pages: each must start past the last (a server may cap them below _PAGE)
            page_target = f"{path}?uploadId={upload}&max-parts={_PAGE}" + (
                f"&part-number-marker={marker}" if marker else "")
            ask = carried_headers(headers)   # Host, the proxy's tags (the storage side sees who asked), ...
            ask["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
            self.stage.sign("GET", page_target, ask)
            pages: list[bytes] = []

            async def listed(answer: Answered, pages: list[bytes] = pages) -> web.StreamResponse:
                if answer.head.status != 200:
                    return await answer.pass_on()
                pages.append(await answer.read_whole(_MAX_LISTING_BYTES))
                return web.Response()   # read by the proxy: never sent

            response = await self.stage.upstream.forward(request, ask, None, Transfer(), None, peer,
                                                         target=page_target, answered=listed, method="GET")
            if not pages:
                return response
            truncated, following = _page_of(pages[0], found)
            if not truncated:
                return found
            if not marker < following < MAX_PARTS:
                raise UpstreamFailure("the storage server's list of parts goes on past the parts an upload holds, "
                                      "or does not move on")
            marker = following


async def without_checksums(answer: Answered) -> web.StreamResponse:
    """The storage server's answer to a part's write, but for the checksums it computed of the ciphertext."""
    headers = response_headers(answer.head.headers)
    if not any(name in headers for name in _STORED_CHECKSUMS):
        return await answer.pass_on()
    for name in _STORED_CHECKSUMS:
        headers.popall(name, None)
    return await answer.stream(answer.head.status, headers, None, bodiless=answer.head.status in (204, 304))


def _answer(answer: Answered, body: bytes, transfer: Transfer) -> web.Response:
    """The storage server's answer with the body the proxy made of it."""
    headers = response_headers(answer.head.headers)
    for name in (*_STORED_CHECKSUMS, "Content-Length", "Content-MD5", "ETag"):
        headers.popall(name, None)
    transfer.down_bytes = len(body)
    return web.Response(status=answer.head.status, reason=answer.head.reason, headers=headers, body=body)


def _presented_etag(match: re.Match[bytes]) -> bytes:
    etag = unescape(match[1].decode("utf-8"), {"&quot;": '"'})
    return f"<ETag>{xml_text(presented(etag))}</ETag>".replace('"', "&quot;").encode()


def _bare(etag: str) -> str:
    return etag.strip().strip('"')


async def _read_body(stream: BodyStream | None) -> bytes:
    """A CompleteMultipartUpload body, at most `MAX_COMPLETE_BYTES`."""
    if stream is None:
        raise BadRequest("a CompleteMultipartUpload names its parts in its body, and it has none",
                         code="MalformedXML")
    pieces: list[bytes] = []
    size = 0
    async for piece in stream:
        size += len(piece)
        if size > MAX_COMPLETE_BYTES:
            raise BadRequest(f"the CompleteMultipartUpload body is over {MAX_COMPLETE_BYTES} bytes",
                             code="MaxMessageLengthExceeded")
        pieces.append(bytes(piece))
    return b"".join(pieces)


_WHAT = "the CompleteMultipartUpload body"


def _named_parts(body: bytes) -> list[tuple[int, str]]:
    """The parts a CompleteMultipartUpload names, in order: numbered 1..n, each with its ETag."""
    root = parse_xml_body(body, _WHAT)
    if local_name(root, _WHAT) != "CompleteMultipartUpload":
        raise BadRequest(f"{_WHAT} is not a CompleteMultipartUpload", code="MalformedXML")
    named: list[tuple[int, str]] = []
    for part in root:
        if local_name(part, _WHAT) != "Part":
            raise BadRequest(f"{_WHAT} holds something else than Parts", code="MalformedXML")
        fields: dict[str, str] = {}
        for field in part:
            name = local_name(field, _WHAT)
            if name.startswith("Checksum"):
                continue   # of the plaintext, which the storage server never sees; checked as each part came
            if name not in ("PartNumber", "ETag") or name in fields or len(field):
                raise BadRequest(f"a Part of {_WHAT} holds {name!r}", code="MalformedXML")
            fields[name] = field.text or ""
        number = fields.get("PartNumber", "").strip()
        if not _NUMBER.fullmatch(number) or not 1 <= int(number) <= MAX_PARTS or "ETag" not in fields:
            raise BadRequest(f"every Part of {_WHAT} has a PartNumber (1 to {MAX_PARTS}) and an ETag",
                             code="MalformedXML")
        if named and int(number) <= named[-1][0]:
            raise BadRequest("The list of parts was not in ascending order. The parts list must be specified in "
                             "order by part number.", code="InvalidPartOrder")
        named.append((int(number), fields["ETag"]))
    if not named:
        raise BadRequest(f"{_WHAT} names no part", code="MalformedXML")
    if named[-1][0] != len(named):
        missing = next(n for n, (number, _) in enumerate(named, 1) if number != n)
        raise BadRequest(f"part {missing} is missing: on an encrypted dataset an upload is completed with parts "
                         "numbered 1..n without a gap", code="InvalidPart")
    return named


def _page_of(body: bytes, found: dict[int, tuple[str, int]]) -> tuple[bool, int]:
    """Add a ListParts page's parts to `found`; whether it is truncated, and the marker of the next page."""
    for part in _PART.findall(body):
        fields = {name.decode(): value.decode("utf-8") for name, value in _PART_FIELDS.findall(part)}
        if set(fields) != {"PartNumber", "ETag", "Size"} or not _NUMBER.fullmatch(fields["PartNumber"]) \
                or not _NUMBER.fullmatch(fields["Size"]):
            raise UpstreamFailure("the storage server's list of parts could not be read")
        found[int(fields["PartNumber"])] = (unescape(fields["ETag"], {"&quot;": '"'}), int(fields["Size"]))
    markers = {name.decode(): value.decode() for name, value in _MARKERS.findall(
        _PART.sub(b"", body))}
    truncated = markers.get("IsTruncated", "false").strip().lower() == "true"
    marker = markers.get("NextPartNumberMarker", "").strip()
    if truncated and not _NUMBER.fullmatch(marker):
        raise UpstreamFailure("the storage server's list of parts is truncated without a marker to go on from")
    return truncated, int(marker) if truncated else 0


def _parts_listed(upload: UploadToken) -> Callable[[Answered], Awaitable[web.StreamResponse]]:
    """ListParts' answer as the caller sees it: its token, its parts' plaintext sizes, no stored checksums."""

    async def listed(answer: Answered) -> web.StreamResponse:
        if answer.head.status != 200:
            return await answer.pass_on()
        body = await answer.read_whole(_MAX_LISTING_BYTES)
        body = _UPLOAD_ID.sub(f"<UploadId>{upload.encode()}</UploadId>".encode(), body)
        body = _PART.sub(lambda part: b"<Part>" + _SIZE.sub(_plaintext_size, part[1]) + b"</Part>", body)
        return _answer(answer, _CHECKSUM.sub(b"", body), answer.transfer)

    return listed


def _plaintext_size(match: re.Match[bytes]) -> bytes:
    size = part_plaintext_length(int(match[1]))
    if size is None:
        raise EncryptedObjectInvalid("a part of the upload was not sealed by this proxy (its stored size is no "
                                     "sealed part's)")
    return f"<Size>{size}</Size>".encode()
