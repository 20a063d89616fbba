"""Browser form uploads (S3 POST Object) through the real proxy in front of moto.

boto3's `generate_presigned_post` makes the form, `requests` posts it as a browser does, and each case asserts
the answer, what reached the storage server (the recording relay), what it stored, and the audit line: the key
and settings judged are the ones the storage server acts on, and a refused form stores nothing.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import urllib3
from botocore.config import Config as BotoConfig

from proxy.config import AccessKeyRule
from proxy.harness import ProxyThread
from tests.conftest import make_token, proxy_config
from tests.support.recorder import Recorder
from tests.support.records import written_records
from tests.support.serve import wait_until

EU, US = "post-eu", "post-us"
APP = "https://app.example.com"
POLICY = f"""\
datasets:
  - name: forms-eu
    region: eu-west-1
    resources: [s3://{EU}]
    rules:
      - allow: [read, list, write]
        from: [IE]
  - name: forms-eu-web
    region: eu-west-1
    resources: [s3://{EU}/web/]
    rules:
      - allow: [write]
        from: [IE]
    cors:
      - allowed_origins: [{APP}]
        allowed_methods: [POST]
  - name: forms-us
    region: us-east-1
    resources: [s3://{US}]
    rules:
      - allow: [read, list, write]
        from: [US]
"""
IE_KEY, US_KEY = "AKIAFORMSIRELAND0000", "AKIAFORMSUSA00000000"
SECRETS = {IE_KEY: "irish-form-secret-0123456789abcdefghijkl", US_KEY: "us-form-secret-0123456789abcdefghijklmn"}
MOTO_KEY = "testing"   # moto's credentials (id and secret), for forms that identify no one to the proxy
FILE = bytes(range(256)) * 200 + b"\r\n--not-a-boundary\r\n"   # binary, 51 KB: more than one read anywhere


@pytest.fixture(scope="module")
def forms_audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("forms-audit") / "audit.jsonl"


def create_buckets(direct: Any) -> None:
    """The forms' buckets, unless a module run before made them."""
    made = {bucket["Name"] for bucket in direct.list_buckets()["Buckets"]}
    if EU not in made:
        direct.create_bucket(Bucket=EU, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    if US not in made:
        direct.create_bucket(Bucket=US)


@pytest.fixture(scope="module")
def forms_proxy(recorder: Recorder, direct: Any, tmp_path_factory: pytest.TempPathFactory,
                forms_audit: Path) -> Iterator[ProxyThread]:
    folder = tmp_path_factory.mktemp("forms-policy")
    (folder / "forms.yaml").write_text(POLICY, encoding="utf-8")
    create_buckets(direct)
    config = proxy_config(recorder.url, forms_audit)
    keys = (AccessKeyRule(IE_KEY, "IE", "form-signer-ie", secret_access_key=SECRETS[IE_KEY]),
            AccessKeyRule(US_KEY, "US", "form-signer-us", secret_access_key=SECRETS[US_KEY]))
    identity = replace(config.identity, access_keys=keys, access_key_region="eu-west-1")
    running = ProxyThread(replace(config, policies=folder, identity=identity)).start()
    yield running
    running.stop()


def _presigner(proxy: ProxyThread, key_id: str = MOTO_KEY, secret: str | None = None, version: str = "s3v4") -> Any:
    """boto3 making forms for the proxy's URL (`version` "s3": SigV2 forms, boto3's own default)."""
    return boto3.client("s3", endpoint_url=proxy.url, region_name="eu-west-1", aws_access_key_id=key_id,
                        aws_secret_access_key=MOTO_KEY if secret is None else secret,
                        config=BotoConfig(s3={"addressing_style": "path"}, signature_version=version))


def _post(url: str, fields: list[tuple[str, str]] | dict[str, str], file: tuple[str, bytes] = ("report.bin", FILE),
          token: str | None = None, after: list[tuple[str, str]] | None = None,
          headers: dict[str, str] | None = None) -> requests.Response:
    """POST a form as a browser does: its fields, then the file, as multipart/form-data."""
    parts: list[tuple[str, Any]] = [(name, (None, value)) for name, value in
                                    (fields.items() if isinstance(fields, dict) else fields)]
    parts.append(("file", (file[0], file[1], "application/octet-stream")))
    parts += [(name, (None, value)) for name, value in after or ()]
    sent = ({"X-Bailiwick-Token": token} if token is not None else {}) | (headers or {})
    return requests.post(url, files=parts, headers=sent, timeout=30, allow_redirects=False)


def _stored(direct: Any, bucket: str, key: str) -> bytes | None:
    listed = direct.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    if key not in [item["Key"] for item in listed]:
        return None
    return bytes(direct.get_object(Bucket=bucket, Key=key)["Body"].read())


def _last_line(audit: Path, lines: int) -> dict[str, Any]:
    wait_until(lambda: len(written_records(audit)) > lines, timeout=5)
    return written_records(audit)[-1]


def _code(response: requests.Response) -> str:
    return response.headers.get("X-Bailiwick-Error-Code", "")


@pytest.mark.parametrize("key", ["uploads/report.bin", "uploads/${filename}"])
def test_a_presigned_post_round_trip_with_a_token(forms_proxy: ProxyThread, direct: Any, forms_audit: Path,
                                                  key: str) -> None:
    folder = f"t-{uuid.uuid4().hex[:8]}"
    post = _presigner(forms_proxy).generate_presigned_post(EU, f"{folder}/{key}")
    lines = len(written_records(forms_audit))
    response = _post(post["url"], post["fields"], token=make_token("IE"))
    assert response.status_code == 204, response.text
    stored = f"{folder}/uploads/report.bin"
    assert _stored(direct, EU, stored) == FILE
    line = _last_line(forms_audit, lines)
    assert (line["decision"], line["request"]["operation"], line["request"]["resource"], line["status"]) == (
        "allow", "PostObject", f"s3://{EU}/{stored}", 204)
    assert (line["caller"]["jurisdiction"], line["caller"]["subject"]) == ("IE", "client-1")


@pytest.mark.parametrize(("jurisdiction", "bucket"), [
    pytest.param("US", EU, id="US user, EU bucket"),
    pytest.param("IE", US, id="IE user, another dataset's bucket"),
])
def test_a_form_to_a_bucket_the_caller_may_not_write_is_refused_with_nothing_upstream(
    forms_proxy: ProxyThread, recorder: Recorder, direct: Any, forms_audit: Path, jurisdiction: str, bucket: str,
) -> None:
    key = f"refused/{uuid.uuid4().hex}.bin"
    post = _presigner(forms_proxy).generate_presigned_post(bucket, key)
    mark, lines = recorder.mark(), len(written_records(forms_audit))
    response = _post(post["url"], post["fields"], token=make_token(jurisdiction))
    assert (response.status_code, _code(response)) == (403, "AccessDenied")
    assert b"<Code>AccessDenied</Code>" in response.content
    assert recorder.since(mark) == b""
    assert _stored(direct, bucket, key) is None
    line = _last_line(forms_audit, lines)
    assert (line["decision"], line["request"]["operation"], line["request"]["resource"]) == (
        "deny", "PostObject", f"s3://{bucket}/{key}")


@pytest.mark.parametrize(("fields", "after", "code"), [
    pytest.param([("key", "a/one"), ("key", "a/two")], [], "InvalidArgument", id="a second key field"),
    pytest.param([("key", "a/one"), ("Key", "a/two")], [], "InvalidArgument", id="a second key in another case"),
    pytest.param([("acl", "private")], [("key", "a/late")], "InvalidArgument", id="the key after the file"),
    pytest.param([("key", "a/one")], [("key", "a/two")], "InvalidArgument", id="a second key after the file"),
    pytest.param([("key", "a/../b")], [], "InvalidURI", id="a dot segment in the key"),
    pytest.param([("key", "")], [], "InvalidArgument", id="an empty key"),
    pytest.param([("key", "a/one"), ("x-amz-copy-source", f"/{US}/x")], [], "InvalidArgument", id="a copy source"),
    pytest.param([("key", "a/one"), ("x-amz-meta-note", "one\r\nX-Injected: yes")], [], "InvalidArgument",
                 id="a line break in metadata"),
    pytest.param([("key", "a/one"), ("content-type", "text/plain\n")], [], "InvalidArgument",
                 id="a line break in a setting"),
    pytest.param([("key", "a/one"), ("x-custom", "1")], [], "InvalidRequest", id="a field S3 does not document"),
    pytest.param([("key", "a/one"), ("bucket", US)], [], "InvalidArgument", id="a bucket field naming another"),
    pytest.param([("key", "a/one"), ("X-Amz-Meta-Bailiwick-Encryption", "{}")], [], "InvalidArgument",
                 id="the proxy's own encryption metadata"),
    pytest.param([("key", "a/one"), ("success_action_redirect", "/relative")], [], "InvalidArgument",
                 id="a relative redirect"),
    pytest.param([("key", "a/one"), ("x-amz-website-redirect-location", "https://evil.example")], [],
                 "InvalidArgument", id="a website redirect to another host"),
])
def test_a_form_the_proxy_cannot_read_one_way_is_refused_and_stores_nothing(
    forms_proxy: ProxyThread, recorder: Recorder, direct: Any, fields: list[tuple[str, str]],
    after: list[tuple[str, str]], code: str,
) -> None:
    folder = f"bad-{uuid.uuid4().hex[:8]}"
    fields = [(name, f"{folder}/{value}" if name.lower() == "key" and value else value) for name, value in fields]
    after = [(name, f"{folder}/{value}") for name, value in after]
    mark = recorder.mark()
    response = _post(f"{forms_proxy.url}/{EU}", fields, token=make_token("IE"), after=after)
    assert (response.status_code, _code(response)) == (400, code), response.text
    assert f"<Code>{code}</Code>".encode() in response.content
    upstream = recorder.since(mark)
    listed = direct.list_objects_v2(Bucket=EU, Prefix=folder).get("Contents", [])
    assert listed == []
    if after:
        # Refused at the part after the file: what reached the storage server stops before that part's boundary.
        assert b"Content-Disposition" not in upstream.partition(b"filename=")[2]
    else:
        assert upstream == b""


@pytest.mark.parametrize("version", ["s3v4", "s3"])
def test_a_form_signed_with_an_access_key_identifies_its_signer(
    forms_proxy: ProxyThread, direct: Any, forms_audit: Path, recorder: Recorder, version: str,
) -> None:
    key = f"signed/{uuid.uuid4().hex}/${{filename}}"
    post = _presigner(forms_proxy, IE_KEY, SECRETS[IE_KEY], version).generate_presigned_post(EU, key)
    assert ("AWSAccessKeyId" in post["fields"]) is (version == "s3")
    lines = len(written_records(forms_audit))
    response = _post(post["url"], post["fields"])
    assert response.status_code == 204, response.text
    stored = key.replace("${filename}", "report.bin")
    assert _stored(direct, EU, stored) == FILE
    line = _last_line(forms_audit, lines)
    assert (line["caller"]["subject"], line["caller"]["jurisdiction"], line["request"]["resource"]) == (
        "form-signer-ie", "IE", f"s3://{EU}/{stored}")
    # The US signer's form for the same bucket is refused, and nothing reaches the storage server.
    post = _presigner(forms_proxy, US_KEY, SECRETS[US_KEY], version).generate_presigned_post(
        EU, f"signed/{uuid.uuid4().hex}")
    mark = recorder.mark()
    response = _post(post["url"], post["fields"])
    assert (response.status_code, _code(response)) == (403, "AccessDenied")
    assert recorder.since(mark) == b""


def _tampered_policy(fields: dict[str, str]) -> dict[str, str]:
    policy = fields["policy"]
    return fields | {"policy": policy[:-4] + ("AAAA" if policy[-4:] != "AAAA" else "BBBB")}


@pytest.mark.parametrize(("change", "status", "code"), [
    pytest.param(_tampered_policy, 403, "SignatureDoesNotMatch", id="a tampered policy"),
    pytest.param(lambda f: f | {"x-amz-signature": "0" * 64}, 403, "SignatureDoesNotMatch", id="another signature"),
    pytest.param(lambda f: {k: v for k, v in f.items() if k not in ("policy", "x-amz-signature", "x-amz-credential",
                                                                 "x-amz-algorithm", "x-amz-date")},
                 403, "InvalidToken", id="unsigned, no token"),
    pytest.param(lambda f: f | {"x-amz-meta-extra": "x"}, 403, "AccessDenied", id="a field no condition names"),
])
def test_a_form_whose_policy_does_not_verify_is_refused(
    forms_proxy: ProxyThread, recorder: Recorder, forms_audit: Path, change: Any, status: int, code: str,
) -> None:
    key = f"v/{uuid.uuid4().hex}"
    post = _presigner(forms_proxy, IE_KEY, SECRETS[IE_KEY]).generate_presigned_post(EU, key)
    mark, lines = recorder.mark(), len(written_records(forms_audit))
    response = _post(post["url"], change(post["fields"]))
    assert (response.status_code, _code(response)) == (status, code), response.text
    assert recorder.since(mark) == b""
    # Refused before the decision, once the form was read: the line names the object the form asked for.
    line = _last_line(forms_audit, lines)
    assert (line["decision"], line["error_code"], line["request"]["operation"], line["request"]["resource"]) == (
        "deny", code, "PostObject", f"s3://{EU}/{key}")


@pytest.mark.parametrize(("size", "code"), [(5, "EntityTooSmall"), (len(FILE), "EntityTooLarge")])
def test_the_file_is_held_to_the_policys_content_length_range(
    forms_proxy: ProxyThread, direct: Any, size: int, code: str,
) -> None:
    key = f"sized/{uuid.uuid4().hex}"
    post = _presigner(forms_proxy, IE_KEY, SECRETS[IE_KEY]).generate_presigned_post(
        EU, key, Conditions=[["content-length-range", 10, 1000]])
    response = _post(post["url"], post["fields"], file=("f.bin", FILE[:size]))
    assert (response.status_code, _code(response)) == (400, code), response.text
    assert _stored(direct, EU, key) is None
    inside = _post(post["url"], post["fields"], file=("f.bin", FILE[:500]))
    assert inside.status_code == 204, inside.text
    assert _stored(direct, EU, key) == FILE[:500]


@pytest.mark.parametrize(("folder", "allowed"), [("web", True), ("other", False)])
def test_the_answer_carries_the_cors_headers_of_the_dataset_the_key_is_in(
    forms_proxy: ProxyThread, direct: Any, folder: str, allowed: bool,
) -> None:
    # The target names only the bucket (a dataset without cors); the form's key decides which dataset answers.
    key = f"{folder}/{uuid.uuid4().hex}"
    response = _post(f"{forms_proxy.url}/{EU}", {"key": key}, token=make_token("IE"), headers={"Origin": APP})
    assert response.status_code == 204, response.text
    assert _stored(direct, EU, key) == FILE
    assert response.headers.get("Access-Control-Allow-Origin") == (APP if allowed else None)


def test_a_caller_that_waits_for_100_continue_gets_it_before_the_form_is_read(
    forms_proxy: ProxyThread, direct: Any,
) -> None:
    key = f"continue/{uuid.uuid4().hex}"
    body, content_type = urllib3.encode_multipart_formdata([("key", key), ("file", ("f.bin", FILE[:1000]))])
    host, port = forms_proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall((f"POST /{EU} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
                      f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n"
                      f"X-Bailiwick-Token: {make_token('IE')}\r\n\r\n").encode())
        assert conn.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sendall(body)
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 204 "), answer
    assert _stored(direct, EU, key) == FILE[:1000]


def _part(name: str, value: bytes, extra: str = "", headers: str = "") -> bytes:
    """One part, as written between boundaries: its headers, the blank line, its content (no line end after)."""
    return f'Content-Disposition: form-data; name="{name}"{extra}\r\n{headers}\r\n'.encode() + value


def _smuggling(folder: str, kind: str) -> tuple[str, bytes]:
    """A form whose fields the proxy reads as a key in `folder` and whose parts moto (werkzeug) reads otherwise: the
    Content-Type and the body. What only moto reads carries SMUGGLED (a key, or a public ACL after the file)."""
    judged = _part("key", f"{folder}/judged".encode())
    smuggled = _part("key", f"{folder}/SMUGGLED".encode())
    file = _part("file", b"", '; filename="f.bin"')
    ctype = "multipart/form-data; boundary=BND"
    if kind == "empty field":
        # The blank line's CRLF is the next delimiter's: an empty field, then moto's first key.
        body = b"--BND\r\n" + _part("x-ignore-a", b"--BND\r\n" + smuggled + b"\r\n--BND\r\n"
                                    + _part("x-ignore-b", b"z"))
    elif kind in ("bare LF", "bare CR"):
        eol = b"\n" if kind == "bare LF" else b"\r"
        body = b"--BND\r\n" + _part("x-ignore-a", b"v" + eol + b"--BND\r\n" + smuggled + eol + b"--BND\r\n"
                                    + _part("x-ignore-b", b"z"))
    elif kind == "charset continuation":
        # RFC 2231's charset*0: werkzeug reads the key's bytes as ISO-8859-1 ("é" becomes "Ã©").
        judged = _part("key", f"{folder}/é-SMUGGLED".encode(),
                       headers="Content-Type: text/plain; charset*0=iso-8859-1\r\n")
        return ctype, b"--BND\r\n" + judged + b"\r\n--BND\r\n" + file + b"DATA\r\n--BND--\r\n"
    elif kind == "ASCII charset":
        # werkzeug decodes a us-ascii field as ASCII, each byte of "é" becoming U+FFFD; the proxy read UTF-8.
        judged = _part("key", f"{folder}/é-SMUGGLED".encode(), headers="Content-Type: text/plain; charset=us-ascii\r\n")
        return ctype, b"--BND\r\n" + judged + b"\r\n--BND\r\n" + file + b"DATA\r\n--BND--\r\n"
    elif kind == "boundary continuation":
        # RFC 2231's boundary*1: werkzeug's boundary is BNDX, whose form is in the first field.
        ctype += "; boundary*1=X"
        inner = (b"v\n--BNDX\r\n" + smuggled + b"\n--BNDX\r\n" + _part("file", b"EVIL", '; filename="f.bin"')
                 + b"\n--BNDX--\r\n")
        body = b"--BND\r\n" + _part("x-ignore-a", inner)
    elif kind in ("file beginning with a boundary", "bare LF in the file"):
        lead = b"" if kind == "file beginning with a boundary" else b"DATA\n"
        return ctype, (b"--BND\r\n" + judged + b"\r\n--BND\r\n" + file + lead + b"--BND\r\n"
                       + _part("acl", b"public-read-write") + b"\n--BND--\r\n" + b"\r\n--BND--\r\n")
    else:
        raise AssertionError(kind)
    return ctype, body + b"\r\n--BND\r\n" + judged + b"\r\n--BND\r\n" + file + b"DATA\r\n--BND--\r\n"


@pytest.mark.parametrize("kind", [
    "empty field", "bare LF", "bare CR", "charset continuation", "ASCII charset", "boundary continuation",
    "file beginning with a boundary", "bare LF in the file",
])
def test_a_form_the_storage_server_splits_otherwise_is_refused_and_stores_nothing(
    forms_proxy: ProxyThread, recorder: Recorder, direct: Any, kind: str,
) -> None:
    folder = f"split-{uuid.uuid4().hex[:8]}"
    ctype, body = _smuggling(folder, kind)
    mark = recorder.mark()
    response = requests.post(f"{forms_proxy.url}/{EU}", data=body, timeout=30,
                             headers={"Content-Type": ctype, "X-Bailiwick-Token": make_token("IE")})
    stored = {item["Key"]: direct.get_object_acl(Bucket=EU, Key=item["Key"])["Grants"]
              for item in direct.list_objects_v2(Bucket=EU, Prefix=folder).get("Contents", [])}
    assert stored == {}, f"moto stored {stored} from a form the proxy read as {folder}/judged ({response.status_code})"
    assert response.status_code == 400, response.text
    upstream = recorder.since(mark)
    assert b"SMUGGLED" not in upstream
    assert b"public-read-write" not in upstream


@pytest.mark.parametrize(("status", "answer"), [
    ("200", 200), ("201", 201), ("204", 204),
    # S3 answers 204 for any other value; moto writes the value into its status line as sent.
    ("101", "InvalidRequest"), ("999", "InvalidRequest"), ("", "InvalidRequest"),
    ("200 OK\r\nX-Injected: yes", "InvalidArgument"),   # no field may hold a line break
])
def test_success_action_status_is_one_s3_answers_with(
    forms_proxy: ProxyThread, recorder: Recorder, direct: Any, status: str, answer: int | str,
) -> None:
    key = f"status/{uuid.uuid4().hex}"
    mark = recorder.mark()
    response = _post(f"{forms_proxy.url}/{EU}", {"key": key, "success_action_status": status}, token=make_token("IE"))
    assert "X-Injected" not in response.headers
    if isinstance(answer, int):
        assert response.status_code == answer, response.text
        assert _stored(direct, EU, key) == FILE
        return
    assert (response.status_code, _code(response)) == (400, answer), response.text
    assert recorder.since(mark) == b""
    assert _stored(direct, EU, key) is None


@pytest.mark.parametrize(("ending", "code"), [
    pytest.param(b"", "MalformedPOSTRequest", id="no closing boundary"),
    pytest.param(b"\r\n--{b}", "MalformedPOSTRequest", id="the boundary without its closing dashes"),
    pytest.param(b"\r\n--{b}-", "MalformedPOSTRequest", id="the boundary with one closing dash"),
    pytest.param(b"\r\n--{b}--\r\nepilogue", "InvalidArgument", id="an epilogue after the closing boundary"),
    pytest.param(b"\r\n--{b}\r\nContent-Disposition: form-data; name=\"acl\"\r\n\r\npublic-read\r\n--{b}--\r\n",
                 "InvalidArgument", id="a part after the file"),
])
def test_a_form_that_does_not_end_with_its_closing_boundary_is_refused_and_stores_nothing(
    forms_proxy: ProxyThread, recorder: Recorder, direct: Any, ending: bytes, code: str,
) -> None:
    key = f"ending/{uuid.uuid4().hex}"
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n{key}\r\n--{boundary}\r\n"
            "Content-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n\r\n").encode() + FILE
    body += ending.replace(b"{b}", boundary.encode())
    mark = recorder.mark()
    response = requests.post(f"{forms_proxy.url}/{EU}", data=body, timeout=30, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", "X-Bailiwick-Token": make_token("IE")})
    assert (response.status_code, _code(response)) == (400, code), response.text
    assert _stored(direct, EU, key) is None
    # Whatever of the file went through, never the form's end: the storage server got no whole body.
    assert f"--{boundary}--".encode() not in recorder.since(mark)


@pytest.mark.parametrize("signer", [IE_KEY, None])
def test_a_form_with_a_bucket_field_as_the_aws_sdk_for_javascript_writes_it(
    forms_proxy: ProxyThread, direct: Any, signer: str | None,
) -> None:
    # @aws-sdk/s3-presigned-post's createPresignedPost puts the bucket among the fields (and its condition).
    key = f"js/{uuid.uuid4().hex}"
    presigner = _presigner(forms_proxy) if signer is None else _presigner(forms_proxy, signer, SECRETS[signer])
    post = presigner.generate_presigned_post(EU, key, Fields={"bucket": EU}, Conditions=[{"bucket": EU}])
    assert post["fields"]["bucket"] == EU
    response = _post(post["url"], post["fields"], token=None if signer else make_token("IE"))
    assert response.status_code == 204, response.text
    assert _stored(direct, EU, key) == FILE


@pytest.mark.parametrize("header", [
    pytest.param({"Authorization": f"AWS4-HMAC-SHA256 Credential={IE_KEY}/20260101/eu-west-1/s3/aws4_request, "
                                   "SignedHeaders=host, Signature=" + "0" * 64}, id="a SigV4 Authorization"),
    pytest.param({"Authorization": f"AWS {IE_KEY}:c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmE="}, id="a SigV2 Authorization"),
    pytest.param({"x-amz-acl": "public-read"}, id="an ACL header"),
    pytest.param({"x-amz-website-redirect-location": "/elsewhere"}, id="a redirect header"),
    pytest.param({"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}, id="aws-chunked framing"),
    pytest.param({"x-amz-decoded-content-length": "10"}, id="an aws-chunked length"),
])
def test_a_form_signed_or_set_by_headers_is_refused_before_its_fields_are_read(
    forms_proxy: ProxyThread, recorder: Recorder, direct: Any, forms_audit: Path, header: dict[str, str],
) -> None:
    # The access-key proxy reads a form's signature from its fields only; settings too.
    key = f"headers/{uuid.uuid4().hex}"
    post = _presigner(forms_proxy, IE_KEY, SECRETS[IE_KEY]).generate_presigned_post(EU, key)
    mark, lines = recorder.mark(), len(written_records(forms_audit))
    response = _post(post["url"], post["fields"], headers=header)
    assert (response.status_code, _code(response)) == (400, "InvalidArgument"), response.text
    assert recorder.since(mark) == b""
    assert _stored(direct, EU, key) is None
    line = _last_line(forms_audit, lines)
    assert (line["decision"], line["error_code"], line["caller"]["subject"]) == ("deny", "InvalidArgument", None)
