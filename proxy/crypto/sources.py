"""The plaintext of a copy's source, whole or a range, whatever the source is stored as.

A copy the proxy carries out (CopyObject, UploadPartCopy) reads its source
itself: `read_plaintext` asks the storage server for it and hands on only
plaintext, verified where the source is encrypted:

- a single-PUT object (format 1): the stored segments the range needs, opened
  with its data key;
- a multipart upload's object (format 2): part 1's header, then the segments
  (`proxy.crypto.parted`; a range read again through sub-requests of one
  version);
- a plaintext object (a dataset without encryption, or one migrating to it):
  its bytes as they are.

The source's data key is released for the source's own dataset. The read's
headers carry the copy's source conditions (``x-amz-copy-source-if-*`` as
``If-Match`` & co): a condition that fails is 412, as S3 answers a copy; a
storage error (NoSuchKey, ...) is passed on as it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, NamedTuple

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.crypto.bindings import bind, segments_of
from proxy.crypto.envelope import METADATA_HEADER, PartedEnvelope, parse_any
from proxy.crypto.keyservice import Justification
from proxy.crypto.parted import Opened, PartedObject, Version, carried_headers
from proxy.crypto.plan import ObjectRef, Wanted, stored_range
from proxy.crypto.reading import CONTENT_RANGE, PlainReader, not_a_success, resolve
from proxy.crypto.segments import SegmentCipher
from proxy.errors import (
    EncryptedObjectInvalid,
    NotImplementedHere,
    ObjectNotEncrypted,
    PreconditionFailed,
    RangeNotSatisfiable,
    UpstreamFailure,
)
from proxy.upstream import Answered, Transfer

if TYPE_CHECKING:   # the stage hands itself in
    from proxy.crypto.stage import EncryptionStage, KeyUse


_COPY_CONDITIONS = {
    "x-amz-copy-source-if-match": "If-Match",
    "x-amz-copy-source-if-none-match": "If-None-Match",
    "x-amz-copy-source-if-modified-since": "If-Modified-Since",
    "x-amz-copy-source-if-unmodified-since": "If-Unmodified-Since",
}


def source_headers(forwarded: CIMultiDict[str]) -> CIMultiDict[str]:
    """The headers of a copy's source read, from the copy request's forwarded ones (its ETags already the
    stored ones): its Host, the proxy's own tags (the storage side sees who read), and its
    ``x-amz-copy-source-if-*`` conditions as the read's own ``If-*``."""
    read: CIMultiDict[str] = CIMultiDict(Host=forwarded.get("Host", ""))
    for name, value in forwarded.items():
        lower = name.lower()
        if lower in _COPY_CONDITIONS:
            read.add(_COPY_CONDITIONS[lower], value)
        elif lower.startswith("x-bailiwick-"):
            read.add(name, value)
    return read


class Plaintext(NamedTuple):
    """What `read_plaintext` hands on: `pieces` (verified) are bytes `first_byte`..`first_byte + length - 1`
    of a source of `total` plaintext bytes; `headers` are the source's own (its metadata, content headers,
    version id, tag count), as the storage server answered them."""

    pieces: AsyncIterator[bytes]
    length: int
    total: int
    first_byte: int
    headers: CIMultiDictProxy[str]

    @classmethod
    def of(cls, pieces: AsyncIterator[bytes], first_byte: int, last_byte: int, total: int,
           headers: CIMultiDictProxy[str]) -> Plaintext:
        return cls(pieces, last_byte - first_byte + 1 if total else 0, total, first_byte, headers)

    @classmethod
    def opened(cls, opened: Opened, headers: CIMultiDictProxy[str]) -> Plaintext:
        return cls.of(opened.pieces, opened.first_byte, opened.last_byte, opened.length, headers)


Then = Callable[[Plaintext], Awaitable[web.StreamResponse]]


