"""Attacks on multipart uploads into an encrypted dataset (format 2): upload tokens forged or edited, upload
queries the storage server could read otherwise, CompleteMultipartUpload bodies, UploadPartCopy sources and
ranges, parts that reached the storage server past the proxy, and crafted stored layouts.

The real proxy in re-sign mode with a key file, in front of moto checking every signature, behind a `Recorder`
relay that keeps every byte sent to the storage server (the fixtures of `tests.crypto.test_multipart`). The
attacker is an allowed Irish caller, or (where a case says so) someone who writes to the storage server directly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from proxy.crypto.bindings import bind_parted
from proxy.crypto.envelope import PartedEnvelope
from proxy.crypto.keyfile import KeyFileService
from proxy.crypto.keyservice import Justification
from proxy.crypto.parts import MAX_PART_LENGTH, MAX_PARTS, fresh_header, layout, part_stored_length
from proxy.crypto.plan import ObjectRef
from proxy.crypto.uploads import UploadToken, decode_upload_id
from proxy.errors import EncryptedObjectInvalid
from proxy.harness import ProxyThread
from tests.attacks.test_encryption_bypass import code_of, raw
from tests.crypto import test_multipart as running
from tests.crypto.test_multipart import DUBLIN, MARKER, S, complete, irish
from tests.support.encrypting import relay_fixture  # noqa: F401  (the fixture "relay")
from tests.support.iam import SignedStore
from tests.support.parted import DATASET, REGION
from tests.support.recorder import Recorder

# The proxies and the storage server of the multipart tests (module-scoped fixtures: this module's own).
store, eu_key, folders, proxies, eu = running.store, running.eu_key, running.folders, running.proxies, running.eu

# A plaintext part as long as a sealed part of S bytes: the proxy's size check alone takes it for one.
PLAIN_PART = (MARKER * (part_stored_length(S) // len(MARKER) + 1))[:part_stored_length(S)]


def _pending(store: SignedStore, key: str) -> tuple[str, str]:
    """An upload of `key` holding one plaintext part, made past the proxy (as one started before the dataset
    was encrypted is): its storage server id and the part's ETag."""
    client = store.client()
    upstream_id = client.create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"]
    etag = client.upload_part(Bucket=DUBLIN, Key=key, UploadId=upstream_id, PartNumber=1, Body=PLAIN_PART)["ETag"]
    return upstream_id, etag


