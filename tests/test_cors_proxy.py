"""CORS through the real proxy in front of moto: preflights answered from the policy alone, never forwarded, and
the Access-Control-* headers of actual requests (allowed and refused) set by the policy, never by the storage."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import urllib3
from botocore.exceptions import ClientError

from proxy.cli import main
from proxy.harness import ProxyThread
from proxy.policy.replay import SKIP_NO_CALLER, rebuild_line
from tests.conftest import make_token, proxy_config, s3_client
from tests.support.metrics import metric
from tests.support.recorder import Recorder
from tests.support.records import written_records
from tests.support.serve import wait_until

APP = "https://app.example.com"
EVIL = "https://evil.example.net"
WEB, GHOST, PLAIN, NOWHERE = "cors-web", "cors-ghost", "cors-plain", "cors-nowhere"   # GHOST: not in moto

POLICY = f"""\
datasets:
  - name: web-eu
    region: eu-west-1
    resources: [s3://{WEB}, s3://{GHOST}]
    rules:
      - allow: [read, list, write]
        from: [IE]
    cors:
      - allowed_origins: [{APP}]
        allowed_methods: [GET, PUT, POST, HEAD]
        allowed_headers: [x-bailiwick-token, content-type, "x-amz-*", authorization]
        expose_headers: [ETag]
        max_age_seconds: 600
  - name: plain-eu
    region: eu-west-1
    resources: [s3://{PLAIN}]
    rules:
      - allow: [read, list, write]
        from: [IE]
"""
# What the storage server would say about CORS if it were asked: everything, to everyone.
UPSTREAM_CORS = {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "PUT", "HEAD"],
                                "AllowedHeaders": ["*"], "ExposeHeaders": ["x-upstream-secret"]}]}


@pytest.fixture(scope="module")
def cors_audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cors-audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def cors_proxy(recorder: Recorder, direct: Any, tmp_path_factory: pytest.TempPathFactory,
               cors_audit: Path) -> Iterator[ProxyThread]:
    folder = tmp_path_factory.mktemp("cors-policy")
    (folder / "web.yaml").write_text(POLICY, encoding="utf-8")
    for bucket in (WEB, PLAIN):
        direct.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        direct.put_object(Bucket=bucket, Key="page/a.txt", Body=b"hello")
        direct.put_bucket_cors(Bucket=bucket, CORSConfiguration=UPSTREAM_CORS)
    running = ProxyThread(replace(proxy_config(recorder.url, cors_audit), policies=folder)).start()
    yield running
    running.stop()


def _options(proxy: ProxyThread, path: str, **headers: str) -> urllib3.BaseHTTPResponse:
    return urllib3.request("OPTIONS", proxy.url + path, headers=headers, retries=False, timeout=10)


def _cors_headers(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("access-control-")}


def _same_answer(response: urllib3.BaseHTTPResponse) -> tuple[int, dict[str, str], bytes]:
    """An answer without what differs per request (the date, the request id)."""
    headers = {k.lower(): v for k, v in response.headers.items() if k.lower() not in ("date", "x-amz-request-id")}
    return response.status, headers, re.sub(rb"<RequestId>\w+</RequestId>", b"", response.data)


ANSWERED = "bailiwick_cors_preflights_total "
DENIED = ('bailiwick_requests_total{action="other",api="s3",caller_jurisdiction="other",data_region="other",'
          'decision="deny"}')
PREFLIGHT = {"Origin": APP, "Access-Control-Request-Method": "PUT",
             "Access-Control-Request-Headers": "x-bailiwick-token, content-type"}


@pytest.mark.parametrize(("path", "changes", "allowed"), [
    pytest.param(f"/{WEB}/page/a.txt", {}, True, id="allowed"),
    pytest.param(f"/{GHOST}/page/a.txt", {}, True, id="bucket not upstream"),
    pytest.param(f"/{WEB}", {"Access-Control-Request-Method": "GET"}, True, id="bucket level"),
    pytest.param(f"/{WEB}", {"Access-Control-Request-Method": "POST"}, True, id="a form upload to the bucket"),
    pytest.param(f"/{WEB}/page/a.txt", {"Origin": EVIL}, False, id="unknown origin"),
    pytest.param(f"/{WEB}/page/a.txt", {"Access-Control-Request-Method": "DELETE"}, False, id="method"),
    pytest.param(f"/{WEB}/page/a.txt", {"Access-Control-Request-Headers": "x-bailiwick-token, x-secret"}, False,
                 id="header"),
    pytest.param(f"/{GHOST}/page/a.txt", {"Origin": EVIL}, False, id="unknown origin, bucket not upstream"),
])
def test_a_preflight_is_answered_from_the_policy_and_never_forwarded(
    cors_proxy: ProxyThread, recorder: Recorder, cors_audit: Path, path: str, changes: dict[str, str], allowed: bool,
) -> None:
    mark, lines = recorder.mark(), len(written_records(cors_audit))
    answered, denied = metric(cors_proxy, ANSWERED), metric(cors_proxy, DENIED)
    response = _options(cors_proxy, path, **(PREFLIGHT | changes))
    assert recorder.since(mark) == b""
    wait_until(lambda: len(written_records(cors_audit)) == lines + 1, timeout=5)
    line = written_records(cors_audit)[-1]
    if allowed:
        # Allowed by the dataset's cors rule: no refusal (no deny to alert on), nothing forwarded, no data reached.
        assert (line["decision"], line["rule"], line["dataset"], line["error_code"], line["status"]) == (
            "allow", "cors #1", "web-eu", None, 200)
        assert (line["request"]["operation"], line["request"]["method"], line["request"]["action"]) == (
            "CorsPreflight", "OPTIONS", None)
        assert line["request"]["resource"].startswith(f"s3://{path.split('/')[1]}")
        # `policy diff` replays decisions of callers: a preflight's line is skipped, not decided again
        assert rebuild_line(json.dumps(line)) == SKIP_NO_CALLER
        assert (metric(cors_proxy, ANSWERED), metric(cors_proxy, DENIED)) == (answered + 1, denied)
    else:
        assert (line["decision"], line["error_code"], line["status"]) == ("deny", "AccessForbidden", 403)
        assert (metric(cors_proxy, ANSWERED), metric(cors_proxy, DENIED)) == (answered, denied + 1)
    if allowed:
        assert response.status == 200
        assert _cors_headers(response.headers) == {
            "access-control-allow-origin": APP,
            "access-control-allow-credentials": "true",
            "access-control-allow-methods": "GET, PUT, POST, HEAD",
            "access-control-allow-headers": "x-bailiwick-token, content-type",
            "access-control-expose-headers": "X-Bailiwick-Error-Code, X-Bailiwick-Reason, x-amz-request-id, ETag",
            "access-control-max-age": "600",
        }
    else:
        assert response.status == 403
        assert response.headers["X-Bailiwick-Error-Code"] == "AccessForbidden"
        assert b"<Code>AccessForbidden</Code><Message>CORSResponse: This CORS request is not allowed." in response.data
        assert _cors_headers(response.headers) == {}


def test_a_bucket_that_does_not_exist_upstream_gets_the_same_answer(cors_proxy: ProxyThread) -> None:
    for changes in ({}, {"Origin": EVIL}):
        there = _same_answer(_options(cors_proxy, f"/{WEB}/page/a.txt", **(PREFLIGHT | changes)))
        assert _same_answer(_options(cors_proxy, f"/{GHOST}/page/a.txt", **(PREFLIGHT | changes))) == there


@pytest.mark.parametrize("bucket", [PLAIN, NOWHERE])
def test_a_preflight_to_a_dataset_without_cors_or_to_no_dataset_is_refused_as_any_options(
    cors_proxy: ProxyThread, recorder: Recorder, bucket: str,
) -> None:
    mark = recorder.mark()
    today = _options(cors_proxy, f"/{bucket}/page/a.txt")   # an OPTIONS without Origin: refused, as always
    assert (today.status, today.headers["X-Bailiwick-Error-Code"]) == (403, "InvalidToken")
    assert _same_answer(_options(cors_proxy, f"/{bucket}/page/a.txt", **PREFLIGHT)) == _same_answer(today)
    assert recorder.since(mark) == b""


def _client(proxy: ProxyThread, jurisdiction: str, origin: str) -> Any:
    client = s3_client(proxy.url, make_token(jurisdiction))

    def add_origin(request: Any, **_: Any) -> None:
        request.headers["Origin"] = origin

    client.meta.events.register("before-send.s3", add_origin)
    return client


def _answer_headers(call: Callable[[], Any]) -> tuple[int, dict[str, str]]:
    try:
        meta = call()["ResponseMetadata"]
    except ClientError as err:
        meta = err.response["ResponseMetadata"]
    return meta["HTTPStatusCode"], meta["HTTPHeaders"]


def test_the_storage_server_would_answer_with_its_own_cors_headers(direct: Any, cors_proxy: ProxyThread) -> None:
    # Without the proxy, moto's bucket configuration speaks: this is what the proxy must drop.
    response = urllib3.request("GET", f"{direct.meta.endpoint_url}/{WEB}/page/a.txt", headers={"Origin": EVIL},
                               retries=False, timeout=10)
    assert _cors_headers(response.headers).get("access-control-allow-origin") in ("*", EVIL)


HELLO_ETAG = f'"{hashlib.md5(b"hello", usedforsecurity=False).hexdigest()}"'   # page/a.txt's, as moto names it
ALLOWED = {"access-control-allow-origin": APP, "access-control-allow-credentials": "true",
           "access-control-expose-headers": "X-Bailiwick-Error-Code, X-Bailiwick-Reason, x-amz-request-id, ETag"}


@pytest.mark.parametrize(("jurisdiction", "origin", "bucket", "status", "expected"), [
    pytest.param("IE", APP, WEB, 200, ALLOWED, id="allowed"),
    pytest.param("US", APP, WEB, 403, ALLOWED, id="refused by the policy, readable by the page"),
    pytest.param("IE", EVIL, WEB, 200, {}, id="origin not allowed: served, no CORS headers"),
    pytest.param("IE", APP, PLAIN, 200, {}, id="dataset without cors"),
])
@pytest.mark.parametrize("operation", ["get", "put", "head", "not-modified"])
def test_an_actual_request_gets_the_policys_cors_headers_and_never_the_storages(
    cors_proxy: ProxyThread, jurisdiction: str, origin: str, bucket: str, status: int, expected: dict[str, str],
    operation: str,
) -> None:
    client = _client(cors_proxy, jurisdiction, origin)
    calls: dict[str, Callable[[], Any]] = {
        "get": lambda: client.get_object(Bucket=bucket, Key="page/a.txt"),
        "put": lambda: client.put_object(Bucket=bucket, Key="page/b.txt", Body=b"x"),
        "head": lambda: client.head_object(Bucket=bucket, Key="page/a.txt"),
        "not-modified": lambda: client.get_object(Bucket=bucket, Key="page/a.txt", IfNoneMatch=HELLO_ETAG),
    }
    got, headers = _answer_headers(calls[operation])
    assert got == (304 if operation == "not-modified" and status == 200 else status)
    assert _cors_headers(headers) == expected
    if bucket == WEB:   # elsewhere the storage server's own Vary is passed on (moto's HEAD has "Origin")
        assert "origin" in headers.get("vary", "").lower()
    if status == 403 and operation != "head":   # a HEAD's refusal has its code in its header only
        assert headers["x-bailiwick-error-code"] == "AccessDenied"


def test_a_post_answer_carries_the_same_headers(cors_proxy: ProxyThread) -> None:
    # DeleteObjects is a POST; the dataset allows no delete, so the proxy refuses it, readably for the page.
    client = _client(cors_proxy, "IE", APP)
    status, headers = _answer_headers(lambda: client.delete_objects(
        Bucket=WEB, Delete={"Objects": [{"Key": "page/a.txt"}]}))
    assert (status, headers["x-bailiwick-error-code"]) == (403, "AccessDenied")
    assert _cors_headers(headers) == ALLOWED


def test_the_audit_log_with_answered_preflights_verifies(cors_proxy: ProxyThread, cors_audit: Path) -> None:
    lines = len(written_records(cors_audit))
    assert _options(cors_proxy, f"/{WEB}/page/a.txt", **PREFLIGHT).status == 200
    wait_until(lambda: len(written_records(cors_audit)) == lines + 1, timeout=5)
    assert main(["audit", "verify", str(cors_audit)]) == 0
