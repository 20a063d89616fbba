"""`proxy.policy.replay`: audit lines read through `AuditRecord` and rebuilt into the requests they record."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.audit import AuditLog, AuditRecord
from proxy.config import S3Settings
from proxy.domain import Access, AccessRequest, Action, Caller, Resource
from proxy.policy.decision import Outcome
from proxy.policy.diff import decide_sample
from proxy.policy.engine import decide
from proxy.policy.loader import load_policy
from proxy.policy.model import LOCATION, Policy
from proxy.policy.replay import (
    LISTING_OPERATIONS,
    SKIP_COPY_SOURCE,
    SKIP_NO_CALLER,
    SKIP_NO_REQUEST,
    SKIP_NOT_DECISION,
    SKIP_NOT_JSON,
    SKIP_SEVERAL,
    SKIP_UNREADABLE,
    AuditReader,
    read_record,
    rebuild,
    rebuild_line,
    resource_from_audit,
)
from proxy.policy.samples import Settings
from proxy.s3 import operations
from proxy.s3.api import S3Api

SKIP_REASONS = {SKIP_COPY_SOURCE, SKIP_NO_CALLER, SKIP_NO_REQUEST, SKIP_NOT_DECISION, SKIP_NOT_JSON, SKIP_SEVERAL,
                SKIP_UNREADABLE}

DUBLIN_READ = "s3://mail-eu-dublin/alice/inbox/1.eml"


def record(jurisdiction: str | None = "GB", action: str | None = "read",
           resource: str | None = "s3://mail-us-east/bob/inbox/1.eml", **request: Any) -> dict[str, Any]:
    """An audit line as the proxy writes it (docs/operations.md, "Audit log"); `request` overrides request fields."""
    return {
        "caller": {"jurisdiction": jurisdiction, "source": "10.20.0.7", "subject": "alice"},
        "dataset": "us-mail", "decision": request.pop("decision", "allow"), "decision_id": "d-1",
        "error_code": None, "policy_version": "c4422a0006f3", "reason": "",
        "request": {"action": action, "api": "s3", "copy_from": None, "method": "GET", "operation": "GetObject",
                    "resource": resource, "resources": 1, **request},
        "rule": "adequate-read", "status": 200, "time": "2026-11-23T18:00:00.000Z",
        "prev": "0" * 64, "hash": "1" * 64,
    }


AZURE_CONTAINER = "azure://devstoreaccount1/ie-mail/"

# A keyed checkpoint line, as proxy.audit writes them among the decisions.
CHECKPOINT = {"checkpoint": {"kind": "interval", "lines": 1000, "mac": "ab" * 32}, "prev": "0" * 64,
              "time": "2026-11-23T18:00:00.000Z", "hash": "1" * 64}


def one(action: Action, resource: str, *, listing: bool = False, copy_from: str | None = None) -> AccessRequest:
    source = resource_from_audit(copy_from) if copy_from is not None else None
    return AccessRequest((Access(action, resource_from_audit(resource), listing=listing),), copy_from=source)


@pytest.mark.parametrize(("line", "expected"), [
    pytest.param(record(), ("GB", one(Action.READ, "s3://mail-us-east/bob/inbox/1.eml")), id="a read"),
    pytest.param(record(decision="error"), ("GB", one(Action.READ, "s3://mail-us-east/bob/inbox/1.eml")),
                 id="allowed, then the storage server failed"),
    pytest.param(record(action="list", resource="s3://mail-us-east/bob/", operation="ListObjectsV2"),
                 ("GB", one(Action.LIST, "s3://mail-us-east/bob/", listing=True)), id="a listing"),
    pytest.param(record(action="list", resource="s3://mail-us-east", operation="HeadBucket"),
                 ("GB", one(Action.LIST, "s3://mail-us-east")), id="HeadBucket is not a listing"),
    pytest.param(record(action="admin", resource="s3://mail-us-east", operation="PutBucketPolicy"),
                 ("GB", one(Action.ADMIN, "s3://mail-us-east", listing=True)),
                 id="bucket configuration reaches the whole bucket"),
    pytest.param(record(action="admin", resource="s3://mail-us-east/k", operation="PutObjectAcl"),
                 ("GB", one(Action.ADMIN, "s3://mail-us-east/k")), id="object configuration"),
    pytest.param(record(action="list", resource="s3://mail-us-east/bob/", operation=None),
                 ("GB", one(Action.LIST, "s3://mail-us-east/bob/", listing=True)),
                 id="no operation: a list action is read as a listing"),
    pytest.param(record(action="list", resource="s3://mail-us-east/bob/", operation="ListObjectsV2", listing=False),
                 ("GB", one(Action.LIST, "s3://mail-us-east/bob/")), id="an explicit listing field wins"),
    pytest.param(record(action="list", resource=AZURE_CONTAINER, operation="ListBlobs", api="azure", listing=True),
                 ("GB", one(Action.LIST, AZURE_CONTAINER, listing=True)), id="an Azure listing"),
    pytest.param(record(action="admin", resource=AZURE_CONTAINER, operation="SetContainerACL", api="azure",
                        listing=True),
                 ("GB", one(Action.ADMIN, AZURE_CONTAINER, listing=True)), id="Azure container configuration"),
    pytest.param(record(action="list", resource=AZURE_CONTAINER, operation="ListBlobs", api="azure"),
                 ("GB", one(Action.LIST, AZURE_CONTAINER)),
                 id="an older Azure line without listing: read by S3's operations, so as no listing"),
    pytest.param(record(action="write", resource="s3://mail-us-east/x", copy_from=DUBLIN_READ),
                 ("GB", one(Action.WRITE, "s3://mail-us-east/x", copy_from=DUBLIN_READ)), id="a copy"),
    pytest.param(record(resource="s3://mail-us-east/a*b?c"), ("GB", one(Action.READ, "s3://mail-us-east/a*b?c")),
                 id="a key with a star is a key"),
    pytest.param(record(action="list", resource="s3://", operation="ListBuckets"),
                 ("GB", AccessRequest((Access(Action.LIST, Resource("s3", "", "")),))), id="ListBuckets"),
    pytest.param(record(action="read", resource=DUBLIN_READ, copy_from=DUBLIN_READ, decision="deny"),
                 SKIP_COPY_SOURCE, id="a copy refused at its source has no destination"),
    pytest.param(record(jurisdiction=None, decision="deny"), SKIP_NO_CALLER, id="refused before identity"),
    pytest.param(record(action=None, resource=None, decision="deny"), SKIP_NO_REQUEST,
                 id="refused before the request was read"),
    pytest.param(record(action="delete", resource="s3://mail-us-east/k1", resources=3), SKIP_SEVERAL,
                 id="a multi-object delete records one key of several"),
    pytest.param(record(action="delete", resource="s3://mail-us-east/k1", operation="DeleteObjects"),
                 ("GB", one(Action.DELETE, "s3://mail-us-east/k1")), id="a multi-object delete of one key"),
    pytest.param(record(action="delete", resource="s3://mail-us-east", operation="DeleteObjects", decision="deny"),
                 SKIP_NO_REQUEST, id="a multi-object delete refused before its keys were read"),
    pytest.param(record(action="erase"), SKIP_UNREADABLE, id="an unknown action"),
    pytest.param(record(resource="gs://bucket/k"), SKIP_UNREADABLE, id="an unknown scheme"),
    pytest.param({**record(), "request": {**record()["request"], "resource": 7}}, SKIP_UNREADABLE,
                 id="a resource that is not text"),
    pytest.param(CHECKPOINT, SKIP_NOT_DECISION, id="a checkpoint"),
    pytest.param({**record(), "decision": "maybe"}, SKIP_NOT_DECISION, id="an unknown decision"),
    pytest.param({k: v for k, v in record().items() if k != "decision"}, SKIP_NOT_DECISION, id="no decision"),
    pytest.param({**record(), "decision": ["allow"]}, SKIP_NOT_DECISION, id="a decision that is a list"),
    pytest.param({**record(), "decision": {"allow": 1}}, SKIP_NOT_DECISION, id="a decision that is an object"),
    pytest.param([1, 2], SKIP_NOT_JSON, id="JSON that is not an object"),
    pytest.param("a text", SKIP_NOT_JSON, id="JSON text"),
    # A decision line that is not a whole audit record is unreadable, whatever else it lacks.
    pytest.param({**record(), "request": None}, SKIP_UNREADABLE, id="no request object"),
    pytest.param({**record(), "caller": None}, SKIP_UNREADABLE, id="no caller object"),
    pytest.param({**record(), "caller": {**record()["caller"], "jurisdiction": 7}}, SKIP_UNREADABLE,
                 id="a jurisdiction that is not text"),
    pytest.param(record(jurisdiction=None, action="erase", decision="deny"), SKIP_UNREADABLE,
                 id="an unknown action, refused before identity"),
    pytest.param(record(action="erase", resources=3), SKIP_UNREADABLE, id="an unknown action of several"),
    pytest.param(record(copy_from=7), SKIP_UNREADABLE, id="a copy source that is not text"),
    pytest.param(record(resources="3"), SKIP_UNREADABLE, id="a count that is not a number"),
    pytest.param(record(operation=7), SKIP_UNREADABLE, id="an operation that is not text"),
    pytest.param(record(action="list", resource="s3://mail-us-east/bob/", operation="ListObjectsV2", listing=None),
                 SKIP_UNREADABLE, id="a null listing"),
    pytest.param({k: v for k, v in record().items() if k != "time"}, SKIP_UNREADABLE, id="a missing field"),
    pytest.param({**record(), "extra": 1, "request": {**record()["request"], "target": "x"}},
                 ("GB", one(Action.READ, "s3://mail-us-east/bob/inbox/1.eml")),
                 id="fields a newer proxy writes are ignored"),
    pytest.param({**record(), "worker": 2}, ("GB", one(Action.READ, "s3://mail-us-east/bob/inbox/1.eml")),
                 id="the writer's worker field is a chain field"),
])
def test_rebuild(line: object, expected: tuple[str, AccessRequest] | str) -> None:
    """Each line read through `AuditRecord`, then rebuilt from the record's fields."""
    assert rebuild_line(json.dumps(line)) == expected
    assert rebuild_line(json.dumps(line).encode()) == expected


