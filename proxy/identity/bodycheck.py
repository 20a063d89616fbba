"""What a verified S3 signature says the body must be, checked as the body streams.

A SigV4 request signs its ``x-amz-content-sha256`` header, not its body: when
that header is a SHA-256, the body must hash to it; when it is
``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` (or its ``-TRAILER`` variant), every
chunk carries a signature chained from the request's (`ChunkSigning`, read by
`proxy.identity.chunksig`); ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` bodies are
read for their framing (nothing in them is signed). The
proxy checks either as the body passes through, without holding it: each
piece is forwarded once it is known good, and the last piece is held back
until the whole body is checked, so a body that fails never reaches the
storage server complete (the upstream exchange is then aborted, and the
caller refused with ``XAmzContentSHA256Mismatch`` or ``SignatureDoesNotMatch``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from proxy.errors import MalformedSignature, SignatureMismatch
from proxy.identity.chunksig import CONTENT_SHA256_MODES, ChunkVerifier

HASH_MISMATCH = "The provided 'x-amz-content-sha256' header does not match what was computed."


@dataclass(frozen=True, slots=True)
class ChunkSigning:
    """An aws-chunked body: its variant, and what its chunk signatures are chained from (AWS's "seed")."""

    mode: str             # the x-amz-content-sha256 value, a key of CONTENT_SHA256_MODES
    signing_key: bytes = field(repr=False)
    amz_date: str = ""
    scope: str = ""       # DATE/REGION/s3/aws4_request
    seed_signature: str = ""   # the request's own signature
    decoded_length: int | None = None   # X-Amz-Decoded-Content-Length
    trailer: str | None = None          # x-amz-trailer, lowered: the checksum the trailer must carry

    def verifier(self) -> ChunkVerifier:
        """A fresh verifier for one body. Raises `MalformedSignature` when the request cannot carry such a body."""
        try:
            return ChunkVerifier(self.signing_key, self.amz_date, self.scope, self.seed_signature,
                                 decoded_length=self.decoded_length, mode=CONTENT_SHA256_MODES[self.mode],
                                 trailer=self.trailer)
        except ValueError as exc:
            raise MalformedSignature(f"this aws-chunked upload cannot be read: {exc}",
                                     code="InvalidArgument") from None


class Budget(Protocol):
    """Where the bytes a check holds are taken from (`proxy.bodies.Hold`): `take` raises when spent."""

    size: int

    def take(self, size: int) -> None: ...


class _Verifier(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> None: ...


class _Sha256:
    def __init__(self, expected: str) -> None:
        self._expected = expected
        self._hash = hashlib.sha256()

    def feed(self, data: bytes) -> bytes:
        self._hash.update(data)
        return data

    def finish(self) -> None:
        if not hmac.compare_digest(self._hash.hexdigest(), self._expected):
            raise SignatureMismatch(HASH_MISMATCH, code="XAmzContentSHA256Mismatch")


@dataclass(frozen=True, slots=True)
class BodyCheck:
    """The body a verified request must carry: a SHA-256, or signed chunks (exactly one is set)."""

    sha256: str | None = None
    chunks: ChunkSigning | None = None

    def _verifier(self) -> _Verifier:
        if self.chunks is not None:
            return self.chunks.verifier()
        assert self.sha256 is not None
        return _Sha256(self.sha256)

    def whole(self, body: bytes) -> None:
        """Check a body read whole (or an absent one, b""). Raises `Unauthenticated`."""
        verifier = self._verifier()
        verifier.feed(body)
        verifier.finish()

    async def stream(self, pieces: AsyncIterator[bytes], budget: Budget | None = None) -> AsyncIterator[bytes]:
        """The body's pieces, each once it is known good, the last only once the whole body is.

        `budget`: what the chunk held for its signature takes (up to 16 MiB a chunk), so that
        the chunks all uploads hold at once are bounded; its `take` refuses when it is spent.
        """
        verifier = self._verifier()
        if self.chunks is not None:
            assert isinstance(verifier, ChunkVerifier)
            # The chunk verifier releases each chunk once its signature verified, and holds the final
            # chunk (and trailer) until the body is whole and its decoded length the one announced.
            async for piece in pieces:
                good = verifier.feed(piece)
                if budget is not None and verifier.held_bytes > budget.size:
                    budget.take(verifier.held_bytes - budget.size)
                if good:
                    yield good
            verifier.finish()
            return
        held: bytes | None = None
        async for piece in pieces:
            good = verifier.feed(piece)
            if not good:
                continue
            if held is not None:
                yield held
            held = good
        verifier.finish()
        if held is not None:
            yield held
