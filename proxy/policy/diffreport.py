"""The `DiffReport` of `bailiwick policy diff` as text (a table of changes) and as JSON (``--json``).

Only renders: what changed was decided by `proxy.policy.diff.compare`.
docs/policies.md ("Before shipping a change: policy diff") shows both forms.
"""

from __future__ import annotations

from typing import Any

from proxy.policy.decision import DEFAULT_DENY, Decision
from proxy.policy.diff import Change, ChangeKind, DiffReport
from proxy.policy.model import REGION, UNMATCHED_DESTINATION
from proxy.policy.samples import Sample, Settings, Source, Subject
from proxy.words import counted

# Named checks of the engine that are reported per dataset: "default deny" alone does not say whose.
_PER_DATASET_CHECKS = frozenset({DEFAULT_DENY, REGION, UNMATCHED_DESTINATION})
# A resource column wider than this is not padded: one long key must not push every rule off screen.
_MAX_PADDED_TARGET = 60


def format_text(report: DiffReport) -> str:
    """One line per change, aligned as a table, then what was compared and the summary line.

    A change reads::

        allow -> deny  DE read  s3://mail-eu-dublin/a.eml  (rule eea-read -> default deny in dublin-mail)  at t.yaml:9

    with ``[xN]`` after the rule when N audit lines recorded the request, and ``IE seen from US`` for
    the caller when it was seen from somewhere (location-checked rules decide by it).
    """
    rows = [
        (f"{c.old.outcome.value} -> {c.new.outcome.value}", _caller(c.sample),
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


def _caller(sample: Sample) -> str:
    """The caller's jurisdiction, with where it was seen from when that is known."""
    subject = sample.subject
    return subject.jurisdiction if subject.location is None else f"{subject.jurisdiction} seen from {subject.location}"


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
        decided = f"unmatched {settings.unmatched}"
        if settings.proxy_region is not None:
            decided = f"proxy region {settings.proxy_region}, {decided}"
        requests += f"; {audit.decisions} from audit log lines, decided with {decided}"
        if audit.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in audit.skipped.items())
            requests += f"; {audit.skipped_total} of {counted(audit.lines, 'audit log line')} skipped ({reasons})"
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
    return f"{report.changed} of {counted(report.decisions, 'decision')} would change: " + ", ".join(parts)


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
    return {"region": settings.proxy_region, "unmatched": settings.unmatched.value}


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
        "caller": _caller_json(subject),
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


def _caller_json(subject: Subject) -> dict[str, Any]:
    """``jurisdiction``, and ``location`` only when known: as the audit line writes them."""
    caller: dict[str, Any] = {"jurisdiction": subject.jurisdiction}
    if subject.location is not None:
        caller["location"] = subject.location
    return caller


def _decision_json(decision: Decision) -> dict[str, Any]:
    return {
        "decision": decision.outcome.value, "dataset": decision.dataset,
        "rule": decision.rule, "reason": decision.reason,
    }
