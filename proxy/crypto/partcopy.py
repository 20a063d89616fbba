"""UploadPartCopy touching an encrypted dataset, carried out by the proxy.

As for CopyObject (`proxy.crypto.copying`), the storage server can neither
open an encrypted source nor seal a part, so the proxy reads the source (the
``x-amz-copy-source-range`` of it, or all of it) and writes it as the part:
an encrypted source is opened with its own data key, released for its own
dataset, fetching only the stored segments that hold the range; a plaintext
one (a dataset that is not encrypted, or one migrating) is read as it is.
The part is sealed under the upload's key when the destination's dataset is
encrypted (as UploadPart seals one, `proxy.crypto.multipart`), and the
caller gets S3's ``CopyPartResult``, with the part's ETag as the storage
server gave it (the caller names it again to complete the upload).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from proxy.crypto.bindings import bind, segments_of
from proxy.crypto.copying import _COPY_CONDITIONS, _copy_result, _Piped
from proxy.crypto.digests import sealed
from proxy.crypto.envelope import METADATA_HEADER, PartedEnvelope, parse_any
from proxy.crypto.keyservice import Justification
from proxy.crypto.parts import fresh_header, part_stored_length
from proxy.crypto.plan import CopyPart, Wanted, stored_range
from proxy.crypto.reading import CONTENT_RANGE, PlainReader, not_a_success
from proxy.crypto.segments import SegmentCipher
from proxy.crypto.uploads import with_upload_id
from proxy.errors import (
    BadRequest,
    EncryptedObjectInvalid,
    NotImplementedHere,
    ObjectNotEncrypted,
    PreconditionFailed,
)
from proxy.upstream import Answered, Transfer

if TYPE_CHECKING:
    from proxy.crypto.multipart import Multiparts
    from proxy.crypto.stage import KeyUse

# What of the caller's request goes with the part's write, besides the proxy's own tags.
_KEPT = ("host", "x-amz-expected-bucket-owner", "x-amz-request-payer")


async def copy_part(
    parts: Multiparts, request: web.BaseRequest, plan: CopyPart, target: str, headers: CIMultiDict[str],
    transfer: Transfer, peer: str, why: Justification, use: KeyUse,
) -> web.StreamResponse:
    """Read the source (opened if encrypted), write it as part `plan.number` (sealed if the upload's dataset is
    encrypted), answer as S3 answers an UploadPartCopy."""
    stage = parts.stage
    copy = plan.copy
    upload_key = None
    if plan.upload is not None:
        # The upload's key first: a token that does not open is refused before the source is read.
        upload_key = await parts.upload_key(plan.obj, plan.upload, why, use)
    read: CIMultiDict[str] = CIMultiDict(Host=headers.get("Host", ""))
    for name, value in headers.items():
        lower = name.lower()
        if lower in _COPY_CONDITIONS:
            read.add(_COPY_CONDITIONS[lower], value)
        elif lower.startswith("x-bailiwick-"):
            read.add(name, value)   # the proxy's own tags: the storage side sees who read
    if plan.source_range is not None:
        first, last = plan.source_range
        # An encrypted source: the stored segments that hold the range (a plaintext one found there instead
        # is cut to the range from them); else the range itself.
        read["Range"] = stored_range(Wanted(first, last)) if copy.source_encrypted else f"bytes={first}-{last}"
    read["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    stage.sign("GET", copy.source_target, read)

    async def source_read(source: Answered) -> web.StreamResponse:
        if source.head.status not in (200, 206, 304, 416):
            not_a_success(source.head.status)
            return await source.pass_on()   # NoSuchKey, 412, ...: as S3 answers a copy whose source fails
        length, plain = await _source(parts, source, plan, why, use)
        write: CIMultiDict[str] = CIMultiDict()
        for name, value in headers.items():
            if name.lower() in _KEPT or name.lower().startswith("x-bailiwick-"):
                write.add(name, value)
        write["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        written = target
        if plan.upload is not None and upload_key is not None:
            envelope, key = upload_key
            header = fresh_header(plan.number, length)
            sealer = parts.part_sealer(envelope, key, plan.obj, header)
            body = _Piped(parts.after(header.to_bytes(), sealed(plain, sealer, {})))
            write["Content-Length"] = str(part_stored_length(length))
            written = with_upload_id(target, plan.upload.upstream_id)
        else:
            body = _Piped(plain)
            write["Content-Length"] = str(length)
        stage.sign("PUT", written, write)
        copied_version = source.head.headers.get("x-amz-version-id")

        async def part_written(answer: Answered) -> web.StreamResponse:
            # The part's ETag as the storage server gave it: the caller names it to complete the upload.
            return await _copy_result(answer, copied_version, str, "CopyPartResult")

        return await stage.upstream.forward(request, write, body, transfer, None, peer, target=written,
                                            answered=part_written, method="PUT")

    return await stage.upstream.forward(request, read, None, transfer, None, peer, target=copy.source_target,
                                        answered=source_read, method="GET")


async def _source(parts: Multiparts, source: Answered, plan: CopyPart, why: Justification,
                  use: KeyUse) -> tuple[int, AsyncIterator[bytes]]:
    """The part's length and its plaintext, read from the source's answer (checked and opened)."""
    stage = parts.stage
    copy = plan.copy
    head = source.head
    if head.status == 304:
        raise PreconditionFailed("At least one of the pre-conditions you specified did not hold")
    if head.status == 416:
        raise _outside(plan, None)
    value = head.headers.get(METADATA_HEADER)
    if value is not None:
        if not copy.source_encrypted:
            raise NotImplementedHere("the copy's source carries encryption metadata but is in no encrypted "
                                     "dataset; it is not copied")
        envelope = parse_any(value)
        if isinstance(envelope, PartedEnvelope):
            raise NotImplementedHere("a part copied from an object written by a multipart upload on an encrypted "
                                     "dataset is not supported yet; copy from it with CopyObject, or read it and "
                                     "upload the part")
        stored = stage.stored_length(source, envelope)
        stage.of_this_key(envelope, "the copy's source")
        length = envelope.plaintext_length
        first, last = _within(plan, length)
        data_key = await stage.unwrap(envelope.wrapped, bind(envelope, copy.source),
                                      why._replace(dataset=copy.source.dataset), use)
        cipher = SegmentCipher(data_key, envelope.salt, envelope.nonce_prefix, segments_of(envelope, copy.source))
        reader = PlainReader(source, cipher, length, first, last, stored, stage.metrics)
        return (last - first + 1 if length else 0), reader.pieces(await reader.next())
    if copy.source_encrypted and not copy.source.migrating:
        stage.metrics.encryption_failures.labels("plaintext").inc()
        raise ObjectNotEncrypted(
            f"the copy's source is stored unencrypted in dataset {copy.source.dataset!r}, which requires "
            "encryption, so it is not copied", resource=f"s3://{copy.source.bucket}/{copy.source.key}")
    start, total = _answered_span(source)
    first, last = _within(plan, total)
    if first < start or (head.length is not None and total and last >= start + head.length):
        raise EncryptedObjectInvalid("the storage server answered a range of the copy's source that does not hold "
                                     "the bytes asked")
    count = last - first + 1 if total else 0
    return count, _cut(source, first - start, count)


def _answered_span(answer: Answered) -> tuple[int, int]:
    """Where a plaintext answer's bytes start in the object, and the object's length."""
    head = answer.head
    if head.status == 206:
        match = CONTENT_RANGE.fullmatch(head.headers.get("Content-Range", "").strip())
        if match is None:
            raise EncryptedObjectInvalid("the storage server's partial answer has no readable Content-Range")
        return int(match[1]), int(match[3])
    if head.length is None:
        raise EncryptedObjectInvalid("the storage server did not say how long the copy's source is")
    return 0, head.length


def _within(plan: CopyPart, length: int) -> tuple[int, int]:
    """The plaintext bytes (first, last inclusive) of a source of `length` bytes that make the part."""
    if plan.source_range is None:
        return 0, max(length - 1, 0)
    first, last = plan.source_range
    if last >= length:
        raise _outside(plan, length)
    return first, last


def _outside(plan: CopyPart, length: int | None) -> BadRequest:
    size = "" if length is None else f" of size {length}"
    return BadRequest(f"Range specified is not valid for source object{size}: {plan.source_range}",
                      code="InvalidArgument")


async def _cut(answer: Answered, skip: int, count: int) -> AsyncIterator[bytes]:
    """`count` bytes of a plaintext answer's body after its first `skip`, as they arrive."""
    while count and (piece := await answer.conn.read_chunk()):
        if skip >= len(piece):
            skip -= len(piece)
            continue
        piece = piece[skip:skip + count]
        skip = 0
        count -= len(piece)
        yield piece
