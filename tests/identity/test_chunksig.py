"""The aws-chunked body verifier: AWS's worked examples, botocore's bodies, strict framing, any split.

The vectors come from AWS's "Signature Calculations for the Authorization Header: Transferring
Payload in Multiple Chunks (Chunked Upload)" and "Signature calculations for trailing headers"
pages: a 66560-byte object of 'a', sent in chunks of 64 KiB and 1 KiB, signed on 2013-05-24 with
the documentation's example key.
"""

from __future__ import annotations

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from proxy.identity.chunksig import (
    CONTENT_SHA256_MODES,
    ChunkMode,
    ChunkVerifier,
    signing_key,
)

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
KEY = signing_key(SECRET, "20130524", "us-east-1")
DATA = b"a" * 66560
SIZES = (65536, 1024)

# STREAMING-AWS4-HMAC-SHA256-PAYLOAD: the seed signature and the three chunk signatures AWS publishes.
AWS_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
AWS_CHUNKS = (
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
)
# STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER with x-amz-checksum-crc32c: the same object.
AWS_TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
AWS_TRAILER_CHUNKS = (
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
)
AWS_CRC32C = "sOO8/Q=="
AWS_TRAILER_SIGNATURE = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"


def aws_body() -> list[bytes]:
    """AWS's signed example, as the wire pieces the verifier releases one by one."""
    return [
        f"10000;chunk-signature={AWS_CHUNKS[0]}\r\n".encode() + DATA[:65536] + b"\r\n",
        f"400;chunk-signature={AWS_CHUNKS[1]}\r\n".encode() + DATA[65536:] + b"\r\n",
        f"0;chunk-signature={AWS_CHUNKS[2]}\r\n\r\n".encode(),
    ]


def aws_trailer_body() -> list[bytes]:
    return [
        f"10000;chunk-signature={AWS_TRAILER_CHUNKS[0]}\r\n".encode() + DATA[:65536] + b"\r\n",
        f"400;chunk-signature={AWS_TRAILER_CHUNKS[1]}\r\n".encode() + DATA[65536:] + b"\r\n",
        f"0;chunk-signature={AWS_TRAILER_CHUNKS[2]}\r\n".encode()
        + f"x-amz-checksum-crc32c:{AWS_CRC32C}\r\n".encode()
        + f"x-amz-trailer-signature:{AWS_TRAILER_SIGNATURE}\r\n\r\n".encode(),
    ]


def verifier(seed: str = AWS_SEED, *, decoded_length: int | None = len(DATA),
             mode: ChunkMode | str = ChunkMode.SIGNED, **options: object) -> ChunkVerifier:
    return ChunkVerifier(KEY, DATE, SCOPE, seed, decoded_length=decoded_length, mode=mode, **options)  # type: ignore[arg-type]


def test_the_signing_key_and_seed_signature_are_botocores() -> None:
    """The caller's side of the example: botocore's own signer gives AWS's seed signature with this key."""
    request = AWSRequest(
        method="PUT", url="https://s3.amazonaws.com/examplebucket/chunkObject.txt",
        headers={
            "x-amz-date": DATE, "x-amz-storage-class": "REDUCED_REDUNDANCY",
            "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": "66560", "Content-Length": "66824",
        },
    )
    request.context["timestamp"] = DATE
    auth = S3SigV4Auth(Credentials("AKIAIOSFODNN7EXAMPLE", SECRET), "s3", "us-east-1")
    assert auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request) == AWS_SEED
    key = ("AWS4" + SECRET).encode()
    for part in ("20130524", "us-east-1", "s3", "aws4_request"):
        key = auth._sign(key, part)
    assert key == KEY
    assert CONTENT_SHA256_MODES["STREAMING-AWS4-HMAC-SHA256-PAYLOAD"] is ChunkMode.SIGNED


def test_aws_example_verifies_chunk_by_chunk() -> None:
    pieces = aws_body()
    assert len(b"".join(pieces)) == 66824   # the example's Content-Length
    check = verifier()
    for piece in pieces:
        assert check.feed(piece) == piece   # each chunk released as soon as it has verified
    check.finish()
    assert check.complete
    assert check.decoded_bytes == len(DATA)


def test_aws_trailer_example_verifies() -> None:
    pieces = aws_trailer_body()
    assert len(b"".join(pieces)) == 66946
    check = verifier(AWS_TRAILER_SEED, mode="signed-trailer", trailer="x-amz-checksum-crc32c")
    released = [check.feed(piece) for piece in pieces]
    check.finish()
    assert released == pieces


def test_aws_trailer_example_verifies_without_the_announced_name() -> None:
    check = verifier(AWS_TRAILER_SEED, mode=ChunkMode.SIGNED_TRAILER)
    assert check.feed(b"".join(aws_trailer_body())) == b"".join(aws_trailer_body())
    check.finish()
