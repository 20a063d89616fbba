"""Presigned URLs through the proxy: SigV4 in the query string, the token in a header.

The URLs are made by boto3 (as an application would make them) for the
proxy's address; the storage server behind it (moto) answers them. Headers
that a presigned URL carries in its query (``x-amz-copy-source``) are judged
as the headers they stand for.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, US, make_token
from tests.support.recorder import Recorder


def send(url: str, jurisdiction: str | None, method: str = "GET", body: bytes | None = None,
         extra: dict[str, str] | None = None) -> tuple[int, bytes]:
    # A content type: urllib's default (a form) would have moto's server read the body as one.
    headers = {"Content-Type": "application/octet-stream", **(extra or {})}
    if jurisdiction is not None:
        headers["X-Bailiwick-Token"] = make_token(jurisdiction)
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, bytes(refused.read())


SIGNATURES = {"s3v4": "X-Amz-Signature=", "s3": "Signature="}


@pytest.fixture(params=["s3v4", "s3"])
def presign(proxy: ProxyThread, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Presigned URLs for the proxy's address, SigV4 and SigV2, made by boto3 with the application's keys."""
    version = str(request.param)
    signer = boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing",
                          config=BotoConfig(signature_version=version, s3={"addressing_style": "path"}))

    def make(operation: str, **params: Any) -> str:
        url = str(signer.generate_presigned_url(operation, Params=params, ExpiresIn=300))
        assert SIGNATURES[version] in url
        return url

    return make


def test_a_presigned_get_with_a_token(presign: Callable[..., str], recorder: Recorder) -> None:
    url = presign("get_object", Bucket=DUBLIN, Key="alice/inbox/1.eml")
    assert send(url, "IE") == (200, b"Dublin mail")
    mark = recorder.mark()
    status, body = send(url, "US")
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body
    assert recorder.since(mark) == b""


def test_a_presigned_url_without_a_token_is_refused(presign: Callable[..., str], recorder: Recorder) -> None:
    mark = recorder.mark()
    status, body = send(presign("get_object", Bucket=DUBLIN, Key="alice/inbox/1.eml"), None)
    assert status == 403
    assert b"<Code>InvalidToken</Code>" in body
    assert recorder.since(mark) == b""


def test_a_presigned_put(presign: Callable[..., str], direct: Any) -> None:
    url = presign("put_object", Bucket=DUBLIN, Key="alice/presigned.txt")
    assert send(url, "IE", "PUT", b"put through a presigned URL")[0] == 200
    stored = direct.get_object(Bucket=DUBLIN, Key="alice/presigned.txt")["Body"].read()
    assert stored == b"put through a presigned URL"
    assert send(presign("put_object", Bucket=DUBLIN, Key="alice/from-us.txt"), "US", "PUT", b"x")[0] == 403


def test_a_copy_source_carried_in_the_query_is_judged(presign: Callable[..., str], recorder: Recorder,
                                                       direct: Any) -> None:
    # SigV2 presigned URLs carry the copy source in the query; SigV4 ones sign it as a header,
    # which the caller then sends. Either way, a US caller copying Dublin's mail into a US
    # bucket is refused as a read of Dublin data, and nothing reaches the storage server.
    url = presign("copy_object", Bucket=US, Key="bob/copied.eml",
                  CopySource={"Bucket": DUBLIN, "Key": "alice/inbox/1.eml"})
    hoisted = "x-amz-copy-source=" in url.lower()
    copy_header = {} if hoisted else {"x-amz-copy-source": f"{DUBLIN}/alice/inbox/1.eml"}
    assert hoisted == ("X-Amz-Signature=" not in url)
    mark = recorder.mark()
    status, body = send(url, "US", "PUT", extra=copy_header)
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body
    assert recorder.since(mark) == b""
    # A copy inside Dublin by an Irish caller goes through, as the caller sent it.
    url = presign("copy_object", Bucket=DUBLIN, Key="alice/copied.eml",
                  CopySource={"Bucket": DUBLIN, "Key": "alice/inbox/1.eml"})
    mark = recorder.mark()
    assert send(url, "IE", "PUT", extra=copy_header)[0] == 200
    forwarded = recorder.since(mark)
    if hoisted:
        assert f"x-amz-copy-source={DUBLIN}%2Falice%2Finbox%2F1.eml".encode() in forwarded
    else:   # moto's server copies only from the header; the hoisted form it takes for a plain PUT
        assert f"x-amz-copy-source: {DUBLIN}/alice/inbox/1.eml".encode() in forwarded.lower()
        assert direct.get_object(Bucket=DUBLIN, Key="alice/copied.eml")["Body"].read() == b"Dublin mail"
