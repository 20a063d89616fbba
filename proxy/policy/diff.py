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

The requests (`proxy.policy.samples`) come from the policy tests of both
folders, each with the settings it is written with (``proxy_region``,
``unmatched``), and from audit logs (`proxy.policy.replay`), decided with
the settings the operator gives.

Everything here is pure: it reads no files and prints nothing. The command
line (`proxy.cli`) loads the policies and tests, feeds each audit file's lines
to an `AuditReader`, and prints `format_text` or `as_json`
(`proxy.policy.diffreport`) of the `DiffReport` that `compare` returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from proxy.domain import Action
from proxy.policy.decision import Decision, Outcome
from proxy.policy.engine import decide
from proxy.policy.model import Policy
from proxy.policy.replay import AuditReader, AuditSummary
from proxy.policy.samples import Sample, Settings, Subject

_ACTION_ORDER = {a: i for i, a in enumerate(Action)}


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


def decide_sample(policy: Policy, subject: Subject) -> Decision:
    """`decide` for `subject`, with its settings."""
    settings = subject.settings
    return decide(
        policy, subject.jurisdiction, subject.request,
        proxy_region=settings.proxy_region, unmatched_allow=settings.unmatched_allow, location=subject.location,
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
    """Kind, then resource, action, caller and its location, copy source, listing, settings, then where seen."""
    sample = change.sample
    subject = sample.subject
    access = subject.request.accesses[0]
    settings = subject.settings
    return (
        _KIND_ORDER[change.kind], str(access.resource), _ACTION_ORDER[access.action], subject.jurisdiction,
        subject.location or "", str(subject.request.copy_from or ""), access.listing,
        settings.proxy_region or "", settings.unmatched_allow, sample.source.value, sample.file, sample.line,
    )
