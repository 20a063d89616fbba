"""Decides whether a caller's jurisdiction may perform a request on the data it touches.

`decide` is pure and synchronous: no I/O, no clock, no state beyond the
loaded `Policy`, so the same inputs always give the same `Decision` and the
proxy, `bailiwick explain` and the policy tests all share one answer.

A request is judged as a set of checks (docs/policies.md, "How a request is
decided"), each one access for one jurisdiction against the dataset its
resource belongs to, in this order:

- for a server-side copy, the source read by the caller ("copy source") and
  the source read by the jurisdiction of the destination's region ("copy
  source for destination"), because the copy moves the data there without it
  passing through the caller;
- each target access, for the caller ("target");
- for a listing, every dataset nested under the listing prefix, so that a
  listing cannot reveal the keys of another dataset ("nested dataset").

An account-level listing (S3's ListBuckets, Azure's List Containers: a
``list`` of a resource with no bucket) touches no dataset; it is allowed
(rule ``account listing``) on the understanding that the proxy rewrites the
answer to show only what `visible_in_listing` allows.

A request that creates its target somewhere (S3's CreateBucket, with the
region of its body as `AccessRequest.placement`) is also refused, rule
``placement``, when that region is not this proxy's or not the region of a
dataset the target touches: a Dublin dataset's bucket cannot be made in
us-east-1.

A request that sends data elsewhere (`AccessRequest.flows`: a restore's
output bucket, a bucket's replication, inventory, access logs or analytics
export) is judged like a copy: the caller must be allowed the source
("source") and the destination ("destination", with every dataset nested in
it), and the jurisdiction of each dataset the destination reaches must be
allowed the source ("source for destination"); a destination in no dataset
with a source in one is refused. A request that names something outside the
storage by region (`AccessRequest.remotes`: an SSE-KMS key ARN, a
notification target) is refused, rule ``remote region``, when that region is
not this proxy's or not the region of a dataset the request touches: data
stored in Dublin is not encrypted under a key held in us-east-1.

Before the body of a request that names its keys there (S3's multi-object
delete) is read, `refused_whatever_the_keys` says whether every key the body
could name would be refused: then the request is refused without reading it.
It answers from the datasets a key of the bucket can belong to, so it refuses
only what `decide` would refuse for any body.

The first refusing check decides, so a copy out of a jurisdiction is
reported as such (Dublin data may not be read in the US) rather than as a
refusal of the write; an allowed request is decided by its first target.

Within a dataset, deny rules are looked at first and win, then allow rules;
when none matches the answer is deny. Across checks a single deny refuses the
whole request; a would-deny from a dry-run dataset (or with dry run forced by
the configuration) is recorded and the request is forwarded. Anything that
cannot be judged (no accesses, a caller jurisdiction that is not a country
code) is refused.

An allow rule with a ``location`` (`Rule.location`) allows only a caller whose
observed location (`location`: the country GeoIP places the client's address
in, passed in as a plain value; None or "unknown" when not known) agrees with
it; otherwise the check is refused (rule ``location``) and its reason names
both places ("seen from US, token says IE"). Which rule decides is unchanged:
the location is a condition of the allowing rule, not a rule of its own.

Reasons are shown to callers: they name the action, where the data is held
and the caller's jurisdiction, never dataset names or rule ids (those are in
`Check.dataset` and `Check.rule` for the audit log and `explain`).

`decide` runs on every request the proxy handles, so it does only what the
answer needs. The rule that decides a check comes from the dataset's answer
tables, worked out at load time (`proxy.policy.model.Dataset.deciding_rule`),
and the trace of the rules looked at is left for `Check.rules` to build if
anyone reads it (`bailiwick explain`, the tests). With ``trace=True`` the
engine instead walks each dataset's rules in order and records the trace as it
decides (`Dataset.trace`), as `explain` describes it; the two ways are held to
the same answer by the tests, and everything else (which checks are made,
their outcome, reason and order) is the same code for both.

`encryption_of` finds a resource's dataset as `decide` does and says whether
its objects are stored encrypted, for answers that name objects no request
targeted (a listing's sizes); a decision carries the same in `Check.encryption`.

Why one module of this length: it is one idea, the decision, and a seventh of it
is this description of the order of the checks. The three entry points
(`decide`, `refused_whatever_the_keys`, `visible_in_listing`) share `_judge`,
which is the hot path, and the kinds of check (copy, flow, placement, remote)
are each a short function whose reasons must read alike; spread over modules,
the order of the checks, which is the policy's meaning, could no longer be read
in one place.
"""

