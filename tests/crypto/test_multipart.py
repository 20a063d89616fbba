"""Multipart uploads into an encrypted dataset, end to end: two real proxies in re-sign mode, moto checking every
signature, boto3.

What is asserted is what the storage server holds (read straight from moto,
bypassing the proxy: no trace of the plaintext, the v=2 metadata entry, each
part's header, a layout that opens with the region's key to exactly the
plaintext sent) and what callers see (a token as the upload id, plaintext part
sizes, S3's refusals where the upload breaks the format's layout rule).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import NetworkRule
from proxy.crypto import multipart
from proxy.crypto.keyfile import write_key_file
from proxy.crypto.multipart import _parts_listed, without_checksums
from proxy.crypto.parts import HEADER_SIZE, part_stored_length
from proxy.crypto.segments import SEGMENT_SIZE
from proxy.crypto.uploads import PREFIX, UploadToken, decode_upload_id
from proxy.harness import ProxyThread
from proxy.upstream import Answered, Transfer
from tests.conftest import make_token, s3_client
from tests.support.encrypting import (  # noqa: F401  (the fixture "relay")
    add_datasets,
    audit_line,
    encrypted_policies,
    encrypting_proxy_config,
    key_file_encryption,
    local_dataset,
    relay_fixture,
)
from tests.support.iam import SignedStore, signed_store
from tests.support.parted import open_stored
from tests.support.recorder import Recorder
from tests.test_client_matrix import AwsCli, Rclone

DUBLIN, MIGRATING, PLAIN = "mail-eu-dublin", "mail-eu-migrating", "eu-plain-mp"
MARKER = b"PLAINTEXT-MARKER-9c1e"
S = SEGMENT_SIZE
MIB = 1024 * 1024
PLAIN_DATASET = local_dataset("plain-eu", f"s3://{PLAIN}", "Unencrypted Irish data.", "plain-local")


@pytest.fixture(scope="module")
def store() -> Iterator[SignedStore]:
    with signed_store("bailiwick-mp", {DUBLIN: "eu-west-1", MIGRATING: "eu-west-1", PLAIN: "eu-west-1"}) as running:
        yield running


@pytest.fixture(scope="module")
def eu_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mp-key") / "eu.key"
    write_key_file(path)
    return path


def _proxy(folder: Path, store: SignedStore, relay: Recorder, key: Path, *, by_address: bool = False) -> ProxyThread:
    config = encrypting_proxy_config(folder, store, relay.url, "eu-west-1", key_file_encryption(key))
    add_datasets(folder / "policies", PLAIN_DATASET)
    if by_address:
        # Command-line clients cannot send the token: callers from 127.0.0.1 are Irish; path-style only.
        identity = replace(config.identity, networks=(NetworkRule(ipaddress.ip_network("127.0.0.1/32"), "IE"),))
        config = replace(config, identity=identity, s3=replace(config.s3, virtual_hosts=()))
    return ProxyThread(config).start()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tmp_path_factory.mktemp("mp-one"), tmp_path_factory.mktemp("mp-two")


@pytest.fixture(scope="module")
def proxies(store: SignedStore, relay: Recorder, eu_key: Path,
            folders: tuple[Path, Path]) -> Iterator[tuple[ProxyThread, ProxyThread]]:
    """Two proxy processes of the region (same configuration, each its own port and audit log)."""
    one = _proxy(folders[0], store, relay, eu_key)
    two = _proxy(folders[1], store, relay, eu_key)
    yield one, two
    one.stop()
    two.stop()


@pytest.fixture(scope="module")
def eu(proxies: tuple[ProxyThread, ProxyThread]) -> ProxyThread:
    return proxies[0]


def irish(proxy: ProxyThread) -> Any:
    return s3_client(proxy.url, make_token("IE"))


def body_of(size: int) -> bytes:
    unit = MARKER + os.urandom(64)
    return (unit * (size // len(unit) + 1))[:size]


def stored(store: SignedStore, bucket: str, key: str) -> tuple[bytes, str]:
    """What the storage server holds and its metadata entry, read past the proxy."""
    answer = store.client().get_object(Bucket=bucket, Key=key)
    return answer["Body"].read(), answer["Metadata"]["bailiwick-encryption"]


def opened(held: bytes, entry: str, key_file: Path, key: str) -> bytes:
    """The plaintext of a stored multipart object, opened here as the format says (with the region's key)."""
    return open_stored(key_file, DUBLIN, key, held, entry)


def upload(client: Any, key: str, parts: list[bytes]) -> tuple[str, list[dict[str, Any]]]:
    """A multipart upload of `parts` (in order, one client): its upload id and the parts for Complete."""
    upload_id = client.create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"]
    done = [{"PartNumber": n, "ETag": client.upload_part(Bucket=DUBLIN, Key=key, UploadId=upload_id, PartNumber=n,
                                                         Body=part)["ETag"]}
            for n, part in enumerate(parts, 1)]
    return upload_id, done


def complete(client: Any, key: str, upload_id: str, parts: list[dict[str, Any]]) -> Any:
    return client.complete_multipart_upload(Bucket=DUBLIN, Key=key, UploadId=upload_id,
                                            MultipartUpload={"Parts": parts})


def test_parts_in_reverse_in_parallel_through_two_proxies(proxies: tuple[ProxyThread, ProxyThread],
                                                          store: SignedStore, relay: Recorder, eu_key: Path) -> None:
    key = "alice/three-parts.eml"
    parts = [body_of(5 * MIB), body_of(5 * MIB), b"Z"]
    mark = relay.mark()
    upload_id = irish(proxies[0]).create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"]
    assert upload_id.startswith(PREFIX)

    def send(number: int) -> dict[str, Any]:
        client = irish(proxies[number % 2])   # parts 1 and 3 through one process, part 2 through the other
        etag = client.upload_part(Bucket=DUBLIN, Key=key, UploadId=upload_id, PartNumber=number,
                                  Body=parts[number - 1])["ETag"]
        return {"PartNumber": number, "ETag": etag}

    with ThreadPoolExecutor(max_workers=3) as pool:
        sent = list(pool.map(send, [3, 2, 1]))
    answer = complete(irish(proxies[1]), key, upload_id, sorted(sent, key=lambda p: p["PartNumber"]))
    assert answer["ETag"].endswith('-3-bwenc"')
    assert MARKER not in relay.since(mark)          # nothing of the plaintext crossed to the storage server
    held, entry = stored(store, DUBLIN, key)
    assert MARKER not in held
    assert entry.startswith("v=2;seg=65536;ks=file;ref=file:")
    assert len(held) == 2 * part_stored_length(5 * MIB) + part_stored_length(1)
    assert held[:HEADER_SIZE - 39] == b"\x02" + (1).to_bytes(4, "big") + (5 * MIB).to_bytes(8, "big")
    second = part_stored_length(5 * MIB)
    assert held[second:second + 13] == b"\x02" + (2).to_bytes(4, "big") + (5 * MIB).to_bytes(8, "big")
    assert opened(held, entry, eu_key, key) == b"".join(parts)


def test_a_multipart_object_reads_back_through_the_proxy(eu: ProxyThread) -> None:
    client = irish(eu)
    key = "alice/read-back.eml"
    parts = [body_of(5 * MIB), body_of(5 * MIB), b"Z"]
    upload_id, done = upload(client, key, parts)
    complete(client, key, upload_id, done)
    data = b"".join(parts)
    got = client.get_object(Bucket=DUBLIN, Key=key)
    assert got["ContentLength"] == len(data)
    assert got["Body"].read() == data
    ranged = client.get_object(Bucket=DUBLIN, Key=key, Range=f"bytes={5 * MIB - 10}-{10 * MIB}")
    assert ranged["Body"].read() == data[5 * MIB - 10:10 * MIB + 1]


def test_boto3_upload_file_in_parts(eu: ProxyThread, store: SignedStore, eu_key: Path, tmp_path: Path) -> None:
    data = body_of(11 * MIB + 5)
    path = tmp_path / "big.eml"
    path.write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=3)
    irish(eu).upload_file(str(path), DUBLIN, "alice/uploaded.eml", Config=config)
    held, entry = stored(store, DUBLIN, "alice/uploaded.eml")
    assert entry.startswith("v=2;")
    assert MARKER not in held
    assert opened(held, entry, eu_key, "alice/uploaded.eml") == data
    irish(eu).download_file(DUBLIN, "alice/uploaded.eml", str(tmp_path / "back.eml"), Config=config)
    assert (tmp_path / "back.eml").read_bytes() == data   # ranged GETs of 5 MiB, through the proxy


