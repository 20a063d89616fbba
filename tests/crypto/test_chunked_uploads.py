"""Uploads in aws-chunked framing with a trailing checksum into an encrypted dataset, end to end: the real proxy
in re-sign mode, moto checking every signature, boto3 as it writes over HTTPS by default.

botocore (>= 1.36) puts a PutObject's or UploadPart's checksum in a trailer
(``STREAMING-UNSIGNED-PAYLOAD-TRAILER``, ``Content-Encoding: aws-chunked``)
only over HTTPS; `trailing` makes the same choice for it over the tests' plain
HTTP (one ``before-call`` hook, the rest is botocore's own code), and records
what it sent, so each test also asserts the client really framed its body.
What is asserted is what the storage server holds (read past the proxy: no
trace of the plaintext or of the framing, a sealed object that opens with the
region's key to exactly the plaintext) and the refusals: a wrong trailer
checksum, a cut body, a decoded length that is not the body's, a trailer the
proxy cannot check; each stores nothing. A plaintext dataset's trailing
uploads still pass through as they are.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from proxy.crypto.keyfile import write_key_file
from proxy.crypto.parts import part_stored_length
from proxy.crypto.segments import SEGMENT_SIZE, ciphertext_length
from proxy.harness import ProxyThread
from tests.attacks.test_encryption_bypass import code_of, exists
from tests.conftest import make_token, s3_client
from tests.crypto.test_format_spec import spec_open
from tests.crypto.test_multipart import MARKER, MIB, PLAIN, PLAIN_DATASET, body_of
from tests.support.encrypting import (  # noqa: F401  (the fixture "relay")
    add_datasets,
    encrypting_proxy_config,
    key_file_encryption,
    relay_fixture,
)
from tests.support.iam import SignedStore, signed_store
from tests.support.parted import open_stored
from tests.support.recorder import Recorder

DUBLIN = "mail-eu-dublin"
S = SEGMENT_SIZE
TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


@pytest.fixture(scope="module")
def store() -> Iterator[SignedStore]:
    with signed_store("bailiwick-chunked", {DUBLIN: "eu-west-1", PLAIN: "eu-west-1"}) as running:
        yield running


@pytest.fixture(scope="module")
def eu_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chunked-key") / "eu.key"
    write_key_file(path)
    return path


@pytest.fixture(scope="module")
def eu(store: SignedStore, relay: Recorder, eu_key: Path,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    folder = tmp_path_factory.mktemp("chunked")
    config = encrypting_proxy_config(folder, store, relay.url, "eu-west-1", key_file_encryption(eu_key))
    add_datasets(folder / "policies", PLAIN_DATASET)
    running = ProxyThread(config).start()
    yield running
    running.stop()


class Trailing:
    """An Irish boto3 client that puts its checksums in trailers as over HTTPS; `sent`: each request's headers."""

    def __init__(self, proxy: ProxyThread) -> None:
        self.client = s3_client(proxy.url, make_token("IE"))
        self.sent: list[dict[str, str]] = []
        self.client.meta.events.register("before-call.s3", self._trailer)
        self.client.meta.events.register("before-send.s3", self._record)

    @staticmethod
    def _trailer(params: dict[str, Any], **_: Any) -> None:
        # What botocore's resolve_request_checksum_algorithm decides for streaming input over https.
        algorithm = params["context"].get("checksum", {}).get("request_algorithm")
        if isinstance(algorithm, dict):
            algorithm["in"] = "trailer"

    def _record(self, request: Any, **_: Any) -> None:
        self.sent.append({name.lower(): value.decode() if isinstance(value, bytes) else value
                          for name, value in request.headers.items()})

    def framed(self) -> list[dict[str, str]]:
        """The requests it sent with a body in aws-chunked framing and a trailing CRC32."""
        return [h for h in self.sent if h.get("x-amz-content-sha256") == TRAILER
                and h.get("content-encoding") == "aws-chunked" and h.get("x-amz-trailer") == "x-amz-checksum-crc32"]


def stored(store: SignedStore, bucket: str, key: str) -> tuple[bytes, dict[str, Any]]:
    """What the storage server holds and its answer's head, read past the proxy."""
    answer = store.client().get_object(Bucket=bucket, Key=key)
    return answer["Body"].read(), answer


def forwarded_head(sent: bytes) -> bytes:
    """The header block of the (one) request the relay saw, lower-cased."""
    return sent.split(b"\r\n\r\n", 1)[0].lower()


