"""Encrypted datasets end to end: the real proxy in re-sign mode, moto checking every signature, boto3.

What is asserted is what the storage server holds (read straight from moto,
bypassing the proxy) and what callers get: the stored bytes carry no trace of
the plaintext, every size and range a caller sees is the plaintext's, and an
object changed at rest (a flipped byte, truncated, swapped with another, or
copied to another region) is refused without a byte of it reaching the caller
unverified.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from proxy import admin
from proxy.config import Config
from proxy.config.model import KeyCacheSettings
from proxy.crypto.keyfile import write_key_file
from proxy.crypto.segments import SEGMENT_SIZE, ciphertext_length
from proxy.harness import ProxyThread
from tests.conftest import make_token, s3_client
from tests.support.encrypting import (  # noqa: F401  (the fixture "relay")
    audit_line,
    encrypting_proxy_config,
    key_file_encryption,
    relay_fixture,
)
from tests.support.iam import SignedStore, signed_store
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record, written_records
from tests.support.serve import wait_until

DUBLIN, US, MIGRATING = "mail-eu-dublin", "mail-us-east", "mail-eu-migrating"
MARKER = b"PLAINTEXT-MARKER-7f3a"
S = SEGMENT_SIZE


@pytest.fixture(scope="module")
def store() -> Iterator[SignedStore]:
    with signed_store("bailiwick-eu", {DUBLIN: "eu-west-1", US: None, MIGRATING: "eu-west-1"}) as running:
        yield running


def encrypting_config(folder: Path, store: SignedStore, upstream: str, region: str, key: Path) -> Config:
    """A proxy of `region` whose region's key is the key file `key` (see `encrypting_proxy_config`)."""
    return encrypting_proxy_config(folder, store, upstream, region, key_file_encryption(key))


@pytest.fixture(scope="module")
def eu_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("eu-key") / "eu.key"
    write_key_file(path)
    return path


@pytest.fixture(scope="module")
def eu_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eu")


@pytest.fixture(scope="module")
def eu(store: SignedStore, relay: Recorder, eu_key: Path, eu_folder: Path) -> Iterator[ProxyThread]:
    running = ProxyThread(encrypting_config(eu_folder, store, relay.url, "eu-west-1", eu_key)).start()
    yield running
    running.stop()


def irish(proxy: ProxyThread) -> Any:
    return s3_client(proxy.url, make_token("IE"))