def test_complete_reads_the_storage_servers_parts_page_by_page(eu: ProxyThread, relay: Recorder,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "_PAGE", 1)   # as a server that lists one part a page
    client = irish(eu)
    key = "alice/paged-complete.eml"
    parts = [body_of(5 * MIB), body_of(5 * MIB), b"Z"]
    upload_id, done = upload(client, key, parts)
    mark = relay.mark()
    complete(client, key, upload_id, done)
    sent = relay.since(mark)
    assert sent.count(b"max-parts=1") == 3
    assert b"part-number-marker=2 " in sent
    assert client.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == b"".join(parts)


def test_list_parts_shows_the_token_and_plaintext_sizes(eu: ProxyThread) -> None:
    client = irish(eu)
    upload_id, _ = upload(client, "alice/listed.eml", [body_of(2 * S), body_of(100)])
    listed = client.list_parts(Bucket=DUBLIN, Key="alice/listed.eml", UploadId=upload_id)
    assert listed["UploadId"] == upload_id
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, 2 * S), (2, 100)]
    assert not any(name.startswith("Checksum") for part in listed["Parts"] for name in part)
    paged = client.list_parts(Bucket=DUBLIN, Key="alice/listed.eml", UploadId=upload_id, MaxParts=1,
                              PartNumberMarker=1)
    assert [(p["PartNumber"], p["Size"]) for p in paged["Parts"]] == [(2, 100)]


