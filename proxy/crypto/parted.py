"""Reading a multipart upload's encrypted object (format 2, "parted": `proxy.crypto.parts`) in the proxy.

A parted object's metadata names only its upload key; its length, and where
each part and segment is stored, follow from part 1's header (the object's
first 52 bytes) and the stored length (`proxy.crypto.parts.layout`). So:

- a whole read takes part 1's header from the answer's first bytes, then
  streams the rest through a `PartedOpener`, which reads the later parts'
  headers inline;
- a range is read again through sub-requests to the storage server (the
  first answer was asked in a single-body object's geometry, and is
  discarded): part 1's header, the header of the part the range starts in,
  then exactly the stored bytes of the segments wanted;
- a HEAD asks for part 1's header alone, for the plaintext length.

Every sub-request carries ``If-Match`` with the first answer's ETag (and the
first answer's version id, when the request named one, in its target), so all
of them read one version of the object: a version written in between is
answered 412, and the read fails (503, "the object changed while it was
read"), never mixing the bytes of two. As for a single-body object, only
verified plaintext is handed on, and the first piece is verified before the
answer's head is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

from aiohttp import web
from multidict import CIMultiDict

from proxy.crypto.bindings import bind_parted, part_info_of
from proxy.crypto.envelope import PartedEnvelope
from proxy.crypto.keyservice import Justification
from proxy.crypto.parts import HEADER_SIZE, Layout, PartedOpener, PartHeader, layout, read_part_header
from proxy.crypto.plan import ObjectRef, Open, OpenHead, Wanted
from proxy.crypto.reading import CONTENT_RANGE, PlainReader, plain_headers, resolve, stored_extent
from proxy.crypto.segments import SegmentCipher
from proxy.errors import EncryptedObjectInvalid, ObjectChanged, UpstreamFailure
from proxy.upstream import Answered, Transfer

if TYPE_CHECKING:   # the stage hands itself in
    from proxy.crypto.stage import EncryptionStage, KeyUse

T = TypeVar("T")
# Headers of the caller's request that every request the proxy makes for it must carry too (a read's
# sub-requests, a copied part's write, the list of parts a completion checks): the bucket's host, the proxy's own
# tags, and what the storage server needs to touch the object at all (SSE-C keys, requester pays, the owner
# expected).
_CARRIED_PREFIXES = ("x-bailiwick-", "x-amz-server-side-encryption-customer-")
_CARRIED = frozenset({"host", "x-amz-request-payer", "x-amz-expected-bucket-owner"})


def part_ciphers(upload_key: bytes, envelope: PartedEnvelope, obj: ObjectRef
                 ) -> Callable[[PartHeader], SegmentCipher]:
    """The segment cipher of each part of `obj` (a `PartedOpener`'s `cipher_of`), from its header."""
    return lambda header: SegmentCipher(upload_key, header.salt, header.nonce_prefix,
                                        part_info_of(envelope, obj, header.number, header.length))


def carried_headers(headers: CIMultiDict[str]) -> CIMultiDict[str]:
    """What of a request's forwarded headers the requests the proxy makes for it carry (see `_CARRIED`)."""
    carried: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in _CARRIED or lower.startswith(_CARRIED_PREFIXES):
            carried.add(name, value)
    return carried


async def read_prefix(answer: Answered, size: int) -> tuple[bytes, bytes]:
    """The first `size` bytes of the answer's body, and what of the body was read past them."""
    held = b""
    while len(held) < size:
        chunk = await answer.conn.read_chunk()
        if not chunk:
            raise EncryptedObjectInvalid("the stored multipart object ended inside part 1's header: it was "
                                         "truncated; nothing of it was sent")
        held += chunk
    return held[:size], held[size:]


Answering = Callable[[Answered], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Version:
    """One version of an object, as a first answer showed it (its ETag and stored length), and how to read
    more of it: sub-requests to the storage server carrying `carried` and ``If-Match`` with the ETag."""

    stage: EncryptionStage
    request: web.BaseRequest
    target: str
    carried: CIMultiDict[str]
    etag: str
    length: int
    peer: str

    @classmethod
    def of(cls, stage: EncryptionStage, answer: Answered, target: str, carried: CIMultiDict[str],
           peer: str) -> Version:
        etag = answer.head.headers.get("ETag")
        if not etag:
            raise UpstreamFailure("the storage server's answer has no ETag, so the object cannot be read in "
                                  "several requests as one version")
        length = stored_extent(answer)[1]
        if length is None:
            raise EncryptedObjectInvalid("the storage server did not say how long the stored object is")
        return cls(stage, answer.request, target, carried, etag, length, peer)

    async def fetch(self, first: int, last: int, answered: Answering,
                    transfer: Transfer | None = None) -> web.StreamResponse:
        """Read bytes `first`..`last` of this version and hand the answer to `answered`; 412 (another version
        is there now) and 404 (none is) are `ObjectChanged`."""
        headers = self.carried.copy()
        headers["Range"] = f"bytes={first}-{last}"
        headers["If-Match"] = self.etag
        headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        self.stage.sign("GET", self.target, headers)

        async def checked(answer: Answered) -> web.StreamResponse:
            status = answer.head.status
            if status in (404, 412):
                self.stage.metrics.encryption_failures.labels("changed").inc()
                raise ObjectChanged("the object changed while it was read; nothing of it was sent: read it again")
            if status != 206:
                raise UpstreamFailure(f"the storage server answered {status} to a read of bytes {first}-{last}")
            match = CONTENT_RANGE.fullmatch(answer.head.headers.get("Content-Range", "").strip())
            if match is None or int(match[1]) != first or int(match[3]) != self.length:
                raise UpstreamFailure("the storage server answered another range than the one asked")
            return await answered(answer)

        return await self.stage.upstream.forward(self.request, headers, None, transfer or Transfer(), None,
                                                 self.peer, target=self.target, answered=checked, method="GET")


class Opened(NamedTuple):
    """A parted object's plaintext as read: `pieces` (verified, the first already) are bytes
    `first_byte`..`last_byte` of `length`, streaming from `answer` (the storage server's answer they come
    from, which hands them on)."""

    answer: Answered
    pieces: AsyncIterator[bytes]
    first_byte: int
    last_byte: int
    length: int


class _Releasable(Protocol):
    def release(self) -> None: ...


@dataclass(frozen=True)
class PartedObject:
    """A parted object: the version read, its envelope, and the object as its keys are bound."""

    version: Version
    envelope: PartedEnvelope
    obj: ObjectRef

    async def whole(self, answer: Answered, wanted: Wanted | None, why: Justification, use: KeyUse,
                    place: _Releasable | None = None) -> Opened:
        """The bytes `wanted` (None: all) of an answer holding the whole object; `place` is released once
        the key service has answered."""
        raw, rest = await read_prefix(answer, HEADER_SIZE)
        first = self.checked(lambda: read_part_header(raw, 1))
        shape = self.checked(lambda: layout(first, self.version.length))
        first_byte, last_byte = resolve(wanted, shape.length)
        upload_key = await self.upload_key(why, use)
        if place is not None:
            place.release()
        span = shape.whole()
        opener = self.checked(lambda: PartedOpener(shape, span, first, self.cipher_of(upload_key)))
        reader = PlainReader(answer, opener, discard=span.stored_start - HEADER_SIZE,
                             remaining=span.stored_end - span.stored_start + 1, skip=first_byte,
                             left=last_byte - first_byte + 1 if shape.length else 0,
                             metrics=self.version.stage.metrics, carried=rest)
        piece = await reader.next()
        return Opened(answer, reader.pieces(piece), first_byte, last_byte, shape.length)

    async def reread(self, answer: Answered, wanted: Wanted | None, why: Justification, use: KeyUse,
                     then: Callable[[Opened], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """The bytes `wanted` read again through sub-requests (`answer`, asked in a single-body object's
        geometry, is discarded): part 1's header, the header of the part they start in, then exactly the
        stored segments that hold them, handed to `then`."""
        answer.discard()
        first, shape = await self.first()
        first_byte, last_byte = resolve(wanted, shape.length)
        upload_key = await self.upload_key(why, use)
        span = shape.locate(first_byte, last_byte) if shape.length else shape.whole()
        header = first
        if span.first_part != 1:
            header = await self.header(span.first_part, shape.part_start(span.first_part))
        opener = self.checked(lambda: PartedOpener(shape, span, header, self.cipher_of(upload_key)))

        async def answered(part: Answered) -> web.StreamResponse:
            reader = PlainReader(part, opener, discard=0, remaining=span.stored_end - span.stored_start + 1,
                                 skip=span.skip, left=last_byte - first_byte + 1 if shape.length else 0,
                                 metrics=self.version.stage.metrics)
            piece = await reader.next()
            return await then(Opened(part, reader.pieces(piece), first_byte, last_byte, shape.length))

        return await self.version.fetch(span.stored_start, span.stored_end, answered, answer.transfer)

    async def first(self) -> tuple[PartHeader, Layout]:
        """Part 1's header and the object's layout (a sub-request)."""
        first = await self.header(1, 0)
        return first, self.checked(lambda: layout(first, self.version.length))

    async def header(self, number: int, at: int) -> PartHeader:
        """Part `number`'s header, stored at byte `at` (a sub-request)."""
        found: list[bytes] = []

        async def read(answer: Answered) -> web.StreamResponse:
            found.append(await answer.read_whole(HEADER_SIZE))
            return web.Response()   # read by the proxy: never sent

        await self.version.fetch(at, at + HEADER_SIZE - 1, read)
        return self.checked(lambda: read_part_header(found[0], number))

    async def upload_key(self, why: Justification, use: KeyUse) -> bytes:
        """The upload key, released for this object (bound to its dataset, region, bucket and key)."""
        envelope = self.envelope
        return await self.version.stage.unwrap(envelope.wrapped, bind_parted(envelope, self.obj), why, use)

    def cipher_of(self, upload_key: bytes) -> Callable[[PartHeader], SegmentCipher]:
        return part_ciphers(upload_key, self.envelope, self.obj)

    def checked(self, make: Callable[[], T]) -> T:
        """`make()`, an object that does not open counted as such."""
        try:
            return make()
        except EncryptedObjectInvalid:
            self.version.stage.metrics.encryption_failures.labels("invalid").inc()
            raise


async def open_parted(answer: Answered, plan: Open | OpenHead, wanted: Wanted | None, parted: PartedObject,
                      why: Justification, use: KeyUse, place: _Releasable | None) -> web.StreamResponse:
    """The caller's answer to a GetObject or HeadObject whose storage answer (`answer`: 200, 206, or a HEAD's)
    turned out to be a parted object's."""
    head = answer.head
    headers = plain_headers(answer)
    if isinstance(plan, OpenHead):
        _, shape = await parted.first()
        headers["Content-Length"] = str(shape.length)
        return await answer.stream(head.status, headers, None, bodiless=True)
    if head.status == 200:
        # The whole object (asked so, or a Range the storage server answered whole, as for If-Range).
        opened = await parted.whole(answer, None, why, use, place)
        headers["Content-Length"] = str(opened.last_byte - opened.first_byte + 1 if opened.length else 0)
        return await answer.stream(200, headers, opened.pieces)
    if place is not None:
        place.release()   # the first answer is let go: nothing is held while the key service answers

    async def send(opened: Opened) -> web.StreamResponse:
        headers["Content-Length"] = str(opened.last_byte - opened.first_byte + 1)
        headers["Content-Range"] = f"bytes {opened.first_byte}-{opened.last_byte}/{opened.length}"
        return await opened.answer.stream(206, headers, opened.pieces)

    return await parted.reread(answer, wanted, why, use, send)
