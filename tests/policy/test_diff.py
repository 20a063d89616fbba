"""`proxy.policy.diff`: which decisions a policy edit changes, from policy tests and audit logs."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.audit import AuditLog, AuditRecord
from proxy.azure.api import AzureApi
from proxy.domain import Access, AccessRequest, Action, Caller, Resource
from proxy.policy.decision import Outcome
from proxy.policy.diff import (
    LISTING_OPERATIONS,
    SKIP_COPY_SOURCE,
    SKIP_NO_CALLER,
    SKIP_NO_REQUEST,
    SKIP_NOT_DECISION,
    SKIP_NOT_JSON,
    SKIP_SEVERAL,
    SKIP_UNREADABLE,
    AuditReader,
    ChangeKind,
    DiffReport,
    Settings,
    as_json,
    compare,
    format_text,
    read_record,
    rebuild,
    rebuild_line,
    resource_from_audit,
    samples_from_tests,
)
from proxy.policy.engine import decide
from proxy.policy.loader import load_policy
from proxy.policy.model import Policy
from proxy.policy.testing import load_policy_tests
from proxy.s3 import operations
from tests.azure.helpers import SETTINGS as AZURE_SETTINGS

from .conftest import SHIPPED_POLICIES

DUBLIN_READ = "s3://mail-eu-dublin/alice/inbox/1.eml"

# Edits of the shipped policies/mail.yaml, as (text, replacement) pairs.
EEA_READ = "      - id: eea-read\n        allow: [read, list]\n        from: [EEA]\n"
RULE_TO_DENY = [(EEA_READ, "      - id: eea-read\n        deny: [read, list]\n        from: [DE]\n")]
ADD_DATASET = [("datasets:\n", """datasets:
  - name: scratch
    region: eu-west-1
    resources: [s3://unknown-bucket]
    rules:
      - id: scratch-local
        allow: [read]
        from: [HOME]
""")]
RENAME_RULE = [("id: local-full-access", "id: dublin-local")]
ARCHIVE_ENFORCED = [("    mode: dry-run\n", "")]
ARCHIVE_NO_ALLOW = [("      - id: archive-local-full-access\n        allow: [read, list, write, delete]\n"
                     "        from: [HOME]\n      - id: archive-eea-read\n        allow: [read, list]\n"
                     "        from: [EEA]\n", "")]
DUBLIN_DRY_RUN = [("    region: eu-west-1\n    resources:\n      - s3://mail-eu-dublin\n",
                   "    region: eu-west-1\n    mode: dry-run\n    resources:\n      - s3://mail-eu-dublin\n")]

Edits = Sequence[tuple[str, str]]
# One expected change: kind, jurisdiction, action, resource, old rule, new rule.
Expected = tuple[ChangeKind, str, str, str, str, str]


def policy_folder(root: Path, name: str, edits: Edits = ()) -> Path:
    """A copy of the shipped policies (with their tests) under `root`, with `edits` made to mail.yaml."""
    folder = root / name
    shutil.copytree(SHIPPED_POLICIES, folder)
    mail = folder / "mail.yaml"
    text = mail.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, f"edit does not apply: {old!r}"
        text = text.replace(old, new, 1)
    mail.write_text(text, encoding="utf-8")
    return folder


def diff(old_dir: Path, new_dir: Path, audit: AuditReader | None = None) -> DiffReport:
    """What `bailiwick policy diff OLD NEW` compares: both folders' tests, then the audit samples."""
    old, new = load_policy(old_dir), load_policy(new_dir)
    cases = [*load_policy_tests(old, old_dir), *load_policy_tests(new, new_dir)]
    return compare(old, new, samples_from_tests(cases), audit, old_name="old", new_name="new")


def summary(report: DiffReport) -> list[Expected]:
    rows: list[Expected] = []
    for change in report.changes:
        subject = change.sample.subject
        access = subject.request.accesses[0]
        rows.append((change.kind, subject.jurisdiction, access.action.value, str(access.resource),
                     change.old.rule, change.new.rule))
    return rows


# Policy edits, judged by the shipped policy tests


@pytest.mark.parametrize(("edits", "expected"), [
    pytest.param(RULE_TO_DENY, [
        (ChangeKind.NEWLY_REFUSED, "DE", "list", "s3://mail-eu-dublin", "eea-read", "eea-read"),
        (ChangeKind.NEWLY_REFUSED, "DE", "read", DUBLIN_READ, "eea-read", "eea-read"),
        (ChangeKind.NEWLY_REFUSED, "NO", "read", DUBLIN_READ, "eea-read", "default deny"),
    ], id="a rule turned to deny refuses the requests it covers"),
    pytest.param(ADD_DATASET, [
        (ChangeKind.NEWLY_ALLOWED, "IE", "read", "s3://unknown-bucket/x", "unmatched", "scratch-local"),
        (ChangeKind.RULE, "IE", "read", "s3://unknown-bucket/x", "unmatched: allow", "scratch-local"),
    ], id="a new dataset decides requests that were unmatched"),
    pytest.param(ARCHIVE_ENFORCED, [
        (ChangeKind.NEWLY_REFUSED, "US", "list", "s3://archive", "archive-no-us-access", "archive-no-us-access"),
        (ChangeKind.NEWLY_REFUSED, "US", "read", "s3://archive/ie/2019/alice.mbox",
         "archive-no-us-access", "archive-no-us-access"),
    ], id="a dry-run dataset enforced"),
    pytest.param(ARCHIVE_NO_ALLOW, [
        (ChangeKind.DRY_RUN, "IE", "read", "s3://archive/ie/2019/alice.mbox",
         "archive-local-full-access", "default deny"),
    ], id="allow rules removed from a dry-run dataset: forwarded either way, now recorded as would-deny"),
    pytest.param([], [], id="identical policies change nothing"),
])
def test_policy_edits(tmp_path: Path, edits: Edits, expected: list[Expected]) -> None:
    report = diff(policy_folder(tmp_path, "old"), policy_folder(tmp_path, "new", edits))
    assert summary(report) == expected
    assert report.changed == len(expected)
    assert report.decisions == report.test_requests > 0


def test_identical_policies_report_nothing(tmp_path: Path) -> None:
    report = diff(policy_folder(tmp_path, "old"), policy_folder(tmp_path, "new"))
    assert report.changes == ()
    assert report.old_version == report.new_version
    assert format_text(report).splitlines()[-1] == (
        f"0 of {report.decisions} decisions would change: 0 newly refused, 0 newly allowed, 0 rule changes"
    )


def test_renaming_a_rule_is_a_rule_change_for_every_request_it_decides(tmp_path: Path) -> None:
    report = diff(policy_folder(tmp_path, "old"), policy_folder(tmp_path, "new", RENAME_RULE))
    kinds = {(c.kind, c.old.outcome, c.new.outcome, c.old.rule, c.new.rule) for c in report.changes}
    assert kinds == {(ChangeKind.RULE, Outcome.ALLOW, Outcome.ALLOW, "local-full-access", "dublin-local")}
    # The Irish client's read, list, write and delete, the copy into Dublin, and the proxy in eu-west-1.
    assert report.changed == 6
    assert format_text(report).splitlines()[-1] == (
        f"6 of {report.decisions} decisions would change: 0 newly refused, 0 newly allowed, 6 rule changes"
    )


def test_a_dataset_put_in_dry_run_forwards_what_it_denied(tmp_path: Path) -> None:
    report = diff(policy_folder(tmp_path, "old"), policy_folder(tmp_path, "new", DUBLIN_DRY_RUN))
    rows = summary(report)
    assert (ChangeKind.NEWLY_ALLOWED, "US", "read", DUBLIN_READ, "no-us-access", "no-us-access") in rows
    assert {(c.old.outcome, c.new.outcome) for c in report.changes if c.kind is ChangeKind.NEWLY_ALLOWED} == {
        (Outcome.DENY, Outcome.DRY_RUN_DENY)
    }
    # A copy of Dublin mail into the US bucket is still refused, now by the US bucket's own default deny.
    assert (ChangeKind.RULE, "IE", "write", "s3://mail-us-east/x", "no-us-access", "default deny") in rows
    # Same rule, only the outcome changed: the rule is named once.
    text = format_text(report)
    assert re.search(r"^deny -> dry_run_deny +US read +s3://mail-eu-dublin/alice/inbox/1\.eml +"
                     r"\(rule no-us-access\)  at ", text, re.MULTILINE)
    assert re.search(r"\(rule no-us-access -> default deny in us-mail\)  at ", text)


def test_tests_written_in_both_folders_count_once(tmp_path: Path) -> None:
    old_dir = policy_folder(tmp_path, "old")
    policy = load_policy(old_dir)
    cases = load_policy_tests(policy, old_dir)
    samples = samples_from_tests([*cases, *cases])
    assert len(samples) == len(samples_from_tests(cases)) < len(cases)  # the shipped tests repeat some requests
    assert samples[0].name == cases[0].name
    assert samples[0].origin == cases[0].location


# Audit lines


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
    pytest.param({**record(), "extra": 1}, SKIP_UNREADABLE, id="an unknown field"),
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
    pytest.param(json.dumps({**record(), "extra": 1}), SKIP_UNREADABLE, id="a decision that is not a record"),
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


# Ireland may do anything with its Azure container; the new policy holds a dataset of secrets inside it that
# Ireland may only read.
AZURE_OLD = """\
regions:
  eu-west-1: IE
datasets:
  - name: dublin-mail
    region: eu-west-1
    resources: [azure://devstoreaccount1/ie-mail]
    rules:
      - id: local-full-access
        allow: [read, list, write, delete, admin]
        from: [HOME]
"""
AZURE_SECRETS = """\
  - name: dublin-secrets
    region: eu-west-1
    resources: [azure://devstoreaccount1/ie-mail/secret/]
    rules:
      - id: secrets-read
        allow: [read]
        from: [HOME]
"""


@pytest.mark.parametrize(("method", "target", "action"), [
    pytest.param("GET", "/devstoreaccount1/ie-mail?restype=container&comp=list", "list", id="List Blobs"),
    pytest.param("GET", "/devstoreaccount1/ie-mail?restype=container&comp=list&prefix=sec", "list",
                 id="List Blobs with a prefix"),
    pytest.param("PUT", "/devstoreaccount1/ie-mail?restype=container&comp=acl", "admin", id="Set Container ACL"),
])
def test_an_azure_listing_reaches_a_dataset_added_inside_its_container(
    tmp_path: Path, method: str, target: str, action: str,
) -> None:
    """Lines as the proxy writes them for Azure, from the Azure request reader and the engine."""
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    for folder, text in ((old_dir, AZURE_OLD), (new_dir, AZURE_OLD + AZURE_SECRETS)):
        folder.mkdir()
        (folder / "mail.yaml").write_text(text)
    old, new = load_policy(old_dir), load_policy(new_dir)
    parsed = AzureApi(AZURE_SETTINGS).parse(method, target, CIMultiDictProxy(CIMultiDict(Host="127.0.0.1:10000")))
    caller = Caller("alice", "IE", "10.20.0.7", "jwt")
    decision = decide(old, "IE", parsed.request)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.write(AuditRecord.of(
        time="2026-11-23T18:00:00.000Z", decision_id="d-1", api="azure", method=method, source=caller.source,
        caller=caller, decision=decision, parsed=parsed, refusal=None, status=200, policy_in_force=old.version,
    ))
    log.close()
    reader = AuditReader(Settings())
    reader.read("audit.jsonl", path.read_bytes().splitlines())
    report = compare(old, new, [], reader)
    resource = str(parsed.request.accesses[0].resource)
    assert summary(report) == [
        (ChangeKind.NEWLY_REFUSED, "IE", action, resource, "local-full-access", "default deny"),
    ]
    assert format_text(report).splitlines()[0] == (
        f"allow -> deny  IE {action} {resource} (listing)  "
        "(rule local-full-access -> default deny in dublin-secrets)  at audit.jsonl:1"
    )


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


@pytest.mark.parametrize(("settings", "changed"), [
    pytest.param(Settings(), 3, id="GB's repeated reads are newly refused"),
    pytest.param(Settings(proxy_region="eu-west-1"), 0, id="a proxy in Dublin refuses US data either way"),
])
def test_repeated_audit_lines_are_one_change_with_a_count(
    tmp_path: Path, settings: Settings, changed: int
) -> None:
    old_dir = policy_folder(tmp_path, "old")
    new_dir = policy_folder(tmp_path, "new", [("from: [ADEQUATE]", "from: [EEA]")])
    reader = AuditReader(settings)
    reader.read("audit.jsonl", lines(record(), record(jurisdiction="IE"), record(), record(), CHECKPOINT))
    report = compare(load_policy(old_dir), load_policy(new_dir), [], reader,
                     old_name="old", new_name="new", settings=settings)
    assert report.decisions == 4
    assert report.changed == changed
    text = format_text(report)
    if changed:
        assert summary(report) == [
            (ChangeKind.NEWLY_REFUSED, "GB", "read", "s3://mail-us-east/bob/inbox/1.eml",
             "adequate-read", "default deny"),
        ]
        assert text.splitlines()[0] == (
            "allow -> deny  GB read s3://mail-us-east/bob/inbox/1.eml  "
            "(rule adequate-read -> default deny in us-mail)  [x3]  at audit.jsonl:1"
        )
    assert text.splitlines()[-2].endswith("; 1 of 5 audit log lines skipped (1 not a decision)")
    assert text.splitlines()[-1] == (
        f"{changed} of 4 decisions would change: {changed} newly refused, 0 newly allowed, 0 rule changes"
    )


def test_changes_come_in_a_stable_order(tmp_path: Path) -> None:
    old_dir = policy_folder(tmp_path, "old")
    new_dir = policy_folder(tmp_path, "new", [*RULE_TO_DENY, *RENAME_RULE])
    report = diff(old_dir, new_dir)
    kinds = [c.kind for c in report.changes]
    assert kinds == sorted(kinds, key=list(ChangeKind).index)
    reversed_report = compare(
        load_policy(old_dir), load_policy(new_dir),
        list(reversed(samples_from_tests(load_policy_tests(load_policy(old_dir), old_dir)))),
    )
    assert [c.sample.subject for c in reversed_report.changes] == [c.sample.subject for c in report.changes]


def test_json_output(tmp_path: Path) -> None:
    reader = AuditReader(Settings(unmatched_allow=True))
    reader.read("audit.jsonl", lines(record(), record(), [1]))
    old: Policy = load_policy(policy_folder(tmp_path, "old"))
    new: Policy = load_policy(policy_folder(tmp_path, "new", [("from: [ADEQUATE]", "from: [EEA]")]))
    data = as_json(compare(old, new, [], reader, old_name="old", new_name="new"))
    json.dumps(data)  # serialisable as it is
    assert data["settings"] == {"region": None, "unmatched": "allow"}
    assert data["summary"] == {"decisions": 2, "changed": 2, "newly_refused": 2, "newly_allowed": 0,
                               "dry_run_changes": 0, "rule_changes": 0}
    assert data["sources"]["audit"] == {"files": ["audit.jsonl"], "lines": 3, "decisions": 2, "skipped": 1,
                                        "skipped_by_reason": {SKIP_NOT_JSON: 1}}
    [change] = data["changes"]
    assert change["change"] == "newly refused"
    assert change["count"] == 2
    assert change["origin"] == {"file": "audit.jsonl", "line": 1}
    assert change["request"] == {"action": "read", "resource": "s3://mail-us-east/bob/inbox/1.eml",
                                 "copy_from": None, "listing": False}
    assert (change["old"]["decision"], change["old"]["rule"]) == ("allow", "adequate-read")
    assert (change["new"]["decision"], change["new"]["dataset"], change["new"]["rule"]) == (
        "deny", "us-mail", "default deny")