def test_list_parts_refuses_a_part_the_proxy_did_not_seal(eu: ProxyThread, store: SignedStore) -> None:
    # A part written past the proxy has no plaintext size to show: the listing is refused, not shown as stored.
    client = irish(eu)
    key = "alice/planted-part.eml"
    upload_id = client.create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"]
    token = decode_upload_id(upload_id)
    assert token is not None
    store.client().upload_part(Bucket=DUBLIN, Key=key, UploadId=token.upstream_id, PartNumber=1, Body=b"x" * 10)
    with pytest.raises(ClientError) as refused:
        client.list_parts(Bucket=DUBLIN, Key=key, UploadId=upload_id)
    assert refused.value.response["Error"]["Code"] == "EncryptedObjectInvalid"


class _Listing:
    """The storage server's answer to a ListParts, as the proxy's answer handler is given it."""

    def __init__(self, body: bytes) -> None:
        self.head = SimpleNamespace(status=200, reason="OK", headers=CIMultiDictProxy(CIMultiDict()))
        self.transfer = Transfer()
        self.body = body

    async def read_whole(self, limit: int) -> bytes:
        return self.body


async def test_list_parts_shows_no_checksum_of_the_stored_bytes() -> None:
    # AWS keeps a checksum of every part it stores (moto lists none): of the ciphertext, so never shown.
    token = UploadToken("raw-id", "filev1:unused", "seal")
    stored = (b'<?xml version="1.0" encoding="UTF-8"?>\n<ListPartsResult><UploadId>raw-id</UploadId><Part>'
              b"<PartNumber>1</PartNumber><ETag>&quot;e1&quot;</ETag><ChecksumCRC64NVME>AAAAAAAAAAA=</ChecksumCRC64NVME>"
              b"<ChecksumSHA256>47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=</ChecksumSHA256>"
              b"<Size>%d</Size></Part><IsTruncated>false</IsTruncated></ListPartsResult>" % part_stored_length(10))
    answer = await _parts_listed(token)(cast(Answered, _Listing(stored)))
    body = cast(web.Response, answer).body
    assert isinstance(body, bytes)
    assert b"<Checksum" not in body
    assert b"<Size>10</Size>" in body
    assert f"<UploadId>{token.encode()}</UploadId>".encode() in body