def _genuine(client: Any, key: str) -> UploadToken:
    token = decode_upload_id(client.create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"])
    assert token is not None
    return token


Forge = Callable[[UploadToken, str], UploadToken]
# A token naming the pending (plaintext) upload: each way a caller can write one without a proxy's key.
FORGED: dict[str, Forge] = {
    "genuine-key-other-id": lambda genuine, raw: genuine._replace(upstream_id=raw),
    "junk-key": lambda genuine, raw: genuine._replace(upstream_id=raw, wrapped="file:v1:AAAA"),
}
STEPS = {
    "complete": lambda client, key, forged, etag: complete(client, key, forged,
                                                           [{"PartNumber": 1, "ETag": etag}]),
    "list-parts": lambda client, key, forged, etag: client.list_parts(Bucket=DUBLIN, Key=key, UploadId=forged),
}


@pytest.mark.parametrize("step", STEPS.values(), ids=STEPS.keys())
@pytest.mark.parametrize("forge", FORGED.values(), ids=FORGED.keys())
def test_a_token_forged_for_an_upload_the_proxy_did_not_start_is_refused(
        eu: ProxyThread, store: SignedStore, relay: Recorder, forge: Forge, step: Any,
        request: pytest.FixtureRequest) -> None:
    # Completed, the plaintext upload would be an object stored unencrypted in an encrypted dataset.
    key = f"alice/forged-{request.node.callspec.id}.eml"
    raw, etag = _pending(store, key)
    client = irish(eu)
    forged = forge(_genuine(client, key), raw).encode()
    mark = relay.mark()
    with pytest.raises(ClientError) as refused:
        step(client, key, forged, etag)
    assert refused.value.response["Error"]["Code"] in ("NoSuchUpload", "KeyReleaseRefused")
    assert raw.encode() not in relay.since(mark)      # the storage server was never asked about that upload
    with pytest.raises(ClientError):
        store.client().head_object(Bucket=DUBLIN, Key=key)


# Upload ids that would read as more (or other) query parameters if the proxy put them in the target unencoded.
INJECTED = {
    "ampersand": "{id}&partNumber=2",
    "equals": "{id}=x",
    "percent": "{id}%26partNumber%3D2",
    "plus": "{id}+",
    "space": "{id} ",
}


def _resealed(key_file: Path, key: str, token: UploadToken, upstream_id: str) -> UploadToken:
    """`token` naming `upstream_id`, sealed as the proxy would seal it (with the region's key: only a proxy of
    the region has it, so this is the one id the proxy's own bug could put in a target unencoded)."""
    service = KeyFileService(key_file, allow_insecure=True)
    envelope = PartedEnvelope(service.kind, service.key_ref, token.wrapped)
    why = Justification("test-reseal", "IE", DATASET, "test")
    upload_key = service.unwrap(token.wrapped, bind_parted(envelope, ObjectRef(DATASET, REGION, DUBLIN, key, False)),
                                why)
    return UploadToken.made(upstream_id, token.wrapped, upload_key)


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "unsealed"])
@pytest.mark.parametrize("shape", INJECTED.values(), ids=INJECTED.keys())
def test_an_upload_id_spelled_to_inject_parameters_reaches_no_upload(
        eu: ProxyThread, store: SignedStore, relay: Recorder, eu_key: Path, shape: str, sealed: bool) -> None:
    # Unsealed (any caller can write one): refused before anything is forwarded. Sealed (as only the proxy's own
    # bug could give one): forwarded encoded as signed, so the storage server files nothing in the genuine upload.
    key = "alice/injected.eml"
    client = irish(eu)
    genuine = _genuine(client, key)
    upstream_id = shape.format(id=genuine.upstream_id)
    forged = _resealed(eu_key, key, genuine, upstream_id) if sealed else genuine._replace(upstream_id=upstream_id)
    mark = relay.mark()
    with pytest.raises(ClientError) as refused:
        client.upload_part(Bucket=DUBLIN, Key=key, UploadId=forged.encode(), PartNumber=1, Body=MARKER)
    if not sealed:
        assert refused.value.response["Error"]["Code"] == "NoSuchUpload"
        assert relay.since(mark) == b""
    assert store.client().list_parts(Bucket=DUBLIN, Key=key, UploadId=genuine.upstream_id).get("Parts", []) == []


# What someone writing to the storage server puts in a genuine upload's part 1: plaintext, or a part header
# that fits its place (number 1, its length) before bytes that are no sealed segments.
PLANTED = {
    "plaintext": PLAIN_PART,
    "header-then-junk": (b"\x02" + (1).to_bytes(4, "big") + S.to_bytes(8, "big") + bytes(39)
                         + PLAIN_PART[52:]),
}


@pytest.mark.parametrize("planted", PLANTED.values(), ids=PLANTED.keys())
def test_parts_written_past_the_proxy_are_never_served(eu: ProxyThread, store: SignedStore, planted: bytes,
                                                       request: pytest.FixtureRequest) -> None:
    # The part reaches the storage server with the raw id; the caller completes the upload through the proxy
    # (its size is a sealed part's); every read of it is refused, nothing of the planted bytes handed out.
    key = f"alice/past-the-proxy-{request.node.callspec.id}.eml"
    client = irish(eu)
    genuine = _genuine(client, key)
    etag = store.client().upload_part(Bucket=DUBLIN, Key=key, UploadId=genuine.upstream_id, PartNumber=1,
                                      Body=planted)["ETag"]
    complete(client, key, genuine.encode(), [{"PartNumber": 1, "ETag": etag}])
    for asked in ({}, {"Range": "bytes=0-10"}, {"Range": f"bytes={S - 10}-"}):
        with pytest.raises(ClientError) as refused:
            client.get_object(Bucket=DUBLIN, Key=key, **asked)
        assert refused.value.response["Error"]["Code"] == "EncryptedObjectInvalid"


