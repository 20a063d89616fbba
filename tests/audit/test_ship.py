"""Shipping the audit chain to a bucket with Object Lock, against moto's server and the real proxy.

Each test runs `bailiwick serve` shipping to a bucket of its own on a moto server reached
through a `Switch` (a relay the test can unplug); requests without a token are refused and
audited, which is all the lines the tests need.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from proxy.audit import verify
from proxy.localstore import MotoServer
from tests.audit.shipping import CHECKPOINT_KEY, Switch, pieces, serve_shipping, shipped
from tests.conftest import DUBLIN, s3_client
from tests.support.recorder import Recorder
from tests.support.serve import status, wait_until
from tests.test_reload import copy_policies


@pytest.fixture(scope="module")
def store() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def switch(store: MotoServer) -> Iterator[Switch]:
    relay = Switch(store.port)
    yield relay
    relay.down()


@pytest.fixture
def bucket(store: MotoServer, request: pytest.FixtureRequest) -> str:
    name = "audit-" + str(request.node.name).replace("_", "-").lower()[5:40].strip("-")
    client(store).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True,
                                CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return name


def client(store: MotoServer) -> Any:
    return s3_client(store.url)


def ship_config(bucket: str, switch: Switch, more: str = "") -> str:
    return f"{{bucket: {bucket}, endpoint_url: '{switch.url}', interval_seconds: 1, max_lag_seconds: 3{more}}}"


def hit(port: int, count: int) -> list[int]:
    """`count` requests without a token (refused, and audited); their statuses."""
    statuses = []
    for n in range(count):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{DUBLIN}/k{n}", timeout=10) as answer:
                statuses.append(answer.status)
        except urllib.error.HTTPError as err:
            statuses.append(err.code)
            err.close()
    return statuses


def metric(admin: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def ready(admin: int) -> int:
    return status(f"http://127.0.0.1:{admin}/readyz")


def chain_verifies(data: bytes, tmp: Path) -> Any:
    whole = tmp / "shipped" / "audit.jsonl"
    whole.parent.mkdir(exist_ok=True)
    whole.write_bytes(data)
    return verify(whole, checkpoint_key=CHECKPOINT_KEY.encode())


def verify_store(store: MotoServer, bucket: str, prefix: str = "") -> subprocess.CompletedProcess[str]:
    """`bailiwick audit verify s3://BUCKET/PREFIX`, with the key, straight from the store."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", "audit", "verify", "--endpoint-url", store.url, "--region", "eu-west-1",
         "--checkpoint-key-env", "AUDIT_KEY", f"s3://{bucket}/{prefix}"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "AUDIT_KEY": CHECKPOINT_KEY, "AWS_ACCESS_KEY_ID": "testing",
             "AWS_SECRET_ACCESS_KEY": "testing"},
    )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    process.send_signal(sig)
    return process.wait(timeout=60)


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    return copy_policies(tmp_path / "policies", with_tests=False)