class _PartWritten:
    """The storage server's answer to an UploadPart, as the proxy's answer handler is given it."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.head = SimpleNamespace(status=200, headers=CIMultiDictProxy(CIMultiDict(headers)))
        self.sent: CIMultiDict[str] = CIMultiDict()

    async def pass_on(self) -> web.StreamResponse:
        self.sent = CIMultiDict(self.head.headers)
        return web.Response()

    async def stream(self, status: int, headers: CIMultiDict[str], pieces: None, *,
                     bodiless: bool = False) -> web.StreamResponse:
        self.sent = headers
        return web.Response()


async def test_a_parts_answer_shows_no_checksum_of_the_stored_bytes() -> None:
    # AWS answers every part's write with a checksum of what it stored (moto, asked none, sends none).
    written = _PartWritten({"ETag": '"e1"', "x-amz-checksum-crc64nvme": "AAAAAAAAAAA=",
                            "x-amz-checksum-sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="})
    await without_checksums(cast(Answered, written))
    assert written.sent.get("ETag") == '"e1"'
    assert not any(name.lower().startswith("x-amz-checksum") for name in written.sent)


def test_abort_takes_the_token_or_the_storage_servers_id(eu: ProxyThread, store: SignedStore) -> None:
    client = irish(eu)
    for key in ("alice/aborted-token.eml", "alice/aborted-raw.eml"):
        upload_id, _ = upload(client, key, [b"x"])
        token = decode_upload_id(upload_id)
        assert token is not None
        client.abort_multipart_upload(Bucket=DUBLIN, Key=key,
                                      UploadId=upload_id if "token" in key else token.upstream_id)
        with pytest.raises(ClientError) as gone:
            store.client().list_parts(Bucket=DUBLIN, Key=key, UploadId=token.upstream_id)
        assert gone.value.response["Error"]["Code"] == "NoSuchUpload"


def test_create_and_parts_are_audited_with_their_key_release(eu: ProxyThread, folders: tuple[Path, Path]) -> None:
    upload(irish(eu), "alice/audited-mp.eml", [b"audited"])
    for operation, release in (("CreateMultipartUpload", "generate"), ("UploadPart", "unwrap")):
        line = audit_line(folders[0], DUBLIN, "alice/audited-mp.eml", operation)
        assert line["key_release"]["operation"] == release
        assert line["key_release"]["result"] == "released"


def _raw_id_part(client: Any, key: str) -> Any:
    upload(client, key, [b"first"])
    return client.upload_part(Bucket=DUBLIN, Key=key, UploadId="raw-storage-id", PartNumber=1, Body=b"x")


def _completed(sizes: list[int], etag: str | None = None, numbers: list[int] | None = None) -> Any:
    def call(client: Any, key: str) -> Any:
        upload_id = client.create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"]
        done = []
        for number, size in zip(numbers or range(1, len(sizes) + 1), sizes, strict=True):
            sent = client.upload_part(Bucket=DUBLIN, Key=key, UploadId=upload_id, PartNumber=number,
                                      Body=body_of(size))
            done.append({"PartNumber": number, "ETag": etag or sent["ETag"]})
        return complete(client, key, upload_id, done)
    return call


REFUSED = {
    "raw-upload-id": (_raw_id_part, 404, "NoSuchUpload", "only the ids answered by CreateMultipartUpload"),
    "gap": (_completed([S, 1], numbers=[1, 3]), 400, "InvalidPart", "part 2 is missing"),
    "unequal": (_completed([S, 2 * S, 1]), 400, "InvalidPart", "part 2 is 131072 bytes and part 1 65536"),
    "not-segment-aligned": (_completed([1000, 1]), 400, "InvalidPart", "not a multiple of 64 KiB"),
    "last-larger": (_completed([S, S + 1]), 400, "InvalidPart", "the last part is 65537 bytes"),
    "etag-mismatch": (_completed([10], etag='"0123456789abcdef0123456789abcdef"'), 400, "InvalidPart",
                      "One or more of the specified parts could not be found"),
    "descending": (lambda c, k: complete(c, k, upload(c, k, [b"a", b"b"])[0],
                                          [{"PartNumber": 2, "ETag": "x"}, {"PartNumber": 1, "ETag": "y"}]),
                   400, "InvalidPartOrder", "ascending order"),
    "object-size-mismatch": (lambda c, k: c.complete_multipart_upload(
        Bucket=DUBLIN, Key=k, UploadId=(done := upload(c, k, [b"abc"]))[0], MpuObjectSize=4,
        MultipartUpload={"Parts": done[1]}), 400, "InvalidRequest", "the parts named hold 3 bytes"),
    "part-number-not-ascii": (lambda c, k: _with_body_edited(c, b"<PartNumber>1</PartNumber>",
                                                          "<PartNumber>\u00b2</PartNumber>".encode()) and complete(
        c, k, *upload(c, k, [b"a"])), 400, "MalformedXML", "has a PartNumber"),
    "part-number-too-large": (lambda c, k: c.upload_part(Bucket=DUBLIN, Key=k, PartNumber=10001, Body=b"x",
                                                         UploadId=upload(c, k, [b"a"])[0]),
                              400, "InvalidArgument", "between 1 and 10000"),
}


def _with_body_edited(client: Any, old: bytes, new: bytes) -> bool:
    """`client`'s CompleteMultipartUpload bodies sent with `old` replaced by `new` (as no SDK would write it)."""
    def edit(request: Any, **_: Any) -> None:
        request.data = request.data.replace(old, new)

    client.meta.events.register("before-sign.s3.CompleteMultipartUpload", edit)
    return True