# Stored objects whose part 1 header and stored length a storage writer chose: (part 1's length, stored length).
CRAFTED = {
    "one-part-too-many": (S, MAX_PARTS * part_stored_length(S) + part_stored_length(1)),
    "empty-first-part-then-more": (0, 2 * part_stored_length(0)),
    "unaligned-first-part-then-more": (S + 1, part_stored_length(S + 1) + part_stored_length(1)),
    "last-longer-than-first": (S, part_stored_length(S) + part_stored_length(S) + 16),
    "last-part-a-bare-header": (S, part_stored_length(S) + 52),
    "largest-part-claimed-short-object": (MAX_PART_LENGTH, 10 * part_stored_length(S)),
}


@pytest.mark.parametrize(("first", "stored"), CRAFTED.values(), ids=CRAFTED.keys())
def test_a_crafted_layout_is_refused_from_the_header_and_length_alone(first: int, stored: int) -> None:
    with pytest.raises(EncryptedObjectInvalid, match="layout"):
        layout(fresh_header(1, first), stored)


_NS = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def _body(parts: str, root: str = "CompleteMultipartUpload", prolog: str = "") -> bytes:
    return f'{prolog}<{root}{_NS}>{parts}</{root}>'.encode()


def _part(number: str, etag: str, extra: str = "") -> str:
    return f"<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag>{extra}</Part>"


# CompleteMultipartUpload bodies (ETAG: part 1's as stored) and what the caller gets.
COMPLETE_BODIES: dict[str, tuple[Callable[[str], bytes], int, str]] = {
    "part-named-twice": (lambda e: _body(_part("1", e) + _part("1", e)), 400, "InvalidPartOrder"),
    "part-never-uploaded": (lambda e: _body(_part("1", e) + _part("2", e)), 400, "InvalidPart"),
    "entity": (lambda e: _body(_part("1", "&e;"), prolog=f'<!DOCTYPE x [<!ENTITY e "{e}">]>'), 400,
               "MalformedXML"),
    "comment": (lambda e: _body(_part("1", e) + "<!-- x -->"), 400, "MalformedXML"),
    "other-namespace": (lambda e: _body(f'<Part xmlns="urn:x"><PartNumber>1</PartNumber><ETag>{e}</ETag></Part>'),
                        400, "MalformedXML"),
    "size-claimed": (lambda e: _body(_part("1", e, "<Size>1</Size>")), 400, "MalformedXML"),
    "number-padded": (lambda e: _body(_part("01", e) + _part("1", e)), 400, "InvalidPartOrder"),
    "over-the-limit": (lambda e: _body(_part("1", e) + " " * (4 * 1024 * 1024)), 400, "MaxMessageLengthExceeded"),
    "cdata-and-spaces": (lambda e: _body(_part(" 1 ", f"  <![CDATA[{e.replace('&quot;', chr(34))}]]>  ")), 200, ""),
}


