"""Secrets never leak: not into the audit log, the proxy's logs or error bodies; refusals reveal nothing."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, make_token, proxy_config, s3_client
from tests.support.recorder import Recorder

SIGNATURE = "5ecre7516a7e0f5ecre7516a7e0f5ecre7516a7e0f5ecre7516a7e0f5ecre751"
SESSION_TOKEN = "FQoGZXIvYXdzSESSIONTOKENSECRET"


def exchange(proxy: ProxyThread, request: bytes) -> bytes:
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("jurisdiction", ["IE", "US"])
@pytest.mark.parametrize("query", ["", "?prefix=%2e%2e/"])
def test_no_secret_in_audit_logs_or_error_bodies(
    tmp_path: Path, recorder: Recorder, caplog: pytest.LogCaptureFixture, jurisdiction: str, query: str,
) -> None:
    audit = tmp_path / "audit.jsonl"
    proxy = ProxyThread(proxy_config(recorder.url, audit)).start()
    token = make_token(jurisdiction)
    presigned = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20260101%2Fus-east-1%2Fs3"
                 f"%2Faws4_request&X-Amz-Signature={SIGNATURE}&X-Amz-Security-Token={SESSION_TOKEN}")
    target = f"/{DUBLIN}/alice/inbox/1.eml" + (query + "&" if query else "?") + presigned
    caplog.set_level(logging.DEBUG)
    try:
        answers = [
            exchange(proxy, (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                             "Connection: close\r\n\r\n").encode()),
            exchange(proxy, (f"GET /{DUBLIN}/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {token}\r\n"
                             f"Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/s3/"
                             f"aws4_request, SignedHeaders=host, Signature={SIGNATURE}\r\n"
                             f"X-Amz-Security-Token: {SESSION_TOKEN}\r\nConnection: close\r\n\r\n").encode()),
            exchange(proxy, (f"GET /{DUBLIN}/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             f"X-Bailiwick-Token: {token[:-4]}AAAA\r\nConnection: close\r\n\r\n").encode()),
        ]
    finally:
        proxy.stop()
    secrets = [token, token.split(".")[2], SIGNATURE, SESSION_TOKEN]
    written = audit.read_text() + "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret not in written
        for answer in answers:
            body = answer.split(b"\r\n\r\n", 1)[1]
            assert secret.encode() not in body
    assert len(audit.read_text().splitlines()) == 3


def test_refused_head_bucket_reveals_no_region(client_for: Any, recorder: Recorder) -> None:
    mark = recorder.mark()
    with pytest.raises(ClientError) as excinfo:
        client_for("US").head_bucket(Bucket=DUBLIN)
    response = excinfo.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    headers = {k.lower() for k in response["ResponseMetadata"]["HTTPHeaders"]}
    assert "x-amz-bucket-region" not in headers
    assert recorder.since(mark) == b""


def test_refusal_messages_name_no_dataset_or_rule(proxy: ProxyThread) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3_client(proxy.url, make_token("US")).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    message = excinfo.value.response["Error"]["Message"]
    assert "US" in message
    assert "IE" in message
    for internal in ("dublin-mail", "no-us-access", "eea-read", "default deny"):
        assert internal not in message
