"""The whole trace of a decision in plain text, for `bailiwick explain`.

An operator asking "why was this refused?" needs more than the caller sees:
which dataset each resource fell into and by which pattern, every rule that
was looked at and why it did or did not apply, and which check decided. This
module only renders a `Decision`; it decides nothing itself.
"""

from __future__ import annotations

from proxy.domain import Access, AccessRequest
from proxy.policy.decision import DEFAULT_DENY, Check, Decision, Outcome
from proxy.policy.engine import NESTED_DATASET
from proxy.policy.model import PLACEMENT, REMOTE_REGION, RESERVED_RULE_IDS, UNMATCHED, UNMATCHED_ALLOW
from proxy.policy.patterns import PatternError, parse_pattern

_OUTCOME_WORDS = {
    Outcome.ALLOW: "allow",
    Outcome.DENY: "deny",
    Outcome.DRY_RUN_DENY: "dry-run deny (recorded, and the request is forwarded)",
}


def format_explain(decision: Decision, jurisdiction: str, request: AccessRequest, *,
                   location: str | None = None) -> str:
    """A multi-line account of `decision` for a caller in `jurisdiction` (seen from `location`) making `request`."""
    lines = [f"caller:    jurisdiction {jurisdiction}" + (f", seen from {location}" if location is not None else "")]
    for i, access in enumerate(request.accesses):
        lines.append(f"{'request:' if i == 0 else '':11}{_access(access)}")
    if not request.accesses:
        lines.append("request:   (no resource)")
    if request.copy_from is not None:
        lines.append(f"{'':11}copying from {request.copy_from}")
    for flow in request.flows:
        lines.append(f"{'':11}sending {_access(flow.source)} into: {_access(flow.destination)}")
    for remote in request.remotes:
        lines.append(f"{'':11}naming {remote.what}, in {remote.region}")
    lines += [
        f"decision:  {_OUTCOME_WORDS[decision.outcome]}",
        f"by:        {_decider(decision.deciding)}",
        f"reason:    {decision.reason}",
        f"policy:    version {decision.policy_version}",
    ]
    total = len(decision.checks)
    for number, check in enumerate(decision.checks, start=1):
        lines.append("")
        lines += _check(check, number, total, deciding=check is decision.deciding)
    return "\n".join(lines)


def _access(access: Access) -> str:
    if not access.resource.bucket:
        return f"{access.action.value} (no resource)"
    listing = " (listing everything under this prefix)" if access.listing else ""
    return f"{access.action.value} {access.resource}{listing}"


def _decider(check: Check) -> str:
    if check.dataset is None or check.rule in RESERVED_RULE_IDS - {DEFAULT_DENY}:
        where = f" of dataset {check.dataset}" if check.dataset is not None else ""
        return f'the check "{check.rule}"{where} ({check.purpose})'
    if check.rule == DEFAULT_DENY:
        return f"the default deny of dataset {check.dataset}: no rule matched ({check.purpose})"
    return f'rule "{check.rule}" of dataset {check.dataset} ({check.purpose})'


def _check(check: Check, number: int, total: int, *, deciding: bool) -> list[str]:
    marker = "  <- decided" if deciding else ""
    lines = [
        f"check {number} of {total}: {check.purpose}: {_access(check.access)}, "
        f"for jurisdiction {check.jurisdiction}: {check.outcome.value}{marker}",
    ]
    if check.dataset is None and check.rule in (UNMATCHED, UNMATCHED_ALLOW):
        lines.append(f"  dataset:  none; no resource pattern of the policy matches {check.access.resource}")
    elif check.dataset is None and check.rule in (PLACEMENT, REMOTE_REGION):
        lines.append(f"  dataset:  none; the region {check.region} is compared with this proxy's")
    elif check.dataset is None:
        lines.append("  dataset:  not looked up: the request could not be judged")
    else:
        encryption = check.encryption
        encrypted = f", encryption {encryption}" if encryption is not None and encryption.encrypts else ""
        lines.append(
            f"  dataset:  {check.dataset}, held in {check.region} ({check.data_jurisdiction}), mode {check.mode}"
            + encrypted
        )
        why = (
            "a dataset under the listing prefix, so the listing reaches it"
            if check.purpose == NESTED_DATASET
            else "the most specific pattern that matches"
        )
        lines.append(f"  matched:  {check.pattern}{_pattern_words(check.pattern)}, {why}")
    if check.rules:
        lines.append("  rules (deny rules first, then allow rules, in file order):")
        width = max(len(t.rule) for t in check.rules)
        for trace in check.rules:
            status = "matches" if trace.matched else "no match"
            lines.append(f"    {trace.rule:<{width}}  {trace.effect:<5}  {status:<8}  {trace.note}")
    elif check.dataset is not None:
        lines.append("  rules:    none looked at")
    lines.append(f"  decided:  {check.rule}")
    lines.append(f"  reason:   {check.reason}")
    return lines


def _pattern_words(pattern: str | None) -> str:
    """Why the pattern was the one chosen, in words, or nothing if it cannot be read."""
    if pattern is None:
        return ""
    try:
        described = parse_pattern(pattern).describe()
    except PatternError:
        return ""
    return f" ({described})"
