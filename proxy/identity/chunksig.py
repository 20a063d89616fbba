"""Verifying an aws-chunked upload body chunk by chunk, before any chunk is forwarded.

A SigV4 request whose ``x-amz-content-sha256`` is ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``
signs its headers only (the *seed* signature); the body is sent in chunks, each
carrying the signature of its own bytes chained to the previous one, as AWS
describes in "Signature Calculations for the Authorization Header: Transferring
Payload in Multiple Chunks (Chunked Upload)"::

    <hex size>;chunk-signature=<64 hex>\\r\\n<size bytes>\\r\\n      (repeated)
    0;chunk-signature=<64 hex>\\r\\n\\r\\n                          (the final chunk)

    chunk signature = HMAC-SHA256(signing key,
        "AWS4-HMAC-SHA256-PAYLOAD\\n" date "\\n" scope "\\n" previous signature "\\n"
        sha256("") "\\n" sha256(chunk bytes))

The two trailer variants ("Signature calculations for trailing headers") end
the body with header lines after the final chunk instead of its empty line:

* ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER``: signed chunks as above, then
  ``x-amz-checksum-<algorithm>:<base64>\\r\\n`` and
  ``x-amz-trailer-signature:<64 hex>\\r\\n\\r\\n``, the trailer signature being
  HMAC-SHA256(signing key, "AWS4-HMAC-SHA256-TRAILER\\n" date "\\n" scope "\\n"
  final chunk's signature "\\n" sha256("<name>:<value>\\n"));
* ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` (what botocore sends over HTTPS when it
  puts a checksum in a trailer): ``<hex size>\\r\\n<bytes>\\r\\n`` chunks without
  signatures, ``0\\r\\n``, the checksum line and an empty line. Nothing in this
  body is signed: the request's signature covers its headers only, as with
  ``UNSIGNED-PAYLOAD``.

`ChunkVerifier` is the pure, incremental reader of such a body: no I/O, fed the
bytes as they arrive in any split, it hands back the wire bytes (framing
included, unchanged) of each chunk once that chunk's signature has verified
(unsigned: once its framing has been read), so the caller forwards exactly what
was verified and nothing before it is. It holds
at most one chunk (bounded by ``max_chunk_bytes``, refused from its size line
when over), so memory is bounded whatever the body's length. The final chunk
and the trailer are held together and released only once the trailer is read
(and, signed, verified) and the decoded length matches
``x-amz-decoded-content-length``: the storage server is never sent the end of a
body the proxy did not accept.

The grammar is read strictly, as AWS's SDKs write it, and anything else is
refused rather than guessed at, since the storage server might read it another
way: lower-case hex sizes without leading zeros, exactly one ``chunk-signature``
extension of 64 lower-case hex digits and no other extension (none at all when
unsigned), no whitespace, CRLF only (never a bare LF or CR), nothing after the
final chunk, exactly the trailer lines the variant calls for (one
``x-amz-checksum-*`` line, named as ``x-amz-trailer`` announced when the caller
passes it, then the trailer signature when signed).

Checksums in the trailer: CRC32, SHA-1 and SHA-256 of the decoded bytes are
recomputed and compared (refused with ``BadDigest``) when the caller passes the
announced trailer name, which lets the verifier hash as the bytes pass. CRC32C
and CRC64NVME need a native library the proxy does not carry: their values are
only checked for form (base64 of 4 or 8 bytes) and left to the storage server,
which checks them against the bytes it receives, the bytes verified here. The
checksum is integrity, not identity: in the signed variants every byte is
already bound to the caller's key by the chunk signatures.

Errors: a signature that does not verify is `Unauthenticated` with S3's code
``SignatureDoesNotMatch`` (403); a body that is cut short or whose decoded
length is not the announced one is `BadRequest` ``IncompleteBody``; a checksum
mismatch is ``BadDigest``; a signed chunk under 8 KiB that is not the last is
``InvalidChunkSizeError``, as S3 answers (which also bounds the HMACs a caller
can make the proxy compute per byte); any other malformed framing is
`BadRequest` ``InvalidRequest``. After an error the verifier stays failed.

The signing key (HMAC chain of the secret, date, region and service) and the
seed signature come from the caller, which has verified the request's headers
with botocore's signer; the HMACs themselves (`signing_key`, `chunk_signature`,
`trailer_signature`) are in `proxy.identity.sigv4hmac`, and named here too.

What the caller must do with it:

* send on exactly what `feed` returns, in order, and nothing else of the body;
* end the upstream request body only after `finish` has returned: on any
  refusal (from `feed` or `finish`) abort the upstream request instead, since
  the chunks already released, each whole and verified, are not a complete body
  (a body complete before bytes that follow it is the one case where everything
  was released before the refusal: the upstream request must not be ended then
  either);
* forward the framing headers it judged (``Content-Encoding: aws-chunked``,
  ``x-amz-decoded-content-length``, the wire ``Content-Length``) unchanged.

Cost, measured on one core of the (shared) test machine: 500 to 900 MiB/s for
64 KiB to 1 MiB chunks (the SHA-256 of each chunk, one copy of each chunk on
release), plus about 20 µs a chunk (its line, its HMAC): 8 KiB chunks, the
smallest allowed, run at about 350 MiB/s. Memory per body: the chunk being read
(at most ``max_chunk_bytes`` plus 93 bytes of framing, never more than what has
arrived), twice that for the moment a chunk is released.

Why one module of this length: it is one idea, the aws-chunked grammar read
strictly, and most of its length is this description of the grammar and the
state machine that reads it, which must refuse every byte AWS's grammar does
not allow as soon as it arrives. The trailer checksums are a few lines read by
the same state machine; split apart, the pieces would only be read together.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import zlib
from enum import Enum, StrEnum
from typing import Final, Protocol

from proxy.errors import BadRequest, RequestRefused, Unauthenticated
from proxy.identity.sigv4hmac import EMPTY_SHA256, chunk_signature, signing_key, trailer_signature

__all__ = [
    "CONTENT_SHA256_MODES",
    "ChunkMode",
    "ChunkVerifier",
    "chunk_signature",
    "signing_key",
    "trailer_signature",
]


class ChunkMode(StrEnum):
    """Which aws-chunked variant a body is in (from ``x-amz-content-sha256``)."""

    SIGNED = "signed"
    SIGNED_TRAILER = "signed-trailer"
    UNSIGNED_TRAILER = "unsigned-trailer"


# The x-amz-content-sha256 values this module reads. The ECDSA (SigV4a) streaming variants
# are not here: a caller finding any other STREAMING-* value must refuse the request.
CONTENT_SHA256_MODES: Final[dict[str, ChunkMode]] = {
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD": ChunkMode.SIGNED,
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER": ChunkMode.SIGNED_TRAILER,
    "STREAMING-UNSIGNED-PAYLOAD-TRAILER": ChunkMode.UNSIGNED_TRAILER,
}

_CRLF: Final = b"\r\n"
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
# A size is at most 8 hex digits: nothing over 4 GiB is a chunk this proxy holds, and a
# bound here keeps the line (and int()) small before max_chunk_bytes is applied.
_SIZE: Final = rb"(0|[1-9a-f][0-9a-f]{0,7})"
_HEX_DIGITS: Final = re.compile(rb"0|[1-9a-f][0-9a-f]*")
_SIGNED_LINE: Final = re.compile(_SIZE + rb";chunk-signature=([0-9a-f]{64})")
_UNSIGNED_LINE: Final = re.compile(_SIZE)
_MAX_SIZE_LINE: Final = 8 + len(";chunk-signature=") + 64
_SIZE_LINE_BYTES: Final = frozenset(b"0123456789abcdef;chunk-signature=")
# Trailer lines: a lower-case header name, a colon, a value without whitespace.
_TRAILER_LINE: Final = re.compile(rb"([a-z0-9-]+):([!-~]+)")
_MAX_TRAILER_LINE: Final = 128
_PRINTABLE: Final = frozenset(range(0x21, 0x7F))
_TRAILER_SIGNATURE: Final = "x-amz-trailer-signature"
# The checksum trailers S3 defines, with their digest length in bytes.
_CHECKSUM_LENGTHS: Final[dict[str, int]] = {
    "x-amz-checksum-crc32": 4,
    "x-amz-checksum-crc32c": 4,
    "x-amz-checksum-crc64nvme": 8,
    "x-amz-checksum-sha1": 20,
    "x-amz-checksum-sha256": 32,
}
_BASE64: Final = re.compile(rb"[A-Za-z0-9+/]+={0,2}")


class _Hash(Protocol):
    def update(self, data: memoryview, /) -> None: ...
    def digest(self) -> bytes: ...


class _Crc32:
    """zlib's CRC32 with a hashlib face; S3 sends it as 4 big-endian bytes."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: memoryview, /) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


