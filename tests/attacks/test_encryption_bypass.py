"""Attacks on the encryption stage: plaintext stored in an encrypted dataset, unverified bytes handed out,
requests forwarded that should be refused, and resources the stage holds on to.

The real proxy in re-sign mode with a key file, in front of moto checking every signature, behind a
`Recorder` relay that keeps every byte sent to the storage server. Each case asserts what reached the
storage server (no plaintext marker), what the caller got (status, S3 error code) and, where the proxy
answered itself, its audit line. Several cases are bugs a review found and the proxy now refuses: a pool slot
kept by every copy, another region's data sealed with this region's key, a storage server's odd success passed
on unverified, a copy's key release misattributed, and the smaller ones named in each case.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from proxy.config import Config
from proxy.crypto.keyfile import KeyFileService, write_key_file
from proxy.crypto.segments import SEGMENT_SIZE, ciphertext_length
from proxy.harness import ProxyThread
from tests.conftest import make_token, s3_client
from tests.crypto.test_encrypted_objects import DUBLIN, MARKER, MIGRATING, US, irish, stored
from tests.support.encrypting import (  # noqa: F401  (the fixture "relay")
    add_datasets,
    encrypted_policies,
    encrypting_proxy_config,
    key_file_encryption,
    local_dataset,
    relay_fixture,
)
from tests.support.iam import SignedStore, signed_store
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record

S = SEGMENT_SIZE
SHARED, LOCKED, PLAIN = "eu-shared", "eu-locked", "eu-plain"
# An unencrypted bucket with an encrypted prefix in it, an encrypted bucket with an unencrypted prefix,
# and a plain (unencrypted) bucket, all in Dublin's region and writable from Ireland.
NESTED = (local_dataset("shared-outer", f"s3://{SHARED}", "A shared bucket, unencrypted.", "shared-local")
          + local_dataset("shared-secret", f"s3://{SHARED}/secret/", "An encrypted prefix inside the shared bucket.",
                          "secret-local", encryption="required")
          + local_dataset("plain-eu", f"s3://{PLAIN}", "Unencrypted Irish data.", "plain-local"))


def policies(folder: Path) -> Path:
    encrypted_policies(folder)
    add_datasets(folder, NESTED)
    return folder


@pytest.fixture(scope="module")
def store() -> Iterator[SignedStore]:
    buckets: dict[str, str | None] = {DUBLIN: "eu-west-1", MIGRATING: "eu-west-1", SHARED: "eu-west-1",
                                      PLAIN: "eu-west-1", US: None}
    with signed_store("bailiwick-bypass", buckets) as running:
        yield running


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bypass-key") / "eu.key"
    write_key_file(path)
    return path


def config(folder: Path, store: SignedStore, relay: Recorder, key: Path, **upstream: Any) -> Config:
    made = encrypting_proxy_config(folder, store, relay.url, "eu-west-1", key_file_encryption(key))
    shutil.rmtree(folder / "policies")
    made = replace(made, policies=policies(folder / "policies"))
    return replace(made, upstream=replace(made.upstream, **upstream)) if upstream else made


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bypass")


@pytest.fixture(scope="module")
def eu(store: SignedStore, relay: Recorder, key: Path, folder: Path) -> Iterator[ProxyThread]:
    running = ProxyThread(config(folder, store, relay, key)).start()
    yield running
    running.stop()


def exists(store: SignedStore, bucket: str, key: str) -> bool:
    try:
        store.client().head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


def raw(proxy: ProxyThread, method: str, path: str, headers: dict[str, str] | list[tuple[str, str]],
        body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request as written (headers repeated if given as pairs); status, headers, body (b"" if cut)."""
    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest(method, path, skip_accept_encoding=True)
    pairs = list(headers.items()) if isinstance(headers, dict) else headers
    for name, value in [("X-Bailiwick-Token", make_token("IE")), *pairs]:
        conn.putheader(name, value)
    conn.endheaders(body if body else None)
    answer = conn.getresponse()
    try:
        received = answer.read()
    except (http.client.IncompleteRead, ConnectionError):
        received = b""
    conn.close()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, received


def code_of(body: bytes) -> str:
    return body.split(b"<Code>", 1)[1].split(b"</Code>", 1)[0].decode() if b"<Code>" in body else ""


def audit(folder: Path, decision: str) -> dict[str, Any]:
    return wait_for_record(folder / "audit.jsonl", lambda r: r["decision_id"] == decision)


# ---- writes: what a PUT to an encrypted dataset may carry -------------------------------------------

def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n" % (len(data), data)


