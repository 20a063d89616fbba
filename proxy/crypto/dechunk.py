"""An upload body in aws-chunked framing with a trailing checksum, turned back into the plaintext it carries.

What botocore (boto3 >= 1.36, the AWS CLI) sends over HTTPS by default for a
PutObject or an UploadPart is ``x-amz-content-sha256:
STREAMING-UNSIGNED-PAYLOAD-TRAILER``, ``Content-Encoding: aws-chunked``,
``x-amz-decoded-content-length`` (the plaintext's length) and ``x-amz-trailer``
naming the checksum that follows the last chunk::

    <hex size>\\r\\n<size bytes>\\r\\n   (repeated)   0\\r\\nx-amz-checksum-crc32:<base64>\\r\\n\\r\\n

On an encrypted dataset the storage server never sees that body: the proxy
reads the framing strictly as it streams (`proxy.identity.chunksig.ChunkVerifier`
in its unsigned mode: the grammar, the decoded length, the trailer's checksum
recomputed over the decoded bytes and refused with ``BadDigest``), strips it,
and seals the plaintext (`proxy.crypto.digests.sealed`, which holds the last
sealed segment until the body has ended, so the trailer is checked before the
storage server can complete the object). The storage server is sent a plain
body of ciphertext (`without_framing`: no aws-chunked, no decoded length).

Only checksums the proxy can recompute are accepted in the trailer (CRC32,
SHA-1, SHA-256): the storage server, which sees only ciphertext, could not
check a CRC32C or CRC64NVME of the plaintext, so those are refused (501) as
their headers are. Chunk-signed bodies (``STREAMING-AWS4-HMAC-SHA256-*``)
are refused too: re-sign mode cannot pass their signatures on.

Memory: the verifier holds at most one chunk (bounded by its
``max_chunk_bytes``); each chunk it releases is stripped into one copy.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Final, NamedTuple

from multidict import CIMultiDict, MultiMapping

from proxy.errors import BadRequest, LengthRequired, NotImplementedHere
from proxy.identity.chunksig import ChunkMode, ChunkVerifier

UNSIGNED_TRAILER: Final = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
DECODED_LENGTH: Final = "X-Amz-Decoded-Content-Length"
# The checksums (as a trailer or as a header) the proxy recomputes over the plaintext, and the ones it cannot.
CHECKED_TRAILERS: Final = frozenset({"x-amz-checksum-crc32", "x-amz-checksum-sha1", "x-amz-checksum-sha256"})
UNCHECKABLE_CHECKSUMS: Final = ("x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme")
_AWS_CHUNKED: Final = "aws-chunked"
_DECIMAL: Final = re.compile(r"[0-9]{1,19}")


class Chunked(NamedTuple):
    """An aws-chunked upload body: the plaintext length it announces, and the checksum its trailer carries."""

    decoded_length: int
    trailer: str       # one of CHECKED_TRAILERS


def _encodings(headers: MultiMapping[str]) -> list[str]:
    # Every Content-Encoding header, each a list: a storage server may read any of them.
    return [v.strip().lower() for value in headers.getall("Content-Encoding", ()) for v in value.split(",")]


def chunked_upload(headers: MultiMapping[str]) -> Chunked | None:
    """How a PutObject's or UploadPart's body is framed: None for a plain body, else its `Chunked`.

    Any sign of aws-chunked framing (the encoding, a decoded length, a STREAMING-* payload hash, an
    ``x-amz-trailer``) makes it one, and then it must be exactly the unsigned-trailer variant, stated once
    and consistently, its decoded length shorter than its wire Content-Length (when sent); anything else is
    refused (`RequestRefused`) rather than read another way than the storage server would.
    """
    encodings = _encodings(headers)
    payloads = [value.strip() for value in headers.getall("X-Amz-Content-SHA256", ())]
    if _AWS_CHUNKED not in encodings and DECODED_LENGTH not in headers and "x-amz-trailer" not in headers and not any(
            value.upper().startswith("STREAMING-") for value in payloads):
        return None
    if payloads != [UNSIGNED_TRAILER]:
        raise NotImplementedHere(
            "on an encrypted dataset, of the aws-chunked uploads only the unsigned ones with a trailing checksum "
            f"(x-amz-content-sha256: {UNSIGNED_TRAILER}) are supported: send it so, or as a plain body")
    if encodings.count(_AWS_CHUNKED) != 1:
        raise BadRequest(f"an upload with x-amz-content-sha256: {UNSIGNED_TRAILER} is sent with Content-Encoding: "
                         "aws-chunked (once)", code="InvalidArgument")
    lengths = headers.getall(DECODED_LENGTH, ())
    if not lengths:
        raise LengthRequired(f"an aws-chunked upload to an encrypted dataset must state its {DECODED_LENGTH}")
    if len(lengths) != 1 or not _DECIMAL.fullmatch(lengths[0].strip()):
        raise BadRequest(f"{DECODED_LENGTH} must be sent once, as one decimal number", code="InvalidArgument")
    decoded = int(lengths[0].strip())
    wire = headers.get("Content-Length")
    if wire is not None and _DECIMAL.fullmatch(wire.strip()) and decoded >= int(wire.strip()):
        # The framing (at least its final chunk and trailer) comes on top of the data: a body this short
        # cannot hold it, so it is refused before a key is made or the storage server is asked anything.
        raise BadRequest(f"{DECODED_LENGTH} ({decoded}) is not less than the body's Content-Length ({wire.strip()}), "
                         "which also holds the aws-chunked framing", code="IncompleteBody")
    return Chunked(decoded, _trailer(headers))


def _trailer(headers: MultiMapping[str]) -> str:
    names = headers.getall("x-amz-trailer", ())
    if len(names) != 1:
        raise BadRequest("an aws-chunked upload with a trailing checksum names it in one x-amz-trailer header",
                         code="InvalidRequest")
    name = names[0].strip().lower()
    if name in UNCHECKABLE_CHECKSUMS:
        raise NotImplementedHere(
            f"a {name} trailer cannot be checked by this proxy on an encrypted dataset (the storage server only "
            "sees ciphertext): use CRC32, SHA-1 or SHA-256")
    if name not in CHECKED_TRAILERS:
        raise BadRequest(f"x-amz-trailer names {name[:64]!r}, which is not a checksum trailer "
                         "(x-amz-checksum-crc32, -sha1 or -sha256)", code="InvalidArgument")
    return name


def without_framing(headers: CIMultiDict[str]) -> None:
    """The forwarded headers of a body sent on de-chunked: no decoded length, no aws-chunked encoding (the
    Content-Encoding header dropped when nothing else is left in it). Content-Length is the caller's to set."""
    headers.popall(DECODED_LENGTH, None)
    if _AWS_CHUNKED not in _encodings(headers):   # the encodings read as `chunked_upload` read them
        return
    kept = [v.strip() for value in headers.popall("Content-Encoding") for v in value.split(",")
            if v.strip() and v.strip().lower() != _AWS_CHUNKED]
    if kept:
        headers["Content-Encoding"] = ",".join(kept)