from __future__ import annotations

from proxy.domain import Access, AccessRequest, Action, Flow, Remote, Resource
from proxy.jurisdictions import is_country_code
from proxy.policy.decision import DEFAULT_DENY, Check, Decision, Outcome, Purpose, RuleTrace
from proxy.policy.model import (
    ACCOUNT_LISTING,
    EMPTY_REQUEST,
    INVALID_JURISDICTION,
    LOCATION,
    PLACEMENT,
    REGION,
    REMOTE_REGION,
    SAME_LOCATION,
    UNKNOWN_LOCATION,
    UNMATCHED,
    UNMATCHED_ALLOW,
    UNMATCHED_DESTINATION,
    Dataset,
    Effect,
    Encryption,
    Mode,
    Policy,
)
from proxy.policy.patterns import ResourcePattern

TARGET = Purpose.TARGET
NESTED_DATASET = Purpose.NESTED_DATASET
COPY_SOURCE = Purpose.COPY_SOURCE
COPY_SOURCE_FOR_DESTINATION = Purpose.COPY_SOURCE_FOR_DESTINATION
PLACEMENT_CHECK = Purpose.PLACEMENT
FLOW_SOURCE = Purpose.SOURCE
FLOW_SOURCE_FOR_DESTINATION = Purpose.SOURCE_FOR_DESTINATION
DESTINATION = Purpose.DESTINATION
REMOTE_CHECK = Purpose.REMOTE_REGION
# The checks whose datasets hold the data a named key or notification target concerns.
_REMOTE_CONCERNS = frozenset({TARGET, NESTED_DATASET, DESTINATION})

_DRY_RUN_NOTE = " (dry run: recorded, not enforced)"

# Looked up once here: an enum member or its value read through the class costs more than a decision's
# dictionary look-ups.
_ALLOW, _DENY, _DRY_RUN_DENY = Outcome.ALLOW, Outcome.DENY, Outcome.DRY_RUN_DENY
_ALLOW_EFFECT = Effect.ALLOW
_DRY_RUN_MODE = Mode.DRY_RUN
_ACTION_WORDS = {action: action.value for action in Action}

# decide's settings, passed on to each check: proxy_region, unmatched_allow, force_dry_run, trace and the
# caller's observed location. A plain tuple, because making even a small frozen dataclass costs as much as
# judging a check.
_Settings = tuple[str | None, bool, bool, bool, str | None]


def decide(
    policy: Policy,
    jurisdiction: str,
    request: AccessRequest,
    *,
    proxy_region: str | None = None,
    unmatched_allow: bool = False,
    force_dry_run: bool = False,
    trace: bool = False,
    location: str | None = None,
) -> Decision:
    """Judge `request` for a caller in `jurisdiction`; see the module docstring for the order.

    With `trace`, each rule looked at is described as the engine decides
    (slower; the answer is the same, and `Check.rules` gives the same trace
    either way). `location`: where the caller is seen from (None: not known).
    """
    accesses = request.accesses
    if not accesses or not is_country_code(jurisdiction):
        refused = _unjudgeable(jurisdiction, request)
        return Decision(_DENY, refused, (refused,), policy.version)
    settings: _Settings = (proxy_region, unmatched_allow, force_dry_run, trace, location)
    index = policy.index
    if (request.copy_from is None and len(accesses) == 1 and not accesses[0].listing and request.placement is None
            and not request.flows and not request.remotes):
        # Most requests: one target, nothing nested, no copy; its check decides.
        access = accesses[0]
        if access.action is Action.LIST and access.resource.is_account:
            check = _account_listing(access, jurisdiction)
        else:
            check = _judge(index.lookup(access.resource), access, jurisdiction, TARGET, settings)
        return Decision(check.outcome, check, (check,), policy.version)
    checks: list[Check] = []
    if request.copy_from is not None:
        checks.extend(_copy_checks(policy, jurisdiction, request, settings))
    for flow in request.flows:
        checks.extend(_flow_checks(policy, jurisdiction, flow, settings))
    for access in accesses:
        hit = index.lookup(access.resource)
        checks.append(_judge(hit, access, jurisdiction, TARGET, settings))
        if access.listing:
            seen = {hit[0].name} if hit is not None else set()
            for dataset, pattern in index.nested(access.resource):
                if dataset.name not in seen:
                    seen.add(dataset.name)
                    checks.append(_judge((dataset, pattern), access, jurisdiction, NESTED_DATASET, settings))
    if request.placement is not None:
        checks.extend(_placement_checks(checks, request.placement, proxy_region, force_dry_run))
    if request.remotes:
        checks.extend(_remote_checks(checks, request.remotes, proxy_region, force_dry_run))
    deciding = (
        next((c for c in checks if c.outcome is _DENY), None)
        or next((c for c in checks if c.outcome is _DRY_RUN_DENY), None)
        or next(c for c in checks if c.purpose == TARGET)
    )
    return Decision(deciding.outcome, deciding, tuple(checks), policy.version)