@pytest.mark.parametrize(("line", "expected"), [
    pytest.param(b"{not json", SKIP_NOT_JSON, id="not JSON"),
    pytest.param(b"\x80 not UTF-8", SKIP_NOT_JSON, id="not UTF-8"),
    pytest.param(json.dumps(CHECKPOINT), SKIP_NOT_DECISION, id="a checkpoint"),
    pytest.param(json.dumps({k: v for k, v in record().items() if k != "status"}), SKIP_UNREADABLE,
                 id="a decision that is not a record"),
])
def test_read_record_says_why_a_line_is_no_record(line: bytes | str, expected: str) -> None:
    assert read_record(line) == expected


def test_read_record_reads_the_line_as_written() -> None:
    line = record(action="list", resource=AZURE_CONTAINER, operation="ListBlobs", api="azure", listing=True)
    read = read_record(json.dumps(line))
    assert isinstance(read, AuditRecord)
    assert read.to_dict() == {k: v for k, v in line.items() if k not in ("prev", "hash")}
    assert rebuild(read) == ("GB", one(Action.LIST, AZURE_CONTAINER, listing=True))


def test_listing_operations_match_the_s3_operations_table() -> None:
    prefix = {op.name for op in operations._TABLE.values() if op.scope is operations.Scope.PREFIX}
    assert prefix == LISTING_OPERATIONS
    bucket_level = [op for (level, _, _), op in operations._TABLE.items() if level is operations.Level.BUCKET]
    # Bucket-level admin operations reach the whole bucket, and nothing else does: what `rebuild` relies on.
    assert {op.scope for op in bucket_level if op.action is Action.ADMIN} == {operations.Scope.WHOLE_BUCKET}
    assert all(op.action is Action.ADMIN for op in bucket_level if op.scope is operations.Scope.WHOLE_BUCKET)


