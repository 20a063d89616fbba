"""Re-sign mode: the proxy's own SigV4 signature replaces the caller's.

The signatures are checked three ways, none of them the proxy's own code:
against AWS's published SigV4 examples (fixed values), by botocore's signer (what
the SDKs sign with) over the request-target as S3 signs it, written out by each
test (the canonical form is what the proxy's signer must get right, so it is
stated, not recomputed), and end to end by moto's server with its signature
checks turned on, which refuses a wrong signature as S3 does.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import botocore.auth
import pytest
import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.config import AccessKeyRule, Config, S3Settings, SigningConfig, TagConfig, load_config
from proxy.errors import BadRequest, ConfigError
from proxy.harness import ProxyThread
from proxy.localstore import MotoServer
from proxy.s3 import resign
from proxy.s3.host import HostReader
from proxy.s3.request import RequestReader
from proxy.s3.resign import UNSIGNED_PAYLOAD, CredentialSource, RequestSigner, request_signer
from tests.conftest import DUBLIN, make_token, proxy_config, s3_client
from tests.support.iam import signed_store
from tests.support.recorder import Recorder
from tests.test_signed_tag import forwarded, storage_side_check

PROXY_KEY, PROXY_SECRET = "AKIAPROXYINDUBLIN000", "the-proxy-secret-only-dublin-holds"
ENV = {"AWS_ACCESS_KEY_ID": PROXY_KEY, "AWS_SECRET_ACCESS_KEY": PROXY_SECRET}
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
TAG_KEY = b"storage-side-shared-key-0123456789abcdef"


def make_signer(environ: dict[str, str] | None = None, region: str = "eu-west-1") -> RequestSigner:
    config = SigningConfig()
    return RequestSigner(config, region, CredentialSource(config, environ=ENV if environ is None else environ))


class _PayloadAsSent(S3SigV4Auth):  # type: ignore[misc]  # botocore ships no type hints
    def payload(self, request: Any) -> str:
        return str(request.headers["X-Amz-Content-SHA256"])


def verify(method: str, signed_target: str, headers: CIMultiDict[str], secret: str) -> bool:
    """Whether the request's SigV4 signature is the one botocore makes for it with `secret`.

    `signed_target` is the request-target as S3 signs it (AWS's URI encoding of the path, which
    S3 decodes once first; the query sorted, each name and value encoded), written by the test.
    botocore signs the headers the Authorization header lists, with the values sent, at the
    request's X-Amz-Date.
    """
    scheme, _, fields = headers["Authorization"].partition(" ")
    assert scheme == "AWS4-HMAC-SHA256"
    parts = dict(part.strip().split("=", 1) for part in fields.split(","))
    key_id, _date, region, service, _ = parts["Credential"].split("/")
    signed = HTTPHeaders()
    for name in parts["SignedHeaders"].split(";"):
        for value in headers.getall(name):
            signed[name] = value   # HTTPHeaders: assignment adds
    request = AWSRequest(method=method, url=f"http://{headers['Host']}{signed_target}", headers=signed)
    request.context["timestamp"] = headers["X-Amz-Date"]
    auth = _PayloadAsSent(Credentials(key_id, secret), service, region)
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    return hmac.compare_digest(expected, parts["Signature"])


AWS_KEY, AWS_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(("target", "signature"), [
    # AWS's published examples ("Examples: Signature Calculations in AWS Signature Version 4",
    # header-based authentication): GET Bucket Lifecycle and GET Bucket (list objects).
    ("/?lifecycle", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
    ("/?max-keys=2&prefix=J", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
])
def test_aws_published_examples(monkeypatch: pytest.MonkeyPatch, target: str, signature: str) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: datetime(2013, 5, 24))
    environ = {"AWS_ACCESS_KEY_ID": AWS_KEY, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
    headers = CIMultiDict({"Host": "examplebucket.s3.amazonaws.com", "X-Amz-Content-SHA256": EMPTY_SHA256})
    make_signer(environ, region="us-east-1").sign("GET", target, headers)
    assert headers["X-Amz-Date"] == "20130524T000000Z"
    assert headers["Authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={AWS_KEY}/20130524/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}")
    assert verify("GET", target, headers, AWS_SECRET)   # the oracle the other tests use agrees with AWS


CALLER_SIGNED = CIMultiDict({
    "Host": "127.0.0.1:8080",
    "Authorization": "AWS4-HMAC-SHA256 Credential=CALLERKEY/20260101/us-east-1/s3/aws4_request, "
                     "SignedHeaders=host, Signature=" + "0" * 64,
    "X-Amz-Date": "20260101T000000Z",
    "X-Amz-Security-Token": "the-callers-session",
    "X-Amz-Content-SHA256": EMPTY_SHA256,
    "User-Agent": "test",
})


@pytest.mark.parametrize(("method", "target", "signed_target", "extra"), [
    ("GET", "/mail-eu-dublin/alice/inbox/1.eml", "/mail-eu-dublin/alice/inbox/1.eml", {}),
    ("GET", "/mail-eu-dublin?list-type=2&prefix=alice%2Finbox%2F&max-keys=10",
     "/mail-eu-dublin?list-type=2&max-keys=10&prefix=alice%2Finbox%2F", {}),
    ("PUT", "/mail-eu-dublin/a%20key%20with%20spaces%2B%C3%A9!%27()*",
     "/mail-eu-dublin/a%20key%20with%20spaces%2B%C3%A9%21%27%28%29%2A", {"Content-Type": "text/plain"}),
    ("PUT", "/mail-eu-dublin/k?acl", "/mail-eu-dublin/k?acl=",
     {"x-amz-acl": "private", "Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="}),
    ("POST", "/mail-eu-dublin?delete", "/mail-eu-dublin?delete=", {"x-amz-meta-Folded": "a   b"}),
    ("HEAD", "/", "/", {}),
])
def test_the_signature_verifies_from_what_is_forwarded(method: str, target: str, signed_target: str,
                                                       extra: dict[str, str]) -> None:
    headers = CIMultiDict(CALLER_SIGNED)
    headers.extend(extra)
    make_signer().sign(method, target, headers)
    assert verify(method, signed_target, headers, PROXY_SECRET)
    assert not verify(method, signed_target, headers, "another-secret")
    assert f"Credential={PROXY_KEY}/" in headers["Authorization"]
    assert "/eu-west-1/s3/aws4_request" in headers["Authorization"]
    # Every header of the caller's request but its signature is forwarded as it was.
    for name, value in extra.items():
        assert headers[name] == value


@pytest.mark.parametrize(("rewrite_host", "host", "target", "sent_host", "sent_target"), [
    # path-style: forwarded as sent, the Host the storage server's own name with rewrite_host
    (True, "127.0.0.1:8080", "/mail-eu-dublin/alice/1.eml", "s3.eu-west-1.amazonaws.com",
     "/mail-eu-dublin/alice/1.eml"),
    (True, "localhost", "/mail-eu-dublin?list-type=2", "s3.eu-west-1.amazonaws.com", "/mail-eu-dublin?list-type=2"),
    (False, "127.0.0.1:8080", "/mail-eu-dublin/alice/1.eml", "127.0.0.1:8080", "/mail-eu-dublin/alice/1.eml"),
    # virtual-hosted: rewritten into path-style, the key's bytes as sent
    (True, "mail-eu-dublin.localhost:8080", "/alice/1.eml", "s3.eu-west-1.amazonaws.com",
     "/mail-eu-dublin/alice/1.eml"),
    (False, "mail-eu-dublin.localhost:8080", "/alice/1.eml", "localhost:8080", "/mail-eu-dublin/alice/1.eml"),
    (False, "mail-eu-dublin.localhost", "/other-bucket/k%2Fx%20y?tagging", "localhost",
     "/mail-eu-dublin/other-bucket/k%2Fx%20y?tagging"),
    (False, "mail-eu-dublin.localhost", "//k", "localhost", "/mail-eu-dublin//k"),
    (False, "mail-eu-dublin.localhost", "/", "localhost", "/mail-eu-dublin"),
    (False, "mail-eu-dublin.localhost", "/?list-type=2&prefix=a", "localhost", "/mail-eu-dublin?list-type=2&prefix=a"),
    (False, "my.dotted.bucket.localhost:1", "/k", "localhost:1", "/my.dotted.bucket/k"),
])
def test_requests_are_forwarded_path_style(rewrite_host: bool, host: str, target: str, sent_host: str,
                                          sent_target: str) -> None:
    config = SigningConfig(rewrite_host=rewrite_host)
    signer = RequestSigner(config, "eu-west-1", CredentialSource(config, environ=ENV),
                           hosts=HostReader(S3Settings(endpoints=("localhost", "127.0.0.1"), sign=config)),
                           upstream_host="s3.eu-west-1.amazonaws.com" if rewrite_host else None)
    headers = CIMultiDict({"Host": host})
    forwarded_target = signer.rewrite(headers, target)
    signer.sign("GET", forwarded_target, headers)
    assert (headers.getall("Host"), forwarded_target) == ([sent_host], sent_target)
    # S3 decodes the path once before encoding it to sign: "%2F" is signed as "/".
    signed_target = forwarded_target.replace("k%2Fx", "k/x")
    assert verify("GET", signed_target, headers, PROXY_SECRET)


def test_the_callers_credentials_do_not_pass() -> None:
    headers = CIMultiDict(CALLER_SIGNED)
    make_signer().sign("GET", "/mail-eu-dublin/k", headers)
    assert len(headers.getall("Authorization")) == 1
    assert "CALLERKEY" not in headers["Authorization"]
    assert "X-Amz-Security-Token" not in headers
    assert headers["X-Amz-Date"] != "20260101T000000Z"


def test_the_proxys_session_token_is_sent_and_signed() -> None:
    headers = CIMultiDict(CALLER_SIGNED)
    make_signer({**ENV, "AWS_SESSION_TOKEN": "proxy-session"}).sign("GET", "/b/k", headers)
    assert headers.getall("X-Amz-Security-Token") == ["proxy-session"]
    assert "x-amz-security-token" in headers["Authorization"]
    assert verify("GET", "/b/k", headers, PROXY_SECRET)


@pytest.mark.parametrize(("sent", "forwarded"), [
    (None, UNSIGNED_PAYLOAD),
    (EMPTY_SHA256, EMPTY_SHA256),   # a body hash: S3 still checks the body against it
    (UNSIGNED_PAYLOAD, UNSIGNED_PAYLOAD),
    ("STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
    ("not-a-hash", UNSIGNED_PAYLOAD),
    (EMPTY_SHA256.upper(), UNSIGNED_PAYLOAD),
])
def test_the_payload_hash(sent: str | None, forwarded: str) -> None:
    headers = CIMultiDict({"Host": "h"})
    if sent is not None:
        headers["X-Amz-Content-SHA256"] = sent
    make_signer().sign("PUT", "/b/k", headers)
    assert headers.getall("X-Amz-Content-SHA256") == [forwarded]
    assert verify("PUT", "/b/k", headers, PROXY_SECRET)


@pytest.mark.parametrize("target", [
    "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=K%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Signature=00",
    "/b/k?x-amz-signature=00",
    "/b/k?AWSAccessKeyId=K&Signature=x&Expires=1",
    "/b/k?X-Amz-Security-Token=t",
])
def test_a_presigned_url_is_refused(target: str) -> None:
    with pytest.raises(BadRequest, match="presigned URL"):
        make_signer().check(target, CIMultiDict({"Host": "h"}))


def test_a_chunk_signed_upload_is_refused() -> None:
    headers = CIMultiDict({"Host": "h", "X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"})
    with pytest.raises(BadRequest, match="chunk-signed"):
        make_signer().check("/b/k", headers)


def test_an_ordinary_request_passes_the_check() -> None:
    make_signer().check("/b/k?x-id=GetObject&response-content-type=text%2Fplain",
                        CIMultiDict({"Host": "h", "X-Amz-Content-SHA256": UNSIGNED_PAYLOAD}))


def test_missing_keys_stop_the_start() -> None:
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        CredentialSource(SigningConfig(), environ={"AWS_ACCESS_KEY_ID": "only-the-id"})


def write_credentials(path: Path, key: str, secret: str, profile: str = "default") -> None:
    path.write_text(f"[{profile}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")


def test_a_rotated_credentials_file_is_used_without_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resign, "FILE_CHECK_SECONDS", 0.0)
    path = tmp_path / "credentials"
    write_credentials(path, "AKIAFIRST", "first-secret")
    config = SigningConfig(credentials_file=path)
    signer = RequestSigner(config, "eu-west-1", CredentialSource(config))
    headers = CIMultiDict({"Host": "h"})
    signer.sign("GET", "/b/k", headers)
    assert verify("GET", "/b/k", headers, "first-secret")
    replacement = tmp_path / "credentials.new"
    write_credentials(replacement, "AKIASECOND", "second-secret")
    os.replace(replacement, path)
    headers = CIMultiDict({"Host": "h"})
    signer.sign("GET", "/b/k", headers)
    assert "Credential=AKIASECOND/" in headers["Authorization"]
    assert verify("GET", "/b/k", headers, "second-secret")
    # A file that turns invalid, or unreadable, keeps the last good keys.
    for spoilt in (b"[default]\naws_access_key_id = AKIATHIRD\n", b"[default]\n\xff\n"):
        path.write_bytes(spoilt)
        headers = CIMultiDict({"Host": "h"})
        signer.sign("GET", "/b/k", headers)
        assert verify("GET", "/b/k", headers, "second-secret")
    path.unlink()
    headers = CIMultiDict({"Host": "h"})
    signer.sign("GET", "/b/k", headers)
    assert verify("GET", "/b/k", headers, "second-secret")


@pytest.mark.parametrize(("text", "message"), [
    ("[other]\naws_access_key_id = A\naws_secret_access_key = B\n", r"has no \[default\] profile"),
    ("[default]\naws_access_key_id = A\n", "needs aws_access_key_id and aws_secret_access_key"),
    ("not an ini file", "is not an AWS credentials file"),
    (b"[default]\naws_access_key_id = \xff\n", "is not an AWS credentials file"),
])
def test_a_bad_credentials_file_stops_the_start(tmp_path: Path, text: str | bytes, message: str) -> None:
    path = tmp_path / "credentials"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        CredentialSource(SigningConfig(credentials_file=path))


def test_a_missing_credentials_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"s3\.sign\.credentials_file: cannot read .*absent: No such file"):
        CredentialSource(SigningConfig(credentials_file=tmp_path / "absent"))


def test_configuration(tmp_path: Path) -> None:
    file = tmp_path / "bailiwick.yaml"
    file.write_text("region: eu-west-1\ns3:\n  sign:\n    credentials_file: /run/secrets/s3\n    profile: dublin\n")
    config = load_config(file, environ={})
    assert config.s3.sign == SigningConfig(credentials_file=Path("/run/secrets/s3"), profile="dublin")
    file.write_text("s3:\n  sign:\n    secret_access_key: inline\n")
    with pytest.raises(ConfigError, match=r"s3\.sign\.secret_access_key: unknown setting"):
        load_config(file, environ={})


def test_request_signer_needs_a_region(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    base = load_config(None, environ={})
    assert base.region is None
    with pytest.raises(ConfigError, match=r"s3\.sign\.region: re-sign mode needs the signing region"):
        request_signer(replace(base, s3=replace(base.s3, sign=SigningConfig())))
    signer = request_signer(replace(base, region="eu-west-1", s3=replace(base.s3, sign=SigningConfig())))
    assert isinstance(signer, RequestSigner)
    assert request_signer(base) is None


def test_re_signing_refuses_access_keys_as_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    # A key id is no secret: it identifies a caller only while the storage server checks that
    # caller's signature, which re-signing replaces.
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    base = load_config(None, environ={})
    keyed = replace(base.identity, access_keys=(AccessKeyRule("AKIAIRELAND", "IE", "ie"),))
    with pytest.raises(ConfigError, match=r"cannot be used with identity\.access_keys"):
        request_signer(replace(base, region="eu-west-1", identity=keyed, s3=replace(base.s3, sign=SigningConfig())))


# ---- end to end, against a storage server that checks signatures ---------------------------------

@pytest.fixture(scope="module")
def verifying_store() -> Iterator[tuple[MotoServer, str, str]]:
    """moto's server with signature checks on, an IAM user whose keys only the proxy holds, a bucket."""
    # The set-up requests are free; every one after that must be signed correctly.
    with signed_store("bailiwick-dublin", {DUBLIN: "eu-west-1"}) as store:
        yield store.server, store.key, store.secret


