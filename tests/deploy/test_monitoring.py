"""deploy/monitoring: the Prometheus configuration, alert rules, their unit tests and the Grafana dashboard.

Two halves:

* ``deploy/monitoring/check`` (promtool check config / check rules / test rules,
  the dashboard's expressions parsed by promtool, names checked against
  proxy/metrics.py) passes, and fails on copies of the folder broken in the ways
  that matter (a renamed metric, an expression that does not parse, a rule that
  no longer does what its test says, drift between files that must agree);
* every metric, label and label value that the rules, their test series and
  the dashboard name appears in the /metrics output of real proxies that served
  allowed, refused, dry-run and failed requests, verified tokens from a JWKS URL
  (and failed to fetch another) and rejected a policy edit. A metric renamed in
  proxy/metrics.py therefore fails here, not silently in production.

Tests that need promtool skip without it, unless ``BAILIWICK_REQUIRE_CLIENTS=1``.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import IdentityConfig, JwtIssuer, ReloadConfig
from proxy.harness import ProxyThread
from tests.conftest import (
    ARCHIVE,
    AUDIENCE,
    DUBLIN,
    EXAMPLE_POLICIES,
    ISSUER,
    SECRET,
    make_token,
    proxy_config,
    s3_client,
)
from tests.support.recorder import Recorder

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
CHECK = MONITORING / "check"
RULES = MONITORING / "rules" / "bailiwick.rules.yml"
RULE_TESTS = MONITORING / "rules" / "bailiwick.rules.test.yml"
DASHBOARD = MONITORING / "grafana" / "bailiwick.json"
# Labels Prometheus adds to every series of a target (scrape.yml's relabeling, the ServiceMonitor's).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "container", "node", "app", "service", "endpoint"})
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

_SELECTOR = re.compile(r"(?<![\w:])(bailiwick_\w+|up)(?![\w:])\s*(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(r"label_values\((.*),\s*(\w+)\s*\)", re.S)


def promtool_or_skip() -> None:
    if shutil.which("promtool") is not None:
        return
    if os.environ.get("BAILIWICK_REQUIRE_CLIENTS") == "1":
        pytest.fail("promtool is required (BAILIWICK_REQUIRE_CLIENTS=1) but missing: Debian's prometheus package")
    pytest.skip("promtool (Debian's prometheus package) is not installed")


def run_check(folder: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(CHECK)] + ([str(folder)] if folder is not None else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)


# ---- deploy/monitoring/check --------------------------------------------------------------------------

def test_the_check_passes() -> None:
    promtool_or_skip()
    checked = run_check()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert lines, checked.stderr
    assert all(line.startswith("ok ") for line in lines[:-1]), checked.stdout
    for name in ("prometheus.yml", "scrape.yml", "rules", "rule tests", "rule metrics", "dashboard",
                 "dashboard metrics", "servicemonitor.yaml", "prometheusrule.yaml"):
        assert any(line.startswith(f"ok   {name}:") for line in lines), f"{name} was not checked:\n{checked.stdout}"


def edit(relative: str, old: str, new: str, count: int = 1) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / relative
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} is not in {relative}"
        path.write_text(text.replace(old, new, count), encoding="utf-8")

    return apply


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "a metric renamed in a rule": (
        edit("rules/bailiwick.rules.yml", "max by (job, namespace, pod, instance) (bailiwick_audit_failed) == 1",
             "max by (job, namespace, pod, instance) (bailiwick_audit_failures) == 1"),
        "rule metrics"),
    "a rule that no longer does what its test says": (
        edit("rules/bailiwick.rules.yml", "          ) > 0.05\n", "          ) > 0.5\n"),
        "rule tests"),
    "an alert without a test": (
        edit("rules/bailiwick.rules.test.yml", "alertname: BailiwickTargetsMissing\n        exp_alerts: []",
             "alertname: BailiwickTargetDown\n        exp_alerts: []", count=-1),
        "rule tests"),
    "a rule that does not parse": (
        edit("rules/bailiwick.rules.yml", 'expr: up{job=~"bailiwick.*"} == 0', 'expr: up{job=~"bailiwick.*"} == == 0'),
        "rules"),
    "a dashboard expression that does not parse": (
        edit("grafana/bailiwick.json", "sum by (kind) (rate(", "sum by (kind) (rate(("),
        "dashboard"),
    "a dashboard metric that is not exported": (
        edit("grafana/bailiwick.json", "bailiwick_requests_in_flight{", "bailiwick_requests_inflight{"),
        "dashboard metrics"),
    "a dashboard without a panel for a metric": (
        edit("grafana/bailiwick.json", "increase(bailiwick_jwks_fetches_total{", "increase(bailiwick_refusals_total{"),
        "dashboard metrics"),
    "a panel on another datasource": (
        edit("grafana/bailiwick.json", '"uid": "${datasource}"', '"uid": "prometheus"'),
        "dashboard"),
    "a scrape job changed in one file only": (
        edit("prometheus/prometheus.yml", '- targets: ["bailiwick:9090"]', '- targets: ["bailiwick:9091"]'),
        "scrape.yml"),
    "the admin port selected by another name": (
        edit("prometheus/scrape.yml", "        regex: admin\n", "        regex: metrics\n"),
        "scrape.yml"),
    "a rule file that prometheus.yml does not load": (
        edit("prometheus/prometheus.yml", "  - ../rules/bailiwick.rules.yml", "  - ../rules/*.rules.yaml"),
        "prometheus.yml"),
    "the PrometheusRule left behind the rule file": (
        edit("rules/bailiwick.rules.yml", "for: 5m", "for: 6m"),
        "prometheusrule.yaml"),
    "a ServiceMonitor on another port": (
        edit("servicemonitor.yaml", "- port: admin", "- port: http"),
        "servicemonitor.yaml"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_check_fails_on_a_broken_copy(breakage: str, tmp_path: Path) -> None:
    promtool_or_skip()
    folder = tmp_path / "monitoring"
    shutil.copytree(MONITORING, folder)
    damage, failing = BREAKAGES[breakage]
    damage(folder)
    checked = run_check(folder)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert any(line.startswith(f"FAIL {failing}:") for line in checked.stdout.splitlines()), checked.stdout


# ---- names against a live proxy ------------------------------------------------------------------------

@dataclass
class Live:
    """What real proxies' /metrics showed: sample names, and each one's label names and values."""

    labels: dict[str, set[str]] = field(default_factory=dict)
    values: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def add(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.labels.setdefault(sample.name, set()).update(sample.labels)
                for label, value in sample.labels.items():
                    self.values.setdefault((sample.name, label), set()).add(value)

    @property
    def all_labels(self) -> set[str]:
        return set().union(*self.labels.values())


def problems(expressions: dict[str, str], live: Live) -> list[str]:
    """Names in PromQL expressions that the live output does not have."""
    found = []
    for where, expr in expressions.items():
        for interval, value in GRAFANA_INTERVALS.items():
            expr = expr.replace(interval, value)
        for name, matchers in _SELECTOR.findall(expr):
            if name == "up":
                continue
            if name not in live.labels:
                found.append(f"{where}: {name} is not in /metrics")
                continue
            for label, op, value in _MATCHER.findall(matchers):
                if label not in live.labels[name] | TARGET_LABELS:
                    found.append(f"{where}: {name} has no label {label}")
                elif label in live.labels[name] and op in ("=", "=~") and "$" not in value:
                    wanted = value.split("|") if op == "=~" else [value]
                    literal = [v for v in wanted if re.fullmatch(r"[\w-]+", v)]
                    missing = set(literal) - live.values.get((name, label), set())
                    if missing:
                        found.append(f"{where}: {name}{{{label}}} never has the value(s) {sorted(missing)}")
        for group in _GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in group.split(","))):
                if label not in live.all_labels | TARGET_LABELS:
                    found.append(f"{where}: no metric has the label {label} it aggregates by")
        for _, label in _LABEL_VALUES.findall(expr):
            if label not in live.all_labels | TARGET_LABELS:
                found.append(f"{where}: label_values of {label}, which no metric has")
    return found


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return {f"rule {rule.get('alert') or rule.get('record')}": rule["expr"]
            for group in groups for rule in group["rules"]}


def dashboard_expressions() -> dict[str, str]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            exprs[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            exprs[f"variable {var['name']}"] = var["query"]["query"]
    return exprs


def rule_test_series() -> dict[str, str]:
    """The input series of the rules' unit tests: they must look like what the proxy exports."""
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    series = {}
    for i, case in enumerate(tests):
        for j, item in enumerate(case.get("input_series", [])):
            # Only label names are compared: the series' values are the tests' own (kind="timeout", …).
            names_only = re.sub(r'(\w+)\s*=\s*"[^"]*"', r'\1=~"$any"', item["series"])
            series[f"rule test {i} series {j}"] = names_only
    return series


