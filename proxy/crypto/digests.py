"""The caller's plaintext sealed as it streams, and checked against the digests it came with.

The storage server sees only ciphertext, so the integrity headers a caller
sends with a write (``Content-MD5``, ``x-amz-checksum-crc32``/``-sha1``/
``-sha256``, a SHA-256 ``x-amz-content-sha256``) are checked here, against
the plaintext, and never forwarded. The last sealed segment is held back
until every digest matches: a storage server that never gets the whole body
stores nothing. A body in aws-chunked framing is de-chunked on the way
(`proxy.crypto.dechunk`): its trailer's checksum is one more digest checked
before the last segment.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from proxy.crypto.dechunk import Chunked, dechunked
from proxy.crypto.envelope import METADATA_HEADER
from proxy.crypto.segments import Sealer
from proxy.errors import BadRequest

# Request headers about the plaintext's integrity: checked here, never forwarded (the server sees ciphertext);
# and the proxy's own metadata entry, which only the proxy writes.
CHECKED_HERE = ("Content-MD5", "x-amz-checksum-crc32", "x-amz-checksum-sha1", "x-amz-checksum-sha256",
                "x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm", "x-amz-trailer", METADATA_HEADER)


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


async def sealed(pieces: AsyncIterator[bytes], sealer: Sealer, digests: Mapping[str, bytes],
                 chunked: Chunked | None = None) -> AsyncIterator[bytes]:
    """The caller's plaintext pieces as sealed segments; the last one only once every digest matches (and,
    `chunked`, the body's framing and trailer have been read whole)."""
    if chunked is not None:
        pieces = dechunked(pieces, chunked)
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




async def sealed_empty(sealer: Sealer, digests: Mapping[str, bytes], chunked: Chunked | None = None) -> bytes:
    """No body (Content-Length: 0): one empty segment, checked against its digests like any other (an
    aws-chunked body cannot be empty: refused)."""
    return b"".join([piece async for piece in sealed(_nothing(), sealer, digests, chunked)])


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""