@pytest.mark.parametrize("size", [0, 1, S, 3 * S + 7, MIB + S + 5])
def test_a_put_with_a_trailing_checksum_is_sealed(eu: ProxyThread, store: SignedStore, relay: Recorder,
                                                  eu_key: Path, size: int) -> None:
    data = body_of(size)
    key = f"alice/trailed-{size}.eml"
    trailing = Trailing(eu)
    mark = relay.mark()
    trailing.client.put_object(Bucket=DUBLIN, Key=key, Body=data)
    assert len(trailing.framed()) == 1              # the client did send its body framed, with a trailer
    sent = relay.since(mark)
    assert MARKER not in sent
    head = forwarded_head(sent)
    for framing in (b"aws-chunked", b"x-amz-decoded-content-length", b"x-amz-trailer", TRAILER.lower().encode(),
                    b"x-amz-checksum", b"content-encoding"):
        assert framing not in head
    assert b"x-amz-content-sha256: unsigned-payload" in head
    assert f"content-length: {ciphertext_length(size)}\r\n".encode() in head
    held, answer = stored(store, DUBLIN, key)
    assert len(held) == ciphertext_length(size)
    assert MARKER not in held
    assert "ContentEncoding" not in answer
    assert spec_open(eu_key, answer["Metadata"]["bailiwick-encryption"], held, bucket=DUBLIN, key=key) == data
    assert trailing.client.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == data


def test_a_multipart_upload_with_trailing_checksums_is_sealed(eu: ProxyThread, store: SignedStore, relay: Recorder,
                                                              eu_key: Path) -> None:
    data = body_of(5 * MIB + 3 * S + 11)
    key = "alice/trailed-parts.eml"
    trailing = Trailing(eu)
    mark = relay.mark()
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=2)
    trailing.client.upload_fileobj(io.BytesIO(data), DUBLIN, key, Config=config)
    assert len(trailing.framed()) == 2              # both parts sent framed, each with its trailing CRC32
    sent = relay.since(mark)
    assert MARKER not in sent
    assert b"aws-chunked" not in sent.lower()
    held, answer = stored(store, DUBLIN, key)
    assert MARKER not in held
    assert len(held) == part_stored_length(5 * MIB) + part_stored_length(3 * S + 11)
    assert open_stored(eu_key, DUBLIN, key, held, answer["Metadata"]["bailiwick-encryption"]) == data
    assert trailing.client.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == data


# ---- refusals: hand-built bodies ---------------------------------------------------------------------

