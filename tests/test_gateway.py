"""The real proxy on a loopback port, in front of a real moto server, driven by boto3.

Every refusal is checked three ways: what the client got (status, S3 error
code, message), that the request's bytes never reached the storage server (the
recording relay), and that the audit log has the decision.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError

from proxy.audit import verify
from proxy.harness import ProxyThread
from tests.conftest import ARCHIVE, DUBLIN, US, make_token, proxy_config, s3_client
from tests.support.recorder import Recorder
from tests.support.records import written_records
from tests.support.serve import wait_until

ClientFor = Callable[..., Any]


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex}"


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = excinfo.value.response
    return (response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"],
            response["Error"].get("Message", ""))


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return written_records(path)


def audit_record(path: Path, decision_id: str) -> dict[str, Any]:
    """The audit line of one decision. Lines are written right after the event loop's
    turn that decided them, so one may land just after the caller had its answer: wait."""
    deadline = time.monotonic() + 5
    while True:
        for record in audit_lines(path):
            if record["decision_id"] == decision_id:
                return record
        assert time.monotonic() < deadline, f"no audit line for decision {decision_id}"
        time.sleep(0.01)


def raw_request(proxy: ProxyThread, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


# --- allowed traffic works byte for byte -------------------------------------------------------


def test_irish_client_reads_writes_lists_dublin_mail(client_for: ClientFor, direct: Any) -> None:
    s3 = client_for("IE")
    key = unique("alice/inbox")
    body = os.urandom(200_000)
    s3.put_object(Bucket=DUBLIN, Key=key, Body=body)
    assert direct.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == body
    assert s3.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == body
    head = s3.head_object(Bucket=DUBLIN, Key=key)
    assert head["ContentLength"] == len(body)
    listed = s3.list_objects_v2(Bucket=DUBLIN, Prefix=key)
    assert [o["Key"] for o in listed["Contents"]] == [key]
    s3.delete_object(Bucket=DUBLIN, Key=key)
    assert "Contents" not in direct.list_objects_v2(Bucket=DUBLIN, Prefix=key)


def test_keys_with_characters_that_need_encoding_round_trip(client_for: ClientFor, direct: Any) -> None:
    s3 = client_for("IE")
    key = unique("odd") + "/a b+c%d&e=f?g#h;i~j'k(l)é€.txt"
    s3.put_object(Bucket=DUBLIN, Key=key, Body=b"x")
    assert direct.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == b"x"
    assert s3.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == b"x"


def test_multipart_upload_round_trips(client_for: ClientFor, direct: Any) -> None:
    s3 = client_for("IE")
    key = unique("multipart")
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(1024 * 1024)]
    upload = s3.create_multipart_upload(Bucket=DUBLIN, Key=key)["UploadId"]
    etags = [
        s3.upload_part(Bucket=DUBLIN, Key=key, UploadId=upload, PartNumber=n, Body=part)["ETag"]
        for n, part in enumerate(parts, start=1)
    ]
    s3.complete_multipart_upload(
        Bucket=DUBLIN, Key=key, UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, start=1)]},
    )
    got = direct.get_object(Bucket=DUBLIN, Key=key)["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(b"".join(parts)).digest()


def test_copy_from_us_into_dublin_by_irish_client_is_allowed(client_for: ClientFor, direct: Any) -> None:
    key = unique("copied-in")
    client_for("IE").copy_object(Bucket=DUBLIN, Key=key, CopySource={"Bucket": US, "Key": "bob/inbox/1.eml"})
    assert direct.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == b"US mail"


FAKE_SIGV4 = ("Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
              "SignedHeaders=host, Signature=00\r\n")


def test_virtual_hosted_style_is_understood(proxy: ProxyThread, recorder: Recorder, direct: Any) -> None:
    port = proxy.url.rsplit(":", 1)[1]
    key = unique("vhost")
    request = (f"PUT /{key} HTTP/1.1\r\nHost: {DUBLIN}.localhost:{port}\r\n"
               f"X-Bailiwick-Token: {make_token('IE')}\r\n{FAKE_SIGV4}"
               "Content-Length: 1\r\nConnection: close\r\n\r\nv").encode()
    mark = recorder.mark()
    answer = raw_request(proxy, request)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert f"Host: {DUBLIN}.localhost:{port}".encode() in recorder.since(mark)
    assert direct.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == b"v"


@pytest.mark.parametrize(
    ("host_bucket", "path", "jurisdiction", "status"),
    [
        # The bucket is the one in Host; the path is only a key in it.
        (DUBLIN, f"/{US}/bob/inbox/1.eml", "US", b"403"),
        (US, f"/{DUBLIN}/alice/inbox/1.eml", "US", b"404"),
    ],
)
def test_virtual_hosted_bucket_is_judged_not_the_path(
    proxy: ProxyThread, recorder: Recorder, host_bucket: str, path: str, jurisdiction: str, status: bytes,
) -> None:
    port = proxy.url.rsplit(":", 1)[1]
    request = (f"GET {path} HTTP/1.1\r\nHost: {host_bucket}.localhost:{port}\r\n"
               f"X-Bailiwick-Token: {make_token(jurisdiction)}\r\n{FAKE_SIGV4}Connection: close\r\n\r\n").encode()
    mark = recorder.mark()
    answer = raw_request(proxy, request)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    sent = recorder.since(mark)
    if status == b"403":
        assert sent == b""
    else:
        assert f"Host: {host_bucket}.localhost:{port}".encode() in sent
        assert b"Dublin mail" not in answer


@pytest.mark.parametrize("named", ["Host", "x-amz-copy-source", "Content-Encoding", "Authorization", "Content-Length"])
def test_connection_may_not_name_end_to_end_headers(proxy: ProxyThread, recorder: Recorder, named: str) -> None:
    port = proxy.url.rsplit(":", 1)[1]
    request = (f"GET /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: {US}.localhost:{port}\r\n"
               f"X-Bailiwick-Token: {make_token('US')}\r\n{FAKE_SIGV4}Connection: close, {named}\r\n\r\n").encode()
    mark = recorder.mark()
    answer = raw_request(proxy, request)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"<Code>InvalidRequest</Code>" in answer
    assert recorder.since(mark) == b""


# --- refusals: S3 error, nothing upstream, audited ----------------------------------------------


@pytest.mark.parametrize(
    ("jurisdiction", "operation"),
    [
        ("US", "get"),
        ("US", "list"),
        ("US", "put"),
        ("DE", "put"),
        ("DE", "delete"),
    ],
)
def test_refused_requests_never_reach_storage(
    client_for: ClientFor, recorder: Recorder, audit_path: Path, jurisdiction: str, operation: str,
) -> None:
    s3 = client_for(jurisdiction)
    key = unique(f"refused-{operation}")
    marker = uuid.uuid4().hex.encode()
    calls = {
        "get": lambda: s3.get_object(Bucket=DUBLIN, Key=key),
        "list": lambda: s3.list_objects_v2(Bucket=DUBLIN, Prefix=key),
        "put": lambda: s3.put_object(Bucket=DUBLIN, Key=key, Body=marker * 1000),
        "delete": lambda: s3.delete_object(Bucket=DUBLIN, Key=key),
    }
    mark = recorder.mark()
    with pytest.raises(ClientError) as excinfo:
        calls[operation]()
    status, code, message = error_of(excinfo)
    assert (status, code) == (403, "AccessDenied")
    assert "IE" in message
    assert jurisdiction in message
    assert "dublin-mail" not in message  # dataset names are for the audit log, not callers
    seen = recorder.since(mark)
    assert key.encode() not in seen
    assert marker not in seen
    request_id = excinfo.value.response["ResponseMetadata"]["RequestId"]
    line = audit_record(audit_path, request_id)
    assert line["decision"] == "deny"
    assert line["dataset"] == "dublin-mail"
    assert line["caller"]["jurisdiction"] == jurisdiction
    assert line["status"] == 403


def test_copy_out_of_dublin_is_refused_even_for_irish_client(
    client_for: ClientFor, recorder: Recorder, direct: Any,
) -> None:
    key = unique("copy-out")
    mark = recorder.mark()
    with pytest.raises(ClientError) as excinfo:
        client_for("IE").copy_object(Bucket=US, Key=key, CopySource={"Bucket": DUBLIN, "Key": "alice/inbox/1.eml"})
    assert error_of(excinfo)[:2] == (403, "AccessDenied")
    assert key.encode() not in recorder.since(mark)
    with pytest.raises(ClientError):
        direct.head_object(Bucket=US, Key=key)


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (lambda: make_token("IE", exp_in=-3600), "ExpiredToken"),
        (lambda: make_token("IE", secret="another-secret-that-is-long-enough-0123456789"), "InvalidToken"),
        (lambda: make_token("UK"), "InvalidToken"),
        (lambda: "not-a-jwt", "InvalidToken"),
    ],
)
def test_bad_tokens_are_refused(
    proxy: ProxyThread, recorder: Recorder, token: Callable[[], str], code: str,
) -> None:
    s3 = s3_client(proxy.url, token())
    key = unique("bad-token")
    mark = recorder.mark()
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=DUBLIN, Key=key)
    assert error_of(excinfo)[:2] == (403, code)
    assert key.encode() not in recorder.since(mark)


def test_no_identity_is_refused(proxy: ProxyThread, recorder: Recorder) -> None:
    key = unique("anonymous")
    mark = recorder.mark()
    with pytest.raises(ClientError) as excinfo:
        s3_client(proxy.url).get_object(Bucket=DUBLIN, Key=key)
    assert error_of(excinfo)[:2] == (403, "InvalidToken")
    assert key.encode() not in recorder.since(mark)


def test_bearer_token_works_when_authorization_is_free(proxy: ProxyThread, recorder: Recorder) -> None:
    key = unique("bearer")
    request = (f"GET /{DUBLIN}/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: Bearer {make_token('US')}\r\nConnection: close\r\n\r\n").encode()
    mark = recorder.mark()
    answer = raw_request(proxy, request)
    assert answer.startswith(b"HTTP/1.1 403")
    assert b"<Code>AccessDenied</Code>" in answer
    assert key.encode() not in recorder.since(mark)


# --- what is forwarded --------------------------------------------------------------------------


def test_tags_are_set_by_the_proxy_alone(proxy: ProxyThread, recorder: Recorder) -> None:
    key = unique("tags")
    token = make_token("IE", sub="alice")
    request = (
        f"GET /{DUBLIN}/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-Bailiwick-Token: {token}\r\n"
        "x-bailiwick-jurisdiction: US\r\nX_Bailiwick_Subject: mallory\r\n"
        "Connection: close, X-Bailiwick-Decision\r\n"
        "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=00\r\n\r\n"
    ).encode()
    mark = recorder.mark()
    answer = raw_request(proxy, request)
    assert answer.startswith(b"HTTP/1.1 404")  # allowed, forwarded: moto has no such key
    sent = recorder.since(mark)
    head = sent.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith(f"GET /{DUBLIN}/{key} HTTP/1.1\r\n")
    lines = [line.lower() for line in head.split("\r\n")[1:]]
    bailiwick = sorted(line.split(":")[0] for line in lines if line.replace("_", "-").startswith("x-bailiwick"))
    assert bailiwick == ["x-bailiwick-decision", "x-bailiwick-jurisdiction", "x-bailiwick-policy",
                         "x-bailiwick-subject"]
    assert "x-bailiwick-jurisdiction: ie" in lines
    assert "x-bailiwick-subject: alice" in lines
    assert "host: 127.0.0.1" in lines
    assert any(line.startswith("authorization: aws4-hmac-sha256") for line in lines)
    assert token.lower() not in head.lower()


def test_raw_target_is_forwarded_byte_identical(client_for: ClientFor, recorder: Recorder) -> None:
    s3 = client_for("IE")
    key = unique("exact") + "/a b+c%d"
    mark = recorder.mark()
    s3.put_object(Bucket=DUBLIN, Key=key, Body=b"z")
    sent = recorder.since(mark)
    encoded = key.replace("%", "%25").replace(" ", "%20").replace("+", "%2B")
    assert f"PUT /{DUBLIN}/{encoded} HTTP/1.1".encode() in sent


@pytest.mark.parametrize(
    "target",
    [
        f"/{DUBLIN}/a/../b",
        f"/{DUBLIN}/a/%2e%2e/b",
        f"/{DUBLIN}/a//b",
        f"/{DUBLIN}%2Fx/key",
        f"/{DUBLIN}/a%5cb",
        "/MAIL-EU-DUBLIN/key",
        f"http://127.0.0.1/{DUBLIN}/key",
    ],
)
def test_ambiguous_targets_are_refused_with_400(proxy: ProxyThread, recorder: Recorder, target: str) -> None:
    request = (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {make_token('IE')}\r\n"
               "Connection: close\r\n\r\n").encode()
    mark = recorder.mark()
    answer = raw_request(proxy, request)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"<Code>Invalid" in answer
    assert recorder.since(mark) == b""


def test_unknown_host_is_refused(proxy: ProxyThread, recorder: Recorder) -> None:
    request = (f"GET /{DUBLIN}/k HTTP/1.1\r\nHost: storage.evil.example\r\n"
               f"X-Bailiwick-Token: {make_token('IE')}\r\nConnection: close\r\n\r\n").encode()
    mark = recorder.mark()
    assert raw_request(proxy, request).startswith(b"HTTP/1.1 400")
    assert recorder.since(mark) == b""


def test_refused_upload_with_expect_gets_no_100_continue(proxy: ProxyThread, recorder: Recorder) -> None:
    request = (f"PUT /{DUBLIN}/{unique('expect')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"X-Bailiwick-Token: {make_token('US')}\r\nContent-Length: 5\r\n"
               "Expect: 100-continue\r\n\r\n").encode()
    mark = recorder.mark()
    answer = raw_request(proxy, request)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:100]
    assert b"100 Continue" not in answer
    assert recorder.since(mark) == b""


def test_multi_object_delete_is_checked_per_key_and_forwarded_verbatim(
    client_for: ClientFor, recorder: Recorder, direct: Any,
) -> None:
    keys = [unique("batch"), unique("batch")]
    for key in keys:
        direct.put_object(Bucket=DUBLIN, Key=key, Body=b"1")
    with pytest.raises(ClientError) as excinfo:
        client_for("DE").delete_objects(Bucket=DUBLIN, Delete={"Objects": [{"Key": k} for k in keys]})
    assert error_of(excinfo)[:2] == (403, "AccessDenied")
    assert all(direct.head_object(Bucket=DUBLIN, Key=k) for k in keys)
    irish = client_for("IE")
    bodies: list[bytes] = []
    irish.meta.events.register("before-send.s3", lambda request, **_: bodies.append(bytes(request.body)))
    mark = recorder.mark()
    result = irish.delete_objects(Bucket=DUBLIN, Delete={"Objects": [{"Key": k} for k in keys]})
    assert sorted(d["Key"] for d in result["Deleted"]) == sorted(keys)
    # The body the proxy parsed is the body the storage server got, byte for byte.
    assert bodies[0].startswith(b"<Delete")
    assert recorder.since(mark).endswith(b"\r\n\r\n" + bodies[0])


def test_multi_object_delete_spanning_datasets_is_refused(
    client_for: ClientFor, recorder: Recorder, direct: Any,
) -> None:
    # ie/ is in a (dry-run) dataset the Irish client may delete in; other/ is in no dataset.
    keys = [unique("ie"), unique("other")]
    for key in keys:
        direct.put_object(Bucket=ARCHIVE, Key=key, Body=b"1")
    mark = recorder.mark()
    with pytest.raises(ClientError) as excinfo:
        client_for("IE").delete_objects(Bucket=ARCHIVE, Delete={"Objects": [{"Key": k} for k in keys]})
    assert error_of(excinfo)[:2] == (403, "AccessDenied")
    assert excinfo.value.response["Error"]["Resource"] == f"s3://{ARCHIVE}/{keys[1]}"
    assert recorder.since(mark) == b""
    assert all(direct.head_object(Bucket=ARCHIVE, Key=k) for k in keys)


# --- failures -----------------------------------------------------------------------------------


def test_upstream_unreachable_is_502(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    proxy = ProxyThread(proxy_config(f"http://127.0.0.1:{dead}", tmp_path / "a.jsonl")).start()
    try:
        with pytest.raises(ClientError) as excinfo:
            s3_client(proxy.url, make_token("IE")).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
        assert error_of(excinfo)[:2] == (502, "BadGateway")
    finally:
        proxy.stop()
    line = audit_lines(tmp_path / "a.jsonl")[-1]
    assert line["decision"] == "error"
    assert line["status"] == 502


def test_client_that_disconnects_mid_upload_commits_nothing(
    proxy: ProxyThread, recorder: Recorder, direct: Any, audit_path: Path,
) -> None:
    import time

    key = unique("truncated")
    host, port = proxy.url.removeprefix("http://").split(":")
    mark = recorder.mark()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall((f"PUT /{DUBLIN}/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"X-Bailiwick-Token: {make_token('IE')}\r\n{FAKE_SIGV4}"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        for _ in range(10):
            sock.sendall(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
        deadline = time.monotonic() + 10
        while key.encode() not in recorder.since(mark) and time.monotonic() < deadline:
            time.sleep(0.05)
    # The caller is gone mid-body: the upstream request must end without its last chunk.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [r for r in audit_lines(audit_path) if r["request"]["resource"] == f"s3://{DUBLIN}/{key}"]
        if lines:
            break
        time.sleep(0.05)
    assert lines[-1]["error_code"] == "ClientClosed"
    sent = recorder.since(mark)
    assert key.encode() in sent
    assert b"\r\n0\r\n\r\n" not in sent
    with pytest.raises(ClientError):
        direct.head_object(Bucket=DUBLIN, Key=key)


def test_compressed_upload_is_stored_byte_for_byte(client_for: ClientFor, direct: Any) -> None:
    import gzip

    key = unique("gzip")
    body = gzip.compress(os.urandom(1000) + b"a" * 5000)
    client_for("IE").put_object(Bucket=DUBLIN, Key=key, Body=body, ContentEncoding="gzip")
    stored = direct.get_object(Bucket=DUBLIN, Key=key)
    assert stored["Body"].read() == body


@pytest.mark.usefixtures("seeded")
def test_audit_write_failure_refuses_everything_after(tmp_path: Path, recorder: Recorder) -> None:
    proxy = ProxyThread(proxy_config(recorder.url, tmp_path / "a.jsonl")).start()
    try:
        s3 = s3_client(proxy.url, make_token("IE"))
        s3.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
        # The audit line is written once the response is sent: wait for it before breaking the disk.
        deadline = time.monotonic() + 10
        while not audit_lines(tmp_path / "a.jsonl") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.running is not None
        audit = proxy.running.gateway.audit
        audit._out.close()  # type: ignore[union-attr]  # the disk goes away
        s3.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")  # forwarded; its audit line fails
        wait_until(lambda: audit.failed)   # once the writer thread has tried it
        mark = recorder.mark()
        with pytest.raises(ClientError) as excinfo:
            s3.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
        assert error_of(excinfo)[:2] == (500, "InternalError")
        assert recorder.since(mark) == b""
    finally:
        proxy.stop()


def test_audit_log_chain_verifies(audit_path: Path, client_for: ClientFor) -> None:
    client_for("IE").get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    result = verify(audit_path)
    assert result.ok
    assert result.lines >= 1
    text = audit_path.read_text()
    assert "eyJ" not in text  # no token ever reaches the audit log


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_admin_endpoints_are_not_on_the_data_port(proxy: ProxyThread, path: str) -> None:
    import urllib.request

    with urllib.request.urlopen(proxy.admin_url + path, timeout=5) as response:
        assert response.status == 200
    answer = raw_request(proxy, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 403")
    assert b"bailiwick_" not in answer


def test_upstream_that_never_answers_is_504(tmp_path: Path) -> None:
    import threading
    from dataclasses import replace

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    config = proxy_config(f"http://127.0.0.1:{listener.getsockname()[1]}", tmp_path / "a.jsonl")
    config = replace(config, upstream=replace(config.upstream, read_timeout_seconds=0.5))
    proxy = ProxyThread(config).start()
    try:
        with pytest.raises(ClientError) as excinfo:
            s3_client(proxy.url, make_token("IE")).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
        assert error_of(excinfo)[:2] == (504, "GatewayTimeout")
    finally:
        proxy.stop()
        listener.close()
        for sock in held:
            sock.close()


@pytest.mark.parametrize("policy_files", [{}, {"bad.yaml": "datasets: [{name: x}]\n"}, {"broken.yaml": "a: [\n"}],
                         ids=["missing", "invalid", "corrupt"])
def test_without_a_valid_policy_nothing_is_forwarded(
    tmp_path: Path, recorder: Recorder, policy_files: dict[str, str],
) -> None:
    import urllib.error
    import urllib.request
    from dataclasses import replace

    folder = tmp_path / "policies"
    folder.mkdir()
    for name, text in policy_files.items():
        (folder / name).write_text(text)
    config = replace(proxy_config(recorder.url, tmp_path / "a.jsonl"), policies=folder)
    proxy = ProxyThread(config).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=5)
        assert excinfo.value.code == 503
        excinfo.value.close()
        mark = recorder.mark()
        with pytest.raises(ClientError) as refused:
            s3_client(proxy.url, make_token("IE")).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
        assert error_of(refused)[:2] == (503, "ServiceUnavailable")
        assert recorder.since(mark) == b""
    finally:
        proxy.stop()
    assert audit_lines(tmp_path / "a.jsonl")[-1]["status"] == 503


def test_readyz_says_when_the_storage_server_does_not_answer(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))   # bound, not listening: refused
        proxy = ProxyThread(proxy_config(f"http://127.0.0.1:{holder.getsockname()[1]}", tmp_path / "a")).start()
        try:
            with pytest.raises(urllib.error.HTTPError) as not_ready:
                urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=5)
            body = json.loads(not_ready.value.read())
            not_ready.value.close()
        finally:
            proxy.stop()
    assert not_ready.value.code == 503
    assert body == {"status": "not ready", "reason": "the storage server could not be reached"}


def test_readyz_says_not_ready_once_the_audit_log_cannot_be_written(recorder: Recorder, tmp_path: Path) -> None:
    # Every request is refused from then on: an orchestrator must send the traffic to the other replicas.
    from dataclasses import replace

    config = proxy_config(recorder.url, Path("/dev/full"))   # every write fails: "No space left on device"
    proxy = ProxyThread(replace(config, audit=replace(config.audit, reserve_bytes=0))).start()
    try:
        with urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=5) as ready:
            assert ready.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:   # refused, and its line cannot be written
            urllib.request.urlopen(f"{proxy.url}/{DUBLIN}/k", timeout=5)
        refused.value.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=5).close()
            except urllib.error.HTTPError as err:
                answer = (err.code, json.loads(err.read()))
                err.close()
                break
            assert time.monotonic() < deadline, "/readyz stayed ready with an audit log that cannot be written"
            time.sleep(0.1)
    finally:
        proxy.stop()
    assert answer == (503, {"status": "not ready", "reason": "the audit log cannot be written"})


def test_shipping_that_lags_is_told_in_one_wording_by_readyz_and_by_each_refusal(
    recorder: Recorder, tmp_path: Path,
) -> None:
    proxy = ProxyThread(proxy_config(recorder.url, tmp_path / "audit.jsonl")).start()
    assert proxy.running is not None
    gateway = proxy.running.gateway
    # A shipper whose oldest unshipped line is past audit.ship.max_lag_seconds (no bucket needed to say so).
    gateway.shipper = cast(Any, SimpleNamespace(overdue=True, config=SimpleNamespace(max_lag_seconds=2.5)))
    try:
        reason = gateway.shipping_overdue()
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=5)
        readiness = (not_ready.value.code, json.loads(not_ready.value.read())["reason"])
        not_ready.value.close()
        with pytest.raises(ClientError) as refused:
            s3_client(proxy.url, make_token("IE")).get_object(Bucket=DUBLIN, Key=unique("lagging"))
    finally:
        gateway.shipper = None
        proxy.stop()
    assert reason == "the audit log has lines not shipped for over 2.5s (audit.ship.required)"
    assert readiness == (503, reason)
    assert error_of(refused) == (503, "ServiceUnavailable", f"{reason}, so no request is forwarded")


@pytest.mark.parametrize("head", [
    f"POST /{DUBLIN}?delete HTTP/1.1\r\n",   # DeleteObjects: the keys would be in the body
    f"PUT /{DUBLIN}-new HTTP/1.1\r\n",       # CreateBucket: the region would be in the body
])
def test_requests_that_need_a_body_but_send_none_are_answered_every_time(proxy: ProxyThread, head: str) -> None:
    # aiohttp gives every body-less request one shared empty body, which reads differently once
    # any request has read it: the proxy must answer the second such request as it did the first.
    request = (f"{head}Host: 127.0.0.1\r\nX-Bailiwick-Token: {make_token('IE')}\r\n{FAKE_SIGV4}"
               "Connection: close\r\n\r\n").encode()
    for _ in range(3):
        answer = raw_request(proxy, request, read_timeout=3.0)
        assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 403")), answer[:200]
    assert raw_request(proxy, (f"GET /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               f"X-Bailiwick-Token: {make_token('IE')}\r\n{FAKE_SIGV4}"
                               "Connection: close\r\n\r\n").encode()).startswith(b"HTTP/1.1 200")