def stored(store: SignedStore, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
    """What the storage server holds, read past the proxy."""
    answer = store.client().get_object(Bucket=bucket, Key=key)
    return answer["Body"].read(), answer["Metadata"]


def body_of(size: int) -> bytes:
    return (MARKER + os.urandom(64)) * (size // (len(MARKER) + 64)) + MARKER[: size % (len(MARKER) + 64)]


@pytest.mark.parametrize("size", [0, 1, S - 1, S, S + 1, 3 * S + 7])
def test_round_trip_stores_only_ciphertext(eu: ProxyThread, store: SignedStore, relay: Recorder, size: int) -> None:
    data = body_of(size)
    key = f"alice/sized-{size}.eml"
    mark = relay.mark()
    irish(eu).put_object(Bucket=DUBLIN, Key=key, Body=data)
    assert MARKER not in relay.since(mark)          # nothing of the plaintext crossed to the storage server
    held, metadata = stored(store, DUBLIN, key)
    assert len(held) == ciphertext_length(size)
    assert MARKER not in held
    assert "bailiwick-encryption" in metadata
    got = irish(eu).get_object(Bucket=DUBLIN, Key=key)
    assert got["Body"].read() == data
    assert got["ContentLength"] == size
    assert irish(eu).head_object(Bucket=DUBLIN, Key=key)["ContentLength"] == size
    # A prefix without "/": moto re-reads the query decoding "%2F", and would refuse the proxy's signature.
    listed = irish(eu).list_objects_v2(Bucket=DUBLIN, Prefix="alice")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed if o["Key"] == key] == [(key, size)]


RANGED = body_of(3 * S + 100)


@pytest.fixture(scope="module")
def ranged(eu: ProxyThread) -> str:
    irish(eu).put_object(Bucket=DUBLIN, Key="alice/ranged.eml", Body=RANGED)
    return "alice/ranged.eml"


@pytest.mark.parametrize(
    ("asked", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        (f"bytes={S - 1}-{S}", S - 1, S),                       # across the first boundary
        (f"bytes={S - 10}-{2 * S + 10}", S - 10, 2 * S + 10),   # three segments
        (f"bytes={S}-{2 * S - 1}", S, 2 * S - 1),               # exactly one whole segment
        (f"bytes={3 * S}-", 3 * S, 3 * S + 99),                 # open-ended, the last segment
        (f"bytes={S + 5}-", S + 5, 3 * S + 99),                 # open-ended across boundaries
        ("bytes=-1", 3 * S + 99, 3 * S + 99),                   # suffix: the last byte
        (f"bytes=-{S + 150}", 2 * S - 50, 3 * S + 99),          # suffix across boundaries
        (f"bytes=-{10 * S}", 0, 3 * S + 99),                    # suffix longer than the object
        (f"bytes=100-{10 * S}", 100, 3 * S + 99),               # end past the object
    ],
)
def test_every_range_is_the_plaintext_slice(eu: ProxyThread, ranged: str, asked: str, first: int, last: int) -> None:
    got = irish(eu).get_object(Bucket=DUBLIN, Key=ranged, Range=asked)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == f"bytes {first}-{last}/{len(RANGED)}"
    assert got["Body"].read() == RANGED[first:last + 1]


STORED_SEGMENT = S + 16


@pytest.mark.parametrize(
    ("asked", "forwarded"),
    [
        ("bytes=0-99", f"bytes=0-{STORED_SEGMENT - 1}"),                                  # the first segment
        (f"bytes={S}-{2 * S - 1}", f"bytes={STORED_SEGMENT}-{2 * STORED_SEGMENT - 1}"),   # the second alone
        (f"bytes={S - 1}-{S}", f"bytes=0-{2 * STORED_SEGMENT - 1}"),                      # the two it crosses
        (f"bytes={3 * S}-", f"bytes={3 * STORED_SEGMENT}-"),                              # from the last on
        ("bytes=-1", f"bytes=-{2 * STORED_SEGMENT}"),                                     # enough for a suffix
    ],
)
def test_a_range_fetches_only_the_segments_it_needs(eu: ProxyThread, ranged: str, relay: Recorder, asked: str,
                                                    forwarded: str) -> None:
    mark = relay.mark()
    irish(eu).get_object(Bucket=DUBLIN, Key=ranged, Range=asked)["Body"].read()
    assert f"range: {forwarded}\r\n".encode() in relay.since(mark).lower()


def test_an_if_range_moto_ignores_still_gives_the_plaintext_slice(eu: ProxyThread, ranged: str) -> None:
    # moto answers the range whatever If-Range says; a storage server that honours it and answers the whole
    # object is tests/attacks/test_encryption_bypass.py::test_a_range_answered_whole_gives_the_whole_plaintext.
    status, received, clean = raw_get(eu, f"/{DUBLIN}/{ranged}", {"Range": "bytes=10-20",
                                                                  "If-Range": '"0123456789abcdef0123456789abcdef"'})
    assert (status, received, clean) == (206, RANGED[10:21], True)


@pytest.mark.parametrize("asked", [f"bytes={3 * S + 100}-", f"bytes={3 * S + 110}-{3 * S + 120}", f"bytes={5 * S}-"])
def test_a_range_past_the_plaintext_is_unsatisfiable(eu: ProxyThread, ranged: str, asked: str) -> None:
    with pytest.raises(ClientError) as refused:
        irish(eu).get_object(Bucket=DUBLIN, Key=ranged, Range=asked)
    assert refused.value.response["Error"]["Code"] == "InvalidRange"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def raw_get(proxy: ProxyThread, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, bool]:
    """Status, the body bytes received, and whether the body ended cleanly (else the connection was cut)."""
    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path, headers={"X-Bailiwick-Token": make_token("IE"), **(headers or {})})
    answer = conn.getresponse()
    received = b""
    clean = True
    try:
        while chunk := answer.read1(65536):
            received += chunk
    except (http.client.IncompleteRead, ConnectionError) as exc:
        received += getattr(exc, "partial", b"")
        clean = False
    if answer.length:
        clean = False
    conn.close()
    return answer.status, received, clean


