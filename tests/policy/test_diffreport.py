"""`proxy.policy.diffreport`: the report of `policy diff` as text and as JSON.

The text's pieces are checked on reports built by hand (pure values); whole
reports of real policies are in tests/policy/test_diff.py and
tests/test_cli_diff.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.policy.decision import DEFAULT_DENY, Check, Decision, Outcome, Purpose
from proxy.policy.diff import Change, ChangeKind, DiffReport, compare
from proxy.policy.diffreport import as_json, format_text
from proxy.policy.loader import load_policy
from proxy.policy.model import Policy
from proxy.policy.replay import SKIP_NOT_DECISION, SKIP_NOT_JSON, AuditReader, AuditSummary
from proxy.policy.samples import Sample, Settings, Source, Subject

from .test_diff import policy_folder
from .test_replay import lines, record

READ = Access(Action.READ, Resource("s3", "mail", "a.eml"))
DEFAULTS = Settings()
NO_AUDIT = AuditSummary()


def decision(outcome: Outcome, rule: str, dataset: str | None = "mail") -> Decision:
    check = Check(READ, "IE", Purpose.TARGET, dataset, None, None, None, None, outcome, rule, "")
    return Decision(outcome, check, (check,), "v1")


def change(
    kind: ChangeKind, old: Decision, new: Decision, *, access: Access = READ, copy_from: Resource | None = None,
    source: Source = Source.AUDIT, settings: Settings = DEFAULTS, count: int = 1, jurisdiction: str = "IE",
) -> Change:
    subject = Subject(jurisdiction, AccessRequest((access,), copy_from=copy_from), settings)
    return Change(Sample(subject, source, "f.jsonl", 3, count), kind, old, new)


def report(*changes: Change, audit: AuditSummary = NO_AUDIT, settings: Settings = DEFAULTS) -> DiffReport:
    decisions = sum(c.sample.count for c in changes) + 5
    return DiffReport("OLD", "NEW", "v1", "v2", settings, changes, decisions, 5, audit)


ALLOW, DENY, DRY = Outcome.ALLOW, Outcome.DENY, Outcome.DRY_RUN_DENY


@pytest.mark.parametrize(("one", "line"), [
    pytest.param(change(ChangeKind.NEWLY_REFUSED, decision(ALLOW, "r1"), decision(DENY, "r2")),
                 "allow -> deny  IE read s3://mail/a.eml  (rule r1 -> r2)  at f.jsonl:3", id="another rule"),
    pytest.param(change(ChangeKind.NEWLY_ALLOWED, decision(DENY, "r1"), decision(DRY, "r1")),
                 "deny -> dry_run_deny  IE read s3://mail/a.eml  (rule r1)  at f.jsonl:3",
                 id="the same rule is named once"),
    pytest.param(change(ChangeKind.RULE, decision(ALLOW, "r1", "a"), decision(ALLOW, "r1", "b")),
                 "allow -> allow  IE read s3://mail/a.eml  (rule r1 in a -> r1 in b)  at f.jsonl:3",
                 id="the same rule id in another dataset"),
    pytest.param(change(ChangeKind.NEWLY_REFUSED, decision(ALLOW, "r1"), decision(DENY, DEFAULT_DENY)),
                 "allow -> deny  IE read s3://mail/a.eml  (rule r1 -> default deny in mail)  at f.jsonl:3",
                 id="the engine's checks say whose"),
    pytest.param(change(ChangeKind.NEWLY_REFUSED, decision(ALLOW, "r1"), decision(DENY, "r2"), count=4),
                 "allow -> deny  IE read s3://mail/a.eml  (rule r1 -> r2)  [x4]  at f.jsonl:3", id="a count"),
    pytest.param(change(ChangeKind.RULE, decision(ALLOW, "r1"), decision(ALLOW, "r2"),
                        access=Access(Action.LIST, Resource("s3", "mail", "p/"), listing=True)),
                 "allow -> allow  IE list s3://mail/p/ (listing)  (rule r1 -> r2)  at f.jsonl:3", id="a listing"),
    pytest.param(change(ChangeKind.RULE, decision(ALLOW, "r1"), decision(ALLOW, "r2"),
                        copy_from=Resource("s3", "src", "k")),
                 "allow -> allow  IE read s3://mail/a.eml from s3://src/k  (rule r1 -> r2)  at f.jsonl:3",
                 id="a copy"),
    pytest.param(change(ChangeKind.RULE, decision(ALLOW, "r1"), decision(ALLOW, "r2"), source=Source.TEST,
                        settings=Settings("eu-west-1", True)),
                 "allow -> allow  IE read s3://mail/a.eml [proxy region eu-west-1, unmatched allow]  "
                 "(rule r1 -> r2)  at f.jsonl:3", id="a test's own settings"),
    pytest.param(change(ChangeKind.RULE, decision(ALLOW, "r1"), decision(ALLOW, "r2"),
                        settings=Settings("eu-west-1", True)),
                 "allow -> allow  IE read s3://mail/a.eml  (rule r1 -> r2)  at f.jsonl:3",
                 id="audit requests' settings are the summary's"),
])
def test_a_change_reads_as_one_line(one: Change, line: str) -> None:
    assert format_text(report(one)).splitlines()[0] == line


def test_columns_are_aligned_up_to_a_long_resource() -> None:
    long = Access(Action.READ, Resource("s3", "mail", "k" * 70))
    text = format_text(report(
        change(ChangeKind.NEWLY_REFUSED, decision(ALLOW, "r1"), decision(DENY, "r2"), jurisdiction="DE"),
        change(ChangeKind.RULE, decision(DRY, "r1"), decision(DRY, "r2"), jurisdiction="NO", access=long),
    ))
    outcomes, target = "allow -> deny".ljust(len("dry_run_deny -> dry_run_deny")), "s3://mail/a.eml".ljust(60)
    assert text.splitlines()[:2] == [
        f"{outcomes}  DE read {target}  (rule r1 -> r2)  at f.jsonl:3",
        f"dry_run_deny -> dry_run_deny  NO read s3://mail/{'k' * 70}  (rule r1 -> r2)  at f.jsonl:3",
    ]


@pytest.mark.parametrize(("changes", "audit", "settings", "tail"), [
    pytest.param((), AuditSummary(), Settings(), [
        "compared OLD (version v1) with NEW (version v2)",
        "requests: 5 from policy tests",
        "0 of 5 decisions would change: 0 newly refused, 0 newly allowed, 0 rule changes",
    ], id="nothing changed, no audit"),
    pytest.param(
        (change(ChangeKind.DRY_RUN, decision(ALLOW, "r1"), decision(DRY, "r1"), count=2),
         change(ChangeKind.RULE, decision(ALLOW, "r1"), decision(ALLOW, "r2"))),
        AuditSummary(("a.jsonl",), 5, 3, {SKIP_NOT_DECISION: 1, SKIP_NOT_JSON: 1}), Settings("eu-west-1"), [
            "compared OLD (version v1) with NEW (version v2)",
            "requests: 5 from policy tests; 3 from audit log lines, decided with proxy region eu-west-1, "
            "unmatched deny; 2 of 5 audit log lines skipped (1 not a decision, 1 not a JSON object)",
            "3 of 8 decisions would change: 0 newly refused, 0 newly allowed, 2 dry-run changes, 1 rule change",
        ], id="dry-run changes named when there are some; audit lines read and skipped"),
])
def test_what_was_compared_and_the_summary(
    changes: tuple[Change, ...], audit: AuditSummary, settings: Settings, tail: list[str],
) -> None:
    assert format_text(report(*changes, audit=audit, settings=settings)).splitlines()[-3:] == tail


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