async def read_plaintext(
    stage: EncryptionStage, request: web.BaseRequest, source_target: str, source: ObjectRef, encrypted: bool,
    headers: CIMultiDict[str], wanted: Wanted | None, transfer: Transfer, peer: str, why: Justification,
    use: KeyUse, then: Then,
) -> web.StreamResponse:
    """Read the plaintext of the object at `source_target` (path-style), all of it or the bytes `wanted`, and
    hand it to `then`, whose answer is the caller's.

    `source` is the object as its keys are bound (its dataset, region, bucket and key), `encrypted` whether
    its dataset is (required or migrating); `headers` the read's own (`source_headers`: Host, the proxy's
    tags, the copy's source conditions), not yet signed. `then` is called while the source is read (its
    pieces stream from the storage server): it writes them where they go. Raises as S3 answers a copy: 412
    for a condition that failed, 416 for a range outside the source; a storage error is passed on as it is.
    """
    read = headers.copy()
    read["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    if wanted is not None:
        read["Range"] = stored_range(wanted) if encrypted else _plain_range(wanted)
    carried = carried_headers(read)
    stage.sign("GET", source_target, read)

    async def answered(answer: Answered) -> web.StreamResponse:
        head = answer.head
        if head.status == 304:
            raise PreconditionFailed("At least one of the pre-conditions you specified did not hold")
        if head.status == 416 and wanted is not None:
            raise RangeNotSatisfiable("The requested range is not satisfiable")
        if head.status not in (200, 206):
            not_a_success(head.status)
            return await answer.pass_on()   # NoSuchKey, 412, ...: as S3 answers a copy whose source fails
        value = head.headers.get(METADATA_HEADER)
        if value is None:
            return await _plain(stage, answer, source_target, source, encrypted, carried, wanted, peer, then)
        if not encrypted:
            raise NotImplementedHere("the copy's source carries encryption metadata but is in no encrypted "
                                     "dataset; it is not copied")
        envelope = parse_any(value)
        stage.of_this_key(envelope, "the copy's source")
        # Released for the source's dataset (the request's justification names the destination's).
        released = why._replace(dataset=source.dataset)
        if isinstance(envelope, PartedEnvelope):
            parted = PartedObject(Version.of(stage, answer, source_target, carried, peer), envelope, source)
            if head.status == 200:
                return await then(Plaintext.opened(await parted.whole(answer, wanted, released, use), head.headers))
            return await parted.reread(answer, wanted, released, use,
                                       lambda opened: then(Plaintext.opened(opened, head.headers)))
        stored = stage.stored_length(answer, envelope)
        data_key = await stage.unwrap(envelope.wrapped, bind(envelope, source), released, use)
        length = envelope.plaintext_length
        first_byte, last_byte = resolve(wanted, length)
        cipher = SegmentCipher(data_key, envelope.salt, envelope.nonce_prefix, segments_of(envelope, source))
        reader = PlainReader.of_segments(answer, cipher, length, first_byte, last_byte, stored, stage.metrics)
        piece = await reader.next()
        return await then(Plaintext.of(reader.pieces(piece), first_byte, last_byte, length, head.headers))

    return await stage.upstream.forward(request, read, None, transfer, None, peer, target=source_target,
                                        answered=answered, method="GET")


async def _plain(stage: EncryptionStage, answer: Answered, source_target: str, source: ObjectRef, encrypted: bool,
                 carried: CIMultiDict[str], wanted: Wanted | None, peer: str, then: Then) -> web.StreamResponse:
    """A source stored as plaintext: refused in a dataset that requires encryption, else its bytes."""
    if encrypted and not source.migrating:
        stage.metrics.encryption_failures.labels("plaintext").inc()
        raise ObjectNotEncrypted(
            f"the copy's source is stored unencrypted in dataset {source.dataset!r}, which requires "
            "encryption, so it is not copied", resource=f"s3://{source.bucket}/{source.key}")
    head = answer.head
    if head.status == 200:
        if head.length is None:
            raise EncryptedObjectInvalid("the storage server did not say how long the copy's source is")
        first_byte, last_byte = resolve(wanted, head.length)
        pieces = _raw(answer) if wanted is None else _sliced(_raw(answer), first_byte, last_byte)
        return await then(Plaintext.of(pieces, first_byte, last_byte, head.length, head.headers))
    if wanted is None:
        raise UpstreamFailure("the storage server answered part of a copy's source asked whole")
    if not encrypted:   # the range was asked as it is: this is the answer
        match = CONTENT_RANGE.fullmatch(head.headers.get("Content-Range", "").strip())
        if match is None:
            raise UpstreamFailure("the storage server's partial answer has no readable Content-Range")
        total = int(match[3])
        first_byte, last_byte = resolve(wanted, total)
        if (int(match[1]), int(match[2])) != (first_byte, last_byte):
            raise UpstreamFailure("the storage server answered another range than the one asked")
        return await then(Plaintext.of(_raw(answer), first_byte, last_byte, total, head.headers))
    # Asked in an encrypted object's geometry: the plaintext range is asked again, of the same version.
    version = Version.of(stage, answer, source_target, carried, peer)
    first_byte, last_byte = resolve(wanted, version.length)
    answer.discard()
    return await version.fetch(first_byte, last_byte, lambda again: then(Plaintext.of(
        _raw(again), first_byte, last_byte, version.length, head.headers)), answer.transfer)


def _plain_range(wanted: Wanted) -> str:
    if wanted.suffix is not None:
        return f"bytes=-{wanted.suffix}"
    return f"bytes={wanted.start}-{'' if wanted.end is None else wanted.end}"


async def _raw(answer: Answered) -> AsyncIterator[bytes]:
    """A plaintext source's body as it arrives."""
    while chunk := await answer.conn.read_chunk():
        yield chunk


async def _sliced(pieces: AsyncIterator[bytes], first_byte: int, last_byte: int) -> AsyncIterator[bytes]:
    """Bytes `first_byte`..`last_byte` of a body (a storage server that answered a range whole)."""
    at = 0
    async for piece in pieces:
        cut = piece[max(first_byte - at, 0): last_byte + 1 - at]
        at += len(piece)
        if cut:
            yield cut
        if at > last_byte:
            return
