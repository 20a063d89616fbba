"""The JSON access log (``access_log``): one line per request, no secrets, off by default."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, make_token, proxy_config, s3_client
from tests.support.recorder import Recorder
from tests.support.records import written_records


def lines(path: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        found = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


@pytest.mark.usefixtures("seeded")
def test_one_line_per_request_without_the_query_string(recorder: Recorder, tmp_path: Path) -> None:
    access = tmp_path / "access.jsonl"
    proxy = ProxyThread(proxy_config(recorder.url, tmp_path / "audit.jsonl", access_log=str(access))).start()
    try:
        s3 = s3_client(proxy.url, make_token("IE"))
        url = s3.generate_presigned_url("get_object", Params={"Bucket": DUBLIN, "Key": "alice/inbox/1.eml"})
        request = urllib.request.Request(url, headers={"X-Bailiwick-Token": make_token("IE")})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.read() == b"Dublin mail"
        s3.put_object(Bucket=DUBLIN, Key="access/put", Body=b"x" * 5000)
        with pytest.raises(ClientError) as refused:
            s3_client(proxy.url, make_token("US")).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    finally:
        proxy.stop()
    get, put, denied = lines(access, 3)
    assert (get["method"], get["path"], get["status"], get["decision"]) == (
        "GET", f"/{DUBLIN}/alice/inbox/1.eml", 200, "allow")
    assert get["bytes_out"] == len(b"Dublin mail")
    assert get["upstream_ms"] is not None
    assert (put["method"], put["bytes_in"], put["status"]) == ("PUT", 5000, 200)
    assert (denied["status"], denied["decision"], denied["error_code"]) == (403, "deny", "AccessDenied")
    assert denied["request_id"] == refused.value.response["ResponseMetadata"]["RequestId"]
    assert denied["caller_jurisdiction"] == "US"
    assert denied["upstream_ms"] is None
    text = access.read_text()
    assert "X-Amz-Signature" not in text
    assert "eyJ" not in text   # no token


@pytest.mark.usefixtures("seeded")
def test_off_by_default(recorder: Recorder, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proxy = ProxyThread(proxy_config(recorder.url, tmp_path / "audit.jsonl")).start()
    try:
        s3_client(proxy.url, make_token("IE")).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    finally:
        proxy.stop()
    assert '"request_id"' not in capsys.readouterr().err


@pytest.mark.usefixtures("seeded")
def test_two_proxies_in_one_process_keep_their_own_lines(recorder: Recorder, tmp_path: Path) -> None:
    paths = [tmp_path / "first.jsonl", tmp_path / "second.jsonl"]
    proxies = [ProxyThread(proxy_config(recorder.url, tmp_path / f"audit{n}.jsonl", access_log=str(path))).start()
               for n, path in enumerate(paths)]
    try:
        for n, proxy in enumerate(proxies):
            for _ in range(n + 1):   # one request through the first, two through the second
                s3_client(proxy.url, make_token("IE")).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    finally:
        for proxy in proxies:
            proxy.stop()   # writes what is queued
    assert [len(written_records(path)) for path in paths] == [1, 2]