def refused_whatever_the_keys(
    policy: Policy,
    jurisdiction: str,
    request: AccessRequest,
    *,
    proxy_region: str | None = None,
    unmatched_allow: bool = False,
    force_dry_run: bool = False,
    location: str | None = None,
) -> Decision | None:
    """The refusal of `request` whatever keys its body names, or None if some keys could be allowed.

    `request` is a request whose keys are not known yet: its accesses name
    the bucket (key ``""``), and the body will replace them by the same
    actions on each key it names, all of them judged (as `decide` judges a
    multi-object delete). A key is allowed when none of those actions is
    refused on it, and every key of the bucket belongs to the dataset of the
    bucket itself (key ``""``, or none) or to a dataset nested under it; a
    request is refused here only when no key of any of them could be allowed,
    so a request that `decide` would forward with some body is never refused.
    A would-deny in dry run is not a refusal.
    """
    accesses = request.accesses
    if not accesses or not is_country_code(jurisdiction):
        refused = _unjudgeable(jurisdiction, request)
        return Decision(_DENY, refused, (refused,), policy.version)
    bucket = accesses[0].resource
    # Remotes (an SSE-KMS key named in a header) only add refusals (`_remote_checks`): a request
    # refused for its keys is refused with them too, so they do not make the proxy read its body.
    if (request.copy_from is not None or request.flows
            or any(a.resource != bucket or a.listing for a in accesses)):
        return None   # not a request of this shape: decide on its body
    settings: _Settings = (proxy_region, unmatched_allow, force_dry_run, False, location)
    index = policy.index
    # Every key of the bucket belongs to the bucket's own dataset or to one nested under it.
    hits: list[tuple[Dataset, ResourcePattern] | None] = [index.lookup(bucket)]
    hits.extend(index.nested(bucket))
    checks: list[Check] = []
    for hit in hits:
        resource = bucket if hit is None else Resource(bucket.scheme, bucket.bucket, hit[1].key_prefix)
        found = [_judge(hit, Access(access.action, resource), jurisdiction, TARGET, settings) for access in accesses]
        if all(check.outcome is not _DENY for check in found):
            return None
        checks.extend(found)
    deciding = next(check for check in checks if check.outcome is _DENY)
    return Decision(_DENY, deciding, tuple(checks), policy.version)


def visible_in_listing(
    policy: Policy,
    jurisdiction: str,
    resource: Resource,
    *,
    proxy_region: str | None = None,
    unmatched_allow: bool = False,
    force_dry_run: bool = False,
    location: str | None = None,
) -> bool:
    """Whether an account listing may name `resource` (a bucket, or an Azure container) to `jurisdiction`.

    It may when the caller may ``list`` it, or some dataset inside it (a key
    prefix of the bucket): a name the caller could reach anyway. A would-deny
    in dry run shows it, as the request would be forwarded.
    """
    if not is_country_code(jurisdiction):
        return False
    settings: _Settings = (proxy_region, unmatched_allow, force_dry_run, False, location)
    access = Access(Action.LIST, resource, listing=True)
    index = policy.index
    if _judge(index.lookup(resource), access, jurisdiction, TARGET, settings).outcome is not _DENY:
        return True
    return any(_judge(hit, access, jurisdiction, NESTED_DATASET, settings).outcome is not _DENY
               for hit in index.nested(resource))


def encryption_of(policy: Policy, resource: Resource) -> Encryption:
    """The encryption of the dataset `resource` belongs to, found as `decide` finds it (the most specific
    pattern wins); NONE when it is in no dataset. For answers that name objects no request targeted (the
    sizes in a listing)."""
    hit = policy.index.lookup(resource)
    return Encryption.NONE if hit is None else hit[0].encryption


