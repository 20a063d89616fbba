"""An encrypted object's answer as the caller gets it: verified plaintext, its length, its headers.

`PlainReader` takes the stored segments a read asked for from the storage
server's answer and hands on only plaintext whose segment authenticated, cut
to the range asked; the helpers say what of the storage server's answer a
caller may see (nothing that describes the stored bytes: their length,
checksums, an ETag a client would take for an MD5).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import web
from multidict import CIMultiDict

from proxy.crypto.etags import presented
from proxy.crypto.plan import Wanted
from proxy.crypto.segments import Opener, SegmentCipher, ciphertext_length, segment_count, span
from proxy.errors import EncryptedObjectInvalid, RangeNotSatisfiable
from proxy.metrics import Metrics
from proxy.tags import response_headers
from proxy.upstream import Answered

CONTENT_RANGE = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19})")
# Headers that describe the stored bytes, not the plaintext: never passed on for an encrypted object.
STORED_ONLY = ("Content-Length", "Content-Range", "Content-MD5", "x-amz-checksum-crc32", "x-amz-checksum-crc32c",
               "x-amz-checksum-crc64nvme", "x-amz-checksum-sha1", "x-amz-checksum-sha256", "x-amz-checksum-type")
_STORED_CHECKSUMS = tuple(name for name in STORED_ONLY if name.startswith("x-amz-checksum"))


def not_a_success(status: int) -> None:
    """Refuse a success other than 200/206 to a read of an encrypted object: its body would go to the caller
    unverified (errors and redirects are passed on: nothing of the object is in them)."""
    if status < 300:
        raise EncryptedObjectInvalid(f"the storage server answered {status} to a read of an encrypted object; "
                                     "nothing of its answer was sent")


def plain_headers(answer: Answered) -> CIMultiDict[str]:
    """The storage server's headers of an encrypted object's answer, less what describes the stored bytes."""
    headers = response_headers(answer.head.headers)
    for name in STORED_ONLY:
        headers.popall(name, None)
    if "ETag" in headers:
        headers["ETag"] = presented(headers["ETag"])
    return headers


async def with_presented_etag(answer: Answered) -> web.StreamResponse:
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


def stored_extent(answer: Answered) -> tuple[int, int | None]:
    """Where the answer's bytes start in the stored object, and the stored object's length (None: not said)."""
    head = answer.head
    if head.status != 206:
        return 0, head.length
    match = CONTENT_RANGE.fullmatch(head.headers.get("Content-Range", "").strip())
    if match is None:
        raise EncryptedObjectInvalid("the storage server's partial answer has no readable Content-Range")
    return int(match[1]), int(match[3])


def resolve(wanted: Wanted | None, length: int) -> tuple[int, int]:
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



class SegmentOpener(Protocol):
    """What `PlainReader` feeds: `segments.Opener` (one sealed body) or `parts.PartedOpener` (a parted object)."""

    def feed_segments(self, data: bytes | bytearray | memoryview) -> list[bytes]: ...

    def finish(self) -> bytes: ...


class PlainReader:
    """Reads stored bytes from the answer, feeds them to an opener, and hands on verified plaintext of a range.

    Of the answer's body, the first `discard` bytes are skipped, the next `remaining` fed to `opener` (less
    what `carried` already holds: bytes of the answer read before, at its start); of the plaintext that comes
    out, the first `skip` bytes are dropped and the next `left` handed on.
    """

    def __init__(self, answer: Answered, opener: SegmentOpener, *, discard: int, remaining: int, skip: int,
                 left: int, metrics: Metrics, carried: bytes = b"") -> None:
        self._answer = answer
        self._metrics = metrics
        self._opener = opener
        self._carried = carried
        self._discard = discard       # stored bytes before the first segment wanted
        self._remaining = remaining   # stored bytes of the segments wanted
        self._skip = skip             # plaintext bytes before the range
        self._left = left             # plaintext bytes still to hand on
        self._pending: deque[bytes] = deque()   # segments opened and not yet handed on
        self._done = False

    @classmethod
    def of_segments(cls, answer: Answered, cipher: SegmentCipher, length: int, first_byte: int, last_byte: int,
                    stored: tuple[int, int], metrics: Metrics) -> PlainReader:
        """The reader of a single-body object (format 1) of `length` plaintext bytes, of bytes
        `first_byte`..`last_byte`, from an answer whose body starts at stored byte `stored[0]`."""
        count = segment_count(length)
        if length:
            first, last, stored_start, stored_end, skip = span(first_byte, last_byte, length)
        else:
            first, last, stored_start, stored_end, skip = 0, 0, 0, ciphertext_length(0) - 1, 0
        answer_start = stored[0]
        if answer_start > stored_start:
            raise EncryptedObjectInvalid("the storage server answered a range that does not hold the segments asked")
        return cls(answer, Opener(cipher, count, first, last), discard=stored_start - answer_start,
                   remaining=stored_end - stored_start + 1, skip=skip,
                   left=last_byte - first_byte + 1 if length else 0, metrics=metrics)

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
                chunk, self._carried = (self._carried, b"") if self._carried else \
                    (await self._answer.conn.read_chunk(), b"")
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

