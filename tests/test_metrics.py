"""``/metrics`` on the admin listener: the figures docs/operations.md lists, with bounded labels.

A proxy of its own per test, so counts are exact: allowed and refused reads,
a jurisdiction the policy does not name (labelled ``other``), bytes each way,
the policy's info, and the output accepted by Prometheus's own ``promtool``.
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from proxy.audit import AuditOutcome
from proxy.harness import ProxyThread
from proxy.metrics import Metrics
from tests.conftest import DUBLIN, make_token, proxy_config, s3_client
from tests.support.recorder import Recorder

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def proxy(recorder: Recorder, seeded: None, tmp_path: Path) -> Iterator[ProxyThread]:
    running = ProxyThread(proxy_config(recorder.url, tmp_path / "audit.jsonl")).start()
    yield running
    running.stop()


def scrape(proxy: ProxyThread) -> tuple[str, Samples]:
    with urllib.request.urlopen(proxy.admin_url + "/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_action_decision_jurisdiction_and_region(proxy: ProxyThread) -> None:
    for _ in range(3):
        s3_client(proxy.url, make_token("IE")).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")["Body"].read()
    for jurisdiction in ("US", "AQ"):   # AQ: named nowhere in the example policy
        with pytest.raises(ClientError):
            s3_client(proxy.url, make_token(jurisdiction)).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    _, samples = scrape(proxy)
    counted = "bailiwick_requests_total"
    common = {"api": "s3", "action": "read", "data_region": "eu-west-1"}
    assert value(samples, counted, decision="allow", caller_jurisdiction="IE", **common) == 3
    assert value(samples, counted, decision="deny", caller_jurisdiction="US", **common) == 1
    assert value(samples, counted, decision="deny", caller_jurisdiction="other", **common) == 1
    assert value(samples, "bailiwick_request_duration_seconds_count", api="s3", decision="allow") == 3
    assert value(samples, "bailiwick_upstream_duration_seconds_count", api="s3", status_class="2xx") == 3
    assert value(samples, "bailiwick_decision_duration_seconds_count") == 5
    assert value(samples, "bailiwick_refusals_total", api="s3", code="AccessDenied") == 2
    assert value(samples, "bailiwick_bytes_total", direction="downstream") == 3 * len(b"Dublin mail")
    assert value(samples, "bailiwick_requests_in_flight") == 0


def test_uploads_count_their_bytes_upstream(proxy: ProxyThread) -> None:
    s3_client(proxy.url, make_token("IE")).put_object(Bucket=DUBLIN, Key="metrics/put", Body=b"x" * 70000)
    _, samples = scrape(proxy)
    assert value(samples, "bailiwick_bytes_total", direction="upstream") == 70000


def test_policy_and_refusals_before_a_decision_are_reported(proxy: ProxyThread) -> None:
    with pytest.raises(ClientError):
        s3_client(proxy.url, "not-a-token").get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    _, samples = scrape(proxy)
    assert proxy.running is not None
    assert proxy.running.gateway.policy is not None
    policy = proxy.running.gateway.policy
    assert value(samples, "bailiwick_policy_info", version=policy.version, datasets=str(len(policy.datasets))) == 1
    assert value(samples, "bailiwick_policy_reloads_total", result="success") == 1
    assert value(samples, "bailiwick_policy_last_reload_success_timestamp_seconds") > 0
    assert value(samples, "bailiwick_requests_total", api="s3", action="other", decision="deny",
                 caller_jurisdiction="other", data_region="other") == 1
    assert value(samples, "bailiwick_refusals_total", api="s3", code="InvalidToken") == 1


def test_an_unreachable_upstream_is_counted(recorder: Recorder, tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        running = ProxyThread(proxy_config(f"http://127.0.0.1:{holder.getsockname()[1]}", tmp_path / "a")).start()
        try:
            host, port = running.url.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=10)   # one request, no retries
            conn.request("GET", f"/{DUBLIN}/alice/inbox/1.eml", headers={"X-Bailiwick-Token": make_token("IE")})
            assert conn.getresponse().status == 502
            conn.close()
            _, samples = scrape(running)
        finally:
            running.stop()
    assert value(samples, "bailiwick_upstream_errors_total", api="s3", kind="failure") == 1
    assert value(samples, "bailiwick_requests_total", api="s3", action="read", decision="error",
                 caller_jurisdiction="IE", data_region="eu-west-1") == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus package) is not installed")
def test_promtool_accepts_the_output(proxy: ProxyThread) -> None:
    s3_client(proxy.url, make_token("IE")).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")["Body"].read()
    text, _ = scrape(proxy)
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(("decision", "label"), [
    *((outcome.value, outcome.value) for outcome in AuditOutcome),
    ("maybe", "error"),   # never a label of its own: the series stay bounded
])
def test_the_decision_label_is_an_audit_outcome(decision: str, label: str) -> None:
    metrics = Metrics("s3")
    metrics.request(action="read", decision=decision, caller_jurisdiction="IE", data_region=None, duration=0.001,
                    code=None)
    samples = {s.labels["decision"] for family in text_string_to_metric_families(metrics.exposition().decode())
               if family.name == "bailiwick_requests" for s in family.samples if s.name == "bailiwick_requests_total"}
    assert samples == {label}