def plant(store: SignedStore, bucket: str, key: str, body: bytes, metadata: dict[str, str]) -> None:
    """Write straight to the storage server, as someone who reaches it past the proxy could."""
    store.client().put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1:]


@pytest.mark.parametrize(
    ("name", "change", "verified_before_cut"),
    [
        ("a byte flipped in the first segment", lambda held: _flip(held, 10), 0),
        ("a byte flipped in the third segment", lambda held: _flip(held, 2 * (S + 16) + 10), 2 * S),
        ("a byte flipped in the last tag", lambda held: _flip(held, len(held) - 1), 3 * S),
        ("truncated by one segment", lambda held: held[: 3 * (S + 16)], None),
        ("truncated inside the last segment", lambda held: held[:-5], None),
    ],
)
def test_an_object_changed_at_rest_is_refused(eu: ProxyThread, store: SignedStore, name: str, change: Any,
                                              verified_before_cut: int | None) -> None:
    key = f"alice/tampered-{name.replace(' ', '-')}.eml"
    irish(eu).put_object(Bucket=DUBLIN, Key=key, Body=RANGED)
    held, metadata = stored(store, DUBLIN, key)
    plant(store, DUBLIN, key, change(held), metadata)
    status, received, clean = raw_get(eu, f"/{DUBLIN}/{key}")
    if verified_before_cut:
        # Found mid-stream: the caller got verified plaintext, in order, and then a cut connection.
        assert status == 200
        assert not clean
        assert RANGED.startswith(received)
        assert verified_before_cut - S <= len(received) <= verified_before_cut
    else:
        # Found before the answer began: a clean error, and not a byte of the object.
        assert status == 502
        assert b"<Code>EncryptedObjectInvalid</Code>" in received
        assert MARKER not in received


def test_two_objects_swapped_are_each_refused(eu: ProxyThread, store: SignedStore) -> None:
    client = irish(eu)
    client.put_object(Bucket=DUBLIN, Key="alice/a.eml", Body=b"letter A" * 100)
    client.put_object(Bucket=DUBLIN, Key="alice/b.eml", Body=b"letter B" * 100)
    a, b = stored(store, DUBLIN, "alice/a.eml"), stored(store, DUBLIN, "alice/b.eml")
    plant(store, DUBLIN, "alice/a.eml", *b)
    plant(store, DUBLIN, "alice/b.eml", *a)
    for key in ("alice/a.eml", "alice/b.eml"):
        status, received, _ = raw_get(eu, f"/{DUBLIN}/{key}")
        # The data key is bound to the object it was made for: the key service does not release it for another.
        assert status == 403
        assert b"letter" not in received
        assert b"<Code>KeyReleaseRefused</Code>" in received