def _account_listing(access: Access, jurisdiction: str) -> Check:
    return Check(
        access=access, jurisdiction=jurisdiction, purpose=TARGET, dataset=None, pattern=None, region=None,
        data_jurisdiction=None, mode=None, outcome=_ALLOW, rule=ACCOUNT_LISTING,
        reason="an account listing is answered with only the names the caller may list",
    )


def _placement_checks(
    checks: list[Check], placement: str, proxy_region: str | None, force_dry_run: bool,
) -> list[Check]:
    """Refusals of creating the target in `placement`: outside this proxy's region, or a dataset's."""
    found: list[Check] = []
    target = next(c for c in checks if c.purpose == TARGET)
    if proxy_region is not None and placement != proxy_region:
        found.append(Check(
            access=target.access, jurisdiction=target.jurisdiction, purpose=PLACEMENT_CHECK, dataset=None,
            pattern=None, region=placement, data_jurisdiction=None, mode=None,
            outcome=_DRY_RUN_DENY if force_dry_run else _DENY, rule=PLACEMENT,
            reason=(f"{target.access.resource} would be created in {placement}; this proxy runs in {proxy_region}"
                    + (_DRY_RUN_NOTE if force_dry_run else "")),
        ))
    for check in checks:
        if check.dataset is None or check.region is None or check.region == placement:
            continue
        dry_run = force_dry_run or check.mode is _DRY_RUN_MODE
        found.append(Check(
            access=check.access, jurisdiction=check.jurisdiction, purpose=PLACEMENT_CHECK, dataset=check.dataset,
            pattern=check.pattern, region=check.region, data_jurisdiction=check.data_jurisdiction,
            mode=check.mode, outcome=_DRY_RUN_DENY if dry_run else _DENY, rule=PLACEMENT,
            reason=(f"{check.access.resource} would be created in {placement}, but the data of {check.dataset} "
                    f"is kept in {check.region}" + (_DRY_RUN_NOTE if dry_run else "")),
            encryption=check.encryption,
        ))
    return found


def _unjudgeable(jurisdiction: str, request: AccessRequest) -> Check:
    """The refusal of a request that cannot be judged at all: no resource, or no valid jurisdiction."""
    if not request.accesses:
        return Check(
            access=Access(Action.ADMIN, request.copy_from or Resource("", "")),
            jurisdiction=jurisdiction, purpose=TARGET, dataset=None, pattern=None, region=None,
            data_jurisdiction=None, mode=None, outcome=Outcome.DENY, rule=EMPTY_REQUEST,
            reason="the request names no resource, so it cannot be checked",
        )
    return Check(
        access=request.accesses[0], jurisdiction=jurisdiction, purpose=TARGET, dataset=None,
        pattern=None, region=None, data_jurisdiction=None, mode=None, outcome=Outcome.DENY,
        rule=INVALID_JURISDICTION,
        reason=f'the caller\'s jurisdiction "{jurisdiction}" is not an ISO 3166-1 country code',
    )


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
        checks.append(_unmatched_destination(
            source_hit, source, jurisdiction, COPY_SOURCE_FOR_DESTINATION, destination, settings, "copying",
        ))
    return checks


def _hits(policy: Policy, access: Access) -> list[tuple[Dataset, ResourcePattern] | None]:
    """The dataset `access` falls in (None: none) and, for a listing, every dataset nested under it."""
    index = policy.index
    hit = index.lookup(access.resource)
    hits: list[tuple[Dataset, ResourcePattern] | None] = [hit]
    if access.listing:
        seen = {hit[0].name} if hit is not None else set()
        for dataset, pattern in index.nested(access.resource):
            if dataset.name not in seen:
                seen.add(dataset.name)
                hits.append((dataset, pattern))
    return hits


def _flow_checks(policy: Policy, jurisdiction: str, flow: Flow, settings: _Settings) -> list[Check]:
    """A flow judged as a copy: the source for the caller, for each destination's jurisdiction, the destination."""
    source, destination = flow.source, flow.destination
    source_hits = _hits(policy, source)
    destination_hits = _hits(policy, destination)
    checks = [_judge(hit, source, jurisdiction, FLOW_SOURCE, settings) for hit in source_hits]
    for into_hit in destination_hits:
        for hit in source_hits:
            if into_hit is not None:
                into = into_hit[0]
                checks.append(_judge(hit, source, into.jurisdiction, FLOW_SOURCE_FOR_DESTINATION, settings,
                                     into=into, to=destination.resource))
            elif hit is None:
                checks.append(_judge(None, source, jurisdiction, FLOW_SOURCE_FOR_DESTINATION, settings))
            else:
                checks.append(_unmatched_destination(
                    hit, source, jurisdiction, FLOW_SOURCE_FOR_DESTINATION, destination.resource, settings,
                    "sending",
                ))
    checks += [_judge(hit, destination, jurisdiction, DESTINATION, settings, to=destination.resource)
               for hit in destination_hits]
    return checks


