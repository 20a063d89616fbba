"""The HMACs of SigV4: the day's signing key, and the chained signatures of an aws-chunked body.

The signing key is HMAC-SHA256 chained over ``AWS4<secret>``, the date
(YYYYMMDD), the region, the service and ``aws4_request``; it is the same all
day, so callers derive it once. A chunk's signature is HMAC-SHA256 under that
key of ``AWS4-HMAC-SHA256-PAYLOAD``, the request's date, its scope, the
previous signature (the request's own for the first chunk), the SHA-256 of
nothing and the SHA-256 of the chunk's bytes, one a line; the trailer's, of
``AWS4-HMAC-SHA256-TRAILER``, the date, the scope, the final chunk's signature
and the SHA-256 of the trailer lines (AWS: "Signature Calculations for the
Authorization Header: Transferring Payload in Multiple Chunks" and "Signature
calculations for trailing headers").
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()


def signing_key(secret_key: str, date: str, region: str, service: str = "s3") -> bytes:
    """The SigV4 signing key: HMAC-SHA256 chained over ``AWS4<secret>``, date (YYYYMMDD), region, service."""
    key = ("AWS4" + secret_key).encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def chunk_signature(key: bytes, amz_date: str, scope: str, previous: str, chunk_sha256: str) -> str:
    """The signature of one chunk, given the hex SHA-256 of its bytes and the previous signature."""
    to_sign = "\n".join(("AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY_SHA256, chunk_sha256))
    return hmac.digest(key, to_sign.encode("utf-8"), "sha256").hex()


def trailer_signature(key: bytes, amz_date: str, scope: str, previous: str, canonical_trailer: bytes) -> str:
    """The trailer's signature, over ``name:value\\n`` per trailer line, chained to the final chunk's."""
    digest = hashlib.sha256(canonical_trailer).hexdigest()
    to_sign = "\n".join(("AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous, digest))
    return hmac.digest(key, to_sign.encode("utf-8"), "sha256").hex()
