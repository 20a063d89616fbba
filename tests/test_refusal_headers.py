"""A refused HEAD says why: every refusal carries its code and reason in two headers (docs/storage-apis.md).

An answer to HEAD has no body, so without them a client sees only the
status (the AWS CLI prints ``403 Forbidden``). Checked with the real proxy in
front of moto, through boto3, the AWS CLI and a raw HTTP HEAD; the reason
may echo the caller's own key name, which must never break the header.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from botocore.exceptions import ClientError

from proxy.config import AccessKeyRule
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, make_token, proxy_config
from tests.support.recorder import Recorder
from tests.test_gateway import raw_request

US_KEY, US_SECRET = "AKIAUSREFUSALHEADER", "us-refusal-header-secret-0123456789abcdef"
KEY = "alice/inbox/1.eml"
US_REFUSED = "read access to data held in eu-west-1 (IE) is not allowed for callers in US"


@pytest.fixture(scope="module")
def keyed_proxy(recorder: Recorder, seeded: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    """The proxy with an access key of a US caller, as the AWS CLI signs with (it sends no token)."""
    config = proxy_config(recorder.url, tmp_path_factory.mktemp("refusal-headers") / "audit.jsonl")
    keys = (AccessKeyRule(US_KEY, "US", "mail-client-us", secret_access_key=US_SECRET),)
    identity = replace(config.identity, access_keys=keys, access_key_region="eu-west-1")
    running = ProxyThread(replace(config, identity=identity)).start()
    yield running
    running.stop()


def test_boto3_head_object_refused_carries_code_and_reason(client_for: Any) -> None:
    with pytest.raises(ClientError) as refused:
        client_for("US").head_object(Bucket=DUBLIN, Key=KEY)
    response = refused.value.response
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert headers["x-bailiwick-error-code"] == "AccessDenied"
    assert unquote(headers["x-bailiwick-reason"]) == US_REFUSED


def test_aws_cli_head_object_shows_the_reason(keyed_proxy: ProxyThread, tmp_path: Path) -> None:
    aws = shutil.which("aws")
    assert aws is not None, "the AWS CLI is installed with the test extras (awscli)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=US_KEY, AWS_SECRET_ACCESS_KEY=US_SECRET, AWS_DEFAULT_REGION="eu-west-1",
               AWS_EC2_METADATA_DISABLED="true", HOME=str(tmp_path))
    done = subprocess.run(
        [aws, "--debug", "--endpoint-url", keyed_proxy.url, "s3api", "head-object", "--bucket", DUBLIN, "--key", KEY],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert done.returncode != 0
    assert "403" in done.stderr
    assert "'X-Bailiwick-Error-Code': 'AccessDenied'" in done.stderr
    assert f"'X-Bailiwick-Reason': '{US_REFUSED}'" in done.stderr


def _head(proxy: ProxyThread, target: str, token: str) -> tuple[bytes, dict[str, str]]:
    """A raw HEAD: the status line, and the headers as sent on the wire (latin-1, as HTTP/1.1 defines)."""
    answer = raw_request(proxy, (f"HEAD {target} HTTP/1.1\r\nHost: {proxy.url.removeprefix('http://')}\r\n"
                                 f"X-Bailiwick-Token: {token}\r\nConnection: close\r\n\r\n").encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert body == b""
    status, *lines = head.split(b"\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        assert name.lower() not in headers, f"{name} sent twice"
        headers[name.lower()] = value.strip()
    return status, headers


@pytest.mark.parametrize(("target", "jurisdiction", "status", "code", "reason"), [
    (f"/{DUBLIN}/{KEY}", "US", 403, "AccessDenied", US_REFUSED),
    # The caller's own key name in the reason: non-ASCII, a percent sign, a quote, a would-be header.
    ("/nowhere-bucket/%20%D0%BA%D0%BB%D1%8E%D1%87%20100%25%20%22X-Injected:%20yes%22", "IE", 403, "AccessDenied",
     's3://nowhere-bucket/ ключ 100% "X-Injected: yes" is not covered by any data residency policy'),
    ("/nowhere-bucket/a%0D%0AX-Injected:%20yes", "IE", 400, "InvalidURI",
     "the object key contains a control character (U+000D)"),
])
def test_raw_head_refusal_headers_are_safe_and_decode_to_the_reason(
    proxy: ProxyThread, target: str, jurisdiction: str, status: int, code: str, reason: str,
) -> None:
    status_line, headers = _head(proxy, target, make_token(jurisdiction))
    assert status_line.startswith(f"HTTP/1.1 {status} ".encode())
    assert "x-injected" not in headers
    assert headers["x-bailiwick-error-code"] == code
    encoded = headers["x-bailiwick-reason"]
    assert all(0x20 <= ord(char) <= 0x7E for char in encoded)
    assert unquote(encoded) == reason