def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def framed(data: bytes, trailer: str = "x-amz-checksum-crc32", value: str | None = None, chunk: int = S) -> bytes:
    """`data` in aws-chunked framing as botocore writes it, its trailer `trailer` (`value`: else the right CRC32)."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(data[at:at + chunk]), data[at:at + chunk])
                    for at in range(0, len(data), chunk))
    return body + f"0\r\n{trailer}:{value or crc32(data)}\r\n\r\n".encode()


def put(proxy: ProxyThread, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """One PUT as written, its body sent whole with its Content-Length: status and answer body."""
    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("PUT", path, body, {"X-Bailiwick-Token": make_token("IE"), **headers})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def trailer_headers(length: int, trailer: str = "x-amz-checksum-crc32", **more: str) -> dict[str, str]:
    return {"X-Amz-Content-SHA256": TRAILER, "Content-Encoding": "aws-chunked",
            "X-Amz-Decoded-Content-Length": str(length), "X-Amz-Trailer": trailer, **more}


DATA = (MARKER * (2 * S // len(MARKER) + 50))
REFUSED = {
    "wrong trailer checksum": (framed(DATA, value=crc32(b"other")), trailer_headers(len(DATA)), 400, "BadDigest"),
    "wrong sha256 trailer": (framed(DATA, "x-amz-checksum-sha256", base64.b64encode(hashlib.sha256(b"x").digest())
                                    .decode()), trailer_headers(len(DATA), "x-amz-checksum-sha256"), 400,
                             "BadDigest"),
    "body cut in a chunk": (framed(DATA)[:S + 100], trailer_headers(len(DATA)), 400, "IncompleteBody"),
    "body cut before its trailer": (framed(DATA).rsplit(b"0\r\n", 1)[0], trailer_headers(len(DATA)), 400,
                                    "IncompleteBody"),
    "decoded length too long": (framed(DATA), trailer_headers(len(DATA) + 1), 400, "IncompleteBody"),
    "decoded length too short": (framed(DATA), trailer_headers(len(DATA) - 1), 400, "IncompleteBody"),
    "decoded length over the wire length": (framed(DATA), trailer_headers(len(framed(DATA))), 400, "IncompleteBody"),
    "decoded length not a number": (framed(DATA), trailer_headers(len(DATA), **{"X-Amz-Decoded-Content-Length":
                                                                               f"{len(DATA)}.0"}), 400,
                                    "InvalidArgument"),
    "crc32c trailer": (framed(DATA, "x-amz-checksum-crc32c", "AAAAAA=="), trailer_headers(len(DATA),
                                                                                          "x-amz-checksum-crc32c"),
                       501, "NotImplemented"),
    "crc64nvme trailer": (framed(DATA, "x-amz-checksum-crc64nvme", "AAAAAAAAAAA="),
                          trailer_headers(len(DATA), "x-amz-checksum-crc64nvme"), 501, "NotImplemented"),
    "no trailer announced": (framed(DATA), {k: v for k, v in trailer_headers(len(DATA)).items()
                                            if k != "X-Amz-Trailer"}, 400, "InvalidRequest"),
    "trailer other than announced": (framed(DATA, "x-amz-checksum-sha1", "A" * 27 + "="),
                                     trailer_headers(len(DATA)), 400, "InvalidRequest"),
    "unsigned payload in aws-chunked": (framed(DATA), trailer_headers(len(DATA), **{
        "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}), 501, "NotImplemented"),
}


@pytest.mark.parametrize(("body", "headers", "status", "code"), REFUSED.values(), ids=REFUSED.keys())
def test_a_put_whose_framing_does_not_hold_stores_nothing(eu: ProxyThread, store: SignedStore, relay: Recorder,
                                                          body: bytes, headers: dict[str, str], status: int,
                                                          code: str) -> None:
    key = f"alice/refused-{hashlib.sha256(body + repr(headers).encode()).hexdigest()[:10]}.eml"
    mark = relay.mark()
    got, answer = put(eu, f"/{DUBLIN}/{key}", body, headers)
    assert (got, code_of(answer)) == (status, code), answer[:300]
    assert MARKER not in relay.since(mark)
    assert not exists(store, DUBLIN, key)


def test_a_hand_built_put_keeps_its_other_content_encoding(eu: ProxyThread, store: SignedStore, eu_key: Path) -> None:
    key = "alice/gzip-named.eml"
    status, answer = put(eu, f"/{DUBLIN}/{key}", framed(DATA, chunk=S + 3),
                         trailer_headers(len(DATA), **{"Content-Encoding": "gzip,aws-chunked"}))
    assert status == 200, answer
    held, stored_answer = stored(store, DUBLIN, key)
    assert stored_answer["ContentEncoding"] == "gzip"
    assert spec_open(eu_key, stored_answer["Metadata"]["bailiwick-encryption"], held, bucket=DUBLIN, key=key) == DATA


def test_a_part_with_a_wrong_trailer_checksum_is_not_stored(eu: ProxyThread, relay: Recorder) -> None:
    trailing = Trailing(eu)
    key = "alice/refused-part.eml"
    upload_id = trailing.client.create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"]
    mark = relay.mark()
    status, answer = put(eu, f"/{DUBLIN}/{key}?partNumber=1&uploadId={upload_id}",
                         framed(DATA, value=crc32(b"other")), trailer_headers(len(DATA)))
    assert (status, code_of(answer)) == (400, "BadDigest")
    assert MARKER not in relay.since(mark)
    assert trailing.client.list_parts(Bucket=DUBLIN, Key=key, UploadId=upload_id).get("Parts", []) == []
    status, answer = put(eu, f"/{DUBLIN}/{key}?partNumber=1&uploadId={upload_id}",
                         framed(DATA, "x-amz-checksum-crc32c", "AAAAAA=="),
                         trailer_headers(len(DATA), "x-amz-checksum-crc32c"))
    assert (status, code_of(answer)) == (501, "NotImplemented")
    trailing.client.abort_multipart_upload(Bucket=DUBLIN, Key=key, UploadId=upload_id)


def test_a_plaintext_dataset_gets_the_framed_body_as_sent(eu: ProxyThread, store: SignedStore,
                                                          relay: Recorder) -> None:
    data = body_of(S + 9)
    trailing = Trailing(eu)
    mark = relay.mark()
    trailing.client.put_object(Bucket=PLAIN, Key="plain.eml", Body=data)
    assert len(trailing.framed()) == 1
    sent = relay.since(mark)
    head = forwarded_head(sent)
    assert f"x-amz-content-sha256: {TRAILER}".lower().encode() in head
    assert b"content-encoding: aws-chunked" in head
    assert b"x-amz-checksum-crc32:" in sent           # the trailer, forwarded for the storage server to check
    held, _ = stored(store, PLAIN, "plain.eml")
    assert held == data