_FRAMED = _chunked(MARKER * 4)
# (headers, body, status, code): an aws-chunked body in any spelling is refused before anything is sent.
WRITES = {
    "aws-chunked": ([("Content-Encoding", "aws-chunked")], _FRAMED, 501, "NotImplemented"),
    "aws-chunked-upper": ([("Content-Encoding", "AWS-Chunked")], _FRAMED, 501, "NotImplemented"),
    "aws-chunked-listed": ([("Content-Encoding", "gzip, aws-chunked")], _FRAMED, 501, "NotImplemented"),
    "decoded-length-alone": ([("x-amz-decoded-content-length", str(len(MARKER) * 4))], _FRAMED, 501,
                             "NotImplemented"),
    "aws-chunked-second-header": ([("Content-Encoding", "gzip"), ("Content-Encoding", "aws-chunked")], _FRAMED,
                                  501, "NotImplemented"),
    "chunked-without-length": ([("Transfer-Encoding", "chunked")], b"%x\r\n%s\r\n0\r\n\r\n" % (len(MARKER), MARKER),
                               411, "MissingContentLength"),
    "write-offset-append": ([("x-amz-write-offset-bytes", "0")], MARKER, 501, "NotImplemented"),
    "crc32c": ([("x-amz-checksum-crc32c", "AAAAAA==")], MARKER, 501, "NotImplemented"),
    "md5-not-base64": ([("Content-MD5", "not base64!")], MARKER, 400, "InvalidDigest"),
    "md5-of-other-bytes": ([("Content-MD5", _md5(b"other"))], MARKER, 400, "BadDigest"),
    # The proxy checks one; a storage server might have read the other: refused, whichever is right.
    "md5-twice": ([("Content-MD5", _md5(MARKER)), ("Content-MD5", _md5(b"other"))], MARKER, 400, "InvalidDigest"),
    "payload-hash-of-other-bytes": ([("x-amz-content-sha256", hashlib.sha256(b"other").hexdigest())], MARKER,
                                    400, "XAmzContentSHA256Mismatch"),
}


@pytest.mark.parametrize(("headers", "body", "status", "code"), WRITES.values(), ids=WRITES.keys())
def test_a_write_the_proxy_cannot_check_stores_nothing(eu: ProxyThread, store: SignedStore, relay: Recorder,
                                                       folder: Path, headers: list[tuple[str, str]], body: bytes,
                                                       status: int, code: str) -> None:
    key = f"alice/write-{hashlib.sha256(repr(headers).encode()).hexdigest()[:8]}.eml"
    mark = relay.mark()
    framing = [] if any(name == "Transfer-Encoding" for name, _ in headers) else [("Content-Length", str(len(body)))]
    got, answer_headers, received = raw(eu, "PUT", f"/{DUBLIN}/{key}", [*headers, *framing], body)
    assert (got, code_of(received)) == (status, code), received[:300]
    assert MARKER not in relay.since(mark)
    assert not exists(store, DUBLIN, key)
    line = audit(folder, answer_headers["x-amz-request-id"])
    assert line["status"] == status