class Dechunker:
    """Reads one aws-chunked body strictly; `feed` hands back the plaintext of each chunk once it is read
    whole, `finish` refuses a body that did not end with its final chunk and a matching trailer."""

    def __init__(self, chunked: Chunked) -> None:
        self._verifier = ChunkVerifier(b"", "", "", "", decoded_length=chunked.decoded_length,
                                       mode=ChunkMode.UNSIGNED_TRAILER, trailer=chunked.trailer)

    @property
    def held_bytes(self) -> int:
        """Bytes read and not handed back yet (the chunk being read)."""
        return self._verifier.held_bytes

    def feed(self, data: bytes) -> bytes:
        """The next bytes of the body; the data of every chunk they complete. Raises `RequestRefused`."""
        return _data_of(self._verifier.feed(data))

    def finish(self) -> None:
        """The body has ended. Raises `RequestRefused` (``IncompleteBody``) unless it was whole."""
        self._verifier.finish()


def _data_of(framed: bytes) -> bytes:
    """The data of the whole chunks `framed` holds, as the verifier released them (their grammar checked):
    ``<hex size>\\r\\n<data>\\r\\n`` each, then the final ``0\\r\\n`` and its trailer, whose data is none."""
    view = memoryview(framed)
    pieces: list[memoryview] = []
    at = 0
    while at < len(framed):
        end = framed.index(b"\r\n", at)
        size = int(framed[at:end], 16)
        if size == 0:
            break
        start = end + 2
        pieces.append(view[start:start + size])
        at = start + size + 2
    return bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)


async def dechunked(pieces: AsyncIterator[bytes], chunked: Chunked) -> AsyncIterator[bytes]:
    """The plaintext of an aws-chunked body, chunk by chunk; it ends only once the body was whole and its
    trailer matched (any refusal is raised in its place)."""
    reader = Dechunker(chunked)
    async for piece in pieces:
        data = reader.feed(piece)
        if data:
            yield data
    reader.finish()
