"""Which decisions a policy edit would change, for `bailiwick policy diff OLD NEW`.

A policy edit is easy to review as text and hard to review as behaviour: a
new group member, a rule moved above another, a dataset whose pattern now
covers a bucket that used to be unmatched, each changes decisions far from
the line that was edited. Before shipping an edit, an operator wants the
answer to "which requests would now be refused, which let through, and which
decided by another rule?". This module answers it by deciding the same
requests under both policies with the engine the proxy uses (`decide`), and
keeping those whose outcome (allow, deny, dry_run_deny) or deciding rule
(with its dataset) differ.

The requests come from two places:

- the policy tests of both folders (`proxy.policy.testing`), each with the
  settings it is written with (``proxy_region``, ``unmatched``);
- audit logs (docs/operations.md, "Audit log"), each decision line rebuilt into the
  request it records (`rebuild`), decided with the settings the operator
  gives (the proxy's region, what it does with unmatched resources).
  Identical requests are grouped, with a count. Lines that are not decisions
  (checkpoints, anything else) and decisions that cannot be turned back into
  a request are skipped and counted by reason, never guessed: a request
  refused before the caller was identified or before it was read has no
  caller or no resource; a copy refused at its source records the source,
  not the destination; a multi-object delete records only the key that
  decided.

Everything here is pure: it reads no files and prints nothing. The command
line (`proxy.cli`) loads the policies and tests, feeds each audit file's lines
to an `AuditReader`, and prints `format_text` or `as_json` of the `DiffReport`
that `compare` returns.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from proxy.audit.record import AuditOutcome, AuditRecord, RecordedRequest
from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.policy.decision import DEFAULT_DENY, Decision, Outcome
from proxy.policy.engine import decide
from proxy.policy.model import REGION, UNMATCHED_DESTINATION, Policy
from proxy.policy.testing import PolicyTestCase

# Why an audit line was skipped (the keys of `AuditReader.skipped`).
SKIP_NOT_JSON = "not a JSON object"
SKIP_NOT_DECISION = "not a decision"
SKIP_NO_CALLER = "no caller jurisdiction"
SKIP_NO_REQUEST = "no request resource"
SKIP_UNREADABLE = "unreadable request"
SKIP_COPY_SOURCE = "copy refused at its source"
SKIP_SEVERAL = "several resources"

# The audit log's "decision" values (docs/operations.md): "error" lines were decided (and allowed) before the
# storage server failed, or were refused without a policy; either way the request can be decided again.
RECORDED_DECISIONS = frozenset(o.value for o in AuditOutcome)

# For lines written before the audit log recorded ``request.listing``, the fallback guess (`_listing`):
# S3 operations whose access is a listing (proxy/s3/operations.py, Scope.PREFIX): the key is a prefix and
# every dataset nested under it is reached. Bucket-level admin operations (Scope.WHOLE_BUCKET) reach the
# whole bucket too; they are recognised by their action and key (see `_listing`). The tests hold this
# list to the operations table.
LISTING_OPERATIONS = frozenset({"ListObjects", "ListObjectsV2", "ListObjectVersions", "ListMultipartUploads"})

_MULTI_DELETE = "DeleteObjects"
_SCHEMES = ("s3", "azure")
_ACTION_ORDER = {a: i for i, a in enumerate(Action)}
# Named checks of the engine that are reported per dataset: "default deny" alone does not say whose.
_PER_DATASET_CHECKS = frozenset({DEFAULT_DENY, REGION, UNMATCHED_DESTINATION})
# A resource column wider than this is not padded: one long key must not push every rule off screen.
_MAX_PADDED_TARGET = 60


@dataclass(frozen=True, slots=True)
class Settings:
    """The proxy settings a request is decided with (`decide`'s `proxy_region` and `unmatched_allow`)."""

    proxy_region: str | None = None
    unmatched_allow: bool = False


@dataclass(frozen=True, slots=True)
class Subject:
    """One request to decide under both policies: who asks, for what, with which settings."""

    jurisdiction: str
    request: AccessRequest
    settings: Settings = Settings()


class Source(StrEnum):
    TEST = "test"
    AUDIT = "audit"


@dataclass(frozen=True, slots=True)
class Sample:
    """A subject and where it came from: a policy test, or `count` identical audit lines.

    `file` and `line` are where it was first seen; `name` is the test's name
    (None for audit lines).
    """

    subject: Subject
    source: Source
    file: str
    line: int
    count: int = 1
    name: str | None = None

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"


class ChangeKind(StrEnum):
    NEWLY_REFUSED = "newly refused"        # now deny, forwarded before
    NEWLY_ALLOWED = "newly allowed"        # now forwarded, denied before
    DRY_RUN = "dry-run change"             # allow <-> dry_run_deny: forwarded either way, recorded differently
    RULE = "rule change"                   # same outcome, another rule (or dataset) decides


_KIND_ORDER = {kind: i for i, kind in enumerate(ChangeKind)}


@dataclass(frozen=True, slots=True)
class Change:
    """A sample whose decision differs between the old and the new policy."""

    sample: Sample
    kind: ChangeKind
    old: Decision
    new: Decision


@dataclass(frozen=True, slots=True)
class AuditSummary:
    """What the audit files held: lines read, decisions rebuilt, lines skipped by reason."""

    files: tuple[str, ...] = ()
    lines: int = 0
    decisions: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


@dataclass(frozen=True, slots=True)
class DiffReport:
    """The outcome of `compare`: every change, in a stable order, and what was compared."""

    old_name: str
    new_name: str
    old_version: str
    new_version: str
    settings: Settings
    changes: tuple[Change, ...]
    decisions: int          # decisions compared: distinct test requests plus audit lines rebuilt
    test_requests: int      # distinct requests from the policy tests
    audit: AuditSummary

    def count(self, kind: ChangeKind) -> int:
        """Decisions (audit lines weighted by their count) that changed in this way."""
        return sum(c.sample.count for c in self.changes if c.kind is kind)

    @property
    def changed(self) -> int:
        return sum(c.sample.count for c in self.changes)


# Requests from policy tests


def samples_from_tests(cases: Iterable[PolicyTestCase]) -> list[Sample]:
    """One sample per distinct request (with its settings) among `cases`, in the order first met.

    The old and the new folder usually hold the same tests; a request written
    twice is one decision, reported at the test that first wrote it.
    """
    samples: dict[Subject, Sample] = {}
    for case in cases:
        settings = Settings(case.proxy_region, case.unmatched_allow)
        subject = Subject(case.jurisdiction, case.request, settings)
        if subject not in samples:
            samples[subject] = Sample(subject, Source.TEST, case.file, case.line, name=case.name)
    return list(samples.values())


# Requests from audit logs


def resource_from_audit(text: str) -> Resource:
    """The `Resource` whose text (``str(resource)``) the audit log recorded.

    The exact inverse of `Resource.__str__`, rather than the policy tests'
    `parse_resource`: the proxy records the keys it was sent, and a key may
    hold characters (such as ``*``) that a test's resource refuses as a likely
    typo. Raises `ValueError` for text that is not ``s3://`` or ``azure://``.
    """
    for scheme in _SCHEMES:
        marker = f"{scheme}://"
        if text.startswith(marker):
            bucket, _, key = text[len(marker):].partition("/")
            return Resource(scheme, bucket, key)
    raise ValueError(f'"{text}" is not an s3:// or azure:// resource')


def read_record(line: bytes | str) -> AuditRecord | str:
    """The decision an audit line records (`AuditRecord.from_dict`), or why it is skipped.

    The reason is `SKIP_NOT_JSON` (not text, not JSON, or not an object),
    `SKIP_NOT_DECISION` (a checkpoint, or any line whose ``decision`` is not
    one the proxy records) or `SKIP_UNREADABLE`: a decision line that is not
    a whole audit record (a field missing, unknown or of the wrong type, an
    unknown action) is not trusted in part, whatever else it lacks.
    """
    try:
        fields: object = json.loads(line)
    except ValueError:  # also bytes that are not UTF-8 (UnicodeDecodeError)
        return SKIP_NOT_JSON
    if not isinstance(fields, dict):
        return SKIP_NOT_JSON
    try:
        return AuditRecord.from_dict(fields)
    except ValueError:
        # The record cannot say which lines are not decisions at all: the line's own ``decision`` does.
        return SKIP_NOT_DECISION if fields.get("decision") not in RECORDED_DECISIONS else SKIP_UNREADABLE


def rebuild(record: AuditRecord) -> tuple[str, AccessRequest] | str:
    """The caller's jurisdiction and the request an audit record holds, or why it cannot be rebuilt.

    The record names the access that decided (``request.action``,
    ``request.resource``), whether it was a listing (``request.listing``) and
    the source of a copy (``request.copy_from``). The reason returned is one
    of the ``SKIP_*`` constants.
    """
    jurisdiction = record.caller.jurisdiction
    if not jurisdiction:
        return SKIP_NO_CALLER
    request = record.request
    action = request.action
    if action is None or request.resource is None:
        return SKIP_NO_REQUEST
    if request.resources > 1:
        return SKIP_SEVERAL
    try:
        resource = resource_from_audit(request.resource)
        copy_from = resource_from_audit(request.copy_from) if request.copy_from is not None else None
    except ValueError:
        return SKIP_UNREADABLE
    if request.operation == _MULTI_DELETE and not resource.key:
        # Refused before its body was read: the keys it would delete were never known.
        return SKIP_NO_REQUEST
    if copy_from is not None and action is not Action.WRITE:
        # Refused at the copy source: the line holds the source's read, and the destination is not recorded.
        return SKIP_COPY_SOURCE
    listing = _listing(request, action, resource)
    return jurisdiction, AccessRequest((Access(action, resource, listing=listing),), copy_from=copy_from)


def rebuild_line(line: bytes | str) -> tuple[str, AccessRequest] | str:
    """`rebuild` of the record `line` holds, or why the line is skipped (`read_record`'s reasons too)."""
    record = read_record(line)
    return record if isinstance(record, str) else rebuild(record)


def _listing(request: RecordedRequest, action: Action, resource: Resource) -> bool:
    """Whether the recorded access is a listing (its key a prefix): as the line says it (``request.listing``).

    Lines written before the proxy recorded it are read as the S3 request
    reader decides, from the S3 operation; other storage APIs' operations are
    then read as no listing.
    """
    if request.listing is not None:
        return request.listing
    # Bucket configuration governs every key in the bucket, so it reaches every dataset nested in it.
    whole_bucket = action is Action.ADMIN and bool(resource.bucket) and not resource.key
    if request.operation is not None:
        return request.operation in LISTING_OPERATIONS or whole_bucket
    # No operation recorded: read a list action as a listing, the stricter reading (nested datasets count).
    return action is Action.LIST or whole_bucket


class AuditReader:
    """Rebuilds the requests of audit logs, grouping identical ones; give it each file's lines with `read`.

    Reads nothing itself: the caller opens the files and passes their lines
    (bytes or text), so a file that cannot be opened is the caller's error to
    report. Blank lines are ignored; every other line is either a decision
    counted in a sample or skipped with a reason.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.files: list[str] = []
        self.lines = 0
        self.decisions = 0
        self.skipped: Counter[str] = Counter()
        self._samples: dict[Subject, Sample] = {}

    def read(self, name: str, lines: Iterable[bytes | str]) -> None:
        """Take the lines of one audit file, shown as `name` in the report."""
        self.files.append(name)
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            self.lines += 1
            rebuilt = rebuild_line(raw)
            if isinstance(rebuilt, str):
                self.skipped[rebuilt] += 1
                continue
            self.decisions += 1
            jurisdiction, request = rebuilt
            subject = Subject(jurisdiction, request, self.settings)
            seen = self._samples.get(subject)
            if seen is None:
                self._samples[subject] = Sample(subject, Source.AUDIT, name, number)
            else:
                self._samples[subject] = Sample(subject, Source.AUDIT, seen.file, seen.line, seen.count + 1)

    @property
    def samples(self) -> list[Sample]:
        """One sample per distinct request, with the number of lines that recorded it."""
        return list(self._samples.values())

    def summary(self) -> AuditSummary:
        return AuditSummary(tuple(self.files), self.lines, self.decisions, dict(sorted(self.skipped.items())))


# Comparing


def decide_sample(policy: Policy, subject: Subject) -> Decision:
    """`decide` for `subject`, with its settings."""
    settings = subject.settings
    return decide(
        policy, subject.jurisdiction, subject.request,
        proxy_region=settings.proxy_region, unmatched_allow=settings.unmatched_allow,
    )


def classify(old: Decision, new: Decision) -> ChangeKind | None:
    """How the decision changed from `old` to `new`; None when outcome, dataset and rule are the same."""
    if old.outcome is new.outcome:
        if (old.dataset, old.rule) == (new.dataset, new.rule):
            return None
        return ChangeKind.RULE
    if new.outcome is Outcome.DENY:
        return ChangeKind.NEWLY_REFUSED
    if old.outcome is Outcome.DENY:
        return ChangeKind.NEWLY_ALLOWED
    return ChangeKind.DRY_RUN


def compare(
    old: Policy,
    new: Policy,
    tests: Iterable[Sample] = (),
    audit: AuditReader | None = None,
    *,
    old_name: str = "OLD",
    new_name: str = "NEW",
    settings: Settings | None = None,
) -> DiffReport:
    """Decide every sample under `old` and under `new`; keep the ones whose decision changed.

    `settings` are the ones audit requests were decided with, for the report
    (by default the audit reader's, else the defaults).
    """
    test_list = list(tests)
    samples = test_list + (audit.samples if audit is not None else [])
    changes: list[Change] = []
    for sample in samples:
        before, after = decide_sample(old, sample.subject), decide_sample(new, sample.subject)
        kind = classify(before, after)
        if kind is not None:
            changes.append(Change(sample, kind, before, after))
    changes.sort(key=_change_order)
    summary = audit.summary() if audit is not None else AuditSummary()
    return DiffReport(
        old_name=old_name, new_name=new_name, old_version=old.version, new_version=new.version,
        settings=settings or (audit.settings if audit is not None else Settings()),
        changes=tuple(changes), decisions=len(test_list) + summary.decisions,
        test_requests=len(test_list), audit=summary,
    )


def _change_order(change: Change) -> tuple[Any, ...]:
    """Kind, then resource, action, caller, copy source, listing, settings, then where it was seen."""
    sample = change.sample
    subject = sample.subject
    access = subject.request.accesses[0]
    settings = subject.settings
    return (
        _KIND_ORDER[change.kind], str(access.resource), _ACTION_ORDER[access.action], subject.jurisdiction,
        str(subject.request.copy_from or ""), access.listing,
        settings.proxy_region or "", settings.unmatched_allow, sample.source.value, sample.file, sample.line,
    )


# Output


def format_text(report: DiffReport) -> str:
    """One line per change, aligned as a table, then what was compared and the summary line.

    A change reads::

        allow -> deny  DE read  s3://mail-eu-dublin/a.eml  (rule eea-read -> default deny in dublin-mail)  at t.yaml:9

    with ``[xN]`` after the rule when N audit lines recorded the request.
    """
    rows = [
        (f"{c.old.outcome.value} -> {c.new.outcome.value}", c.sample.subject.jurisdiction,
         c.sample.subject.request.accesses[0].action.value, _target(c.sample), _rules(c), c.sample)
        for c in report.changes
    ]
    lines: list[str] = []
    if rows:
        outcome_width = max(len(r[0]) for r in rows)
        jurisdiction_width = max(len(r[1]) for r in rows)
        action_width = max(len(r[2]) for r in rows)
        target_width = min(max(len(r[3]) for r in rows), _MAX_PADDED_TARGET)
        for outcomes, jurisdiction, action, target, rules, sample in rows:
            count = f"  [x{sample.count}]" if sample.count > 1 else ""
            lines.append(
                f"{outcomes:<{outcome_width}}  {jurisdiction:<{jurisdiction_width}} {action:<{action_width}} "
                f"{target:<{target_width}}  ({rules}){count}  at {sample.origin}"
            )
        lines.append("")
    lines += _compared(report)
    lines.append(_summary(report))
    return "\n".join(lines)


def _target(sample: Sample) -> str:
    """The request's resource, with what else decides it: listing, copy source, a test's own settings.

    Audit requests are all decided with the settings the summary names, so
    they are not repeated on each line.
    """
    subject = sample.subject
    access = subject.request.accesses[0]
    text = str(access.resource)
    if access.listing:
        text += " (listing)"
    if subject.request.copy_from is not None:
        text += f" from {subject.request.copy_from}"
    if sample.source is Source.AUDIT:
        return text
    settings = []
    if subject.settings.proxy_region is not None:
        settings.append(f"proxy region {subject.settings.proxy_region}")
    if subject.settings.unmatched_allow:
        settings.append("unmatched allow")
    return text + (f" [{', '.join(settings)}]" if settings else "")


def _rules(change: Change) -> str:
    """``rule OLD -> NEW``, or ``rule R`` when only the outcome changed (e.g. a dataset put in dry run)."""
    old, new = change.old, change.new
    same_label = old.rule == new.rule
    # A rule id is unique in a policy, but the same id (or named check) may decide in another dataset.
    qualify = same_label and old.dataset != new.dataset
    before, after = _rule_label(old, qualify), _rule_label(new, qualify)
    return f"rule {before}" if before == after else f"rule {before} -> {after}"


def _rule_label(decision: Decision, qualify: bool) -> str:
    if decision.dataset is not None and (qualify or decision.rule in _PER_DATASET_CHECKS):
        return f"{decision.rule} in {decision.dataset}"
    return decision.rule


def _compared(report: DiffReport) -> list[str]:
    """Which policies were compared, and where the requests came from (with the audit lines skipped)."""
    lines = [
        f"compared {report.old_name} (version {report.old_version}) "
        f"with {report.new_name} (version {report.new_version})"
    ]
    requests = f"requests: {report.test_requests} from policy tests"
    audit = report.audit
    if audit.files:
        settings = report.settings
        decided = f"unmatched {'allow' if settings.unmatched_allow else 'deny'}"
        if settings.proxy_region is not None:
            decided = f"proxy region {settings.proxy_region}, {decided}"
        requests += f"; {audit.decisions} from audit log lines, decided with {decided}"
        if audit.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in audit.skipped.items())
            requests += f"; {audit.skipped_total} of {audit.lines} audit log lines skipped ({reasons})"
    lines.append(requests)
    return lines


def _summary(report: DiffReport) -> str:
    """``N of M decisions would change: A newly refused, B newly allowed, C rule changes``."""
    parts = [
        f"{report.count(ChangeKind.NEWLY_REFUSED)} newly refused",
        f"{report.count(ChangeKind.NEWLY_ALLOWED)} newly allowed",
    ]
    dry_run = report.count(ChangeKind.DRY_RUN)
    if dry_run:
        parts.append(f"{dry_run} dry-run change{'s' if dry_run != 1 else ''}")
    rule = report.count(ChangeKind.RULE)
    parts.append(f"{rule} rule change{'s' if rule != 1 else ''}")
    return f"{report.changed} of {report.decisions} decisions would change: " + ", ".join(parts)


def as_json(report: DiffReport) -> dict[str, Any]:
    """The report as JSON-ready values, for ``--json``."""
    audit = report.audit
    return {
        "old": {"policies": report.old_name, "version": report.old_version},
        "new": {"policies": report.new_name, "version": report.new_version},
        "settings": _settings_json(report.settings),
        "sources": {
            "policy_tests": report.test_requests,
            "audit": {
                "files": list(audit.files), "lines": audit.lines, "decisions": audit.decisions,
                "skipped": audit.skipped_total, "skipped_by_reason": dict(audit.skipped),
            },
        },
        "summary": {
            "decisions": report.decisions,
            "changed": report.changed,
            "newly_refused": report.count(ChangeKind.NEWLY_REFUSED),
            "newly_allowed": report.count(ChangeKind.NEWLY_ALLOWED),
            "dry_run_changes": report.count(ChangeKind.DRY_RUN),
            "rule_changes": report.count(ChangeKind.RULE),
        },
        "changes": [_change_json(c) for c in report.changes],
    }


def _settings_json(settings: Settings) -> dict[str, Any]:
    return {"region": settings.proxy_region, "unmatched": "allow" if settings.unmatched_allow else "deny"}


def _change_json(change: Change) -> dict[str, Any]:
    sample = change.sample
    subject = sample.subject
    access = subject.request.accesses[0]
    copy_from = subject.request.copy_from
    return {
        "change": change.kind.value,
        "count": sample.count,
        "source": sample.source.value,
        "origin": {"file": sample.file, "line": sample.line},
        "test": sample.name,
        "caller": {"jurisdiction": subject.jurisdiction},
        "request": {
            "action": access.action.value,
            "resource": str(access.resource),
            "copy_from": str(copy_from) if copy_from is not None else None,
            "listing": access.listing,
        },
        "settings": _settings_json(subject.settings),
        "old": _decision_json(change.old),
        "new": _decision_json(change.new),
    }


def _decision_json(decision: Decision) -> dict[str, Any]:
    return {
        "decision": decision.outcome.value, "dataset": decision.dataset,
        "rule": decision.rule, "reason": decision.reason,
    }