@pytest.mark.parametrize(("call", "status", "code", "said"), REFUSED.values(), ids=REFUSED.keys())
def test_what_breaks_the_layout_is_refused(eu: ProxyThread, store: SignedStore, call: Any, status: int, code: str,
                                           said: str, request: pytest.FixtureRequest) -> None:
    key = f"alice/refused-{request.node.callspec.id}.eml"
    with pytest.raises(ClientError) as refused:
        call(irish(eu), key)
    error = refused.value.response
    assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]) == (status, code)
    assert said in error["Error"]["Message"]
    with pytest.raises(ClientError):
        store.client().head_object(Bucket=DUBLIN, Key=key)   # nothing was completed


def test_a_raw_upload_id_is_refused_before_anything_is_forwarded(eu: ProxyThread, relay: Recorder) -> None:
    client = irish(eu)
    mark = relay.mark()
    calls: list[Callable[[], Any]] = [
        lambda: client.upload_part(Bucket=DUBLIN, Key="alice/r.eml", UploadId="abc", PartNumber=1, Body=b"x"),
        lambda: client.list_parts(Bucket=DUBLIN, Key="alice/r.eml", UploadId="abc"),
        lambda: complete(client, "alice/r.eml", "abc", [{"PartNumber": 1, "ETag": "x"}]),
    ]
    for call in calls:
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "NoSuchUpload"
    assert relay.since(mark) == b""


def _other_objects_token(client: Any, key: str) -> str:
    return str(client.create_multipart_upload(Bucket=DUBLIN, Key=f"{key}.other")["UploadId"])