class JwksServer:
    """A JWKS URL on loopback, serving one EC key."""

    def __init__(self, public_jwk: dict[str, Any]) -> None:
        body = json.dumps({"keys": [public_jwk]}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def status(proxy: ProxyThread, token: str, operation: str, **params: Any) -> int:
    """The HTTP status of one S3 call through the proxy, made with boto3 (signed, as the store wants)."""
    client = s3_client(proxy.url, token)
    try:
        answer = getattr(client, operation)(**params)
    except ClientError as err:
        return int(err.response["ResponseMetadata"]["HTTPStatusCode"])
    if "Body" in answer:
        answer["Body"].read()
    return int(answer["ResponseMetadata"]["HTTPStatusCode"])


def scrape(proxy: ProxyThread) -> str:
    with urllib.request.urlopen(proxy.admin_url + "/metrics", timeout=5) as response:
        return str(response.read().decode())


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def live(recorder: Recorder, seeded: None, tmp_path_factory: pytest.TempPathFactory) -> Live:
    tmp = tmp_path_factory.mktemp("monitoring-live")
    key = ec.generate_private_key(ec.SECP256R1())
    public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    public.update({"kid": "k1", "alg": "ES256", "use": "sig"})
    jwks = JwksServer(public)
    with socket.socket() as closed:   # a port nothing listens on: the second issuer's fetch fails
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}/jwks.json"
    policies = tmp / "policies"
    shutil.copytree(EXAMPLE_POLICIES, policies)
    identity = IdentityConfig(jwt=(
        JwtIssuer(issuer=ISSUER, audience=AUDIENCE, algorithms=("HS256",), hs256_secret=SECRET.encode()),
        JwtIssuer(issuer="https://idp.jwks.test.invalid", audience=AUDIENCE, algorithms=("ES256",),
                  jwks_url=jwks.url, jwks_fetch_timeout_seconds=2),
        JwtIssuer(issuer="https://idp.down.test.invalid", audience=AUDIENCE, algorithms=("ES256",),
                  jwks_url=dead_url, jwks_fetch_timeout_seconds=2),
    ))
    config = replace(proxy_config(recorder.url, tmp / "audit.jsonl"), identity=identity, policies=policies,
                     reload=ReloadConfig(interval_seconds=0.2, run_tests=True))
    found = Live()
    proxy = ProxyThread(config).start()
    try:
        now = int(time.time())
        es256 = jwt.encode({"iss": "https://idp.jwks.test.invalid", "aud": AUDIENCE, "sub": "jwks-client",
                            "iat": now, "exp": now + 300, "jurisdiction": "IE"}, key, algorithm="ES256",
                           headers={"kid": "k1"})
        mail = {"Bucket": DUBLIN, "Key": "alice/inbox/1.eml"}
        assert status(proxy, make_token("IE"), "get_object", **mail) == 200            # allow
        assert status(proxy, es256, "get_object", **mail) == 200                       # allow, a JWKS key
        assert status(proxy, make_token("IE"), "put_object", Bucket=DUBLIN, Key="monitoring/put",
                      Body=b"x" * 1000) == 200                                         # bytes upstream
        assert status(proxy, make_token("US"), "get_object", **mail) == 403            # deny
        assert status(proxy, "not-a-token", "get_object", **mail) == 403               # InvalidToken
        assert status(proxy, make_token("US"), "get_object", Bucket=ARCHIVE, Key="ie/none.eml") == 404  # dry run
        # A policy edit that does not load: the failure counter.
        (policies / "broken.yaml").write_text("datasets: [\n", encoding="utf-8")
        wait_for(lambda: 'bailiwick_policy_reloads_total{result="failure"}' in scrape(proxy), "a rejected reload")
        found.add(scrape(proxy))
    finally:
        proxy.stop()
        jwks.close()
    # A proxy whose storage server is gone: upstream errors, decision "error".
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        failing = ProxyThread(proxy_config(f"http://127.0.0.1:{holder.getsockname()[1]}", tmp / "a2")).start()
        try:
            host, port = failing.url.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=10)   # one request, no retries
            conn.request("GET", f"/{DUBLIN}/alice/inbox/1.eml", headers={"X-Bailiwick-Token": make_token("IE")})
            assert conn.getresponse().status == 502
            conn.close()
            found.add(scrape(failing))
        finally:
            failing.stop()
    return found


