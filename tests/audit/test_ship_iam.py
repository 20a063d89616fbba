"""The shipping role's IAM policy (docs/deployment.md) is exactly what the shipper's store asks of S3.

Every call the store makes (`proxy.audit.shipstore`) is recorded against moto's server and
turned into the IAM actions it needs; the documented policy must name those and no other,
on the keys under its prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.audit.shiplayout import piece_key
from proxy.audit.shipstore import ShipStore
from proxy.config.auditship import AuditShipConfig
from proxy.localstore import MotoServer
from tests.conftest import s3_client

DEPLOYMENT = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
BUCKET, PREFIX = "mail-audit-eu-west-1", "mail-app/"   # as the documented policy names them

# What each S3 call needs of IAM (a call missing here fails the test: add it, and to the docs).
_ACTIONS = {
    "GetBucketLocation": {"s3:GetBucketLocation"},
    "ListObjectsV2": {"s3:ListBucket"},
    "GetObject": {"s3:GetObject"},
    "PutObject": {"s3:PutObject"},
}


def needs(operation: str, params: dict[str, Any]) -> set[str]:
    actions = set(_ACTIONS[operation])
    if operation == "PutObject" and ("ObjectLockMode" in params or "ObjectLockRetainUntilDate" in params):
        actions.add("s3:PutObjectRetention")   # a PUT that sets its own retention
    return actions


def documented() -> list[dict[str, Any]]:
    """The statements of the shipping role's policy in docs/deployment.md."""
    section = DEPLOYMENT.read_text().split("### IAM for the shipping role", 1)[1]
    policy = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    return list(policy["Statement"])


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with MotoServer() as server:
        yield server


def test_the_shipping_roles_policy_is_exactly_the_calls_the_shipper_makes(store: MotoServer) -> None:
    s3_client(store.url).create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True,
                                       CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    ship = ShipStore(AuditShipConfig(bucket=BUCKET, prefix=PREFIX, endpoint_url=store.url), "eu-west-1")
    calls: list[tuple[str, dict[str, Any]]] = []
    ship._client.meta.events.register(   # the store's own client: every call it makes
        "provide-client-params.s3.*", lambda params, model, **_: calls.append((model.name, dict(params))))
    try:
        assert ship.bucket_region() == "eu-west-1"   # at start
        assert ship.last_piece("c") is None          # where a new chain starts
        ship.put_piece(piece_key(PREFIX, "c", 1), b"{}\n", {"bailiwick-lines": "1"})
        assert ship.last_piece("c") == (1, b"{}\n")  # where a restarted one resumes
    finally:
        ship.close()
    statements = documented()
    allowed = {action for statement in statements for action in
               ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])}
    assert set().union(*(needs(name, params) for name, params in calls)) == allowed
    assert all(statement["Effect"] == "Allow" for statement in statements)
    for name, params in calls:   # every call within the resources and prefix the policy allows
        if "Key" in params:
            assert params["Key"].startswith(PREFIX), (name, params)
        if "Prefix" in params:
            assert params["Prefix"].startswith(PREFIX), (name, params)
    resources = {statement["Resource"] for statement in statements}
    assert resources == {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/{PREFIX}*"}
    listing = next(s for s in statements if s["Action"] in ("s3:ListBucket", ["s3:ListBucket"]))
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{PREFIX}*"]}}