def _unmatched_destination(
    hit: tuple[Dataset, ResourcePattern], source: Access, jurisdiction: str, purpose: Purpose,
    destination: Resource, settings: _Settings, verb: str,
) -> Check:
    """The refusal of moving data of a dataset into a destination that is in none."""
    dataset, pattern = hit
    force_dry_run = settings[2]
    dry_run = dataset.dry_run or force_dry_run
    return Check(
        access=source, jurisdiction=jurisdiction, purpose=purpose,
        dataset=dataset.name, pattern=pattern.text, region=dataset.region,
        data_jurisdiction=dataset.jurisdiction, mode=dataset.mode,
        outcome=Outcome.DRY_RUN_DENY if dry_run else Outcome.DENY, rule=UNMATCHED_DESTINATION,
        reason=(
            f"{verb} data held in {dataset.held} into {destination} is not allowed: the destination "
            "is not covered by any data residency policy, so the data could leave its jurisdiction"
        ) + (_DRY_RUN_NOTE if dry_run else ""),
        encryption=dataset.encryption,
    )


def _remote_checks(
    checks: list[Check], remotes: tuple[Remote, ...], proxy_region: str | None, force_dry_run: bool,
) -> list[Check]:
    """Refusals of a key or notification target in another region than this proxy's or the data's."""
    found: list[Check] = []
    target = next(c for c in checks if c.purpose == TARGET)
    for remote in remotes:
        if proxy_region is not None and remote.region != proxy_region:
            found.append(Check(
                access=target.access, jurisdiction=target.jurisdiction, purpose=REMOTE_CHECK, dataset=None,
                pattern=None, region=remote.region, data_jurisdiction=None, mode=None,
                outcome=_DRY_RUN_DENY if force_dry_run else _DENY, rule=REMOTE_REGION,
                reason=(f"{remote.what} is in {remote.region}; this proxy runs in {proxy_region}"
                        + (_DRY_RUN_NOTE if force_dry_run else "")),
            ))
        seen: set[str] = set()
        for check in checks:
            if (check.purpose not in _REMOTE_CONCERNS or check.dataset is None or check.region is None
                    or check.region == remote.region or check.dataset in seen):
                continue
            seen.add(check.dataset)
            dry_run = force_dry_run or check.mode is _DRY_RUN_MODE
            found.append(Check(
                access=check.access, jurisdiction=check.jurisdiction, purpose=REMOTE_CHECK, dataset=check.dataset,
                pattern=check.pattern, region=check.region, data_jurisdiction=check.data_jurisdiction,
                mode=check.mode, outcome=_DRY_RUN_DENY if dry_run else _DENY, rule=REMOTE_REGION,
                reason=(f"{remote.what} is in {remote.region}, but {check.access.resource} is data held in "
                        f"{check.region} ({check.data_jurisdiction}); it may only be used in {check.region}"
                        + (_DRY_RUN_NOTE if dry_run else "")),
                encryption=check.encryption,
            ))
    return found