@pytest.mark.parametrize(("body", "status", "code"), COMPLETE_BODIES.values(), ids=COMPLETE_BODIES.keys())
def test_a_complete_body_is_read_strictly_and_only_the_proxys_own_is_forwarded(
        eu: ProxyThread, store: SignedStore, relay: Recorder, body: Callable[[str], bytes], status: int, code: str,
        request: pytest.FixtureRequest) -> None:
    key = f"alice/completed-{request.node.callspec.id}.eml"
    client = irish(eu)
    token = client.create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"]
    etag = client.upload_part(Bucket=DUBLIN, Key=key, UploadId=token, PartNumber=1, Body=MARKER)["ETag"]
    mark = relay.mark()
    sent = body(etag.replace('"', "&quot;"))
    got, _, answer = raw(eu, "POST", f"/{DUBLIN}/{key}?uploadId={token}", {"Content-Length": str(len(sent))}, sent)
    assert (got, code_of(answer)) == (status, code)
    forwarded = relay.since(mark)
    if status == 200:
        assert client.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == MARKER
        assert b"CDATA" not in forwarded   # the proxy's own body went
    else:
        assert b"POST " not in forwarded
        with pytest.raises(ClientError):
            store.client().head_object(Bucket=DUBLIN, Key=key)


# UploadPartCopy into an encrypted upload: each is refused before the source is read and no part is written.
COPY_SOURCE = "alice/part-copy-source.eml"
PART_COPIES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "range-open-ended": ({"CopySourceRange": "bytes=0-"}, ("InvalidArgument",)),
    "range-suffix": ({"CopySourceRange": "bytes=-5"}, ("InvalidArgument",)),
    "range-backwards": ({"CopySourceRange": "bytes=5-4"}, ("InvalidArgument",)),
    "range-two": ({"CopySourceRange": "bytes=0-1,3-4"}, ("InvalidArgument",)),
    "source-another-region": ({"CopySource": {"Bucket": "mail-us-east", "Key": "alice/x.eml"}},
                              ("AccessDenied", "KeyReleaseRefused")),
    "source-sse-c": ({"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": "k" * 32},
                     ("NotImplemented",)),
}


@pytest.mark.parametrize(("asked", "codes"), PART_COPIES.values(), ids=PART_COPIES.keys())
def test_a_part_copy_the_proxy_cannot_carry_out_reads_and_writes_nothing(
        eu: ProxyThread, store: SignedStore, relay: Recorder, asked: dict[str, Any], codes: tuple[str, ...],
        request: pytest.FixtureRequest) -> None:
    key = f"alice/part-copy-{request.node.callspec.id}.eml"
    client = irish(eu)
    client.put_object(Bucket=DUBLIN, Key=COPY_SOURCE, Body=MARKER * 10)
    token = _genuine(client, key)
    mark = relay.mark()
    with pytest.raises(ClientError) as refused:
        client.upload_part_copy(**{"Bucket": DUBLIN, "Key": key, "UploadId": token.encode(), "PartNumber": 1,
                                   "CopySource": {"Bucket": DUBLIN, "Key": COPY_SOURCE}, **asked})
    assert refused.value.response["Error"]["Code"] in codes
    assert relay.since(mark) == b""


def test_a_part_copy_whose_source_condition_fails_writes_no_part(eu: ProxyThread, store: SignedStore) -> None:
    key = "alice/part-copy-condition.eml"
    client = irish(eu)
    client.put_object(Bucket=DUBLIN, Key=COPY_SOURCE, Body=MARKER * 10)
    token = _genuine(client, key)
    for condition in ({"CopySourceIfMatch": '"0123456789abcdef0123456789abcdef"'},
                      {"CopySourceIfNoneMatch": client.head_object(Bucket=DUBLIN, Key=COPY_SOURCE)["ETag"]}):
        with pytest.raises(ClientError) as refused:
            client.upload_part_copy(Bucket=DUBLIN, Key=key, UploadId=token.encode(), PartNumber=1,
                                    CopySource={"Bucket": DUBLIN, "Key": COPY_SOURCE}, **condition)
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert store.client().list_parts(Bucket=DUBLIN, Key=key, UploadId=token.upstream_id).get("Parts", []) == []


def _encoded(text: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode())


# The query of an UploadPart spelled otherwise: the proxy seals what the storage server then files.
SPELLINGS = {
    "as-is": lambda token: f"partNumber=1&uploadId={token}",
    "token-percent-encoded": lambda token: f"partNumber=1&uploadId={_encoded(token)}",
    "number-percent-encoded": lambda token: f"partNumber={_encoded('1')}&uploadId={token}",
    "upload-id-first": lambda token: f"uploadId={token}&partNumber=1",
}


