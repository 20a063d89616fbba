"""SigV4's HMACs against AWS's published example (the chunked upload of 66560 bytes of 'a', 2013-05-24)."""

from __future__ import annotations

import hashlib

from proxy.identity.sigv4hmac import EMPTY_SHA256, chunk_signature, trailer_signature
from tests.identity.test_chunksig import (
    AWS_CHUNKS,
    AWS_CRC32C,
    AWS_SEED,
    AWS_TRAILER_CHUNKS,
    AWS_TRAILER_SIGNATURE,
    DATA,
    DATE,
    KEY,
    SCOPE,
    SIZES,
)


def test_each_chunk_signature_chains_as_aws_publishes() -> None:
    previous = AWS_SEED
    chunks = [DATA[:SIZES[0]], DATA[SIZES[0]:], b""]
    for chunk, published in zip(chunks, AWS_CHUNKS, strict=True):
        previous = chunk_signature(KEY, DATE, SCOPE, previous, hashlib.sha256(chunk).hexdigest())
        assert previous == published


def test_the_trailer_signature_is_aws_published_one() -> None:
    assert trailer_signature(KEY, DATE, SCOPE, AWS_TRAILER_CHUNKS[2],
                             f"x-amz-checksum-crc32c:{AWS_CRC32C}\n".encode()) == AWS_TRAILER_SIGNATURE


def test_the_empty_hash() -> None:
    assert EMPTY_SHA256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