def _forged_token(client: Any, key: str) -> str:
    made = decode_upload_id(client.create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"])
    assert made is not None
    return UploadToken(made.upstream_id, "filev1:forged; key", made.seal).encode()


@pytest.mark.parametrize(("token_of", "code"), [
    # The wrapped key in a token opens only for the object its upload is for.
    (_other_objects_token, "KeyReleaseRefused"),
    # A wrapped key that could not be an envelope's field is no upload of this proxy's: no key service asked.
    (_forged_token, "NoSuchUpload"),
], ids=["another-objects-token", "forged-wrapped-key"])
def test_a_token_not_of_this_objects_upload_seals_nothing(eu: ProxyThread, relay: Recorder,
                                                          token_of: Callable[[Any, str], str], code: str,
                                                          request: pytest.FixtureRequest) -> None:
    client = irish(eu)
    key = f"alice/token-{request.node.callspec.id}.eml"
    client.create_multipart_upload(Bucket=DUBLIN, Key=key)
    upload_id = token_of(client, key)
    mark = relay.mark()
    with pytest.raises(ClientError) as refused:
        client.upload_part(Bucket=DUBLIN, Key=key, UploadId=upload_id, PartNumber=1, Body=MARKER)
    assert refused.value.response["Error"]["Code"] == code
    assert relay.since(mark) == b""


def test_a_token_with_another_uploads_key_of_the_object_is_refused(eu: ProxyThread, store: SignedStore) -> None:
    # The seal ties the storage server's id to the upload key: the wrapped key of another upload of the same
    # object, with this upload's id and seal, is not a token the proxy gave.
    client = irish(eu)
    key = "alice/mixed-token.eml"
    mine, theirs = (decode_upload_id(client.create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"])
                    for _ in range(2))
    assert mine is not None
    assert theirs is not None
    mixed = mine._replace(wrapped=theirs.wrapped).encode()
    with pytest.raises(ClientError) as refused:
        client.upload_part(Bucket=DUBLIN, Key=key, UploadId=mixed, PartNumber=1, Body=MARKER)
    assert refused.value.response["Error"]["Code"] == "NoSuchUpload"
    held = store.client().list_parts(Bucket=DUBLIN, Key=key, UploadId=mine.upstream_id)
    assert held.get("Parts", []) == []


def test_a_completion_forwards_no_checksum_of_the_plaintext(eu: ProxyThread, relay: Recorder) -> None:
    # A checksum the caller gives of the whole object is of its plaintext: the storage server would check it
    # against the ciphertext, so it is not forwarded.
    client = irish(eu)
    key = "alice/checksummed-completion.eml"
    upload_id, done = upload(client, key, [b"checksummed"])
    mark = relay.mark()
    client.complete_multipart_upload(Bucket=DUBLIN, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done},
                                     ChecksumSHA256="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
    sent = relay.since(mark).lower()
    assert b"\r\nx-amz-checksum-sha256: " not in sent
    assert b"<completemultipartupload" in sent


def test_a_completion_reads_every_page_of_the_parts(eu: ProxyThread, store: SignedStore, eu_key: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # The storage server's list of parts is read page after page (here two parts a page, as 1000 are on S3).
    monkeypatch.setattr(multipart, "_PAGE", 2)
    client = irish(eu)
    key = "alice/paged-parts.eml"
    parts = [body_of(5 * MIB), body_of(5 * MIB), b"last"]   # moto takes parts of 5 MiB but the last
    upload_id, done = upload(client, key, parts)
    complete(client, key, upload_id, done)
    held, entry = stored(store, DUBLIN, key)
    assert opened(held, entry, eu_key, key) == b"".join(parts)


def test_a_part_with_a_wrong_md5_is_refused_and_not_stored(eu: ProxyThread, store: SignedStore) -> None:
    client = irish(eu)
    upload_id = client.create_multipart_upload(Bucket=DUBLIN, Key="alice/bad-part.eml")["UploadId"]
    with pytest.raises(ClientError) as refused:
        client.upload_part(Bucket=DUBLIN, Key="alice/bad-part.eml", UploadId=upload_id, PartNumber=1,
                           Body=b"x" * 100_000, ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
    assert refused.value.response["Error"]["Code"] == "BadDigest"
    token = decode_upload_id(upload_id)
    assert token is not None
    held = store.client().list_parts(Bucket=DUBLIN, Key="alice/bad-part.eml", UploadId=token.upstream_id)
    assert held.get("Parts", []) == []


def test_a_caller_cannot_set_the_proxys_metadata_on_create(eu: ProxyThread, store: SignedStore,
                                                          relay: Recorder) -> None:
    client = irish(eu)
    mark = relay.mark()
    upload_id = client.create_multipart_upload(Bucket=DUBLIN, Key="alice/forged-mp.eml",
                                               Metadata={"bailiwick-encryption": "v=1;forged", "kept": "yes",
                                                         "bailiwick-note": "the caller's own"},
                                               ChecksumAlgorithm="SHA256")["UploadId"]
    token = decode_upload_id(upload_id)
    assert token is not None
    # A prefix without "/": moto re-reads the query decoding "%2F", and would refuse the signature.
    uploads = [u for u in store.client().list_multipart_uploads(Bucket=DUBLIN, Prefix="alice")["Uploads"]
               if u["Key"] == "alice/forged-mp.eml"]
    assert [u["UploadId"] for u in uploads] == [token.upstream_id]
    assert b"x-amz-checksum-algorithm" not in relay.since(mark).lower()   # S3 would checksum the ciphertext
    part = client.upload_part(Bucket=DUBLIN, Key="alice/forged-mp.eml", UploadId=upload_id, PartNumber=1,
                              Body=b"forged")
    complete(client, "alice/forged-mp.eml", upload_id, [{"PartNumber": 1, "ETag": part["ETag"]}])
    metadata = store.client().head_object(Bucket=DUBLIN, Key="alice/forged-mp.eml")["Metadata"]
    assert metadata["bailiwick-encryption"].startswith("v=2;")
    assert (metadata["kept"], metadata["bailiwick-note"]) == ("yes", "the caller's own")   # as on PutObject


COPIED = body_of(3 * S + 100)


def test_a_part_copied_from_an_encrypted_object_reads_only_the_segments_of_its_range(
        eu: ProxyThread, store: SignedStore, relay: Recorder, eu_key: Path) -> None:
    client = irish(eu)
    client.put_object(Bucket=DUBLIN, Key="alice/copy-source.eml", Body=COPIED)
    upload_id = client.create_multipart_upload(Bucket=DUBLIN, Key="alice/copied-part.eml")["UploadId"]
    mark = relay.mark()
    answer = client.upload_part_copy(Bucket=DUBLIN, Key="alice/copied-part.eml", UploadId=upload_id, PartNumber=1,
                                     CopySource={"Bucket": DUBLIN, "Key": "alice/copy-source.eml"},
                                     CopySourceRange=f"bytes={S + 10}-{2 * S + 20}")
    sent = relay.since(mark)
    assert f"range: bytes={S + 16}-{3 * (S + 16) - 1}\r\n".encode() in sent.lower()
    assert MARKER not in sent
    listed = client.list_parts(Bucket=DUBLIN, Key="alice/copied-part.eml", UploadId=upload_id)["Parts"]
    assert [(p["Size"], p["ETag"]) for p in listed] == [(S + 11, answer["CopyPartResult"]["ETag"])]
    complete(client, "alice/copied-part.eml", upload_id,
             [{"PartNumber": 1, "ETag": answer["CopyPartResult"]["ETag"]}])
    held, entry = stored(store, DUBLIN, "alice/copied-part.eml")
    assert opened(held, entry, eu_key, "alice/copied-part.eml") == COPIED[S + 10:2 * S + 21]


@pytest.mark.parametrize("source", [PLAIN, MIGRATING])
@pytest.mark.parametrize("copy_range", [None, "bytes=5-70000"])
def test_a_part_copied_from_a_plaintext_object_is_sealed(eu: ProxyThread, store: SignedStore, eu_key: Path,
                                                         source: str, copy_range: str | None) -> None:
    # A dataset that is not encrypted, and a plaintext object of one migrating to encryption (asked for the
    # stored segments of the range, as an encrypted object would be, and cut to the range).
    store.client().put_object(Bucket=source, Key="plain-source.eml", Body=COPIED)
    client = irish(eu)
    key = f"alice/from-{source}-{bool(copy_range)}.eml"
    upload_id = client.create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"]
    ranged = {"CopySourceRange": copy_range} if copy_range else {}
    answer = client.upload_part_copy(Bucket=DUBLIN, Key=key, UploadId=upload_id, PartNumber=1,
                                     CopySource={"Bucket": source, "Key": "plain-source.eml"}, **ranged)
    complete(client, key, upload_id, [{"PartNumber": 1, "ETag": answer["CopyPartResult"]["ETag"]}])
    held, entry = stored(store, DUBLIN, key)
    assert MARKER not in held
    assert opened(held, entry, eu_key, key) == (COPIED[5:70001] if copy_range else COPIED)


def test_a_part_sent_again_is_sealed_under_a_fresh_salt_and_nonce_prefix(eu: ProxyThread, store: SignedStore,
                                                                         eu_key: Path) -> None:
    # The same plaintext as the same part of the same upload, twice sent and twice copied: a salt and nonce
    # prefix used again would seal it to the same bytes (same key, same nonces), and so to the same ETag.
    client = irish(eu)
    key = "alice/sent-again.eml"
    client.put_object(Bucket=DUBLIN, Key="alice/again-source.eml", Body=COPIED)
    upload_id = client.create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"]
    etags = [client.upload_part(Bucket=DUBLIN, Key=key, UploadId=upload_id, PartNumber=1, Body=COPIED)["ETag"]
             for _ in range(2)]
    etags += [client.upload_part_copy(Bucket=DUBLIN, Key=key, UploadId=upload_id, PartNumber=1, CopySource={
        "Bucket": DUBLIN, "Key": "alice/again-source.eml"})["CopyPartResult"]["ETag"] for _ in range(2)]
    assert len(set(etags)) == 4
    complete(client, key, upload_id, [{"PartNumber": 1, "ETag": etags[-1]}])
    held, entry = stored(store, DUBLIN, key)
    assert opened(held, entry, eu_key, key) == COPIED


def test_a_copy_range_outside_the_source_is_refused(eu: ProxyThread) -> None:
    client = irish(eu)
    client.put_object(Bucket=DUBLIN, Key="alice/short-source.eml", Body=b"short")
    upload_id = client.create_multipart_upload(Bucket=DUBLIN, Key="alice/outside.eml")["UploadId"]
    with pytest.raises(ClientError) as refused:
        client.upload_part_copy(Bucket=DUBLIN, Key="alice/outside.eml", UploadId=upload_id, PartNumber=1,
                                CopySource={"Bucket": DUBLIN, "Key": "alice/short-source.eml"},
                                CopySourceRange="bytes=0-5")
    assert refused.value.response["Error"]["Code"] == "InvalidArgument"


def test_a_part_copied_from_an_encrypted_object_into_a_plaintext_dataset_is_its_plaintext(
        eu: ProxyThread, store: SignedStore) -> None:
    client = irish(eu)
    client.put_object(Bucket=DUBLIN, Key="alice/leaving.eml", Body=COPIED)
    upload_id = client.create_multipart_upload(Bucket=PLAIN, Key="arrived.eml")["UploadId"]
    assert not upload_id.startswith(PREFIX)   # an upload into a dataset that is not encrypted is the server's own
    answer = client.upload_part_copy(Bucket=PLAIN, Key="arrived.eml", UploadId=upload_id, PartNumber=1,
                                     CopySource={"Bucket": DUBLIN, "Key": "alice/leaving.eml"},
                                     CopySourceRange=f"bytes=7-{S + 7}")
    client.complete_multipart_upload(Bucket=PLAIN, Key="arrived.eml", UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": answer["CopyPartResult"]["ETag"]}]})
    assert store.client().get_object(Bucket=PLAIN, Key="arrived.eml")["Body"].read() == COPIED[7:S + 8]


@pytest.fixture(scope="module")
def by_address(store: SignedStore, relay: Recorder, eu_key: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    running = _proxy(tmp_path_factory.mktemp("mp-clients"), store, relay, eu_key, by_address=True)
    yield running
    running.stop()


@pytest.mark.parametrize("name", ["awscli", "rclone"])
def test_a_command_line_client_uploads_in_parts(name: str, by_address: ProxyThread, store: SignedStore,
                                                eu_key: Path, tmp_path: Path) -> None:
    data = body_of(17 * MIB + 3)   # the AWS CLI's 8 MiB parts: three; rclone's 5 MiB ones (as asked): four
    source = tmp_path / "upload"
    source.write_bytes(data)
    key = f"{name}-parts.bin"   # top-level: see test_encrypted_clients on moto and "%2F"
    secret = "client-secret-not-known-to-anyone"
    back = tmp_path / "download"
    if name == "awscli":
        cli = AwsCli(by_address.url, "AKIAANYCLIENT000", tmp_path, secret=secret)
        cli.aws("s3", "cp", str(source), f"s3://{DUBLIN}/{key}")
        cli.aws("s3", "cp", f"s3://{DUBLIN}/{key}", str(back))   # HEAD, then ranged GETs of 8 MiB
    else:
        rclone = Rclone(by_address.url, "AKIAANYCLIENT000", tmp_path, secret=secret)
        # --s3-no-head: rclone would HEAD the object with the ?versionId=null that moto answered the upload
        # with, which moto itself refuses on a bucket without versioning (moto's quirk, not the proxy's).
        rclone.rclone("copyto", "--s3-no-head", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", str(source),
                      f"bw:{DUBLIN}/{key}")
        rclone.rclone("copyto", f"bw:{DUBLIN}/{key}", str(back))   # HEAD, then GET: no listing
    held, entry = stored(store, DUBLIN, key)
    assert entry.startswith("v=2;")
    assert MARKER not in held
    assert opened(held, entry, eu_key, key) == data
    assert back.read_bytes() == data


def test_a_part_copied_from_a_multipart_object(eu: ProxyThread, store: SignedStore, eu_key: Path) -> None:
    client = irish(eu)
    parts = [body_of(5 * MIB), body_of(5 * MIB), b"tail"]
    upload_id, done = upload(client, "alice/mp-source.eml", parts)
    complete(client, "alice/mp-source.eml", upload_id, done)
    data = b"".join(parts)
    key = "alice/from-multipart.eml"
    upload_id = client.create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"]
    first, last = 5 * MIB - 100, 10 * MIB + 2   # across both part boundaries of the source
    answer = client.upload_part_copy(Bucket=DUBLIN, Key=key, UploadId=upload_id, PartNumber=1,
                                     CopySource={"Bucket": DUBLIN, "Key": "alice/mp-source.eml"},
                                     CopySourceRange=f"bytes={first}-{last}")
    complete(client, key, upload_id, [{"PartNumber": 1, "ETag": answer["CopyPartResult"]["ETag"]}])
    held, entry = stored(store, DUBLIN, key)
    assert opened(held, entry, eu_key, key) == data[first:last + 1]
