"""Access-key identity cannot be borrowed: the proxy verifies the signature it judges by.

The storage server is moto with IAM authentication on: it checks every SigV4
signature with the key *it* reads from the request. Two IAM users, an Irish
key and a US key, are both mapped in the proxy with their secrets. The US key
holder crafts requests that the old proxy read as Irish while moto read them
as US (or that name the Irish key id with a signature the holder cannot
make): every one is refused by the proxy, nothing reaches the storage server
(the Recorder sees no byte), and the audit line names no identity, or the
caller's real one. Legitimate requests with either key (boto3 SigV4, SigV2,
presigned GET and PUT, a chunk-signed upload) go through, and moto accepts
the same signatures the proxy accepted.

moto's IAM check reads the SigV4 Authorization header only (it fails on
presigned URLs and SigV2 with a 500), so those legitimate forms are shown
through a second proxy in front of the session's moto without IAM; their
refusals are shown against both.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from proxy.config import AccessKeyRule, Limits
from proxy.harness import ProxyThread
from proxy.localstore import MotoServer
from tests.attacks.conftest import REFUSED, Target, audit_line, send
from tests.conftest import DUBLIN, US, proxy_config
from tests.support.awssign import STREAMING, Signed, signed, streaming_body, streaming_request
from tests.support.recorder import Recorder

REGION = "eu-west-1"
# The set-up calls moto answers without checking a signature; every later one is checked.
SETUP_CALLS = 9


@dataclass(frozen=True, slots=True)
class Keys:
    ie: tuple[str, str]
    us: tuple[str, str]


@dataclass(frozen=True, slots=True)
class Rig:
    target: Target
    keys: Keys
    store: MotoServer

    @property
    def url(self) -> str:
        return f"http://{self.target.host}:{self.target.port}"


@pytest.fixture(scope="module")
def iam_store() -> Iterator[tuple[MotoServer, Keys]]:
    """moto with signature checks on: two IAM users allowed everything, the two buckets, one Irish letter."""
    with MotoServer(environ={"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS)}) as store:
        admin: dict[str, Any] = {"endpoint_url": store.url, "region_name": "us-east-1",
                                 "aws_access_key_id": "setup", "aws_secret_access_key": "setup",
                                 "config": BotoConfig(retries={"max_attempts": 1})}
        iam = boto3.client("iam", **admin)
        made = []
        for user in ("mail-ie", "mail-us"):
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            iam.put_user_policy(UserName=user, PolicyName="all",
                                PolicyDocument='{"Version": "2012-10-17", "Statement": '
                                               '[{"Effect": "Allow", "Action": "*", "Resource": "*"}]}')
            made.append((key["AccessKeyId"], key["SecretAccessKey"]))
        s3 = boto3.client("s3", **admin)
        s3.create_bucket(Bucket=DUBLIN, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.create_bucket(Bucket=US)
        s3.put_object(Bucket=DUBLIN, Key="alice/inbox/1.eml", Body=b"Dublin mail")
        yield store, Keys(ie=made[0], us=made[1])


def keyed_proxy(upstream: Recorder, keys: Keys, folder: Path) -> ProxyThread:
    config = proxy_config(upstream.url, folder / "audit.jsonl")
    (folder / "ie-secret").write_text(keys.ie[1] + "\n")   # as a mounted Secret
    rules = (AccessKeyRule(keys.ie[0], "IE", "mail-ie", secret_access_key_file=folder / "ie-secret"),
             AccessKeyRule(keys.us[0], "US", "mail-us", secret_access_key=keys.us[1]))
    identity = replace(config.identity, access_keys=rules, access_key_region=REGION)
    return ProxyThread(replace(config, identity=identity)).start()


@pytest.fixture(scope="module")
def rig(iam_store: tuple[MotoServer, Keys], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    store, keys = iam_store
    relay = Recorder(store.port)
    folder = tmp_path_factory.mktemp("keyed")
    running = keyed_proxy(relay, keys, folder)
    host, port = running.url.removeprefix("http://").split(":")
    yield Rig(Target("c", host, int(port), relay, folder / "audit.jsonl"), keys, store)
    running.stop()
    relay.close()


@pytest.fixture(scope="module")
def open_rig(iam_store: tuple[MotoServer, Keys], recorder: Recorder, seeded: None,
             tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[Rig]:
    """The same keys, in front of the session's moto (no IAM): for the forms moto's IAM cannot check."""
    _, keys = iam_store
    folder = tmp_path_factory.mktemp("keyed-open")
    running = keyed_proxy(recorder, keys, folder)
    host, port = running.url.removeprefix("http://").split(":")
    yield Rig(Target("c", host, int(port), recorder, folder / "audit.jsonl"), keys, moto)
    running.stop()


def client(rig: Rig, key: tuple[str, str], **config: Any) -> Any:
    return boto3.client("s3", endpoint_url=rig.url, region_name=REGION, aws_access_key_id=key[0],
                        aws_secret_access_key=key[1],
                        config=BotoConfig(retries={"max_attempts": 1}, s3={"addressing_style": "path"}, **config))


def owner(rig: Rig) -> Any:
    """The Irish key straight to the storage server: what is really there."""
    return boto3.client("s3", endpoint_url=rig.store.url, region_name=REGION, aws_access_key_id=rig.keys.ie[0],
                        aws_secret_access_key=rig.keys.ie[1], config=BotoConfig(retries={"max_attempts": 1}))


def assert_refused_before_upstream(rig: Rig, raw: bytes, *, codes: set[str],
                                   jurisdiction: str | None = None) -> dict[str, Any]:
    """Refused by the proxy with one of `codes`, no byte upstream, audited with no identity (or the real one)."""
    mark = rig.target.recorder.mark()
    answer = send(rig.target, raw)
    assert answer.status in REFUSED, answer.raw[:400]
    assert any(f"<Code>{code}</Code>".encode() in answer.raw for code in codes), answer.raw[:600]
    assert rig.target.recorder.since(mark) == b""
    assert answer.request_id is not None
    line = audit_line(rig.target, answer.request_id)
    assert line["caller"]["jurisdiction"] == jurisdiction
    assert line["decision"] in ("deny", "error")
    assert line["error_code"] in codes
    return line


# ---- the legitimate callers --------------------------------------------------------------------

def test_each_key_works_as_itself_and_moto_agrees(rig: Rig) -> None:
    irish = client(rig, rig.keys.ie)
    key = f"alice/{uuid.uuid4().hex}.eml"
    irish.put_object(Bucket=DUBLIN, Key=key, Body=b"a letter")
    assert owner(rig).get_object(Bucket=DUBLIN, Key=key)["Body"].read() == b"a letter"
    assert irish.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == b"a letter"
    # Prefixes without "/": moto decodes "%2F" in the query before it checks, and would refuse
    # even the SDK's own signature for one.
    assert key in [o["Key"] for o in irish.list_objects_v2(Bucket=DUBLIN, Prefix="alice")["Contents"]]
    irish.delete_objects(Bucket=DUBLIN, Delete={"Objects": [{"Key": key}]})   # a body read before the decision
    # The US key is the US caller: its read of Dublin is the policy's to refuse, audited as US.
    mark = rig.target.recorder.mark()
    with pytest.raises(ClientError) as refused:
        client(rig, rig.keys.us).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert rig.target.recorder.since(mark) == b""
    line = audit_line(rig.target, refused.value.response["ResponseMetadata"]["RequestId"])
    assert line["caller"] == {"jurisdiction": "US", "source": "127.0.0.1", "subject": "mail-us"}
    client(rig, rig.keys.us).put_object(Bucket=US, Key="bob/letter.eml", Body=b"US mail")


def test_a_chunk_signed_upload_goes_through_chunk_by_chunk(rig: Rig) -> None:
    data = os.urandom(150_000)
    key = f"alice/{uuid.uuid4().hex}.bin"
    request, body = streaming_request(f"{rig.url}/{DUBLIN}/{key}", *rig.keys.ie, data, region=REGION)
    answer = send(rig.target, request.raw(body))
    assert answer.status == 200, answer.raw[:600]
    assert owner(rig).get_object(Bucket=DUBLIN, Key=key)["Body"].read() == data


def test_a_body_that_is_not_the_signed_one_never_reaches_the_storage_server_whole(rig: Rig) -> None:
    key = f"alice/{uuid.uuid4().hex}.bin"
    body = os.urandom(300_000)
    request = signed("PUT", f"{rig.url}/{DUBLIN}/{key}", *rig.keys.ie, body=body)
    forged = body[:-1] + bytes([body[-1] ^ 1])
    mark = rig.target.recorder.mark()
    answer = send(rig.target, request.raw(forged))
    assert answer.status == 403, answer.raw[:400]
    assert b"<Code>XAmzContentSHA256Mismatch</Code>" in answer.raw
    assert forged[-1000:] not in rig.target.recorder.since(mark)   # its last piece was held back
    with pytest.raises(ClientError):
        owner(rig).head_object(Bucket=DUBLIN, Key=key)
    assert audit_line(rig.target, str(answer.request_id))["caller"]["jurisdiction"] == "IE"

    # A forged chunk: the chunks before it may go, the forged one and the end never do.
    request, framed = streaming_request(f"{rig.url}/{DUBLIN}/{key}", *rig.keys.ie, body, region=REGION)
    at = framed.index(b"\r\n", 70_000)
    forged = framed[:at - 5] + bytes([framed[at - 5] ^ 1]) + framed[at - 4:]
    mark = rig.target.recorder.mark()
    answer = send(rig.target, request.raw(forged))
    assert answer.status == 403, answer.raw[:400]
    assert b"<Code>SignatureDoesNotMatch</Code>" in answer.raw
    assert framed[at - 200:at] not in rig.target.recorder.since(mark)
    with pytest.raises(ClientError):
        owner(rig).head_object(Bucket=DUBLIN, Key=key)


@pytest.mark.parametrize("version", ["s3v4", "s3"])
def test_presigned_urls_and_sigv2_work_with_either_key(open_rig: Rig, version: str) -> None:
    irish = client(open_rig, open_rig.keys.ie, signature_version=version)
    url = irish.generate_presigned_url("get_object", Params={"Bucket": DUBLIN, "Key": "alice/inbox/1.eml"},
                                       ExpiresIn=120)
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.read() == b"Dublin mail"
    put = irish.generate_presigned_url("put_object", Params={"Bucket": DUBLIN, "Key": f"alice/{version}.txt"},
                                       ExpiresIn=120)
    # http.client adds no Content-Type (urllib would, and SigV2 signs it).
    connection = http.client.HTTPConnection(open_rig.target.host, open_rig.target.port, timeout=10)
    connection.request("PUT", put.removeprefix(open_rig.url), body=b"presigned")
    answer = connection.getresponse()
    assert answer.status == 200, answer.read()
    connection.close()
    if version == "s3":   # the SDK's own SigV2 header signature
        assert irish.get_object(Bucket=DUBLIN, Key="alice/s3.txt")["Body"].read() == b"presigned"
    us_url = client(open_rig, open_rig.keys.us, signature_version=version).generate_presigned_url(
        "get_object", Params={"Bucket": DUBLIN, "Key": "alice/inbox/1.eml"}, ExpiresIn=120)
    mark = open_rig.target.recorder.mark()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(us_url, timeout=10)
    assert refused.value.code == 403
    assert b"<Code>AccessDenied</Code>" in refused.value.read()
    assert open_rig.target.recorder.since(mark) == b""


# ---- the US key holder, trying to be Irish --------------------------------------------------------

def us_request(rig: Rig, path: str = f"/{DUBLIN}/alice/inbox/1.eml", **kwargs: Any) -> Signed:
    return signed("GET", rig.url + path, *rig.keys.us, region=REGION, **kwargs)


def credential(rig: Rig, key: str) -> str:
    return us_request(rig).header("Authorization").split("Credential=")[1].split(",")[0].replace(rig.keys.us[0], key)


def test_the_reading_that_let_a_us_key_read_dublin_is_refused(rig: Rig) -> None:
    # The old proxy read the one component named Credential (the Irish key); moto reads the first
    # "Credential=" it finds, here inside SignedHeaders (the US key), and the US signature verifies.
    request = us_request(rig)
    auth = request.header("Authorization")
    signed_headers = auth.split("SignedHeaders=")[1].split(",")[0]
    signature = auth.split("Signature=")[1]
    crafted = (f"AWS4-HMAC-SHA256 SignedHeaders={signed_headers};Credential={credential(rig, rig.keys.us[0])}, "
               f"Credential={credential(rig, rig.keys.ie[0])}, Signature={signature}")
    assert_refused_before_upstream(rig, request.replace("Authorization", crafted).raw(),
                                   codes={"AuthorizationHeaderMalformed"})


def crafted_headers(rig: Rig) -> dict[str, str]:
    """Authorization headers a US key holder can make, each naming the Irish key somewhere."""
    request = us_request(rig)
    auth = request.header("Authorization")
    us_cred, ie_cred = credential(rig, rig.keys.us[0]), credential(rig, rig.keys.ie[0])
    parts = auth.removeprefix("AWS4-HMAC-SHA256 ").split(", ")
    v2 = us_request(rig, version="v2").header("Authorization")
    return {
        "Irish key id, US signature": auth.replace(rig.keys.us[0], rig.keys.ie[0]),
        "Irish key id, wrong signature": auth.replace(rig.keys.us[0], rig.keys.ie[0])[:-8] + "00000000",
        "reordered": f"AWS4-HMAC-SHA256 {parts[1]}, {parts[0]}, {parts[2]}".replace(us_cred, ie_cred),
        "credential repeated, Irish last": f"{auth}, Credential={ie_cred}",
        "credential repeated, Irish first": auth.replace("Credential=", f"Credential={ie_cred}, Credential=", 1),
        "credential repeated, no space": auth.replace(", SignedHeaders", f",Credential={ie_cred},SignedHeaders"),
        "extra component": f"{auth}, Credential2={ie_cred}",
        "spacing": auth.replace(", ", " ,  ").replace(us_cred, ie_cred),
        "tab after scheme": auth.replace(" ", "\t", 1).replace(us_cred, ie_cred),
        "no space after scheme": auth.replace(" ", "", 1).replace(us_cred, ie_cred),
        "lower-case names": auth.replace("Credential=", "credential=").replace(us_cred, ie_cred),
        "SigV2, Irish key id": v2.replace(rig.keys.us[0], rig.keys.ie[0]),
        "SigV2 two key ids": v2.replace(f"AWS {rig.keys.us[0]}:", f"AWS {rig.keys.ie[0]}:{rig.keys.us[0]}:"),
        "SigV4 scheme, SigV2 body": f"AWS4-HMAC-SHA256 {rig.keys.ie[0]}:" + v2.split(":")[1],
        "SigV2 scheme, SigV4 body": "AWS " + auth.split(" ", 1)[1].replace(us_cred, ie_cred),
    }


CRAFTED = ["Irish key id, US signature", "Irish key id, wrong signature", "reordered",
           "credential repeated, Irish last", "credential repeated, Irish first", "credential repeated, no space",
           "extra component", "spacing", "tab after scheme", "no space after scheme", "lower-case names",
           "SigV2, Irish key id", "SigV2 two key ids", "SigV4 scheme, SigV2 body", "SigV2 scheme, SigV4 body"]


@pytest.mark.parametrize("name", CRAFTED)
def test_a_us_key_holder_cannot_be_read_as_irish(rig: Rig, name: str) -> None:
    request = us_request(rig, version="v2" if name.startswith("SigV2") else "v4")
    crafted = request.replace("Authorization", crafted_headers(rig)[name])
    assert_refused_before_upstream(rig, crafted.raw(), codes={
        "SignatureDoesNotMatch", "AuthorizationHeaderMalformed", "InvalidArgument"})


@pytest.mark.parametrize("how", ["header and query", "two Authorization headers", "query repeated",
                                 "query other spelling", "unsigned copy source"])
def test_two_places_to_read_a_key_are_refused(rig: Rig, open_rig: Rig, how: str) -> None:
    request = us_request(rig)
    irish_query = f"X-Amz-Credential={credential(rig, rig.keys.ie[0]).replace('/', '%2F')}"
    presigned = us_request(rig, version="v4-query")
    if how == "header and query":
        raw = Signed("GET", request.target + "?" + irish_query, request.headers).raw()
    elif how == "two Authorization headers":
        raw = request.add("Authorization", crafted_headers(rig)["Irish key id, US signature"]).raw()
    elif how == "query repeated":
        raw = Signed("GET", presigned.target + "&" + irish_query, presigned.headers).raw()
    elif how == "query other spelling":
        raw = Signed("GET", presigned.target + "&" + irish_query.lower(), presigned.headers).raw()
    else:   # a header the signature does not cover, naming Dublin data to copy
        raw = us_request(rig, path=f"/{US}/bob/copy.eml").add(
            "x-amz-copy-source", f"{DUBLIN}/alice/inbox/1.eml").raw()
    for target in (rig, open_rig):
        assert_refused_before_upstream(target, raw, codes={
            "InvalidArgument", "AuthorizationHeaderMalformed", "AuthorizationQueryParametersError", "InvalidToken"})


def test_an_irish_presigned_url_cannot_be_forged_or_stretched(open_rig: Rig) -> None:
    irish = client(open_rig, open_rig.keys.ie, signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": DUBLIN, "Key": "alice/inbox/1.eml"}, ExpiresIn=60)
    path = irish.removeprefix(open_rig.url)
    forged = {
        "other key": path.replace("alice/inbox/1.eml", "alice/inbox/2.eml"),
        "longer": path.replace("X-Amz-Expires=60", "X-Amz-Expires=604800"),
        "signed by US": client(open_rig, open_rig.keys.us, signature_version="s3v4").generate_presigned_url(
            "get_object", Params={"Bucket": DUBLIN, "Key": "alice/inbox/1.eml"}, ExpiresIn=60,
        ).removeprefix(open_rig.url).replace(open_rig.keys.us[0], open_rig.keys.ie[0]),
    }
    host = f"{open_rig.target.host}:{open_rig.target.port}"
    for target in forged.values():
        assert_refused_before_upstream(
            open_rig, f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(),
            codes={"SignatureDoesNotMatch"})


def test_an_unknown_key_is_refused_not_forwarded(rig: Rig) -> None:
    request = signed("GET", f"{rig.url}/{DUBLIN}/alice/inbox/1.eml", "AKIAUNKNOWN000000000",
                     hashlib.sha256(b"x").hexdigest(), region=REGION)
    assert_refused_before_upstream(rig, request.raw(), codes={"InvalidAccessKeyId"})


def test_no_secret_or_signature_reaches_the_audit_log_or_a_refusal(rig: Rig) -> None:
    request = us_request(rig)
    signature = request.header("Authorization").rsplit("=", 1)[1]
    answer = send(rig.target, request.replace("Authorization", crafted_headers(rig)["spacing"]).raw())
    assert signature.encode() not in answer.raw
    audit_line(rig.target, str(answer.request_id))
    logged = rig.target.audit.read_text()
    for secret in (rig.keys.ie[1], rig.keys.us[1], signature):
        assert secret not in logged


def delete_body(*keys: str) -> bytes:
    return ("<Delete>" + "".join(f"<Object><Key>{key}</Key></Object>" for key in keys) + "</Delete>").encode()


def test_a_delete_body_read_before_the_decision_is_the_signed_one(rig: Rig) -> None:
    # The keys a multi-object delete names are read before the decision: the body judged must be the
    # body signed, or a caller could replay a signed delete with other keys in it.
    url = f"{rig.url}/{DUBLIN}?delete"
    signed_body = delete_body("alice/a.eml")
    request = signed("POST", url, *rig.keys.ie, body=signed_body, headers={"Content-Type": "application/xml"})
    forged = delete_body("alice/b.eml")   # same length, another key
    assert len(forged) == len(signed_body)
    mark = rig.target.recorder.mark()
    answer = send(rig.target, request.raw(forged))
    assert answer.status == 403, answer.raw[:400]
    assert b"<Code>XAmzContentSHA256Mismatch</Code>" in answer.raw
    assert rig.target.recorder.since(mark) == b""
    assert audit_line(rig.target, str(answer.request_id))["caller"]["jurisdiction"] == "IE"

    # The same body framed as a chunk-signed upload: every chunk verifies, but the keys the proxy would
    # judge are not what a storage server decoding aws-chunked reads: refused, never forwarded.
    payload = delete_body("alice/inbox/1.eml")
    for encoding in ({"Content-Encoding": "aws-chunked"}, {}):
        def post(length: int, extra: dict[str, str] = encoding) -> Signed:
            return signed("POST", url, *rig.keys.ie, region=REGION, payload=STREAMING, headers={
                **extra, "Content-Type": "application/xml", "X-Amz-Decoded-Content-Length": str(len(payload)),
                "Content-Length": str(length)})
        framed_length = len(streaming_body(post(0), rig.keys.ie[1], payload, region=REGION))
        framed_request = post(framed_length)
        framed = streaming_body(framed_request, rig.keys.ie[1], payload, region=REGION)
        mark = rig.target.recorder.mark()
        answer = send(rig.target, framed_request.raw(framed))
        assert answer.status == 400, answer.raw[:400]
        assert b"SignatureDoesNotMatch" not in answer.raw   # the signatures were good: the body is refused
    assert rig.target.recorder.since(mark) == b""
    assert owner(rig).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")["Body"].read() == b"Dublin mail"


def test_chunks_held_for_their_signatures_count_against_the_body_budget(
    iam_store: tuple[MotoServer, Keys], tmp_path: Path,
) -> None:
    # A chunk-signed upload's chunk is held until its signature verifies (up to 16 MiB a chunk): without
    # a bound on them together, a key holder with a right to write could make the proxy hold 16 MiB per
    # connection (gigabytes from one address) by stalling each upload just before a chunk's end.
    store, keys = iam_store
    relay = Recorder(store.port)
    config = replace(proxy_config(relay.url, tmp_path / "audit.jsonl"),
                     limits=replace(Limits(), max_inspected_bytes=4 * 1024 * 1024, max_connections_per_peer=1024))
    rules = (AccessKeyRule(keys.ie[0], "IE", "mail-ie", secret_access_key=keys.ie[1]),)
    running = ProxyThread(replace(config, identity=replace(config.identity, access_keys=rules,
                                                           access_key_region=REGION))).start()
    host, port = running.url.removeprefix("http://").split(":")
    chunk = 2 * 1024 * 1024
    socks: list[socket.socket] = []
    try:
        answers = []
        for number in range(3):
            request, framed = streaming_request(f"{running.url}/{DUBLIN}/alice/held-{number}.bin", *keys.ie,
                                                os.urandom(chunk + 10), region=REGION, chunk=chunk)
            sock = socket.create_connection((host, int(port)), timeout=5)
            socks.append(sock)
            # Everything but the end of the first chunk: the proxy holds it, waiting for the rest.
            sock.sendall(request.raw(framed)[: -(len(framed) - chunk)])
            time.sleep(0.5)
        third = socks[-1]
        third.settimeout(5)
        answers.append(third.recv(65536))
        assert answers[0].startswith(b"HTTP/1.1 503 "), answers[0][:300]
        assert b"<Code>SlowDown</Code>" in answers[0]
        third.close()
        direct = boto3.client("s3", endpoint_url=store.url, region_name=REGION, aws_access_key_id=keys.ie[0],
                              aws_secret_access_key=keys.ie[1], config=BotoConfig(retries={"max_attempts": 1}))
        with pytest.raises(ClientError):
            direct.head_object(Bucket=DUBLIN, Key="alice/held-2.bin")   # its upload never completed
    finally:
        for sock in socks:
            sock.close()
        running.stop()
        relay.close()


# SigV2 signs the path and a fixed list of sub-resources only (botocore's HmacV1Auth.QSAOfInterest):
# a selector added after signing would turn an Irish signature over one operation into another.
UNSIGNED_SELECTORS = [
    ("GET", f"/{DUBLIN}/alice/inbox/1.eml", "attributes"),
    ("PUT", f"/{DUBLIN}/alice/inbox/1.eml", "retention"),
    ("PUT", f"/{DUBLIN}", "ownershipControls"),
    ("PUT", f"/{DUBLIN}?metrics", "id=all"),
    ("GET", f"/{DUBLIN}?policy", "policyStatus"),
]


@pytest.mark.parametrize("version", ["v2", "v2-query"])
@pytest.mark.parametrize(("method", "path", "added"), UNSIGNED_SELECTORS)
def test_a_selector_sigv2_does_not_sign_is_refused(open_rig: Rig, version: str, method: str, path: str,
                                                   added: str) -> None:
    request = signed(method, open_rig.url + path, *open_rig.keys.ie, version=version)
    joined = "&" if "?" in request.target else "?"
    raw = Signed(method, request.target + joined + added, request.headers).raw()
    assert_refused_before_upstream(open_rig, raw, codes={"AuthorizationHeaderMalformed",
                                                         "AuthorizationQueryParametersError"})
