"""Decides whether a caller's jurisdiction may perform a request on the data it touches.

`decide` is pure and synchronous: no I/O, no clock, no state beyond the
loaded `Policy`, so the same inputs always give the same `Decision` and the
proxy, `bailiwick explain` and the policy tests all share one answer.

A request is judged as a set of checks (POLICY.md, "How a request is
decided"), each one access for one jurisdiction against the dataset its
resource belongs to, in this order:

- for a server-side copy, the source read by the caller ("copy source") and
  the source read by the jurisdiction of the destination's region ("copy
  source for destination"), because the copy moves the data there without it
  passing through the caller;
- each target access, for the caller ("target");
- for a listing, every dataset nested under the listing prefix, so that a
  listing cannot reveal the keys of another dataset ("nested dataset").

The first refusing check decides, so a copy out of a jurisdiction is
reported as such (Dublin data may not be read in the US) rather than as a
refusal of the write; an allowed request is decided by its first target.

Within a dataset, deny rules are looked at first and win, then allow rules;
when none matches the answer is deny. Across checks a single deny refuses the
whole request; a would-deny from a dry-run dataset (or with dry run forced by
the configuration) is recorded and the request is forwarded. Anything that
cannot be judged (no accesses, a caller jurisdiction that is not a country
code) is refused.

Reasons are shown to callers: they name the action, where the data is held
and the caller's jurisdiction, never dataset names or rule ids (those are in
`Check.dataset` and `Check.rule` for the audit log and `explain`).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.jurisdictions import is_country_code
from proxy.policy.decision import DEFAULT_DENY, Check, Decision, Outcome, RuleTrace
from proxy.policy.model import (
    EMPTY_REQUEST,
    INVALID_JURISDICTION,
    REGION,
    UNMATCHED,
    UNMATCHED_ALLOW,
    UNMATCHED_DESTINATION,
    Dataset,
    Effect,
    Policy,
    Rule,
)
from proxy.policy.patterns import ResourcePattern

TARGET = "target"
NESTED_DATASET = "nested dataset"
COPY_SOURCE = "copy source"
COPY_SOURCE_FOR_DESTINATION = "copy source for destination"

_DRY_RUN_NOTE = " (dry run: recorded, not enforced)"


@dataclass(frozen=True, slots=True)
class _Settings:
    proxy_region: str | None
    unmatched_allow: bool
    force_dry_run: bool


def decide(
    policy: Policy,
    jurisdiction: str,
    request: AccessRequest,
    *,
    proxy_region: str | None = None,
    unmatched_allow: bool = False,
    force_dry_run: bool = False,
) -> Decision:
    """Judge `request` for a caller in `jurisdiction`; see the module docstring for the order."""
    settings = _Settings(proxy_region, unmatched_allow, force_dry_run)
    refused = _unjudgeable(jurisdiction, request)
    if refused is not None:
        return Decision(Outcome.DENY, refused, (refused,), policy.version)
    index = policy.index
    checks: list[Check] = []
    if request.copy_from is not None:
        checks.extend(_copy_checks(policy, jurisdiction, request, settings))
    for access in request.accesses:
        hit = index.lookup(access.resource)
        checks.append(_judge(hit, access, jurisdiction, TARGET, settings))
        if access.listing:
            seen = {hit[0].name} if hit is not None else set()
            for dataset, pattern in index.nested(access.resource):
                if dataset.name not in seen:
                    seen.add(dataset.name)
                    checks.append(_judge((dataset, pattern), access, jurisdiction, NESTED_DATASET, settings))
    deciding = (
        next((c for c in checks if c.outcome is Outcome.DENY), None)
        or next((c for c in checks if c.outcome is Outcome.DRY_RUN_DENY), None)
        or next(c for c in checks if c.purpose == TARGET)
    )
    return Decision(deciding.outcome, deciding, tuple(checks), policy.version)


def _unjudgeable(jurisdiction: str, request: AccessRequest) -> Check | None:
    """A refusal for a request that cannot be judged at all, or None."""
    if not request.accesses:
        return Check(
            access=Access(Action.ADMIN, request.copy_from or Resource("", "")),
            jurisdiction=jurisdiction, purpose=TARGET, dataset=None, pattern=None, region=None,
            data_jurisdiction=None, mode=None, outcome=Outcome.DENY, rule=EMPTY_REQUEST,
            reason="the request names no resource, so it cannot be checked",
        )
    if not is_country_code(jurisdiction):
        return Check(
            access=request.accesses[0], jurisdiction=jurisdiction, purpose=TARGET, dataset=None,
            pattern=None, region=None, data_jurisdiction=None, mode=None, outcome=Outcome.DENY,
            rule=INVALID_JURISDICTION,
            reason=f'the caller\'s jurisdiction "{jurisdiction}" is not an ISO 3166-1 country code',
        )
    return None


def _copy_checks(policy: Policy, jurisdiction: str, request: AccessRequest, settings: _Settings) -> list[Check]:
    assert request.copy_from is not None  # decide() only calls this for a copy
    source = Access(Action.READ, request.copy_from)
    source_hit = policy.index.lookup(request.copy_from)
    checks = [_judge(source_hit, source, jurisdiction, COPY_SOURCE, settings)]
    destination = request.accesses[0].resource
    destination_hit = policy.index.lookup(destination)
    if destination_hit is not None:
        into = destination_hit[0]
        checks.append(
            _judge(source_hit, source, into.jurisdiction, COPY_SOURCE_FOR_DESTINATION, settings, into=into)
        )
    elif source_hit is None:
        # Neither end is in a dataset: there is no residency to protect, only the unmatched setting.
        checks.append(_judge(None, source, jurisdiction, COPY_SOURCE_FOR_DESTINATION, settings))
    else:
        dataset, pattern = source_hit
        dry_run = dataset.dry_run or settings.force_dry_run
        checks.append(Check(
            access=source, jurisdiction=jurisdiction, purpose=COPY_SOURCE_FOR_DESTINATION,
            dataset=dataset.name, pattern=pattern.text, region=dataset.region,
            data_jurisdiction=dataset.jurisdiction, mode=dataset.mode.value,
            outcome=Outcome.DRY_RUN_DENY if dry_run else Outcome.DENY, rule=UNMATCHED_DESTINATION,
            reason=(
                f"copying data held in {_held(dataset)} into {destination} is not allowed: the destination "
                "is not covered by any data residency policy, so the data could leave its jurisdiction"
            ) + (_DRY_RUN_NOTE if dry_run else ""),
        ))
    return checks


def _judge(
    hit: tuple[Dataset, ResourcePattern] | None,
    access: Access,
    jurisdiction: str,
    purpose: str,
    settings: _Settings,
    *,
    into: Dataset | None = None,
) -> Check:
    """One check: `access` for `jurisdiction` against the dataset `hit` names (None: no dataset)."""
    if hit is None:
        if settings.unmatched_allow:
            outcome, rule = Outcome.ALLOW, UNMATCHED_ALLOW
            reason = (
                f"{access.resource} is not covered by any data residency policy, "
                "and this proxy allows such requests"
            )
        else:
            outcome = Outcome.DRY_RUN_DENY if settings.force_dry_run else Outcome.DENY
            rule = UNMATCHED
            reason = f"{access.resource} is not covered by any data residency policy"
            reason += _DRY_RUN_NOTE if settings.force_dry_run else ""
        return Check(
            access=access, jurisdiction=jurisdiction, purpose=purpose, dataset=None, pattern=None,
            region=None, data_jurisdiction=None, mode=None, outcome=outcome, rule=rule, reason=reason,
        )
    dataset, pattern = hit
    dry_run = dataset.dry_run or settings.force_dry_run
    denied = Outcome.DRY_RUN_DENY if dry_run else Outcome.DENY
    traces: list[RuleTrace] = []
    if settings.proxy_region is not None and dataset.region != settings.proxy_region:
        outcome, rule = denied, REGION
        reason = (
            f"data in {_held(dataset)} is controlled only from {dataset.region}; "
            f"this proxy runs in {settings.proxy_region}"
        )
    else:
        deciding = _first_match(dataset, access.action, jurisdiction, traces)
        if deciding is not None and deciding.effect is Effect.ALLOW:
            outcome, rule = Outcome.ALLOW, deciding.id
        else:
            outcome, rule = denied, deciding.id if deciding is not None else DEFAULT_DENY
        reason = _reason(access, dataset, jurisdiction, purpose, outcome is Outcome.ALLOW, into)
    if outcome is Outcome.DRY_RUN_DENY:
        reason += _DRY_RUN_NOTE
    return Check(
        access=access, jurisdiction=jurisdiction, purpose=purpose, dataset=dataset.name,
        pattern=pattern.text, region=dataset.region, data_jurisdiction=dataset.jurisdiction,
        mode=dataset.mode.value, outcome=outcome, rule=rule, reason=reason, rules=tuple(traces),
    )


def _first_match(dataset: Dataset, action: Action, jurisdiction: str, traces: list[RuleTrace]) -> Rule | None:
    """The deciding rule (deny rules come first in the plan), recording each rule looked at."""
    for step in dataset.plan[action]:
        if step.skipped is not None:
            traces.append(step.skipped)
            continue
        rule = step.rule
        verb = f"{rule.effect.verb} {action.value}"
        if rule.applies_to(jurisdiction):
            source = rule.via.get(jurisdiction, '"*"')
            note = f"{verb} for callers in {jurisdiction}" + ("" if source == jurisdiction else f" (through {source})")
            traces.append(RuleTrace(rule.id, rule.effect.value, True, note))
            return rule
        note = f"{verb}, but not for callers in {jurisdiction} (from: {', '.join(rule.sources)})"
        traces.append(RuleTrace(rule.id, rule.effect.value, False, note))
    return None


def _held(dataset: Dataset) -> str:
    return f"{dataset.region} ({dataset.jurisdiction})"


def _reason(
    access: Access, dataset: Dataset, jurisdiction: str, purpose: str, allowed: bool, into: Dataset | None
) -> str:
    """The plain-words reason a caller may be shown: action, where the data is, who asked."""
    held = _held(dataset)
    verdict = "allowed" if allowed else "not allowed"
    action = access.action.value
    if purpose == COPY_SOURCE_FOR_DESTINATION and into is not None:
        if allowed:
            return f"data held in {held} may be copied into {_held(into)}: {jurisdiction} may read it"
        return (
            f"copying data held in {held} into {_held(into)} requires that {jurisdiction} may read it, "
            "and the policy does not allow that"
        )
    if purpose == COPY_SOURCE:
        return f"read access to the copy source, data held in {held}, is {verdict} for callers in {jurisdiction}"
    if purpose == NESTED_DATASET:
        return (
            f"the listing also reaches data held in {held}; {action} access to it is {verdict} "
            f"for callers in {jurisdiction}"
        )
    return f"{action} access to data held in {held} is {verdict} for callers in {jurisdiction}"