def test_a_digest_wrong_only_in_the_last_segment_stores_nothing(eu: ProxyThread, store: SignedStore,
                                                                relay: Recorder) -> None:
    data = MARKER * (3 * S // len(MARKER) + 5)
    digest = _md5(data[:-1] + b"!")
    mark = relay.mark()
    status, _, received = raw(eu, "PUT", f"/{DUBLIN}/alice/last-wrong.eml",
                              {"Content-MD5": digest, "Content-Length": str(len(data))}, data)
    assert (status, code_of(received)) == (400, "BadDigest")
    # The relay hands on what it reads from the proxy's (aborted) connection on its own thread: wait for it.
    deadline = time.monotonic() + 5
    while b"\r\n\r\n" not in relay.since(mark) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    sent = relay.since(mark)
    assert MARKER not in sent
    # Every segment but the last went out; the last one never did, so the storage server had no whole body.
    assert len(sent.split(b"\r\n\r\n", 1)[1]) < ciphertext_length(len(data))
    assert not exists(store, DUBLIN, "alice/last-wrong.eml")


def test_a_caller_that_stops_mid_body_leaves_nothing(eu: ProxyThread, store: SignedStore, relay: Recorder) -> None:
    host, port = eu.url.removeprefix("http://").split(":")
    import socket

    mark = relay.mark()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"PUT /{DUBLIN}/alice/abandoned.eml HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"X-Bailiwick-Token: {make_token('IE')}\r\nContent-Length: {3 * S}\r\n\r\n").encode()
                     + MARKER * 5000)   # fewer bytes than it said
        time.sleep(0.5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and b"abandoned" not in relay.since(mark):
        time.sleep(0.05)
    time.sleep(0.5)
    assert MARKER not in relay.since(mark)
    assert not exists(store, DUBLIN, "alice/abandoned.eml")


def test_a_caller_supplied_envelope_is_replaced(eu: ProxyThread, store: SignedStore) -> None:
    forged = "v=1;forged=yes"
    irish(eu).put_object(Bucket=DUBLIN, Key="alice/forged.eml", Body=MARKER,
                         Metadata={"bailiwick-encryption": forged})
    held, metadata = stored(store, DUBLIN, "alice/forged.eml")
    assert MARKER not in held
    assert metadata["bailiwick-encryption"] != forged
    assert irish(eu).get_object(Bucket=DUBLIN, Key="alice/forged.eml")["Body"].read() == MARKER


def test_a_forged_envelope_is_never_stored(eu: ProxyThread, store: SignedStore) -> None:
    status, _, received = raw(eu, "PUT", f"/{PLAIN}/forged.eml", {"x-amz-meta-bailiwick-encryption": "v=1",
                                                                  "Content-Length": str(len(MARKER))}, MARKER)
    assert (status, code_of(received)) == (400, "InvalidArgument")
    assert not exists(store, PLAIN, "forged.eml")


# ---- nested datasets ----------------------------------------------------------------------------

def test_a_write_into_an_encrypted_prefix_of_an_unencrypted_bucket_is_sealed(eu: ProxyThread, store: SignedStore,
                                                                            relay: Recorder) -> None:
    mark = relay.mark()
    irish(eu).put_object(Bucket=SHARED, Key="secret/nested.eml", Body=MARKER * 3)
    assert MARKER not in relay.since(mark)
    assert MARKER not in stored(store, SHARED, "secret/nested.eml")[0]
    assert irish(eu).get_object(Bucket=SHARED, Key="secret/nested.eml")["Body"].read() == MARKER * 3
    # The same bucket outside the prefix is not encrypted, and stays as it was.
    irish(eu).put_object(Bucket=SHARED, Key="open/plain.eml", Body=MARKER)
    assert stored(store, SHARED, "open/plain.eml")[0] == MARKER


def test_a_listing_of_the_outer_bucket_shows_the_nested_plaintext_sizes(eu: ProxyThread) -> None:
    irish(eu).put_object(Bucket=SHARED, Key="secret/sized.eml", Body=b"x" * 1000)
    listed = irish(eu).list_objects_v2(Bucket=SHARED)["Contents"]
    assert {o["Key"]: o["Size"] for o in listed}["secret/sized.eml"] == 1000


@pytest.mark.parametrize("spelling", ["secret%2Fcopied.eml", "secret/./copied.eml"])
def test_a_key_spelled_otherwise_into_the_encrypted_prefix_is_sealed_or_refused(
        eu: ProxyThread, store: SignedStore, relay: Recorder, spelling: str) -> None:
    mark = relay.mark()
    status, _, _ = raw(eu, "PUT", f"/{SHARED}/{spelling}", {"Content-Length": str(len(MARKER))}, MARKER)
    assert MARKER not in relay.since(mark)
    assert status in (200, 400, 403)


# ---- copies carried out by the proxy ------------------------------------------------------------

def test_a_copy_out_of_an_encrypted_dataset_into_a_plain_one_and_back(eu: ProxyThread, store: SignedStore) -> None:
    client = irish(eu)
    data = MARKER * 5000
    client.put_object(Bucket=DUBLIN, Key="alice/out-and-back.eml", Body=data)
    client.copy_object(Bucket=PLAIN, Key="out.eml", CopySource={"Bucket": DUBLIN, "Key": "alice/out-and-back.eml"})
    held, metadata = stored(store, PLAIN, "out.eml")
    assert held == data   # the destination is unencrypted: plaintext
    assert "bailiwick-encryption" not in metadata
    client.copy_object(Bucket=DUBLIN, Key="alice/back.eml", CopySource={"Bucket": PLAIN, "Key": "out.eml"})
    assert MARKER not in stored(store, DUBLIN, "alice/back.eml")[0]
    assert client.get_object(Bucket=DUBLIN, Key="alice/back.eml")["Body"].read() == data


def test_a_copy_onto_itself_stays_readable(eu: ProxyThread, store: SignedStore) -> None:
    client = irish(eu)
    client.put_object(Bucket=DUBLIN, Key="alice/self.eml", Body=MARKER * 100)
    client.copy_object(Bucket=DUBLIN, Key="alice/self.eml", CopySource={"Bucket": DUBLIN, "Key": "alice/self.eml"},
                       MetadataDirective="REPLACE", Metadata={"moved": "no"})
    assert MARKER not in stored(store, DUBLIN, "alice/self.eml")[0]
    assert client.get_object(Bucket=DUBLIN, Key="alice/self.eml")["Body"].read() == MARKER * 100


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"x-amz-metadata-directive": "MOVE"}, 400, "InvalidArgument"),
        ({"x-amz-tagging-directive": "copy, replace"}, 400, "InvalidArgument"),
        ({"x-amz-copy-source-server-side-encryption-customer-algorithm": "AES256"}, 501, "NotImplemented"),
    ],
)
def test_a_copy_with_odd_directives_is_refused(eu: ProxyThread, store: SignedStore, relay: Recorder,
                                               headers: dict[str, str], status: int, code: str) -> None:
    irish(eu).put_object(Bucket=DUBLIN, Key="alice/directive.eml", Body=MARKER)
    mark = relay.mark()
    got, _, received = raw(eu, "PUT", f"/{DUBLIN}/alice/directive-copy.eml",
                           {"x-amz-copy-source": f"/{DUBLIN}/alice/directive.eml", "Content-Length": "0", **headers})
    assert (got, code_of(received)) == (status, code)
    assert relay.since(mark) == b""