@pytest.fixture(scope="module")
def store_recorder(verifying_store: tuple[MotoServer, str, str]) -> Iterator[Recorder]:
    relay = Recorder(verifying_store[0].port)
    yield relay
    relay.close()


@pytest.fixture(scope="module", params=[False, True], ids=["caller-host", "rewritten-host"])
def resigning_proxy(verifying_store: tuple[MotoServer, str, str], store_recorder: Recorder,
                    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[ProxyThread]:
    _store, key, secret = verifying_store
    folder = tmp_path_factory.mktemp("resign")
    write_credentials(folder / "credentials", key, secret)
    config: Config = proxy_config(store_recorder.url, folder / "audit.jsonl")
    signing = SigningConfig(region="us-east-1", credentials_file=folder / "credentials",
                            rewrite_host=bool(request.param))
    tag = TagConfig(signing_key=TAG_KEY, ttl_seconds=30)
    running = ProxyThread(replace(config, s3=replace(config.s3, sign=signing), tag=tag)).start()
    yield running
    running.stop()


def test_a_caller_with_only_a_token_reaches_the_data(resigning_proxy: ProxyThread, store_recorder: Recorder,
                                                     verifying_store: tuple[MotoServer, str, str],
                                                     request: pytest.FixtureRequest) -> None:
    store, key, secret = verifying_store
    # The caller's SDK signs with keys that open nothing: the storage server refuses them.
    caller = s3_client(resigning_proxy.url, make_token("IE"))
    with pytest.raises(ClientError) as refused:
        s3_client(store.url).get_object(Bucket=DUBLIN, Key="nothing")
    assert refused.value.response["Error"]["Code"] in ("InvalidAccessKeyId", "SignatureDoesNotMatch")

    body = os.urandom(200_000)
    mark = store_recorder.mark()
    caller.put_object(Bucket=DUBLIN, Key="alice/resigned.bin", Body=body)
    rewritten = request.node.callspec.params["resigning_proxy"]
    sent_host = store_recorder.url.removeprefix("http://") if rewritten else resigning_proxy.url.removeprefix("http://")
    assert f"\r\nHost: {sent_host}\r\n".encode() in store_recorder.since(mark)
    # The signed tag binds the Host the storage server receives, rewritten or not.
    method, target, sent = forwarded(store_recorder.since(mark))
    assert sent["host"] == sent_host
    storage_side_check(sent["x-bailiwick-tag"], TAG_KEY, method, sent["host"], target)
    assert caller.get_object(Bucket=DUBLIN, Key="alice/resigned.bin")["Body"].read() == body
    # Prefixes without "/": moto re-reads the query through werkzeug, which decodes "%2F", and
    # would refuse even the SDK's own signature for one (the unit tests above cover encoding).
    listed = caller.list_objects_v2(Bucket=DUBLIN, Prefix="alice")
    assert [o["Key"] for o in listed["Contents"]] == ["alice/resigned.bin"]
    caller.delete_object(Bucket=DUBLIN, Key="alice/resigned.bin")
    owner = boto3.client("s3", endpoint_url=store.url, region_name="us-east-1", aws_access_key_id=key,
                         aws_secret_access_key=secret, config=BotoConfig(retries={"max_attempts": 1}))
    assert owner.list_objects_v2(Bucket=DUBLIN, Prefix="alice").get("KeyCount") == 0


def test_a_refused_caller_gets_nothing_signed(resigning_proxy: ProxyThread) -> None:
    with pytest.raises(ClientError) as refused:
        s3_client(resigning_proxy.url, make_token("US")).get_object(Bucket=DUBLIN, Key="alice/x")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"


def test_a_presigned_url_through_the_proxy_is_refused(resigning_proxy: ProxyThread) -> None:
    import urllib.error
    import urllib.request

    url = s3_client(resigning_proxy.url).generate_presigned_url(
        "get_object", Params={"Bucket": DUBLIN, "Key": "alice/x"}, ExpiresIn=60)
    request = urllib.request.Request(url, headers={"X-Bailiwick-Token": make_token("IE")})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert b"presigned URL" in refused.value.read()


_REWRITE_SETTINGS = S3Settings(endpoints=("localhost", "s3.example.test"), sign=SigningConfig())
_PATH_ONLY = S3Settings(endpoints=("localhost", "s3.example.test"))
_REWRITE_READER = RequestReader(_REWRITE_SETTINGS)
_PATH_ONLY_READER = RequestReader(_PATH_ONLY)
_REWRITER = RequestSigner(SigningConfig(), "eu-west-1", CredentialSource(SigningConfig(), environ=ENV),
                          hosts=HostReader(_REWRITE_SETTINGS))


@given(
    key=st.text(st.characters(codec="utf-8"), max_size=40),
    bucket=st.sampled_from(["mail-eu-dublin", "my.dotted.bucket", "www", "abc"]),
    host=st.sampled_from(["localhost", "localhost:8080", "s3.example.test", "LOCALHOST:1"]),
    query=st.sampled_from(["", "?acl", "?list-type=2&prefix=a%2Fb", "?tagging", "?uploads", "?x-id=GetObject"]),
    method=st.sampled_from(["GET", "PUT", "DELETE", "HEAD"]),
)
def test_a_rewritten_request_names_exactly_what_was_decided(key: str, bucket: str, host: str, query: str,
                                                             method: str) -> None:
    """Read again path-style, as the storage server reads it, the rewritten request names the same data."""
    target = "/" + quote(key, safe="/~") + query
    headers = CIMultiDict({"Host": f"{bucket}.{host}"})
    try:
        decided = _REWRITE_READER.read(method, target, headers)
    except BadRequest:
        return
    forwarded_target = _REWRITER.rewrite(headers, target)
    assert headers["Host"] == host
    path = target.partition("?")[0]
    assert forwarded_target == f"/{bucket}" + (query if path == "/" else target)   # the caller's bytes after it
    forwarded = _PATH_ONLY_READER.read(method, forwarded_target, headers)
    assert forwarded == decided


def test_a_form_upload_is_refused_in_re_sign_mode(resigning_proxy: ProxyThread, store_recorder: Recorder) -> None:
    # Its signature is in the form, which the proxy forwards unchanged: it cannot be replaced by the proxy's.
    mark = store_recorder.mark()
    response = urllib3.request("POST", f"{resigning_proxy.url}/{DUBLIN}", fields={"key": "alice/form.eml",
                               "file": ("form.eml", b"data")}, headers={"X-Bailiwick-Token": make_token("IE")},
                               retries=False, timeout=10)
    assert (response.status, response.headers["X-Bailiwick-Error-Code"]) == (501, "NotImplemented")
    assert b"re-sign mode" in response.data
    assert store_recorder.since(mark) == b""