@pytest.mark.parametrize("query", SPELLINGS.values(), ids=SPELLINGS.keys())
def test_the_proxy_and_the_storage_server_read_one_upload_and_part(
        eu: ProxyThread, relay: Recorder, query: Callable[[str], str], request: pytest.FixtureRequest) -> None:
    key = f"alice/spelled-{request.node.callspec.id}.eml"
    client = irish(eu)
    token = _genuine(client, key)
    mark = relay.mark()
    got, headers, _ = raw(eu, "PUT", f"/{DUBLIN}/{key}?{query(token.encode())}",
                          {"Content-Length": str(len(MARKER))}, MARKER)
    assert got == 200
    assert token.encode().encode() not in relay.since(mark)   # only the storage server's id went
    complete(client, key, token.encode(), [{"PartNumber": 1, "ETag": headers["etag"]}])
    assert client.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == MARKER   # sealed as part 1, filed as 1


# Queries the storage server could read otherwise than the proxy: refused, nothing forwarded.
AMBIGUOUS = {
    "upload-id-twice": lambda token: f"partNumber=1&uploadId={token}&uploadId={token}",
    "upload-id-and-a-raw-one": lambda token: f"partNumber=1&uploadId={token}&uploadid=raw",
    "part-number-twice": lambda token: f"partNumber=1&partNumber=2&uploadId={token}",
    "part-number-in-another-case": lambda token: f"partNumber=1&PartNumber=2&uploadId={token}",
    "name-percent-encoded": lambda token: f"partNumber=1&upload%49d={token}",
}


@pytest.mark.parametrize("query", AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
def test_an_ambiguous_upload_query_is_refused(eu: ProxyThread, relay: Recorder, query: Callable[[str], str]) -> None:
    token = _genuine(irish(eu), "alice/ambiguous.eml")
    mark = relay.mark()
    got, _, _ = raw(eu, "PUT", f"/{DUBLIN}/alice/ambiguous.eml?{query(token.encode())}",
                    {"Content-Length": str(len(MARKER))}, MARKER)
    assert got == 400
    assert relay.since(mark) == b""


def test_a_listing_of_parts_written_past_the_proxy_shows_no_stored_size(eu: ProxyThread, store: SignedStore) -> None:
    # A part of a size no sealed part has: the listing is refused rather than show a size that is no plaintext's.
    key = "alice/listed-past-the-proxy.eml"
    client = irish(eu)
    token = _genuine(client, key)
    store.client().upload_part(Bucket=DUBLIN, Key=key, UploadId=token.upstream_id, PartNumber=1, Body=b"x" * 10)
    with pytest.raises(ClientError) as refused:
        client.list_parts(Bucket=DUBLIN, Key=key, UploadId=token.encode())
    assert refused.value.response["Error"]["Code"] == "EncryptedObjectInvalid"


def test_a_part_copy_naming_the_storage_servers_own_id_is_refused(eu: ProxyThread, store: SignedStore,
                                                                  relay: Recorder) -> None:
    # The raw id (as ListMultipartUploads shows it) would have the storage server copy the source unsealed.
    key = "alice/part-copy-raw.eml"
    client = irish(eu)
    client.put_object(Bucket=DUBLIN, Key=COPY_SOURCE, Body=MARKER * 10)
    token = _genuine(client, key)
    mark = relay.mark()
    with pytest.raises(ClientError) as refused:
        client.upload_part_copy(Bucket=DUBLIN, Key=key, UploadId=token.upstream_id, PartNumber=1,
                                CopySource={"Bucket": DUBLIN, "Key": COPY_SOURCE})
    assert refused.value.response["Error"]["Code"] == "NoSuchUpload"
    assert relay.since(mark) == b""