def test_a_copy_request_body_is_never_stored(eu: ProxyThread, store: SignedStore, relay: Recorder) -> None:
    irish(eu).put_object(Bucket=DUBLIN, Key="alice/with-body.eml", Body=b"source")
    mark = relay.mark()
    status, _, _ = raw(eu, "PUT", f"/{DUBLIN}/alice/with-body-copy.eml",
                       {"x-amz-copy-source": f"/{DUBLIN}/alice/with-body.eml",
                        "Content-Length": str(len(MARKER))}, MARKER)
    assert MARKER not in relay.since(mark)
    assert status == 200
    assert irish(eu).get_object(Bucket=DUBLIN, Key="alice/with-body-copy.eml")["Body"].read() == b"source"


def _small_pool(store: SignedStore, relay: Recorder, key: Path, folder: Path) -> ProxyThread:
    return ProxyThread(config(folder, store, relay, key, max_connections=3, max_connections_per_peer=3,
                              connect_timeout_seconds=1.0)).start()


def test_copies_give_their_source_connection_back(store: SignedStore, relay: Recorder, key: Path,
                                                  tmp_path: Path) -> None:
    proxy = _small_pool(store, relay, key, tmp_path)
    try:
        client = irish(proxy)
        client.put_object(Bucket=DUBLIN, Key="alice/pool-source.eml", Body=b"copied many times")
        for number in range(5):   # more copies than the pool has connections
            client.copy_object(Bucket=DUBLIN, Key=f"alice/pool-copy-{number}.eml",
                               CopySource={"Bucket": DUBLIN, "Key": "alice/pool-source.eml"})
        # Unencrypted traffic too goes on.
        client.put_object(Bucket=PLAIN, Key="after-copies.txt", Body=b"still served")
    finally:
        proxy.stop()


def test_failed_copies_give_their_connections_back(store: SignedStore, relay: Recorder, key: Path,
                                                   tmp_path: Path) -> None:
    proxy = _small_pool(store, relay, key, tmp_path)
    try:
        client = irish(proxy)
        client.put_object(Bucket=DUBLIN, Key="alice/pool-guarded.eml", Body=b"guarded")
        for _ in range(5):
            with pytest.raises(ClientError) as refused:
                client.copy_object(Bucket=DUBLIN, Key="alice/pool-guarded-copy.eml",
                                   CopySource={"Bucket": DUBLIN, "Key": "alice/pool-guarded.eml"},
                                   CopySourceIfMatch='"0123456789abcdef0123456789abcdef"')
            assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
            with pytest.raises(ClientError):
                client.copy_object(Bucket=DUBLIN, Key="alice/pool-missing-copy.eml",
                                   CopySource={"Bucket": DUBLIN, "Key": "alice/not-there.eml"})
        client.put_object(Bucket=PLAIN, Key="after-failed-copies.txt", Body=b"still served")
    finally:
        proxy.stop()


# ---- reads --------------------------------------------------------------------------------------