def _checksum_for(name: str) -> _Hash | None:
    if name == "x-amz-checksum-crc32":
        return _Crc32()
    if name == "x-amz-checksum-sha1":
        return hashlib.sha1(usedforsecurity=False)
    if name == "x-amz-checksum-sha256":
        return hashlib.sha256()
    return None   # crc32c, crc64nvme: no implementation in the standard library


def _malformed(message: str) -> BadRequest:
    return BadRequest(f"the aws-chunked request body is malformed: {message}")


def _incomplete(message: str) -> BadRequest:
    return BadRequest(message, code="IncompleteBody")


def _mismatch(message: str) -> Unauthenticated:
    return Unauthenticated(message, code="SignatureDoesNotMatch")


class _State(Enum):
    SIZE_LINE = "size line"
    DATA = "chunk data"
    DATA_END = "CRLF after the chunk data"
    TRAILER = "trailer"
    DONE = "done"


class ChunkVerifier:
    """Reads one aws-chunked body; `feed` releases each chunk once verified, `finish` checks its end."""

    def __init__(
        self,
        signing_key: bytes,
        amz_date: str,
        scope: str,
        seed_signature: str,
        *,
        decoded_length: int | None,
        mode: ChunkMode | str = ChunkMode.SIGNED,
        max_chunk_bytes: int = 16 * 1024 * 1024,
        trailer: str | None = None,
        min_chunk_bytes: int = 8192,
    ) -> None:
        """Starts reading a body whose request headers have verified.

        `signing_key` is the SigV4 key of the request's scope (see `signing_key()`), `amz_date` its
        ``x-amz-date`` (``YYYYMMDDTHHMMSSZ``), `scope` its credential scope (``DATE/REGION/s3/aws4_request``),
        `seed_signature` the request's verified signature (64 lower-case hex digits; ignored when
        unsigned). `decoded_length` is ``x-amz-decoded-content-length`` (None: not checked). `trailer`
        is the ``x-amz-trailer`` value as sent: when given, the trailer must be that checksum and, for
        CRC32/SHA-1/SHA-256, its value is checked against the decoded bytes. Signed chunks but the
        last must hold at least `min_chunk_bytes` (S3's own minimum; refused with
        ``InvalidChunkSizeError``).

        Arguments it cannot work with raise `ValueError` with a plain message, which the caller turns
        into the request's refusal: some come from the request (an ``x-amz-trailer`` that names no
        checksum, or is sent with the plain signed variant), none can be read from the body.
        """
        self._mode = ChunkMode(mode)
        if self._mode is not ChunkMode.UNSIGNED_TRAILER and not _HEX64.fullmatch(seed_signature):
            raise ValueError("the seed signature must be 64 lower-case hex digits")
        if decoded_length is not None and decoded_length < 0:
            raise ValueError("decoded_length must not be negative")
        if max_chunk_bytes < 1:
            raise ValueError("max_chunk_bytes must be positive")
        if not 0 <= min_chunk_bytes <= max_chunk_bytes:
            raise ValueError("min_chunk_bytes must be between 0 and max_chunk_bytes")
        if trailer is not None:
            if self._mode is ChunkMode.SIGNED:
                raise ValueError("x-amz-trailer is sent, but STREAMING-AWS4-HMAC-SHA256-PAYLOAD carries no trailer")
            if trailer not in _CHECKSUM_LENGTHS:
                raise ValueError(f"x-amz-trailer names {trailer[:64]!r}, which is not one checksum trailer "
                                 "(x-amz-checksum-crc32, -crc32c, -crc64nvme, -sha1 or -sha256, in lower case)")
        self._key = signing_key
        self._date = amz_date
        self._scope = scope
        self._previous = seed_signature
        self._decoded_length = decoded_length
        self._max_chunk = max_chunk_bytes
        # S3 refuses signed chunks under 8 KiB but the last (InvalidChunkSizeError); the bound also keeps a
        # caller from making the proxy compute an HMAC for every few bytes. Unsigned chunks are cheap, and
        # botocore cuts them wherever its source's read() stops, so they have no minimum.
        self._min_chunk = min_chunk_bytes if self._mode is not ChunkMode.UNSIGNED_TRAILER else 0
        self._previous_size: int | None = None   # the size of the data chunk before this one
        self._signed = self._mode is not ChunkMode.UNSIGNED_TRAILER
        self._trailer_name = trailer
        self._checksum = _checksum_for(trailer) if trailer is not None else None

        self._state = _State.SIZE_LINE
        self._failed: RequestRefused | None = None
        self._decoded = 0            # data bytes read so far (held or released)
        self._line = bytearray()     # the size or trailer line being read
        # Wire bytes of the chunk being read, not yet released: grown as bytes arrive (never from the
        # size a line announces), one buffer however small the pieces fed.
        self._held = bytearray()
        self._size = 0               # the current chunk's size
        self._remaining = 0          # data bytes of the current chunk still to come
        self._claimed = ""           # the current chunk's chunk-signature
        self._hash = hashlib.sha256()
        self._trailers: list[tuple[str, str]] = []

    @property
    def mode(self) -> ChunkMode:
        return self._mode

    @property
    def decoded_bytes(self) -> int:
        """Data bytes read so far (released or held), framing excluded."""
        return self._decoded

    @property
    def held_bytes(self) -> int:
        """Wire bytes read and not released yet (the chunk waiting for its signature, and its line)."""
        return len(self._held) + len(self._line)

    @property
    def complete(self) -> bool:
        """True once the final chunk (and trailer) has verified and been released."""
        return self._state is _State.DONE

    def feed(self, data: bytes) -> bytes:
        """Reads the next bytes of the body; returns the wire bytes of every chunk verified by them."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._feed(memoryview(data))
        except RequestRefused as error:
            self._failed = error
            self._held = bytearray()
            raise

    def finish(self) -> None:
        """The body has ended: refuses unless the final chunk (and trailer) was read and verified."""
        if self._failed is not None:
            raise self._failed
        if self._state is not _State.DONE:
            self._failed = _incomplete(
                f"the aws-chunked request body ended early (in the {self._state.value}, after "
                f"{self._decoded} data bytes): a body must end with its final zero-length chunk"
                + ("" if self._mode is ChunkMode.SIGNED else " and its trailer")
            )
            self._held = bytearray()
            raise self._failed

    # The parser proper: each step consumes what it can of `view` and moves the state on.

    def _feed(self, view: memoryview) -> bytes:
        released: list[bytes] = []
        while view:
            state = self._state
            if state is _State.DATA:
                view = self._read_data(view)
            elif state is _State.DATA_END:
                view = self._read_data_end(view, released)
            elif state is _State.SIZE_LINE or state is _State.TRAILER:
                view = self._read_line(view, released)
            else:
                raise _malformed(f"{len(view)} bytes follow the final chunk")
        return b"".join(released)

    def _read_line(self, view: memoryview, released: list[bytes]) -> memoryview:
        sizing = self._state is _State.SIZE_LINE
        limit = _MAX_SIZE_LINE if sizing else _MAX_TRAILER_LINE
        # The line, its CR and its LF: never look further than that for the LF.
        window = bytes(view[: limit + 2 - len(self._line)])
        lf = window.find(b"\n")
        if lf < 0:
            # Part of a line: what has come so far is checked now, so a bad byte is refused on arrival.
            self._line += window
            pending = bytes(self._line[:-1]) if self._line.endswith(b"\r") else bytes(self._line)
            self._diagnose(pending, sizing)
            if len(pending) > limit:
                raise _malformed(f"a {'chunk size' if sizing else 'trailer'} line is longer than {limit} bytes")
            return view[len(window):]
        part = window[: lf + 1]
        line = bytes(self._line) + part if self._line else part
        self._line.clear()
        if not line.endswith(_CRLF):
            raise _malformed(f"a {'chunk size' if sizing else 'trailer'} line ends in a bare LF, not CRLF")
        if sizing:
            self._size_line(line[:-2], released)
        else:
            self._trailer_line(line[:-2], released)
        return view[len(part):]

    def _diagnose(self, line: bytes, sizing: bool) -> None:
        """Refuses a (partial) line whose bytes already cannot be right, saying what is wrong with it."""
        what = "chunk size" if sizing else "trailer"
        if b"\r" in line:
            raise _malformed(f"a {what} line holds a bare CR")
        if not set(line) <= (_SIZE_LINE_BYTES if sizing else _PRINTABLE):
            raise _malformed(
                "a chunk size line holds something other than a lower-case hex size and chunk-signature"
                if sizing else "a trailer line holds whitespace or a byte that is not printable ASCII"
            )
        if sizing:
            self._check_size(line.partition(b";")[0])

    def _check_size(self, digits: bytes) -> None:
        """Refuses an oversize chunk from the first digits of its size, before the line even ends."""
        if not digits:
            return
        if not _HEX_DIGITS.fullmatch(digits):
            raise _malformed("a chunk size is not lower-case hex digits without leading zeros")
        size = int(digits, 16)
        if len(digits) > 8 or size > self._max_chunk:
            shown = f"{size}" if len(digits) <= 16 else "an absurd number of"
            raise _malformed(f"a chunk of {shown} bytes is over this proxy's limit of {self._max_chunk} bytes a chunk")

    def _size_line(self, line: bytes, released: list[bytes]) -> None:
        match = (_SIGNED_LINE if self._signed else _UNSIGNED_LINE).fullmatch(line)
        if match is None:
            self._diagnose(line, sizing=True)
            form = "<hex size>;chunk-signature=<64 hex digits>" if self._signed else "<hex size>, without extensions"
            raise _malformed(f"a chunk size line is not {form} (sizes in lower-case hex without leading zeros)")
        size = int(match.group(1), 16)
        if size > self._max_chunk:
            raise _malformed(f"a chunk of {size} bytes is over this proxy's limit of {self._max_chunk} bytes a chunk")
        if size and self._previous_size is not None and self._previous_size < self._min_chunk:
            raise BadRequest(
                f"only the last chunk of an aws-chunked body may hold fewer than {self._min_chunk} bytes, "
                f"and a chunk of {self._previous_size} bytes was followed by another",
                code="InvalidChunkSizeError",
            )
        self._previous_size = size
        total = self._decoded + size
        if self._decoded_length is not None:
            if total > self._decoded_length:
                raise _incomplete(
                    f"the aws-chunked body holds more than the {self._decoded_length} bytes "
                    "x-amz-decoded-content-length announces"
                )
            if size == 0 and total != self._decoded_length:
                raise _incomplete(
                    f"the aws-chunked body holds {total} bytes, not the {self._decoded_length} bytes "
                    "x-amz-decoded-content-length announces"
                )
        self._held = bytearray(line + _CRLF)
        self._size = size
        self._claimed = match.group(2).decode("ascii") if self._signed else ""
        if size == 0:
            self._verify_chunk(EMPTY_SHA256)
            self._state = _State.TRAILER
        else:
            self._remaining = size
            self._hash = hashlib.sha256()
            self._state = _State.DATA

    def _read_data(self, view: memoryview) -> memoryview:
        take = min(self._remaining, len(view))
        piece = view[:take]
        self._held += piece
        if self._signed:
            self._hash.update(piece)
        if self._checksum is not None:
            self._checksum.update(piece)
        self._remaining -= take
        self._decoded += take
        if self._remaining == 0:
            self._state = _State.DATA_END
        return view[take:]

    def _read_data_end(self, view: memoryview, released: list[bytes]) -> memoryview:
        # Byte by byte when it comes split, so a wrong byte is refused as soon as it arrives.
        if not self._line and bytes(view[:2]) == _CRLF:
            view = view[2:]
        else:
            expected = _CRLF[len(self._line)]
            if view[0] != expected:
                raise _malformed("a chunk's data is not followed by CRLF (is its size wrong?)")
            self._line.append(expected)
            view = view[1:]
            if len(self._line) < 2:
                return view
            self._line.clear()
        self._held += _CRLF
        if self._signed:
            self._verify_chunk(self._hash.hexdigest())
        released.append(bytes(self._held))
        self._held = bytearray()
        self._state = _State.SIZE_LINE
        return view

    def _verify_chunk(self, chunk_sha256: str) -> None:
        if not self._signed:
            return
        expected = chunk_signature(self._key, self._date, self._scope, self._previous, chunk_sha256)
        if not hmac.compare_digest(expected, self._claimed):
            raise _mismatch(
                f"the signature of the chunk after {self._decoded - self._size} data bytes does not "
                "match: the body was not signed with this key, or was changed on the way"
            )
        self._previous = expected

    def _trailer_line(self, line: bytes, released: list[bytes]) -> None:
        self._held += line + _CRLF
        if line:
            self._trailer_entry(line)
            return
        # The empty line: the end of the body.
        if self._mode is not ChunkMode.SIGNED:
            if not self._trailers:
                raise _malformed("the trailer holds no checksum line, which this x-amz-content-sha256 calls for")
            if self._mode is ChunkMode.SIGNED_TRAILER and self._trailers[-1][0] != _TRAILER_SIGNATURE:
                raise _malformed("the trailer ends without its x-amz-trailer-signature line")
        released.append(bytes(self._held))
        self._held = bytearray()
        self._state = _State.DONE

    def _trailer_entry(self, line: bytes) -> None:
        if self._mode is ChunkMode.SIGNED:
            raise _malformed(
                "the final chunk is followed by a trailer, which STREAMING-AWS4-HMAC-SHA256-PAYLOAD does not carry"
            )
        match = _TRAILER_LINE.fullmatch(line)
        if match is None:
            self._diagnose(line, sizing=False)
            raise _malformed("a trailer line is not <lower-case name>:<value> without whitespace")
        name, value = match.group(1).decode("ascii"), match.group(2)
        if not self._trailers:
            self._checksum_line(name, value)
        elif self._mode is ChunkMode.SIGNED_TRAILER and len(self._trailers) == 1 and name == _TRAILER_SIGNATURE:
            self._verify_trailer(value)
        else:
            raise _malformed(f"unexpected trailer line {name!r}: a trailer holds one checksum line"
                             + (" and then the trailer signature" if self._signed else ""))
        self._trailers.append((name, value.decode("ascii")))

    def _checksum_line(self, name: str, value: bytes) -> None:
        if self._trailer_name is not None and name != self._trailer_name:
            raise _malformed(f"the trailer is {name!r}, not the {self._trailer_name!r} that x-amz-trailer announced")
        length = _CHECKSUM_LENGTHS.get(name)
        if length is None:
            raise _malformed(f"{name!r} is not a checksum trailer (x-amz-checksum-crc32, -crc32c, -crc64nvme, "
                             "-sha1 or -sha256)")
        digest = base64.b64decode(value) if _BASE64.fullmatch(value) and len(value) % 4 == 0 else b""
        if len(digest) != length or base64.b64encode(digest) != value:
            raise _malformed(f"the {name} trailer is not the base64 of {length} bytes")
        if self._checksum is not None and not hmac.compare_digest(self._checksum.digest(), digest):
            raise BadRequest(f"the {name} trailer does not match the data received", code="BadDigest")

    def _verify_trailer(self, value: bytes) -> None:
        claimed = value.decode("ascii")
        if not _HEX64.fullmatch(claimed):
            raise _malformed("the x-amz-trailer-signature is not 64 lower-case hex digits")
        canonical = "".join(f"{name}:{text}\n" for name, text in self._trailers).encode("ascii")
        expected = trailer_signature(self._key, self._date, self._scope, self._previous, canonical)
        if not hmac.compare_digest(expected, claimed):
            raise _mismatch("the trailer's signature does not match: the trailer was not signed with this key, "
                            "or was changed on the way")