def test_pieces_carry_their_retention_and_sigterm_ships_the_tail_to_its_close(
    tmp_path: Path, recorder: Recorder, store: MotoServer, switch: Switch, bucket: str, policies: Path,
) -> None:
    s3 = client(store)
    # Small files: the chain goes on across rotations, and pieces across files.
    process, port, _ = serve_shipping(tmp_path, recorder.url, policies,
                                      ship_config(bucket, switch, ", prefix: eu/, retention_days: 2"),
                                      ", max_bytes: 4096")
    try:
        assert set(hit(port, 30)) == {403}
        wait_until(lambda: len(pieces(s3, bucket)) >= 1, timeout=20)
        first = pieces(s3, bucket)[0]
        assert first.startswith("eu/")
        assert first.endswith("/0000000001.jsonl")
        # The retention as the object's headers carry it (this moto's GetObjectRetention answers 500).
        head = s3.head_object(Bucket=bucket, Key=first)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        expected = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
        assert abs((head["ObjectLockRetainUntilDate"] - expected).total_seconds()) < 120
        assert head["ContentType"] == "application/x-ndjson"
        assert head["Metadata"]["bailiwick-lines"] == str(s3.get_object(Bucket=bucket, Key=first)["Body"]
                                                         .read().count(b"\n"))
        hit(port, 20)
    finally:
        assert stop(process) == 0, (tmp_path / "serve.log").read_text()
    local = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("audit.2*.jsonl"))) + \
        (tmp_path / "audit.jsonl").read_bytes()
    assert len(list(tmp_path.glob("audit.2*.jsonl"))) >= 2      # it did rotate
    assert shipped(s3, bucket) == local                          # all of it, byte for byte, in order
    keys = pieces(s3, bucket)
    assert [int(k.rsplit("/", 1)[1][:10]) for k in keys] == list(range(1, len(keys) + 1))
    last = json.loads(local.splitlines()[-1])
    assert last["checkpoint"]["kind"] == "close"
    for key in keys:   # every piece ends with a MAC'd checkpoint
        tail = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()[-1])
        assert "checkpoint" in tail
    result = chain_verifies(shipped(s3, bucket), tmp_path)
    assert result.ok
    assert result.sealed
    verified = verify_store(store, bucket, "eu/")   # and as an auditor checks it, from the store
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_sigkill_loses_at_most_the_unshipped_interval_and_a_restart_ships_it(
    tmp_path: Path, recorder: Recorder, store: MotoServer, switch: Switch, bucket: str, policies: Path,
) -> None:
    s3 = client(store)
    process, port, _ = serve_shipping(tmp_path, recorder.url, policies, ship_config(bucket, switch))
    try:
        hit(port, 10)
        wait_until(lambda: len(pieces(s3, bucket)) >= 1, timeout=20)
        hit(port, 5)
        killed = datetime.datetime.now(datetime.UTC)
    finally:
        assert stop(process, signal.SIGKILL) == -signal.SIGKILL
    local = (tmp_path / "audit.jsonl").read_bytes()
    before = shipped(s3, bucket)
    assert before
    assert local.startswith(before)   # what was shipped is the local file's start, exactly
    for line in local[len(before):].splitlines():   # what was not is of the last interval (1 s) only
        written = datetime.datetime.fromisoformat(json.loads(line)["time"].replace("Z", "+00:00"))
        assert (killed - written).total_seconds() < 5   # an interval, and room for a busy machine
    assert chain_verifies(before, tmp_path).ok
    cut = verify_store(store, bucket)   # a killed pod's chain: intact, but cut (not tampered)
    assert cut.returncode == 3, cut.stdout + cut.stderr
    # A proxy started on the same files goes on with the same chain, from where the bucket ends.
    process, port, _ = serve_shipping(tmp_path, recorder.url, policies, ship_config(bucket, switch))
    try:
        hit(port, 3)
    finally:
        assert stop(process) == 0
    after = shipped(s3, bucket)
    assert after == (tmp_path / "audit.jsonl").read_bytes()
    assert after.startswith(before)
    assert len({k.split("/")[0] for k in pieces(s3, bucket)}) == 1   # one chain
    assert chain_verifies(after, tmp_path).sealed
    assert verify_store(store, bucket).returncode == 0


def test_a_shipped_piece_is_neither_deleted_nor_overwritten_within_its_retention(
    tmp_path: Path, recorder: Recorder, store: MotoServer, switch: Switch, bucket: str, policies: Path,
) -> None:
    s3 = client(store)
    process, port, _ = serve_shipping(tmp_path, recorder.url, policies, ship_config(bucket, switch))
    try:
        hit(port, 3)
    finally:
        assert stop(process) == 0
    key = pieces(s3, bucket)[0]
    original = s3.get_object(Bucket=bucket, Key=key)
    data, version = original["Body"].read(), original["VersionId"]
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"forged":true}\n')   # a new version on top ...
    kept = s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
    assert kept == data                                                # ... the original stays as it was
    versions = s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert len(versions) == 2
    tampered = verify_store(store, bucket)   # the chain still verifies from the original; the forgery is named
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr


