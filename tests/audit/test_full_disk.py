"""A full disk never leaves a forwarded request unaudited: the real proxy, moto and a 64 KiB tmpfs.

The audit log lives on a tiny tmpfs that a filler file has almost filled.
PUTs go through the proxy until it refuses them for want of audit space;
then every object that reached the store must have a complete audit line
with the decision id the proxy forwarded it with, every refusal must be a
503 ``AuditLogFull``, the log must verify, and once the filler is deleted
the proxy must forward requests again on its own.

Mounting a tmpfs needs root: CI runs these tests as root, so there (``CI``
set) a missing root is a failure, not a skip (`tests.audit.disk`).
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from proxy.cli import main
from proxy.harness import ProxyThread
from proxy.localstore import MotoServer
from tests.conftest import DUBLIN, make_token, proxy_config
from tests.support.metrics import metric
from tests.support.recorder import Recorder
from tests.support.serve import status

from .disk import fill

RESERVE = 16384
_FORWARDED = re.compile(rb"PUT /" + DUBLIN.encode() + rb"/(alice/full/[^ ?]+) HTTP/1\.1\r\n(.*?)\r\n\r\n", re.S)
_DECISION = re.compile(rb"^x-bailiwick-decision: *([0-9a-f]+)\r?$", re.M | re.I)


def caller(url: str) -> Any:
    """An IE caller that never retries (a retried refusal would only be slower, and counted twice)."""
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing",
                          config=BotoConfig(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))
    token = make_token("IE")

    def add_token(request: Any, **_: Any) -> None:
        request.headers["X-Bailiwick-Token"] = token

    client.meta.events.register("before-send.s3", add_token)
    return client


def put(client: Any, key: str) -> tuple[int, str]:
    try:
        client.put_object(Bucket=DUBLIN, Key=key, Body=b"x" * 64)
    except ClientError as err:
        return err.response["ResponseMetadata"]["HTTPStatusCode"], err.response["Error"]["Code"]
    return 200, ""


def complete_lines(disk: Path) -> dict[str, dict[str, Any]]:
    """The complete audit lines on `disk`, by decision id (a partial last line is left out)."""
    found: dict[str, dict[str, Any]] = {}
    for file in disk.glob("*.jsonl"):
        for raw in file.read_bytes().splitlines(keepends=True):
            if raw.endswith(b"\n") and b'"decision_id"' in raw:
                record = json.loads(raw)
                found[record["decision_id"]] = record
    return found


def ready(proxy: ProxyThread) -> int:
    return status(proxy.admin_url + "/readyz")


@pytest.mark.parametrize("callers", [1, 6])
def test_a_full_disk_stops_forwarding_before_a_request_goes_unaudited(
    tiny_disk: Path, moto: MotoServer, direct: Any, seeded: None, callers: int, capsys: pytest.CaptureFixture[str],
) -> None:
    relay = Recorder(moto.port)   # what reached the store, with the decision id each request was forwarded with
    config = proxy_config(relay.url, tiny_disk / "audit.jsonl")
    proxy = ProxyThread(replace(config, audit=replace(config.audit, reserve_bytes=RESERVE))).start()
    try:
        filler = fill(tiny_disk, leave=12 * 1024)
        client = caller(proxy.url)
        answers: list[tuple[int, str]] = []
        with ThreadPoolExecutor(callers) as pool:
            for batch in range(60):   # until well past the first refusal: the disk is full by then
                keys = [f"alice/full/{callers}-{batch}-{n}" for n in range(callers)]
                answers += pool.map(lambda key: put(client, key), keys)
                if sum(1 for status, _ in answers if status != 200) >= 40:
                    break
        refused = [answer for answer in answers if answer[0] != 200]
        assert refused, "the disk never filled up"
        assert set(refused) == {(503, "AuditLogFull")}
        assert any(status == 200 for status, _ in answers)
        assert metric(proxy, "bailiwick_audit_reserve_exhausted ") == 1
        assert ready(proxy) == 503   # refusing every request: out of its Service until there is room
        assert metric(proxy, "bailiwick_audit_lines_dropped_total ") > 0   # refusals past the reserve's end

        filler.unlink()   # room again: the proxy forwards again on its own (it retries once a second)
        deadline = time.monotonic() + 10
        while put(client, f"alice/full/{callers}-after") != (200, "") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert put(client, f"alice/full/{callers}-after-2") == (200, "")
        assert metric(proxy, "bailiwick_audit_reserve_exhausted ") == 0
        assert ready(proxy) == 200
    finally:
        proxy.stop()
        relay.close()

    forwarded = {match[1].decode(): _DECISION.search(match[2]) for match in _FORWARDED.finditer(relay.received)}
    stored = {item["Key"] for page in direct.get_paginator("list_objects_v2").paginate(
        Bucket=DUBLIN, Prefix=f"alice/full/{callers}-") for item in page.get("Contents", [])}
    assert stored
    assert stored <= forwarded.keys()
    lines = complete_lines(tiny_disk)
    for key in stored:
        decision = forwarded[key]
        assert decision is not None, key
        line = lines.get(decision[1].decode())
        assert line is not None, f"{key} reached the store without a complete audit line"
        assert (line["request"]["resource"], line["status"]) == (f"s3://{DUBLIN}/{key}", 200)
    assert main(["audit", "verify", str(tiny_disk)]) in (0, 3), capsys.readouterr().out


class _Overdue:
    """A shipper whose lines lag past max_lag_seconds with audit.ship.required: every request is refused."""

    overdue = True
    config = type("ShipConfig", (), {"max_lag_seconds": 60.0})()


def test_a_refusal_before_admission_leaves_the_claims_of_requests_in_flight(tiny_disk: Path, moto: MotoServer) -> None:
    """A request refused before it was admitted (shipping overdue) claimed nothing, so its line releases nothing:
    the room stays claimed for the lines of the requests already forwarded."""
    config = proxy_config(moto.url, tiny_disk / "audit.jsonl")
    proxy = ProxyThread(replace(config, audit=replace(config.audit, reserve_bytes=RESERVE))).start()
    assert proxy.running is not None
    gateway = proxy.running.gateway
    try:
        in_flight = 0
        while gateway.audit.admit() is None and in_flight < 100:   # requests forwarded, their lines owed
            in_flight += 1
        assert 0 < in_flight < 100
        gateway.shipper = _Overdue()   # type: ignore[assignment]
        client = caller(proxy.url)
        assert [put(client, f"alice/full/overdue-{n}")[0] for n in range(3)] == [503] * 3
        gateway.shipper = None
        assert put(client, "alice/full/after-overdue") == (503, "AuditLogFull")   # the room is still claimed
    finally:
        gateway.shipper = None
        proxy.stop()