def test_a_plaintext_object_is_refused_unless_its_dataset_is_migrating(eu: ProxyThread, store: SignedStore) -> None:
    plant(store, DUBLIN, "alice/plain.eml", b"left in the clear", {})
    with pytest.raises(ClientError) as refused:
        irish(eu).get_object(Bucket=DUBLIN, Key="alice/plain.eml")
    assert refused.value.response["Error"]["Code"] == "ObjectNotEncrypted"
    plant(store, MIGRATING, "old/plain.eml", b"left in the clear", {})
    client = irish(eu)
    assert client.get_object(Bucket=MIGRATING, Key="old/plain.eml")["Body"].read() == b"left in the clear"
    assert client.get_object(Bucket=MIGRATING, Key="old/plain.eml", Range="bytes=5-6")["Body"].read() == b"in"
    # A range near the end of a long plaintext object: its segments' stored range starts past the object's end.
    long = bytes(range(256)) * (10 * S // 256) + b"x" * 100
    plant(store, MIGRATING, "old/long.eml", long, {})
    for asked, expected in ((f"bytes={10 * S + 50}-", long[10 * S + 50:]),
                            (f"bytes={10 * S + 50}-{10 * S + 60}", long[10 * S + 50:10 * S + 61]),
                            ("bytes=-20", long[-20:])):
        assert client.get_object(Bucket=MIGRATING, Key="old/long.eml", Range=asked)["Body"].read() == expected
    with pytest.raises(ClientError) as past:
        client.get_object(Bucket=MIGRATING, Key="old/long.eml", Range=f"bytes={len(long)}-")
    assert past.value.response["Error"]["Code"] == "InvalidRange"
    # An encrypted object there, asked past its end where its ciphertext still has bytes: no ciphertext served.
    client.put_object(Bucket=MIGRATING, Key="sealed-long.eml", Body=long[:10 * S])
    with pytest.raises(ClientError) as sealed_past:
        client.get_object(Bucket=MIGRATING, Key="sealed-long.eml", Range=f"bytes={10 * S + 5}-")
    assert sealed_past.value.response["Error"]["Code"] == "InvalidRange"
    # New writes to a migrating dataset are encrypted.
    client.put_object(Bucket=MIGRATING, Key="new.eml", Body=MARKER)
    assert MARKER not in stored(store, MIGRATING, "new.eml")[0]
    assert client.get_object(Bucket=MIGRATING, Key="new.eml")["Body"].read() == MARKER


@pytest.mark.parametrize(
    ("operation", "call", "said"),
    [
        ("GetObject", lambda c: c.get_object(Bucket=DUBLIN, Key="alice/a.eml", PartNumber=1), "read it with a Range"),
        ("GetObjectAttributes", lambda c: c.get_object_attributes(Bucket=DUBLIN, Key="alice/a.eml",
                                                                  ObjectAttributes=["ETag"]),
         "would store plaintext or hand out ciphertext"),
    ],
)
def test_what_the_proxy_cannot_encrypt_is_refused(eu: ProxyThread, relay: Recorder, operation: str,
                                                   call: Any, said: str) -> None:
    irish(eu).put_object(Bucket=DUBLIN, Key="alice/a.eml", Body=b"a")
    mark = relay.mark()
    with pytest.raises(ClientError) as refused:
        call(irish(eu))
    assert refused.value.response["Error"]["Code"] == "NotImplemented"
    assert said in refused.value.response["Error"]["Message"]
    assert relay.since(mark) == b""


@pytest.mark.parametrize(
    ("operation", "call", "status"),
    [
        ("GetBucketVersioning", lambda c: c.get_bucket_versioning(Bucket=MIGRATING), 200),
        ("PutBucketTagging", lambda c: c.put_bucket_tagging(Bucket=MIGRATING,
                                                            Tagging={"TagSet": [{"Key": "k", "Value": "v"}]}), 204),
        ("PutBucketVersioning", lambda c: c.put_bucket_versioning(
            Bucket=MIGRATING, VersioningConfiguration={"Status": "Suspended"}), 200),
    ],
)
def test_a_bucket_of_an_encrypted_dataset_is_configured_as_any(eu: ProxyThread, relay: Recorder, operation: str,
                                                               call: Any, status: int) -> None:
    # A request on the bucket itself moves no object bytes: it passes through to the storage server.
    mark = relay.mark()
    assert call(irish(eu))["ResponseMetadata"]["HTTPStatusCode"] == status
    assert relay.since(mark)


def test_a_wrong_digest_stores_nothing(eu: ProxyThread, store: SignedStore) -> None:
    with pytest.raises(ClientError) as refused:
        irish(eu).put_object(Bucket=DUBLIN, Key="alice/bad-md5.eml", Body=b"x" * 100_000,
                             ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
    assert refused.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(ClientError):
        store.client().head_object(Bucket=DUBLIN, Key="alice/bad-md5.eml")


def test_every_key_release_is_in_the_audit_line(eu: ProxyThread, eu_folder: Path) -> None:
    client = irish(eu)
    client.put_object(Bucket=DUBLIN, Key="alice/audited.eml", Body=b"audited")
    client.get_object(Bucket=DUBLIN, Key="alice/audited.eml")["Body"].read()
    for operation, release in (("PutObject", "generate"), ("GetObject", "unwrap")):
        line = audit_line(eu_folder, DUBLIN, "alice/audited.eml", operation)
        assert line["key_release"]["operation"] == release
        assert line["key_release"]["result"] == "released"
        assert line["key_release"]["service"] == "file"
        assert line["key_release"]["key"].startswith("file:")


def test_a_proxy_of_another_region_cannot_open_a_copy(eu: ProxyThread, store: SignedStore, relay: Recorder,
                                                      tmp_path: Path) -> None:
    irish(eu).put_object(Bucket=DUBLIN, Key="alice/secret.eml", Body=MARKER * 10)
    held, metadata = stored(store, DUBLIN, "alice/secret.eml")
    plant(store, US, "copied/secret.eml", held, metadata)    # copied past the proxies, onto US storage
    us_key = tmp_path / "us.key"
    write_key_file(us_key)
    us = ProxyThread(encrypting_config(tmp_path, store, relay.url, "us-east-1", us_key)).start()
    try:
        with pytest.raises(ClientError) as refused:
            s3_client(us.url, make_token("US")).get_object(Bucket=US, Key="copied/secret.eml")
        assert refused.value.response["Error"]["Code"] == "KeyReleaseRefused"
        metrics = urllib.request.urlopen(f"{us.admin_url}/metrics", timeout=5).read().decode()
        assert 'bailiwick_encrypted_object_failures_total{reason="foreign_key"} 1.0' in metrics
    finally:
        us.stop()


def test_the_kill_switch_fails_reads_closed(store: SignedStore, relay: Recorder, tmp_path: Path) -> None:
    key = tmp_path / "doomed.key"
    write_key_file(key)
    proxy = ProxyThread(encrypting_config(tmp_path, store, relay.url, "eu-west-1", key)).start()
    try:
        client = irish(proxy)
        client.put_object(Bucket=DUBLIN, Key="alice/frozen.eml", Body=b"frozen")
        assert client.get_object(Bucket=DUBLIN, Key="alice/frozen.eml")["Body"].read() == b"frozen"
        key.unlink()   # the region's key is gone: shredded
        with pytest.raises(ClientError) as refused:
            client.get_object(Bucket=DUBLIN, Key="alice/frozen.eml")
        assert refused.value.response["Error"]["Code"] == "KeyReleaseRefused"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    finally:
        proxy.stop()


def test_a_cached_release_is_recorded_as_cached(store: SignedStore, relay: Recorder, eu_key: Path,
                                                tmp_path: Path) -> None:
    config = encrypting_config(tmp_path, store, relay.url, "eu-west-1", eu_key)
    cached = replace(config.encryption, key_cache=KeyCacheSettings(max_keys=8, ttl_seconds=60))
    proxy = ProxyThread(replace(config, encryption=cached)).start()
    try:
        client = irish(proxy)
        client.put_object(Bucket=DUBLIN, Key="alice/twice.eml", Body=b"read twice")
        for _ in range(2):
            assert client.get_object(Bucket=DUBLIN, Key="alice/twice.eml")["Body"].read() == b"read twice"
        wait_for_record(tmp_path / "audit.jsonl", lambda r: r["request"]["operation"] == "GetObject"
                        and r.get("key_release", {}).get("result") == "cached")
        results = [record["key_release"]["result"] for record in written_records(tmp_path / "audit.jsonl")
                   if record["request"]["operation"] == "GetObject"]
        assert results == ["released", "cached"]
        metrics = urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=5).read().decode()
        assert 'bailiwick_key_cache_lookups_total{result="hit"} 1.0' in metrics
        assert 'bailiwick_key_releases_total{operation="unwrap",result="cached"} 1.0' in metrics
    finally:
        proxy.stop()


def test_a_copy_within_the_region_is_resealed_for_its_destination(eu: ProxyThread, store: SignedStore) -> None:
    client = irish(eu)
    data = body_of(2 * S + 11)
    client.put_object(Bucket=DUBLIN, Key="alice/original.eml", Body=data, ContentType="message/rfc822",
                      Metadata={"folder": "inbox"}, Tagging="kept=yes")
    answer = client.copy_object(Bucket=DUBLIN, Key="alice/copied.eml",
                                CopySource={"Bucket": DUBLIN, "Key": "alice/original.eml"})
    assert answer["CopyObjectResult"]["ETag"]
    got = client.get_object(Bucket=DUBLIN, Key="alice/copied.eml")
    assert got["Body"].read() == data
    assert got["ContentType"] == "message/rfc822"
    assert got["Metadata"]["folder"] == "inbox"
    assert client.get_object_tagging(Bucket=DUBLIN, Key="alice/copied.eml")["TagSet"] == [
        {"Key": "kept", "Value": "yes"}]
    # Sealed anew for its own name: another data key, nothing of the plaintext, not the original's bytes.
    original, copied = stored(store, DUBLIN, "alice/original.eml"), stored(store, DUBLIN, "alice/copied.eml")
    assert MARKER not in copied[0]
    assert copied[0] != original[0]
    assert copied[1]["bailiwick-encryption"] != original[1]["bailiwick-encryption"]
    # REPLACE: the caller's own metadata instead of the source's.
    client.copy_object(Bucket=DUBLIN, Key="alice/replaced.eml", MetadataDirective="REPLACE",
                       ContentType="text/plain", Metadata={"folder": "sent"},
                       CopySource={"Bucket": DUBLIN, "Key": "alice/original.eml"})
    replaced = client.get_object(Bucket=DUBLIN, Key="alice/replaced.eml")
    assert replaced["ContentType"] == "text/plain"
    assert {k: v for k, v in replaced["Metadata"].items() if k != "bailiwick-encryption"} == {"folder": "sent"}
    assert replaced["Body"].read() == data


def test_a_plaintext_object_copied_into_an_encrypted_dataset_is_sealed(eu: ProxyThread, store: SignedStore) -> None:
    plant(store, MIGRATING, "old/letter.eml", MARKER * 3, {})
    client = irish(eu)
    client.copy_object(Bucket=DUBLIN, Key="alice/from-migrating.eml",
                       CopySource={"Bucket": MIGRATING, "Key": "old/letter.eml"})
    assert MARKER not in stored(store, DUBLIN, "alice/from-migrating.eml")[0]
    assert client.get_object(Bucket=DUBLIN, Key="alice/from-migrating.eml")["Body"].read() == MARKER * 3


@pytest.mark.parametrize("condition", ["CopySourceIfMatch", "CopySourceIfNoneMatch"])
def test_a_copy_whose_source_condition_fails_writes_nothing(eu: ProxyThread, store: SignedStore,
                                                            condition: str) -> None:
    client = irish(eu)
    etag = client.put_object(Bucket=DUBLIN, Key="alice/guarded.eml", Body=b"guarded")["ETag"]
    failing = '"0123456789abcdef0123456789abcdef"' if condition == "CopySourceIfMatch" else etag
    with pytest.raises(ClientError) as refused:
        client.copy_object(Bucket=DUBLIN, Key="alice/guarded-copy.eml",
                           CopySource={"Bucket": DUBLIN, "Key": "alice/guarded.eml"}, **{condition: failing})
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError):
        store.client().head_object(Bucket=DUBLIN, Key="alice/guarded-copy.eml")