def test_the_live_proxy_exports_what_the_scenario_produced(live: Live) -> None:
    # The fixture's requests really produced each kind of series the rules depend on.
    assert live.values[("bailiwick_requests_total", "decision")] == {"allow", "deny", "dry_run_deny", "error"}
    assert live.values[("bailiwick_policy_reloads_total", "result")] == {"success", "failure"}
    assert live.values[("bailiwick_jwks_fetches_total", "result")] == {"success", "failure"}
    assert "bailiwick_upstream_errors_total" in live.labels
    assert "bailiwick_audit_failed" in live.labels


@pytest.mark.parametrize("source", ["rules", "dashboard", "rule test series"])
def test_every_name_used_is_in_a_live_proxys_metrics(source: str, live: Live) -> None:
    expressions = {"rules": rule_expressions, "dashboard": dashboard_expressions,
                   "rule test series": rule_test_series}[source]()
    assert expressions
    assert problems(expressions, live) == []


@pytest.mark.parametrize(("expr", "complaint"), [
    ('sum(rate(bailiwick_request_total{decision="deny"}[5m]))', "bailiwick_request_total is not in /metrics"),
    ('rate(bailiwick_requests_total{jurisdiction="US"}[5m])', "has no label jurisdiction"),
    ('rate(bailiwick_requests_total{decision="denied"}[5m])', "never has the value(s) ['denied']"),
    ('rate(bailiwick_requests_total{decision=~"allow|refused"}[5m])', "never has the value(s) ['refused']"),
    ("sum by (jurisdiction) (rate(bailiwick_requests_total[5m]))", "no metric has the label jurisdiction"),
    ("label_values(bailiwick_requests_total, country)", "label_values of country"),
])
def test_the_name_check_catches_drift(expr: str, complaint: str, live: Live) -> None:
    found = problems({"probe": expr}, live)
    assert len(found) == 1, found
    assert complaint in found[0]