RANGE_BODY = MARKER * (2 * S // len(MARKER) + 3)


@pytest.mark.parametrize(
    ("size", "asked", "status", "expected"),
    [
        (len(RANGE_BODY), "bytes=0-", 206, (0, len(RANGE_BODY))),
        (len(RANGE_BODY), f"bytes=-{10 * S}", 206, (0, len(RANGE_BODY))),
        (len(RANGE_BODY), "bytes=18446744073709551615-", 400, "InvalidArgument"),
        (len(RANGE_BODY), "bytes=9999999999999999999-", 416, "InvalidRange"),
        (len(RANGE_BODY), "bytes=5-1", 400, "InvalidArgument"),
        (len(RANGE_BODY), "bytes=0-1,5-6", 400, "InvalidArgument"),
        (len(RANGE_BODY), "bytes=-0", 416, "InvalidRange"),
        (len(RANGE_BODY), "items=0-1", 400, "InvalidArgument"),
        (0, "bytes=0-", 416, "InvalidRange"),
        (0, "bytes=-5", 416, "InvalidRange"),
        (S, f"bytes={S - 1}-", 206, (S - 1, S)),
        (S, f"bytes={S}-", 416, "InvalidRange"),
        (S, "bytes=-1", 206, (S - 1, S)),
    ],
)
def test_range_edges(eu: ProxyThread, size: int, asked: str, status: int, expected: Any) -> None:
    key = f"alice/range-edge-{size}.eml"
    irish(eu).put_object(Bucket=DUBLIN, Key=key, Body=RANGE_BODY[:size])
    got, headers, received = raw(eu, "GET", f"/{DUBLIN}/{key}", {"Range": asked})
    assert got == status, received[:300]
    if isinstance(expected, tuple):
        assert received == RANGE_BODY[:size][expected[0]:expected[1]]
        assert headers["content-range"] == f"bytes {expected[0]}-{expected[1] - 1}/{size}"
    else:
        assert code_of(received) == expected
        assert MARKER not in received


def test_two_range_headers_are_refused(eu: ProxyThread, relay: Recorder) -> None:
    irish(eu).put_object(Bucket=DUBLIN, Key="alice/two-ranges.eml", Body=RANGE_BODY)
    mark = relay.mark()
    status, _, received = raw(eu, "GET", f"/{DUBLIN}/alice/two-ranges.eml",
                              [("Range", "bytes=0-1"), ("Range", f"bytes={S}-{S + 1}")])
    assert (status, code_of(received)) == (400, "InvalidArgument")
    assert relay.since(mark) == b""


def _plant(store: SignedStore, bucket: str, key: str, body: bytes, metadata: dict[str, str]) -> None:
    store.client().put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)


def test_a_body_swapped_with_another_of_the_same_size_is_refused(eu: ProxyThread, store: SignedStore) -> None:
    client = irish(eu)
    client.put_object(Bucket=DUBLIN, Key="alice/same-a.eml", Body=b"A" * (S + 10))
    client.put_object(Bucket=DUBLIN, Key="alice/same-b.eml", Body=MARKER + b"B" * (S + 10 - len(MARKER)))
    _, a_meta = stored(store, DUBLIN, "alice/same-a.eml")
    b_body, _ = stored(store, DUBLIN, "alice/same-b.eml")
    _plant(store, DUBLIN, "alice/same-a.eml", b_body, a_meta)   # a's envelope, b's ciphertext
    for asked in ({}, {"Range": f"bytes={S}-"}, {"Range": "bytes=-3"}):
        status, _, received = raw(eu, "GET", f"/{DUBLIN}/alice/same-a.eml", asked)
        assert (status, code_of(received)) == (502, "EncryptedObjectInvalid")
        assert MARKER not in received
        assert b"B" * 10 not in received
    status, headers, _ = raw(eu, "HEAD", f"/{DUBLIN}/alice/same-a.eml", {})
    assert status == 200   # a HEAD hands out no byte of the body
    assert headers["content-length"] == str(S + 10)


def test_an_envelope_with_an_unencrypted_body_is_refused(eu: ProxyThread, store: SignedStore) -> None:
    client = irish(eu)
    client.put_object(Bucket=DUBLIN, Key="alice/envelope-only.eml", Body=b"z" * 100)
    _, metadata = stored(store, DUBLIN, "alice/envelope-only.eml")
    planted = (MARKER * 100)[: ciphertext_length(100)]
    _plant(store, DUBLIN, "alice/envelope-only.eml", planted, metadata)
    status, _, received = raw(eu, "GET", f"/{DUBLIN}/alice/envelope-only.eml", {})
    assert (status, code_of(received)) == (502, "EncryptedObjectInvalid")
    assert MARKER not in received


# ---- resources: the key service must not hold up what does not need it ------------------------------

