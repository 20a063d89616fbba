"""The verifier's released bytes are what a signature-checking storage server accepts, and it needs them.

moto's server with IAM authentication on checks each request's (seed) signature. Bodies in the three
aws-chunked variants go through `ChunkVerifier` and only what it released is sent on: moto stores
exactly the caller's data. A body whose data was changed on the way is refused by the verifier; sent
as is, moto stores it, since moto does not check chunk signatures: the verifier is what stands
between such a body and the storage server.
"""

from __future__ import annotations

import hashlib
import http.client
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials

from proxy.errors import RequestRefused
from proxy.identity.chunksig import CONTENT_SHA256_MODES, ChunkMode, ChunkVerifier
from proxy.identity.sigv4hmac import chunk_signature, signing_key
from proxy.localstore import MotoServer
from tests.support.iam import signed_store

BUCKET = "chunks-dublin"
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def store() -> Iterator[tuple[MotoServer, str, str]]:
    # The set-up requests are free; every one after that must be signed correctly.
    with signed_store("uploader", {BUCKET: REGION}) as signed:
        yield signed.server, signed.key, signed.secret


def _client(server: MotoServer, key: str, secret: str) -> Any:
    return boto3.client("s3", endpoint_url=server.url, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret, config=BotoConfig(retries={"max_attempts": 1}))


def _send(server: MotoServer, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("PUT", path, body=body, headers={**headers, "Content-Length": str(len(body))})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _signed_streaming_request(server: MotoServer, key: str, secret: str, object_key: str, data: bytes,
                              chunk: int) -> tuple[dict[str, str], list[bytes], ChunkVerifier]:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD PUT: headers signed by botocore, chunks signed per AWS."""
    now = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{now[:8]}/{REGION}/s3/aws4_request"
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    wire_length = sum(len(f"{len(c):x};chunk-signature=".encode()) + 64 + 4 + len(c) for c in [*chunks, b""])
    request = AWSRequest(method="PUT", url=f"{server.url}/{BUCKET}/{object_key}", headers={
        "x-amz-date": now, "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
        "Content-Length": str(wire_length)})
    request.context["timestamp"] = now
    auth = S3SigV4Auth(Credentials(key, secret), "s3", REGION)
    seed = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    auth._inject_signature_to_request(request, seed)
    signing = signing_key(secret, now[:8], REGION)
    previous, wire = seed, []
    # Chunk signatures as the module makes them (held to AWS's published example in test_chunksig.py):
    # what this test checks is that the bytes it releases are what a verifying store accepts.
    for piece in [*chunks, b""]:
        previous = chunk_signature(signing, now, scope, previous, hashlib.sha256(piece).hexdigest())
        wire.append(f"{len(piece):x};chunk-signature={previous}\r\n".encode() + piece + b"\r\n")
    headers = {name: value.decode() if isinstance(value, bytes) else value for name, value in request.headers.items()}
    mode = CONTENT_SHA256_MODES[headers["x-amz-content-sha256"]]
    verifier = ChunkVerifier(signing, now, scope, seed, decoded_length=len(data), mode=mode)
    return headers, wire, verifier


def _relay(verifier: ChunkVerifier, wire: bytes, step: int = 4096) -> bytes:
    released = bytearray()
    for start in range(0, len(wire), step):
        released += verifier.feed(wire[start:start + step])
    verifier.finish()
    return bytes(released)


def test_a_verified_signed_stream_is_stored_by_a_verifying_store(store: tuple[MotoServer, str, str]) -> None:
    server, key, secret = store
    data = bytes(range(256)) * 1000   # 256000 bytes in 64 KiB chunks
    headers, wire, verifier = _signed_streaming_request(server, key, secret, "signed.bin", data, 65536)
    released = _relay(verifier, b"".join(wire))
    assert released == b"".join(wire)
    # The store does check signatures: the same request under another signature is refused.
    forged = {**headers, "Authorization": headers["Authorization"][:-64] + "0" * 64}
    assert _send(server, f"/{BUCKET}/signed.bin", forged, released)[0] == 403
    status, answer = _send(server, f"/{BUCKET}/signed.bin", headers, released)
    assert status == 200, answer
    assert _client(server, key, secret).get_object(Bucket=BUCKET, Key="signed.bin")["Body"].read() == data


def test_a_changed_chunk_is_refused_here_though_the_store_would_take_it(store: tuple[MotoServer, str, str]) -> None:
    server, key, secret = store
    data = b"a" * 100_000
    headers, wire, verifier = _signed_streaming_request(server, key, secret, "changed.bin", data, 65536)
    changed = b"".join(wire).replace(b"a" * 10, b"b" * 10, 1)
    with pytest.raises(RequestRefused) as refused:
        _relay(verifier, changed)
    assert refused.value.code == "SignatureDoesNotMatch"
    # Sent as it is, the storage server stores the changed data: it checks the seed, not the chunks.
    status, _answer = _send(server, f"/{BUCKET}/changed.bin", headers, changed)
    assert status == 200
    stored = _client(server, key, secret).get_object(Bucket=BUCKET, Key="changed.bin")["Body"].read()
    assert stored != data


class _Sent(Exception):
    pass


def test_botocores_unsigned_trailer_upload_is_stored(store: tuple[MotoServer, str, str]) -> None:
    """botocore's own STREAMING-UNSIGNED-PAYLOAD-TRAILER request, through the verifier, then to moto."""
    server, key, secret = store
    # botocore puts a checksum in a trailer only over HTTPS: sign for https://127.0.0.1:port, send over HTTP
    # (the scheme is not part of what is signed).
    client = botocore.session.get_session().create_client(
        "s3", region_name=REGION, endpoint_url=f"https://127.0.0.1:{server.port}",
        aws_access_key_id=key, aws_secret_access_key=secret, config=BotoConfig(s3={"addressing_style": "path"}))
    caught: dict[str, Any] = {}

    def capture(request: AWSRequest, **_: object) -> None:
        caught["headers"] = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()
                             if k.lower() not in ("transfer-encoding", "expect")}
        caught["body"] = request.body.read()
        raise _Sent

    client.meta.events.register("before-send.s3.PutObject", capture)
    data = b"trailer " * 200_000   # 1.6 MB: two of botocore's 1 MiB chunks
    with pytest.raises(_Sent):
        client.put_object(Bucket=BUCKET, Key="trailer.bin", Body=io.BytesIO(data), ChecksumAlgorithm="SHA256")
    headers: dict[str, str] = caught["headers"]
    lower = {name.lower(): value for name, value in headers.items()}
    mode = CONTENT_SHA256_MODES[lower["x-amz-content-sha256"]]
    assert mode is ChunkMode.UNSIGNED_TRAILER
    verifier = ChunkVerifier(b"", "", "", "", decoded_length=int(lower["x-amz-decoded-content-length"]),
                             mode=mode, trailer=lower["x-amz-trailer"])
    released = _relay(verifier, caught["body"], 65536)
    assert released == caught["body"]
    status, answer = _send(server, f"/{BUCKET}/trailer.bin", headers, released)
    assert status == 200, answer
    assert _client(server, key, secret).get_object(Bucket=BUCKET, Key="trailer.bin")["Body"].read() == data