def _judge(
    hit: tuple[Dataset, ResourcePattern] | None,
    access: Access,
    jurisdiction: str,
    purpose: Purpose,
    settings: _Settings,
    *,
    into: Dataset | None = None,
    to: Resource | None = None,
) -> Check:
    """One check: `access` for `jurisdiction` against the dataset `hit` names (None: no dataset)."""
    proxy_region, unmatched_allow, force_dry_run, trace, location = settings
    if hit is None:
        if unmatched_allow:
            outcome, rule = _ALLOW, UNMATCHED_ALLOW
            reason = (
                f"{access.resource} is not covered by any data residency policy, "
                "and this proxy allows such requests"
            )
        else:
            outcome = _DRY_RUN_DENY if force_dry_run else _DENY
            rule = UNMATCHED
            reason = f"{access.resource} is not covered by any data residency policy"
            reason += _DRY_RUN_NOTE if force_dry_run else ""
        return Check(
            access=access, jurisdiction=jurisdiction, purpose=purpose, dataset=None, pattern=None,
            region=None, data_jurisdiction=None, mode=None, outcome=outcome, rule=rule, reason=reason,
        )
    dataset, pattern = hit
    dry_run = force_dry_run or dataset.mode is _DRY_RUN_MODE
    traced: tuple[RuleTrace, ...] | Dataset = ()
    if proxy_region is not None and dataset.region != proxy_region:
        outcome = _DRY_RUN_DENY if dry_run else _DENY
        rule = REGION
        reason = f"data in {dataset.held} is controlled only from {dataset.region}; this proxy runs in {proxy_region}"
    else:
        if trace:
            deciding, traced = dataset.trace(access.action, jurisdiction)
        else:
            deciding, traced = dataset.deciding_rule(access.action, jurisdiction), dataset
        if deciding is not None and deciding.effect is _ALLOW_EFFECT:
            outcome, rule = _ALLOW, deciding.id
        else:
            outcome = _DRY_RUN_DENY if dry_run else _DENY
            rule = deciding.id if deciding is not None else DEFAULT_DENY
        reason = _reason(access.action, dataset, jurisdiction, purpose, outcome is _ALLOW, into, to)
        # The caller's location, checked where the caller's jurisdiction is judged (not a destination's).
        if deciding is not None and deciding.location is not None and outcome is _ALLOW and into is None and \
                not deciding.location_agrees(jurisdiction, location):
            outcome, rule = (_DRY_RUN_DENY if dry_run else _DENY), LOCATION
            reason = _location_reason(deciding.location, jurisdiction, location)
    if outcome is _DRY_RUN_DENY:
        reason += _DRY_RUN_NOTE
    # Positional, in the order of Check's fields: matching a dozen keywords costs more than the rest of
    # a decision's bookkeeping, and this runs for every request.
    return Check(
        access, jurisdiction, purpose, dataset.name, pattern.text, dataset.region, dataset.jurisdiction,
        dataset.mode, outcome, rule, reason, traced, dataset.encryption,
    )


def _location_reason(required: str, jurisdiction: str, location: str | None) -> str:
    """Why a caller's observed location does not agree with what the rule requires."""
    seen = f"seen from {location}" if location not in (None, UNKNOWN_LOCATION) else "seen from an unknown location"
    wanted = "the same country" if required == SAME_LOCATION else f"a location in {required}"
    return f"{seen}, token says {jurisdiction}: this data requires callers seen from {wanted}"


def _reason(
    action: Action, dataset: Dataset, jurisdiction: str, purpose: Purpose, allowed: bool, into: Dataset | None,
    to: Resource | None = None,
) -> str:
    """The plain-words reason a caller may be shown: action, where the data is, who asked."""
    held = dataset.held
    verdict = "allowed" if allowed else "not allowed"
    if purpose == FLOW_SOURCE_FOR_DESTINATION and into is not None:
        word = _ACTION_WORDS[action]
        if allowed:
            return f"data held in {held} may be sent to {to}, held in {into.held}: {jurisdiction} may {word} it"
        return (
            f"sending data held in {held} to {to}, held in {into.held}, requires that {jurisdiction} "
            f"may {word} it, and the policy does not allow that"
        )
    if purpose == FLOW_SOURCE:
        return (f"{_ACTION_WORDS[action]} access to the data the request sends elsewhere, held in {held}, "
                f"is {verdict} for callers in {jurisdiction}")
    if purpose == DESTINATION:
        return (f"the request sends data to {to}, held in {held}; {_ACTION_WORDS[action]} access to it is "
                f"{verdict} for callers in {jurisdiction}")
    if purpose == TARGET:
        return f"{_ACTION_WORDS[action]} access to data held in {held} is {verdict} for callers in {jurisdiction}"
    if purpose == COPY_SOURCE_FOR_DESTINATION and into is not None:
        if allowed:
            return f"data held in {held} may be copied into {into.held}: {jurisdiction} may read it"
        return (
            f"copying data held in {held} into {into.held} requires that {jurisdiction} may read it, "
            "and the policy does not allow that"
        )
    if purpose == COPY_SOURCE:
        return f"read access to the copy source, data held in {held}, is {verdict} for callers in {jurisdiction}"
    if purpose == NESTED_DATASET:
        return (
            f"the listing also reaches data held in {held}; {_ACTION_WORDS[action]} access to it is {verdict} "
            f"for callers in {jurisdiction}"
        )
    return f"{_ACTION_WORDS[action]} access to data held in {held} is {verdict} for callers in {jurisdiction}"
