"""`proxy.policy.diff`: which decisions a policy edit changes, from policy tests and audit logs, and its text."""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.audit import AuditLog, AuditRecord
from proxy.azure.api import AzureApi
from proxy.domain import Caller
from proxy.policy.decision import Outcome
from proxy.policy.diff import ChangeKind, DiffReport, compare
from proxy.policy.diffreport import as_json, format_text
from proxy.policy.engine import decide
from proxy.policy.loader import load_policy
from proxy.policy.model import LOCATION
from proxy.policy.replay import AuditReader
from proxy.policy.samples import Settings, samples_from_tests
from proxy.policy.testing import load_policy_tests
from tests.azure.helpers import SETTINGS as AZURE_SETTINGS

from .conftest import SHIPPED_POLICIES
from .test_replay import CHECKPOINT, DUBLIN_READ, LOCATION_POLICY, PLAIN_POLICY, lines, record, write_location_lines

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


# Where the caller was seen from: a location-checked rule decides audit lines and tests by it.

LOCATION_TESTS = """\
tests:
  - name: an Irish token seen from the US
    caller: {jurisdiction: IE, location: US}
    request: {action: read, resource: s3://mail-eu-dublin/alice/inbox/1.eml}
    expect: deny
  - name: an Irish token seen from Ireland
    caller: {jurisdiction: IE, location: IE}
    request: {action: read, resource: s3://mail-eu-dublin/alice/inbox/1.eml}
    expect: allow
"""


def location_diff(old_dir: Path, new_dir: Path, reader: AuditReader | None) -> DiffReport:
    """`diff` of the folders' tests, or of the audit lines alone when `reader` is given."""
    if reader is None:
        return diff(old_dir, new_dir)
    return compare(load_policy(old_dir), load_policy(new_dir), [], reader)


def location_folders(root: Path, with_tests: bool) -> tuple[Path, Path]:
    """OLD: Dublin mail read by Ireland from anywhere; NEW: the same rule with `location: same`."""
    folders = []
    for name, text in (("old", PLAIN_POLICY), ("new", LOCATION_POLICY)):
        folder = root / name
        (folder / "tests").mkdir(parents=True)
        (folder / "mail.yaml").write_text(text)
        if with_tests:
            (folder / "tests" / "mail_test.yaml").write_text(LOCATION_TESTS)
        folders.append(folder)
    return folders[0], folders[1]


@pytest.mark.parametrize(("source", "origin"), [
    pytest.param("audit", "audit.jsonl:2", id="audit lines, as the proxy wrote them with GeoIP"),
    pytest.param("tests", "old/tests/mail_test.yaml:2", id="policy tests with a caller location"),
])
def test_adding_a_location_check_refuses_exactly_the_caller_seen_from_abroad(
    tmp_path: Path, source: str, origin: str,
) -> None:
    old_dir, new_dir = location_folders(tmp_path, with_tests=source == "tests")
    reader = None
    if source == "audit":
        audit = tmp_path / "audit.jsonl"
        # Written under the policy in force (OLD): all three were allowed.
        write_location_lines(audit, load_policy(old_dir), ["IE", "US", "IE"])
        reader = AuditReader(Settings())
        reader.read("audit.jsonl", audit.read_bytes().splitlines())
    report = location_diff(old_dir, new_dir, reader)
    (change,) = report.changes
    assert change.sample.subject.location == "US"
    assert (change.kind, change.old.outcome, change.new.outcome) == (
        ChangeKind.NEWLY_REFUSED, Outcome.ALLOW, Outcome.DENY)
    assert (change.old.rule, change.new.rule) == ("local-read", LOCATION)
    assert change.sample.origin.endswith(origin)
    assert format_text(report).splitlines()[0].startswith(
        "allow -> deny  IE seen from US read s3://mail-eu-dublin/alice/inbox/1.eml  (rule local-read -> location)")
    assert as_json(report)["changes"][0]["caller"] == {"jurisdiction": "IE", "location": "US"}
    # And back: removing the check lets that caller through again, and nobody else changes.
    (back,) = location_diff(new_dir, old_dir, reader).changes
    assert (back.kind, back.sample.subject.location) == (ChangeKind.NEWLY_ALLOWED, "US")


def test_lines_without_a_location_replay_as_before(tmp_path: Path) -> None:
    """No GeoIP: no line has a location, so the location check refuses every one of them, old and new alike."""
    old_dir, new_dir = location_folders(tmp_path, with_tests=False)
    audit = tmp_path / "audit.jsonl"
    write_location_lines(audit, load_policy(old_dir), [None, None])
    reader = AuditReader(Settings())
    reader.read("audit.jsonl", audit.read_bytes().splitlines())
    report = location_diff(old_dir, new_dir, reader)
    (change,) = report.changes
    assert (change.kind, change.sample.count, change.sample.subject.location) == (ChangeKind.NEWLY_REFUSED, 2, None)
    assert format_text(report).splitlines()[0].startswith("allow -> deny  IE read ")
    assert as_json(report)["changes"][0]["caller"] == {"jurisdiction": "IE"}
