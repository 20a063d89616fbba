"""The stored form of an object written by a multipart upload (format version 2, "parted").

S3 sets an object's metadata when a multipart upload starts, before anyone
knows its length, and takes its parts in any order, in parallel, from any
process, each of which may be sent again. So a parted object carries one
upload key (wrapped in its metadata, `proxy.crypto.envelope.PartedEnvelope`),
and each part is a sealed stream of its own, exactly as a single object's
body (`proxy.crypto.segments`), after a 52-byte header::

    0x02 | part number (u32) | part plaintext length (u64) | salt (32) | nonce prefix (7)

(big-endian). The salt and nonce prefix are fresh for every UploadPart
request, so a part number sent twice never reuses a nonce; the part's
segment key is ``HKDF-SHA256(upload key, salt, info)`` with ``info`` naming
the object, the part's number and its length
(`proxy.crypto.envelope.part_info`), so a part opens only in its own place.

The proxy completes an upload only if its parts are numbered 1..n without a
gap, all but the last of one size P, a positive multiple of the segment size,
and the last of 1..P bytes (one part: any size). Every common client cuts its
parts that way. Then the layout follows from part 1's header and the stored
length (`layout`), and in a listing, where no header can be read, from the
part count that a multipart ETag ends with (`listed_length`).

Everything here is pure: no I/O, bytes in and bytes out.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple

from proxy.crypto.segments import (
    MAX_SEGMENTS,
    NONCE_PREFIX_SIZE,
    SALT_SIZE,
    SEGMENT_SIZE,
    TAG_SIZE,
    Opener,
    SegmentCipher,
    ciphertext_length,
    plaintext_length,
    segment_count,
)
from proxy.errors import BadRequest, EncryptedObjectInvalid

HEADER_VERSION = 2
_HEADER = struct.Struct(f">BIQ{SALT_SIZE}s{NONCE_PREFIX_SIZE}s")
HEADER_SIZE = _HEADER.size   # 52
MAX_PARTS = 10_000           # S3's
MAX_PART_LENGTH = (MAX_SEGMENTS - 1) * SEGMENT_SIZE
_STORED_SEGMENT = SEGMENT_SIZE + TAG_SIZE


class PartHeader(NamedTuple):
    """What a stored part says of itself (checked against its place and bound into its key)."""

    number: int
    length: int
    salt: bytes
    nonce_prefix: bytes

    def to_bytes(self) -> bytes:
        return _HEADER.pack(HEADER_VERSION, self.number, self.length, self.salt, self.nonce_prefix)


def fresh_header(number: int, length: int) -> PartHeader:
    """The header of a part about to be sealed: a salt and nonce prefix never used before."""
    if not 1 <= number <= MAX_PARTS or not 0 <= length <= MAX_PART_LENGTH:
        raise ValueError(f"part {number} of {length} bytes is not one the format holds")
    return PartHeader(number, length, os.urandom(SALT_SIZE), os.urandom(NONCE_PREFIX_SIZE))


def read_part_header(raw: bytes | bytearray | memoryview, number: int) -> PartHeader:
    """Part `number`'s header as stored; raises `EncryptedObjectInvalid` if it is not one, or another part's."""
    if len(raw) != HEADER_SIZE:
        raise _invalid(f"part {number}'s header is cut short: the object was truncated")
    version, found, length, salt, prefix = _HEADER.unpack(bytes(raw))
    if version != HEADER_VERSION:
        raise _invalid(f"part {number} does not start with a part header of the format")
    if found != number:
        raise _invalid(f"part {found} is stored where part {number} belongs: the parts were reordered or swapped")
    if length > MAX_PART_LENGTH:
        raise _invalid(f"part {number}'s header states a length the format does not hold")
    return PartHeader(found, length, salt, prefix)


def part_stored_length(length: int) -> int:
    """The stored length of a part of `length` plaintext bytes (its header included)."""
    return HEADER_SIZE + ciphertext_length(length)


def part_plaintext_length(stored: int) -> int | None:
    """The plaintext length of a stored part of `stored` bytes, or None if no part is that long."""
    return None if stored < HEADER_SIZE else plaintext_length(stored - HEADER_SIZE)


class PartedSpan(NamedTuple):
    """Where the plaintext bytes of a read are stored: from segment `first_segment` of part `first_part` to
    segment `last_segment` of part `last_part`, at stored bytes `stored_start`..`stored_end` (inclusive;
    the headers of the parts after the first included); `skip` plaintext bytes of the first segment come
    before the range."""

    first_part: int
    first_segment: int
    last_part: int
    last_segment: int
    stored_start: int
    stored_end: int
    skip: int


class Layout(NamedTuple):
    """How a parted object is cut: `parts` parts of `part_size` plaintext bytes, the last of `last_size`."""

    part_size: int
    parts: int
    last_size: int
    stored_length: int

    @property
    def length(self) -> int:
        return (self.parts - 1) * self.part_size + self.last_size

    def part_length(self, number: int) -> int:
        return self.last_size if number == self.parts else self.part_size

    def part_start(self, number: int) -> int:
        """Where part `number`'s header is stored."""
        return (number - 1) * part_stored_length(self.part_size)

    def _where(self, byte: int) -> tuple[int, int]:
        if self.parts == 1:
            return 1, byte
        part = min(byte // self.part_size, self.parts - 1) + 1
        return part, byte - (part - 1) * self.part_size

    def locate(self, first_byte: int, last_byte: int) -> PartedSpan:
        """The stored span of plaintext bytes `first_byte`..`last_byte` (inclusive, inside the object)."""
        if not 0 <= first_byte <= last_byte < self.length:
            raise ValueError(f"range {first_byte}-{last_byte} is not inside a plaintext of {self.length} bytes")
        first_part, first_offset = self._where(first_byte)
        last_part, last_offset = self._where(last_byte)
        first_segment, last_segment = first_offset // SEGMENT_SIZE, last_offset // SEGMENT_SIZE
        stored_start = self.part_start(first_part) + HEADER_SIZE + first_segment * _STORED_SEGMENT
        end_in_part = min((last_segment + 1) * _STORED_SEGMENT, ciphertext_length(self.part_length(last_part)))
        return PartedSpan(first_part, first_segment, last_part, last_segment, stored_start,
                          self.part_start(last_part) + HEADER_SIZE + end_in_part - 1,
                          first_offset - first_segment * SEGMENT_SIZE)

    def whole(self) -> PartedSpan:
        """The span of the whole object (an empty one is part 1's one empty segment)."""
        if self.length:
            return self.locate(0, self.length - 1)
        return PartedSpan(1, 0, 1, 0, HEADER_SIZE, self.stored_length - 1, 0)


def layout(first: PartHeader, stored_length: int) -> Layout:
    """The layout of a stored parted object, from part 1's header and its stored length; raises
    `EncryptedObjectInvalid` if no object the proxy completed has them."""
    size = first.length
    whole = part_stored_length(size)
    if stored_length == whole:
        return Layout(size, 1, size, stored_length)
    if size == 0 or size % SEGMENT_SIZE or stored_length < whole:
        raise _length(stored_length)
    count = -(-stored_length // whole)
    last = part_plaintext_length(stored_length - (count - 1) * whole)
    if last is None or not 1 <= last <= size or count > MAX_PARTS:
        raise _length(stored_length)
    return Layout(size, count, last, stored_length)


def completed_length(stored_sizes: Sequence[int]) -> int:
    """The plaintext length of an upload completed with parts 1..n of these stored sizes (in order); raises
    `BadRequest` if they are not cut as the format requires, saying how."""
    lengths = [part_plaintext_length(size) for size in stored_sizes]
    if not lengths or len(lengths) > MAX_PARTS:
        raise BadRequest(f"a multipart upload has 1 to {MAX_PARTS} parts", code="InvalidPart")
    for number, length in enumerate(lengths, 1):
        if length is None:
            raise BadRequest(f"part {number} was not sealed by this proxy (its stored size is no sealed part's); "
                             "send it again", code="InvalidPart")
    sizes = [length for length in lengths if length is not None]
    if len(sizes) == 1:
        return sizes[0]
    size, last = sizes[0], sizes[-1]
    rule = (f"on an encrypted dataset, every part but the last is of one size, a multiple of {SEGMENT_SIZE // 1024} "
            "KiB, and the last is no larger (as boto3, the AWS CLI and rclone cut them)")
    if size == 0 or size % SEGMENT_SIZE:
        raise BadRequest(f"part 1 is {size} bytes, not a multiple of {SEGMENT_SIZE // 1024} KiB: {rule}",
                         code="InvalidPart")
    for number, length in enumerate(sizes[1:-1], 2):
        if length != size:
            raise BadRequest(f"part {number} is {length} bytes and part 1 {size}: {rule}", code="InvalidPart")
    if not 1 <= last <= size:
        raise BadRequest(f"the last part is {last} bytes and part 1 {size}: {rule}", code="InvalidPart")
    return (len(sizes) - 1) * size + last


def listed_length(stored: int, parts: int) -> int | None:
    """The plaintext length of a parted object of `stored` bytes in `parts` parts (as a listing tells them:
    no header is read), or None if its parts' ciphertext cannot be that long. Only a size to show: that a
    layout the proxy completes has them is not checked here (a read checks it, `layout`)."""
    if not 1 <= parts <= MAX_PARTS:
        return None
    return plaintext_length(stored - parts * HEADER_SIZE)


class PartedOpener:
    """Decrypts the stored bytes of a `PartedSpan` as they stream, part after part.

    The same interface as `proxy.crypto.segments.Opener`: `feed_segments`
    takes the stored bytes from `span.stored_start` on (part `first_part`'s
    header having been read already and given), reads the headers of the
    parts after it inline, and hands back only plaintext of segments that
    authenticated; `finish` raises unless the span arrived whole.
    """

    __slots__ = ("_cipher_of", "_done", "_header", "_layout", "_left", "_opener", "_part", "_span")

    def __init__(self, layout: Layout, span: PartedSpan, first_header: PartHeader,
                 cipher_of: Callable[[PartHeader], SegmentCipher]) -> None:
        self._layout = layout
        self._span = span
        self._cipher_of = cipher_of
        self._part = span.first_part
        self._header = bytearray()
        self._left = 0
        self._done = False
        if first_header.number != span.first_part:
            raise _invalid(f"part {first_header.number} is stored where part {span.first_part} belongs")
        self._opener: Opener | None = self._open(first_header, span.first_segment)

    def _open(self, header: PartHeader, first_segment: int) -> Opener:
        number = header.number
        length = self._layout.part_length(number)
        if header.length != length:
            raise _invalid(f"part {number} says it holds {header.length} bytes where the object's layout has "
                           f"{length}: it was replaced or the object truncated")
        count = segment_count(length)
        last = self._span.last_segment if number == self._span.last_part else count - 1
        end = min((last + 1) * _STORED_SEGMENT, ciphertext_length(length))
        self._left = end - first_segment * _STORED_SEGMENT
        return Opener(self._cipher_of(header), count, first_segment, last)

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        return b"".join(self.feed_segments(data))

    def feed_segments(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        view = memoryview(data)
        out: list[bytes] = []
        while view:
            opener = self._opener
            if opener is None:
                if self._done:
                    raise _invalid("the stored object is longer than its parts")
                needed = HEADER_SIZE - len(self._header)
                self._header += view[:needed]
                view = view[needed:]
                if len(self._header) == HEADER_SIZE:
                    header = read_part_header(self._header, self._part + 1)
                    self._part += 1
                    self._header = bytearray()
                    self._opener = self._open(header, 0)
                continue
            take = view[: self._left]
            view = view[len(take):]
            self._left -= len(take)
            out.extend(opener.feed_segments(take))
            if not self._left:
                # The part's segments wanted are all here: its last (held by the opener) is opened now.
                last = opener.finish()
                if last:
                    out.append(last)
                self._opener = None
                self._done = self._part == self._span.last_part
        return out

    def finish(self) -> bytes:
        if not self._done:
            raise _invalid("the stored object ended before its last part: it was truncated; nothing unverified "
                           "was sent")
        return b""


def _invalid(why: str) -> EncryptedObjectInvalid:
    return EncryptedObjectInvalid(f"the stored multipart object does not open: {why}")


def _length(stored_length: int) -> EncryptedObjectInvalid:
    return _invalid(f"its stored length ({stored_length} bytes) is not one its parts' layout gives: it was "
                    "truncated or replaced")