def test_a_slow_key_service_does_not_stall_unencrypted_traffic(store: SignedStore, relay: Recorder, key: Path,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    proxy = _small_pool(store, relay, key, tmp_path)
    release = threading.Event()
    original = KeyFileService.unwrap

    def slow(self: KeyFileService, wrapped: str, context: bytes, why: Any) -> bytes:
        release.wait(10)
        return original(self, wrapped, context, why)

    try:
        client = irish(proxy)
        client.put_object(Bucket=DUBLIN, Key="alice/slow.eml", Body=b"slow")
        client.put_object(Bucket=PLAIN, Key="fast.txt", Body=b"fast")
        monkeypatch.setattr(KeyFileService, "unwrap", slow)
        readers = [threading.Thread(target=lambda: irish(proxy).get_object(Bucket=DUBLIN, Key="alice/slow.eml"))
                   for _ in range(3)]
        for reader in readers:
            reader.start()
        time.sleep(1.0)   # the three reads are waiting for the key service
        started = time.monotonic()
        try:
            assert client.get_object(Bucket=PLAIN, Key="fast.txt")["Body"].read() == b"fast"
        finally:
            release.set()
            for reader in readers:
                reader.join(15)
        assert time.monotonic() - started < 0.9
    finally:
        release.set()
        proxy.stop()


# ---- operations that must not reach an encrypted dataset ---------------------------------------------

REFUSED = {
    "post-object-form": ("POST", f"/{DUBLIN}", {"Content-Type": "multipart/form-data; boundary=x"},
                         b"--x\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nalice/p.eml\r\n--x\r\n"
                         b"Content-Disposition: form-data; name=\"file\"; filename=\"p\"\r\n\r\n" + MARKER
                         + b"\r\n--x--\r\n", (400, 403, 501)),
    # A storage server's own upload id (not the proxy's token) cannot seal a part: nothing is forwarded.
    "upload-part": ("PUT", f"/{DUBLIN}/alice/m.eml?partNumber=1&uploadId=abc", {}, MARKER, (404,)),
    "upload-part-copy": ("PUT", f"/{DUBLIN}/alice/m.eml?partNumber=1&uploadId=abc",
                         {"x-amz-copy-source": f"/{DUBLIN}/alice/forged.eml"}, b"", (404,)),
    "complete-multipart": ("POST", f"/{DUBLIN}/alice/m.eml?uploadId=abc", {},
                           b"<CompleteMultipartUpload></CompleteMultipartUpload>", (404,)),
    "upload-id-odd-case": ("PUT", f"/{DUBLIN}/alice/m.eml?partNumber=1&UploadId=abc", {}, MARKER, (403, 501)),
    "restore-with-select": ("POST", f"/{DUBLIN}/alice/forged.eml?restore", {},
                            b"<RestoreRequest><Type>SELECT</Type></RestoreRequest>", (403, 501)),
    "select": ("POST", f"/{DUBLIN}/alice/forged.eml?select&select-type=2", {}, b"<x/>", (501,)),
    "attributes": ("GET", f"/{DUBLIN}/alice/forged.eml?attributes", {"x-amz-object-attributes": "ObjectSize"},
                   b"", (501,)),
    "part-number-read": ("GET", f"/{DUBLIN}/alice/forged.eml?partNumber=1", {}, b"", (501,)),
    "part-number-head": ("HEAD", f"/{DUBLIN}/alice/forged.eml?partNumber=1", {}, b"", (501,)),
    "part-number-percent-encoded": ("GET", f"/{DUBLIN}/alice/forged.eml?part%4Eumber=1", {}, b"", (400, 403, 501)),
    "torrent": ("GET", f"/{DUBLIN}/alice/forged.eml?torrent", {}, b"", (501,)),
    "write-get-object-response": ("POST", "/WriteGetObjectResponse", {"x-amz-request-route": "r",
                                                                     "x-amz-request-token": "t"}, MARKER,
                                  (400, 403)),
}


@pytest.mark.parametrize(("method", "path", "headers", "body", "statuses"), REFUSED.values(), ids=REFUSED.keys())
def test_operations_the_stage_does_not_carry_out_are_refused(eu: ProxyThread, relay: Recorder, folder: Path,
                                                             method: str, path: str, headers: dict[str, str],
                                                             body: bytes, statuses: tuple[int, ...]) -> None:
    mark = relay.mark()
    status, answer_headers, received = raw(eu, method, path, {**headers, "Content-Length": str(len(body))}, body)
    assert status in statuses, received[:300]
    assert relay.since(mark) == b""
    if "x-amz-request-id" in answer_headers:
        assert audit(folder, answer_headers["x-amz-request-id"])["status"] == status


def test_an_if_range_with_the_presented_etag_is_forwarded_as_the_stored_one(eu: ProxyThread, store: SignedStore,
                                                                           relay: Recorder) -> None:
    client = irish(eu)
    etag = client.put_object(Bucket=DUBLIN, Key="alice/if-range.eml", Body=RANGE_BODY)["ETag"]
    stored_etag = store.client().head_object(Bucket=DUBLIN, Key="alice/if-range.eml")["ETag"]
    assert etag != stored_etag
    mark = relay.mark()
    status, _, received = raw(eu, "GET", f"/{DUBLIN}/alice/if-range.eml", {"Range": "bytes=10-19", "If-Range": etag})
    assert (status, received) == (206, RANGE_BODY[10:20])
    assert f"if-range: {stored_etag}".encode() in relay.since(mark).lower()


def test_an_upload_waiting_for_continue_is_refused_when_the_key_service_refuses(
        store: SignedStore, relay: Recorder, key: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.errors import KeyReleaseRefused

    def refuse(self: KeyFileService, context: bytes, why: Any) -> Any:
        raise KeyReleaseRefused("the region's key is frozen")

    monkeypatch.setattr(KeyFileService, "generate", refuse)
    proxy = ProxyThread(config(tmp_path, store, relay, key)).start()
    try:
        import socket

        host, port = proxy.url.removeprefix("http://").split(":")
        mark = relay.mark()
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall((f"PUT /{DUBLIN}/alice/continue.eml HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          f"X-Bailiwick-Token: {make_token('IE')}\r\nContent-Length: {len(MARKER)}\r\n"
                          "Expect: 100-continue\r\n\r\n").encode())
            answer = b""
            while b"</Error>" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 403"), answer[:200]   # no "100 Continue" first
        assert b"<Code>KeyReleaseRefused</Code>" in answer
        assert relay.since(mark) == b""
        decision = answer.split(b"x-amz-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
        line = audit(tmp_path, decision)
        assert line["key_release"]["result"] == "refused"
        assert line["status"] == 403
    finally:
        proxy.stop()


# ---- key releases of a copy: justified and audited as what they are -----------------------------

def test_a_copy_releases_the_source_key_for_the_source_dataset(eu: ProxyThread, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    client = irish(eu)
    client.put_object(Bucket=DUBLIN, Key="alice/justified.eml", Body=b"justified")
    released: list[str] = []
    original = KeyFileService.unwrap

    def recording(self: KeyFileService, wrapped: str, context: bytes, why: Any) -> bytes:
        released.append(why.dataset)
        return original(self, wrapped, context, why)

    monkeypatch.setattr(KeyFileService, "unwrap", recording)
    client.copy_object(Bucket=SHARED, Key="secret/justified.eml",
                       CopySource={"Bucket": DUBLIN, "Key": "alice/justified.eml"})
    assert released == ["dublin-mail"]


def test_a_copy_audits_the_source_key_release(eu: ProxyThread, folder: Path) -> None:
    client = irish(eu)
    client.put_object(Bucket=DUBLIN, Key="alice/audited-source.eml", Body=b"audited")
    answer = client.copy_object(Bucket=DUBLIN, Key="alice/audited-copy.eml",
                                CopySource={"Bucket": DUBLIN, "Key": "alice/audited-source.eml"})
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    line = wait_for_record(folder / "audit.jsonl", lambda r: r["request"]["operation"] == "CopyObject"
                           and r["request"]["resource"] == f"s3://{DUBLIN}/alice/audited-copy.eml")
    assert "unwrap" in repr(line["key_release"])


# ---- a storage server that answers what the test says ---------------------------------------------

class Scripted:
    """A storage server answering every request with the one answer a test sets: status, headers, body."""

    def __init__(self) -> None:
        import http.server

        self.answer: tuple[int, list[tuple[str, str]], bytes] = (404, [], b"")
        self.asked: list[tuple[str, str, dict[str, str]]] = []
        scripted = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length", "0") or 0)
                if length:
                    self.rfile.read(length)
                scripted.asked.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, headers, body = scripted.answer
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                if not any(name.lower() == "content-length" for name, _ in headers):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


@pytest.fixture(scope="module")
def faked(store: SignedStore, scripted: Scripted, key: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    """A proxy with the module's key, in front of the scripted storage server."""
    home = tmp_path_factory.mktemp("faked")
    made = encrypting_proxy_config(home, store, scripted.url, "eu-west-1", key_file_encryption(key))
    shutil.rmtree(home / "policies")
    running = ProxyThread(replace(made, policies=policies(home / "policies"))).start()
    yield running
    running.stop()


FAKED = b"FORGED-BY-THE-STORAGE-SERVER"


@pytest.fixture(scope="module")
def sealed(eu: ProxyThread, store: SignedStore) -> tuple[bytes, str]:
    """An object sealed by the real proxy (3 segments and a bit): its stored bytes and envelope."""
    irish(eu).put_object(Bucket=DUBLIN, Key="alice/scripted.eml", Body=RANGE_BODY)
    held, metadata = stored(store, DUBLIN, "alice/scripted.eml")
    return held, metadata["bailiwick-encryption"]


def _stored_segment(held: bytes, index: int) -> bytes:
    return held[index * (S + 16):(index + 1) * (S + 16)]


SCRIPTS = {
    # (status, extra headers, body, caller's Range) -> the caller gets a 502 and nothing of the body
    "203-with-a-forged-body": (203, [], FAKED, None),
    "204-with-a-forged-body-length": (204, [], b"", None),
    "206-starting-later-than-asked": (206, [("Content-Range", "bytes {seg1}-{end}/{total}")], b"{tail1}",
                                      "bytes=0-10"),
    "206-claiming-the-asked-start-with-another-segment": (
        206, [("Content-Range", "bytes {seg1}-{end}/{total}")], b"{tail0}", "bytes=65536-65546"),
    "206-of-another-total": (206, [("Content-Range", "bytes 0-{end}/{more}")], b"{all}", "bytes=0-10"),
    "206-without-content-range": (206, [], b"{all}", "bytes=0-10"),
    "200-short": (200, [], b"{short}", None),
}


@pytest.mark.parametrize(("status", "headers", "body", "asked"), SCRIPTS.values(), ids=SCRIPTS.keys())
def test_a_lying_storage_server_gets_nothing_unverified_to_the_caller(
        faked: ProxyThread, scripted: Scripted, sealed: tuple[bytes, str], status: int,
        headers: list[tuple[str, str]], body: bytes, asked: str | None) -> None:
    held, envelope = sealed
    values = {"seg1": str(S + 16), "end": str(len(held) - 1), "total": str(len(held)),
              "more": str(len(held) + 16)}
    filled = [(name, value.format(**values)) for name, value in headers]
    pieces = {b"{tail1}": held[S + 16:], b"{tail0}": held[:len(held) - S - 16], b"{all}": held,
              b"{short}": held[:-1]}
    scripted.answer = (status, [("x-amz-meta-bailiwick-encryption", envelope), *filled],
                       pieces.get(body, body))
    got, _, received = raw(faked, "GET", f"/{DUBLIN}/alice/scripted.eml", {"Range": asked} if asked else {})
    assert FAKED not in received
    assert MARKER not in received
    assert got == 502, received[:200]


def test_a_range_answered_whole_gives_the_whole_plaintext(faked: ProxyThread, scripted: Scripted,
                                                         sealed: tuple[bytes, str]) -> None:
    # What a storage server honouring an If-Range that does not hold does: the whole object, 200.
    held, envelope = sealed
    scripted.answer = (200, [("x-amz-meta-bailiwick-encryption", envelope)], held)
    got, headers, received = raw(faked, "GET", f"/{DUBLIN}/alice/scripted.eml",
                                 {"Range": "bytes=10-20", "If-Range": '"0123456789abcdef0123456789abcdef"'})
    assert (got, received) == (200, RANGE_BODY)
    assert "content-range" not in headers


def test_what_the_storage_server_says_of_the_ciphertext_is_not_passed_on(faked: ProxyThread, scripted: Scripted,
                                                                         sealed: tuple[bytes, str]) -> None:
    # Digests of the stored bytes: a client checking them against the plaintext would call the object corrupt.
    held, envelope = sealed
    stored_digests = [("Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg=="), ("x-amz-checksum-crc32", "AAAAAA=="),
                      ("x-amz-checksum-sha256", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
                      ("x-amz-checksum-type", "FULL_OBJECT")]
    scripted.answer = (200, [("x-amz-meta-bailiwick-encryption", envelope), *stored_digests], held)
    for method in ("GET", "HEAD"):
        got, headers, received = raw(faked, method, f"/{DUBLIN}/alice/scripted.eml", {})
        assert got == 200
        assert received == (RANGE_BODY if method == "GET" else b"")
        assert headers["content-length"] == str(len(RANGE_BODY))
        assert not {name.lower() for name, _ in stored_digests} & set(headers)


# ---- another region's data is never sealed with this region's key ----------------------------------

@pytest.mark.parametrize(
    ("changes", "caller"),
    [
        pytest.param({"dry_run": True}, "US", id="dry-run-forwards-another-regions-write"),
        pytest.param({"region": None}, "US", id="no-region-seals-every-regions-data"),
    ],
)
def test_another_regions_data_is_never_sealed_with_this_regions_key(
        store: SignedStore, relay: Recorder, key: Path, tmp_path: Path, changes: dict[str, Any], caller: str) -> None:
    proxy = ProxyThread(replace(config(tmp_path, store, relay, key), **changes)).start()
    try:
        mark = relay.mark()
        with pytest.raises(ClientError) as refused:
            s3_client(proxy.url, make_token(caller)).put_object(Bucket=US, Key="bob/sealed-abroad.eml", Body=MARKER)
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] in (403, 503)
        assert relay.since(mark) == b""
        assert not exists(store, US, "bob/sealed-abroad.eml")
    finally:
        proxy.stop()


LOCKED_POLICY = (
    local_dataset("locked-outer", f"s3://{LOCKED}", "An encrypted bucket.", "locked-local", encryption="required")
    + local_dataset("locked-trial", f"s3://{LOCKED}/trial/",
                    "A prefix of it under trial rules, which says nothing of encryption.", "trial-local",
                    mode="dry-run"))


def test_a_prefix_nested_in_an_encrypted_dataset_follows_its_own_encryption(tmp_path: Path) -> None:
    """By design (tests/policy/test_encryption.py): the most specific dataset decides, encryption included, so a
    nested dataset that leaves `encryption` out is stored as sent. A policy author must say it on both."""
    from proxy.domain import Resource
    from proxy.policy.engine import encryption_of
    from proxy.policy.loader import load_policy
    from proxy.policy.model import Encryption

    folder = policies(tmp_path / "policies")
    add_datasets(folder, LOCKED_POLICY)
    policy = load_policy(folder)
    assert encryption_of(policy, Resource("s3", LOCKED, "trial/x.eml")) is Encryption.NONE
    assert encryption_of(policy, Resource("s3", LOCKED, "other/x.eml")) is Encryption.REQUIRED