def test_the_store_down_for_a_while_loses_nothing_once_back(
    tmp_path: Path, recorder: Recorder, store: MotoServer, switch: Switch, bucket: str, policies: Path,
) -> None:
    s3 = client(store)
    process, port, admin = serve_shipping(tmp_path, recorder.url, policies, ship_config(bucket, switch))
    try:
        hit(port, 5)
        wait_until(lambda: len(pieces(s3, bucket)) >= 1, timeout=20)
        switch.down()
        hit(port, 10)
        wait_until(lambda: metric(admin, "bailiwick_audit_ship_failures_total") >= 1, timeout=20)
        wait_until(lambda: metric(admin, "bailiwick_audit_ship_lag_seconds") > 1, timeout=20)
        switch.up()
        local = tmp_path / "audit.jsonl"
        wait_until(lambda: shipped(s3, bucket) == local.read_bytes(), timeout=30)
        wait_until(lambda: metric(admin, "bailiwick_audit_ship_lag_seconds") == 0, timeout=10)
        assert metric(admin, "bailiwick_audit_shipped_bytes_total") == len(shipped(s3, bucket))
    finally:
        assert stop(process) == 0
    assert chain_verifies(shipped(s3, bucket), tmp_path).sealed
    verified = verify_store(store, bucket)   # no piece sent twice with other bytes while the store was away
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_required_shipping_refuses_requests_once_it_lags_and_serves_again_once_caught_up(
    tmp_path: Path, recorder: Recorder, store: MotoServer, switch: Switch, bucket: str, policies: Path,
) -> None:
    s3 = client(store)
    process, port, admin = serve_shipping(tmp_path, recorder.url, policies,
                                          ship_config(bucket, switch, ", required: true"))
    try:
        assert hit(port, 2) == [403, 403]   # refused by the policy (no token), not for shipping
        assert ready(admin) == 200
        wait_until(lambda: len(pieces(s3, bucket)) >= 1 and metric(admin, "bailiwick_audit_ship_lag_seconds") == 0,
                   timeout=20)   # all shipped (the gauge is 0 too before the shipper's first look)
        switch.down()
        time.sleep(4)   # past max_lag_seconds since the last upload, but no line waits: the lag is the oldest
        assert hit(port, 1) == [403]   # line's age, not the time since the last upload, so it serves
        hit(port, 1)
        wait_until(lambda: hit(port, 1) == [503], timeout=20)   # lines older than max_lag_seconds not shipped
        assert ready(admin) == 503   # refusing everything: out of its Service until it has caught up
        switch.up()
        wait_until(lambda: hit(port, 1) == [403], timeout=30)
        assert ready(admin) == 200
    finally:
        assert stop(process) == 0
    assert shipped(s3, bucket) == (tmp_path / "audit.jsonl").read_bytes()


def test_a_proxy_stopped_before_writing_any_line_stops_without_a_shipping_error(
    tmp_path: Path, recorder: Recorder, store: MotoServer, switch: Switch, bucket: str, policies: Path,
) -> None:
    # A pod rolled before its first request: an empty log has no tail, so nothing failed to ship.
    process, _, _ = serve_shipping(tmp_path, recorder.url, policies, ship_config(bucket, switch))
    assert stop(process) == 0
    log = (tmp_path / "serve.log").read_text()
    assert "could not be shipped" not in log, log
    assert (tmp_path / "audit.jsonl").read_bytes() == b""
    assert pieces(client(store), bucket) == []


def test_a_proxy_with_no_line_stops_at_once_while_the_store_is_down(
    tmp_path: Path, recorder: Recorder, switch: Switch, bucket: str, policies: Path,
) -> None:
    switch.down()   # the store does not answer from the start: the bucket's region is never checked
    process, _, _ = serve_shipping(tmp_path, recorder.url, policies, ship_config(bucket, switch))
    began = time.monotonic()
    assert stop(process) == 0
    assert time.monotonic() - began < 10   # not audit.ship.shutdown_seconds (20) of retries for nothing
    assert "could not be shipped" not in (tmp_path / "serve.log").read_text()


def test_a_bucket_in_another_region_stops_the_start(
    tmp_path: Path, recorder: Recorder, store: MotoServer, switch: Switch, policies: Path,
) -> None:
    client(store).create_bucket(Bucket="audit-elsewhere", ObjectLockEnabledForBucket=True)   # us-east-1
    process, _, _ = serve_shipping(tmp_path, recorder.url, policies, ship_config("audit-elsewhere", switch))
    try:
        assert process.wait(timeout=30) != 0
    finally:
        if process.poll() is None:
            process.kill()
    config = tmp_path / "bailiwick.yaml"
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if "bucket: audit-elsewhere" in text)
    assert (f"{config}:{line}: audit.ship.bucket: the bucket audit-elsewhere is in us-east-1, not in the proxy's "
            "region eu-west-1") in (tmp_path / "serve.log").read_text()


def test_each_worker_ships_its_own_chain(
    tmp_path: Path, recorder: Recorder, store: MotoServer, switch: Switch, bucket: str, policies: Path,
) -> None:
    s3 = client(store)
    process, port, _ = serve_shipping(tmp_path, recorder.url, policies, ship_config(bucket, switch),
                                      more="workers: 2\n")
    try:
        hit(port, 30)   # a connection each: the kernel spreads them over both workers
    finally:
        assert stop(process) == 0
    chains: dict[str, bytes] = {}
    for key in pieces(s3, bucket):
        chain = key.split("/")[0]
        chains[chain] = chains.get(chain, b"") + s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    local = sorted(p.read_bytes() for p in tmp_path.glob("audit.worker*.jsonl"))
    assert len(local) == 2
    assert sorted(chains.values()) == local
    for data in chains.values():
        assert chain_verifies(data, tmp_path).sealed