def lines(*records: object) -> list[bytes]:
    return [(r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records]


def test_audit_reader_groups_identical_requests_and_counts_what_it_skips() -> None:
    reader = AuditReader(Settings())
    reader.read("a.jsonl", lines(
        record(), record(), b"", record(jurisdiction="DE"), b"{not json", b"\x80 not UTF-8",
        CHECKPOINT, record(action=None, resource=None),
    ))
    reader.read("b.jsonl", lines(record()))
    samples = reader.samples
    assert [(s.subject.jurisdiction, s.count, s.origin) for s in samples] == [
        ("GB", 3, "a.jsonl:1"), ("DE", 1, "a.jsonl:4"),
    ]
    audit = reader.summary()
    assert (audit.files, audit.lines, audit.decisions) == (("a.jsonl", "b.jsonl"), 8, 4)
    assert audit.skipped == {SKIP_NO_REQUEST: 1, SKIP_NOT_DECISION: 1, SKIP_NOT_JSON: 2}
    assert audit.skipped_total == 4


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = [*record(), *(f"caller.{name}" for name in record()["caller"]),
          *(f"request.{name}" for name in record()["request"]), "request.listing"]


@given(path=st.sampled_from(FIELDS), value=JSON)
def test_any_value_in_any_field_is_rebuilt_or_skipped_with_a_reason(path: str, value: object) -> None:
    line = record()
    *parents, name = path.split(".")
    target = line
    for parent in parents:
        target = target[parent]
    target[name] = value
    rebuilt = rebuild_line(json.dumps(line))
    assert rebuilt in SKIP_REASONS or isinstance(rebuilt, tuple)


# ---- where the caller was seen from ----------------------------------------------------------------

# Dublin mail, read by Ireland only when GeoIP sees the caller in Ireland too (`location: same`).
LOCATION_POLICY = """\
regions:
  eu-west-1: IE
datasets:
  - name: dublin-mail
    region: eu-west-1
    resources: [s3://mail-eu-dublin]
    rules:
      - id: local-read
        allow: [read, list]
        from: [HOME]
        location: same
"""
# The same policy without the location check.
PLAIN_POLICY = LOCATION_POLICY.replace("        location: same\n", "")
S3_API = S3Api(S3Settings())


def write_location_lines(path: Path, policy: Policy, seen_from: Sequence[str | None]) -> None:
    """One line per location, written by the proxy's audit writer: Ireland's token reading Dublin mail.

    Each is decided by `policy` as the gateway decides it (`location=` the caller's observed location);
    None: no GeoIP, and the line has no ``caller.location``.
    """
    log = AuditLog(str(path))
    parsed = S3_API.parse("GET", "/mail-eu-dublin/alice/inbox/1.eml",
                          CIMultiDictProxy(CIMultiDict(Host="127.0.0.1:9000")))
    for number, location in enumerate(seen_from, start=1):
        caller = Caller("alice", "IE", "10.20.0.7", "jwt", location=location)
        decision = decide(policy, caller.jurisdiction, parsed.request, location=caller.location)
        log.write(AuditRecord.of(
            time="2026-11-23T18:00:00.000Z", decision_id=f"d-{number}", api="s3", method="GET",
            source=caller.source, caller=caller, decision=decision, parsed=parsed, refusal=None,
            status=200 if decision.forwarded else 403, policy_in_force=policy.version,
        ))
    log.close()


@pytest.mark.parametrize(("seen_from", "outcome", "rule"), [
    pytest.param("US", Outcome.DENY, LOCATION, id="an IE token seen from US: refused, as the proxy refuses it"),
    pytest.param("IE", Outcome.ALLOW, "local-read", id="an IE token seen from IE"),
    pytest.param("unknown", Outcome.DENY, LOCATION, id="an address GeoIP does not know"),
    pytest.param(None, Outcome.DENY, LOCATION, id="a line without caller.location: decided with none, as before"),
])
def test_a_replayed_line_is_decided_where_it_was_seen_from(
    tmp_path: Path, seen_from: str | None, outcome: Outcome, rule: str,
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "mail.yaml").write_text(LOCATION_POLICY)
    policy = load_policy(tmp_path / "policies")
    audit = tmp_path / "audit.jsonl"
    write_location_lines(audit, policy, [seen_from])
    written = json.loads(audit.read_text())
    assert ("location" in written["caller"]) is (seen_from is not None)
    reader = AuditReader(Settings())
    reader.read("audit.jsonl", audit.read_bytes().splitlines())
    (sample,) = reader.samples
    assert sample.subject.location == seen_from
    replayed = decide_sample(policy, sample.subject)
    assert (replayed.outcome, replayed.rule) == (outcome, rule)
    # Replayed exactly as the proxy decided it when it wrote the line.
    assert (replayed.outcome.value, replayed.rule) == (written["decision"], written["rule"])
