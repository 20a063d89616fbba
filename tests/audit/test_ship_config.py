"""`audit.ship` is read once at start: defaults, and every mistake refused with its key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import load_config
from proxy.config.auditship import AuditShipConfig, RetentionMode
from proxy.errors import ConfigError


def load(tmp_path: Path, text: str) -> AuditShipConfig | None:
    config = tmp_path / "bailiwick.yaml"
    config.write_text(text)
    return load_config(config, environ={}).audit.ship


def test_the_defaults(tmp_path: Path) -> None:
    ship = load(tmp_path, "region: eu-west-1\naudit: {path: /var/log/a.jsonl, ship: {bucket: audit-eu}}\n")
    assert ship == AuditShipConfig(bucket="audit-eu")
    assert (ship.prefix, ship.interval_seconds, ship.retention_days, ship.mode, ship.max_lag_seconds,
            ship.required) == ("", 60.0, 365, RetentionMode.COMPLIANCE, 600.0, False)
    assert load(tmp_path, "audit: {path: /var/log/a.jsonl}\n") is None


@pytest.mark.parametrize(("text", "key", "says"), [
    ("region: eu-west-1\naudit: {path: '-', ship: {bucket: b-b}}", "audit.ship", "set audit.path to a file"),
    ("region: eu-west-1\naudit: {path: null, ship: {bucket: b-b}}", "audit.ship", "set audit.path to a file"),
    ("audit: {path: /a.jsonl, ship: {bucket: b-b}}", "audit.ship.region", "set `region`"),
    ("region: eu-west-1\naudit: {path: /a.jsonl, ship: {bucket: b-b, region: us-east-1}}", "audit.ship.region",
     "stays in that region"),
    ("region: eu-west-1\naudit: {path: /a.jsonl, ship: {prefix: p/}}", "audit.ship.bucket", "is required"),
    ("region: eu-west-1\naudit: {path: /a.jsonl, ship: {bucket: Not_A_Bucket}}", "audit.ship.bucket",
     "not an S3 bucket name"),
    ("region: eu-west-1\naudit: {path: /a.jsonl, ship: {bucket: b-b, prefix: eu}}", "audit.ship.prefix",
     "must end with /"),
    ("region: eu-west-1\naudit: {path: /a.jsonl, ship: {bucket: b-b, mode: LEGAL}}", "audit.ship.mode",
     '"COMPLIANCE" or "GOVERNANCE"'),
    ("region: eu-west-1\naudit: {path: /a.jsonl, ship: {bucket: b-b, endpoint_url: s3.local}}",
     "audit.ship.endpoint_url", "scheme://host"),
    ("region: eu-west-1\naudit: {path: /a.jsonl, ship: {bucket: b-b, interval_seconds: 0}}",
     "audit.ship.interval_seconds", "between"),
    ("region: eu-west-1\naudit: {path: /a.jsonl, ship: {bucket: b-b, interval_seconds: 60, max_lag_seconds: 30}}",
     "audit.ship.max_lag_seconds", "more than audit.ship.interval_seconds"),
    ("region: eu-west-1\naudit: {path: /a.jsonl, ship: {bucket: b-b, retention_days: 0}}",
     "audit.ship.retention_days", "between"),
    ("region: eu-west-1\naudit: {path: /a.jsonl, ship: {bucket: b-b, required: yes please}}",
     "audit.ship.required", "true or false"),
    ("region: eu-west-1\naudit: {path: /a.jsonl, ship: {bucket: b-b, retention: 3}}", "audit.ship.retention",
     "unknown setting"),
])
def test_a_mistake_is_refused_naming_its_key(tmp_path: Path, text: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, text + "\n")
    assert f": {key}: " in str(refused.value)
    assert says in str(refused.value)