def test_a_copy_of_a_missing_source_is_not_found(eu: ProxyThread) -> None:
    with pytest.raises(ClientError) as refused:
        irish(eu).copy_object(Bucket=DUBLIN, Key="alice/nothing-copy.eml",
                              CopySource={"Bucket": DUBLIN, "Key": "alice/nothing.eml"})
    assert refused.value.response["Error"]["Code"] == "NoSuchKey"


def _ready(proxy: ProxyThread, query: str = "") -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{proxy.admin_url}/readyz{query}", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_readyz_reports_the_key_service_and_gates_only_when_asked(store: SignedStore, relay: Recorder,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "probed.key"
    write_key_file(key)
    proxy = ProxyThread(encrypting_config(tmp_path, store, relay.url, "eu-west-1", key)).start()
    try:
        _ready(proxy)   # the first look starts the probe in the background
        wait_until(lambda: _ready(proxy)[1]["key_service"]["status"] == "ok")
        key.unlink()    # the region's key gone: the probe says so, and /readyz stays ready unless asked
        monkeypatch.setattr(admin, "KEY_PROBE_EVERY_SECONDS", 0.0)
        wait_until(lambda: _ready(proxy)[1]["key_service"]["status"] == "problem")
        status, said = _ready(proxy)
        assert status == 200
        assert said["status"] == "ready"
        status, said = _ready(proxy, "?key_service")
        assert status == 503
        assert said["reason"].startswith("key service: ")
    finally:
        proxy.stop()
