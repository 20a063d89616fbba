"""The loaded policy: datasets, their rules and regions, ready for decisions.

These values are what `proxy.policy.loader.load_policy` builds from the
policy files and what `proxy.policy.engine.decide` reads. Everything a
decision needs is worked out here, once, at load time: jurisdiction groups
and ``HOME`` are expanded to sets of country codes, each dataset's rules are
laid out per action in the order the engine meets them, and the resource
index is built. A decision then only looks things up.

Each dataset carries two views of its rules that must always agree:

- `Dataset.plan` and `Dataset.trace`: the rules in the order the engine meets
  them (deny rules first, then allow rules, each in file order), walked one by
  one and described in plain words. This is what `bailiwick explain` and the
  policy tests show, and it is the definition of which rule decides. The plan
  is made the first time a trace asks for it: the proxy never does.
- `Dataset.answers` and `Dataset.deciding_rule`: the same answer worked out in
  advance, per action, as a table from jurisdiction to the position of the
  deciding rule. The proxy decides with this on every request, so a decision
  costs two dictionary look-ups however many rules a dataset has and builds
  no trace. The tables depend only on the shape of the rules (effects,
  actions, jurisdictions), not on their ids, so datasets written from the
  same template share one set of tables; the tests check every jurisdiction
  and action against `trace`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType

from proxy.domain import Action
from proxy.policy.cors import CorsRule
from proxy.policy.decision import DEFAULT_DENY, RuleTrace
from proxy.policy.index import ResourceIndex
from proxy.policy.patterns import ResourcePattern

ANY = "*"       # any jurisdiction a caller can have
HOME = "HOME"   # the jurisdiction of the region the dataset lives in
BUILTIN_JURISDICTIONS = frozenset({ANY, HOME})

# Names of the engine's own checks, reported where a rule id would be. No rule may take them.
UNMATCHED = "unmatched"
UNMATCHED_ALLOW = "unmatched: allow"
UNMATCHED_DESTINATION = "unmatched destination"
REGION = "region"
INVALID_JURISDICTION = "invalid jurisdiction"
EMPTY_REQUEST = "empty request"
ACCOUNT_LISTING = "account listing"
PLACEMENT = "placement"
REMOTE_REGION = "remote region"
LOCATION = "location"
RESERVED_RULE_IDS = frozenset({
    DEFAULT_DENY, UNMATCHED, UNMATCHED_ALLOW, UNMATCHED_DESTINATION, REGION,
    INVALID_JURISDICTION, EMPTY_REQUEST, ACCOUNT_LISTING, PLACEMENT, REMOTE_REGION, LOCATION,
})
# `location: same` on a rule: the caller must be seen from the country its credentials name.
SAME_LOCATION = "same"
# What a caller whose address's country is not known is seen from (as `proxy.identity.geoip` says it).
UNKNOWN_LOCATION = "unknown"


class Mode(StrEnum):
    ENFORCE = "enforce"
    DRY_RUN = "dry-run"


class Encryption(StrEnum):
    """Whether a dataset's objects are stored encrypted (`encryption:`; docs/policies.md).

    REQUIRED: every object written through the proxy is stored encrypted, and a
    plaintext object found there is refused on read. MIGRATING: the same for
    writes, but plaintext objects found are still served, while `bailiwick
    encrypt` migrates them. NONE (the key left out): stored as the caller sends it.
    """

    NONE = "none"
    REQUIRED = "required"
    MIGRATING = "migrating"

    @property
    def encrypts(self) -> bool:
        """Whether objects written into the dataset are encrypted (REQUIRED or MIGRATING)."""
        return self is not Encryption.NONE


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"

    @property
    def verb(self) -> str:
        """The effect as a verb: "allows", "denies"."""
        return "allows" if self is Effect.ALLOW else "denies"


def action_list(actions: frozenset[Action]) -> str:
    """Actions in their canonical order, e.g. "read, list"."""
    return ", ".join(a.value for a in Action if a in actions)


@dataclass(frozen=True, slots=True)
class Rule:
    """One allow or deny rule of a dataset.

    `sources` are the names written in ``from`` (codes, groups, ``HOME``,
    ``"*"``); `jurisdictions` is what they expand to, with ``HOME`` already
    resolved to the dataset's jurisdiction; `any_jurisdiction` is set when
    ``"*"`` is among them. `via` maps each code in `jurisdictions` to the
    first name in `sources` that brought it in, so a trace can say why a
    rule applied ("DE" came "from: EEA").

    `location` (allow rules only; None: not checked) is the ``location`` key as
    written: ``same`` (the caller must be seen, by GeoIP, from the country its
    credentials name) or a country code, group or ``HOME``, expanded to
    `location_codes` (the caller must be seen from one of them). An unknown
    location never agrees.
    """

    id: str
    effect: Effect
    actions: frozenset[Action]
    sources: tuple[str, ...]
    jurisdictions: frozenset[str]
    any_jurisdiction: bool
    file: str = ""
    line: int = 0
    via: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)
    location: str | None = None
    location_codes: frozenset[str] = frozenset()

    def applies_to(self, jurisdiction: str) -> bool:
        return self.any_jurisdiction or jurisdiction in self.jurisdictions

    def location_agrees(self, jurisdiction: str, location: str | None) -> bool:
        """Whether a caller in `jurisdiction` seen from `location` (None: not known) passes `location`."""
        if self.location is None:
            return True
        if location is None or location == UNKNOWN_LOCATION:
            return False
        if self.location == SAME_LOCATION:
            return location == jurisdiction
        return location in self.location_codes


@dataclass(frozen=True, slots=True)
class RuleStep:
    """A rule as the engine meets it for one action.

    For a rule that does not cover the action, `skipped` is the trace entry
    the engine records for it, built once here rather than per decision.
    """

    rule: Rule
    skipped: RuleTrace | None


def _plan(rules: tuple[Rule, ...]) -> Mapping[Action, tuple[RuleStep, ...]]:
    """Per action: deny rules first, then allow rules, each group in file order."""
    ordered = [r for r in rules if r.effect is Effect.DENY] + [r for r in rules if r.effect is Effect.ALLOW]
    plan: dict[Action, tuple[RuleStep, ...]] = {}
    for action in Action:
        steps = []
        for rule in ordered:
            skipped = None
            if action not in rule.actions:
                skipped = RuleTrace(
                    rule=rule.id,
                    effect=rule.effect.value,
                    matched=False,
                    note=f"{rule.effect.verb} {action_list(rule.actions)}, not {action.value}",
                )
            steps.append(RuleStep(rule, skipped))
        plan[action] = tuple(steps)
    return MappingProxyType(plan)


# Per action: jurisdiction -> position in `Dataset.rules` of the deciding rule, and the position for
# any jurisdiction the table does not name. NO_RULE: no rule decides (default deny).
ActionAnswers = tuple[Mapping[str, int], int]
NO_RULE = -1

# What decides, per rule and in file order: effect, actions, jurisdictions, any_jurisdiction.
_Shape = tuple[tuple[Effect, frozenset[Action], frozenset[str], bool], ...]


def _answers(rules: tuple[Rule, ...]) -> Mapping[Action, ActionAnswers]:
    """The deciding rule for every action and jurisdiction, as `Dataset.trace` would find it."""
    return _answers_for_shape(tuple((r.effect, r.actions, r.jurisdictions, r.any_jurisdiction) for r in rules))


# Bounded, so that loading many policies in one process keeps at most this many shapes alive; a
# shape that has dropped out is simply worked out again (the tables are the same either way).
@lru_cache(maxsize=4096)
def _answers_for_shape(shape: _Shape) -> Mapping[Action, ActionAnswers]:
    # The order of `_plan`: deny rules first, then allow rules, each group in file order.
    order = [i for i, r in enumerate(shape) if r[0] is Effect.DENY] + [
        i for i, r in enumerate(shape) if r[0] is Effect.ALLOW
    ]
    answers: dict[Action, ActionAnswers] = {}
    for action in Action:
        # A jurisdiction no rule names is matched only by "*" rules; one a rule names takes the
        # first rule, in plan order, that names it, unless a "*" rule comes before that one.
        named: dict[str, int] = {}
        otherwise = NO_RULE
        for i in order:
            _, actions, jurisdictions, any_jurisdiction = shape[i]
            if action not in actions:
                continue
            if any_jurisdiction:
                otherwise = i
                break
            for jurisdiction in jurisdictions:
                named.setdefault(jurisdiction, i)
        # Plain dicts, shared by every dataset of this shape and only ever read (typed Mapping).
        answers[action] = (named, otherwise)
    return answers


@lru_cache(maxsize=1024)
def _held(region: str, jurisdiction: str) -> str:
    # One string per region, however many datasets are held there.
    return f"{region} ({jurisdiction})"


@dataclass(frozen=True, slots=True)
class Dataset:
    """Where a set of resources lives and who may reach it.

    `jurisdiction` is the jurisdiction of `region` (what ``HOME`` means).
    `plan`, `answers` and `held` are derived from the other fields when the
    dataset is made (see the module docstring for `plan` and `answers`);
    `held` is where the data is held as reasons name it, "eu-west-1 (IE)".
    `encryption` says whether the proxy stores its objects encrypted
    (`encryption:` in the file; NONE when left out).
    """

    name: str
    region: str
    jurisdiction: str
    resources: tuple[ResourcePattern, ...]
    rules: tuple[Rule, ...] = ()
    mode: Mode = Mode.ENFORCE
    description: str = ""
    file: str = ""
    line: int = 0
    encryption: Encryption = Encryption.NONE
    # `cors:` (`proxy.policy.cors`): the rules browsers' cross-origin requests are answered with; none: refused.
    cors: tuple[CorsRule, ...] = ()
    answers: Mapping[Action, ActionAnswers] = field(init=False, repr=False, compare=False)
    held: str = field(init=False, repr=False, compare=False)
    # `plan`, made the first time a trace asks for it: the proxy decides from `answers` and never does.
    _plan: Mapping[Action, tuple[RuleStep, ...]] | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The dataclass is frozen; its derived fields are set once, here.
        object.__setattr__(self, "answers", _answers(self.rules))
        object.__setattr__(self, "held", _held(self.region, self.jurisdiction))

    @property
    def plan(self) -> Mapping[Action, tuple[RuleStep, ...]]:
        """Per action, the rules in the order the engine meets them (see the module docstring)."""
        plan = self._plan
        if plan is None:
            plan = _plan(self.rules)
            object.__setattr__(self, "_plan", plan)
        return plan

    @property
    def dry_run(self) -> bool:
        return self.mode is Mode.DRY_RUN

    def deciding_rule(self, action: Action, jurisdiction: str) -> Rule | None:
        """The rule that decides `action` for callers in `jurisdiction` (None: default deny), from `answers`."""
        named, otherwise = self.answers[action]
        position = named.get(jurisdiction, otherwise)
        return self.rules[position] if position != NO_RULE else None

    def trace(self, action: Action, jurisdiction: str) -> tuple[Rule | None, tuple[RuleTrace, ...]]:
        """The deciding rule found by walking `plan`, and every rule looked at on the way, in words.

        The walk stops at the first rule that covers `action` and applies to
        `jurisdiction`; the rules after it are not looked at.
        """
        traces: list[RuleTrace] = []
        for step in self.plan[action]:
            if step.skipped is not None:
                traces.append(step.skipped)
                continue
            rule = step.rule
            verb = f"{rule.effect.verb} {action.value}"
            if rule.applies_to(jurisdiction):
                source = rule.via.get(jurisdiction, '"*"')
                note = f"{verb} for callers in {jurisdiction}" + (
                    "" if source == jurisdiction else f" (through {source})"
                )
                traces.append(RuleTrace(rule.id, rule.effect.value, True, note))
                return rule, tuple(traces)
            note = f"{verb}, but not for callers in {jurisdiction} (from: {', '.join(rule.sources)})"
            traces.append(RuleTrace(rule.id, rule.effect.value, False, note))
        return None, tuple(traces)


@dataclass(frozen=True, slots=True)
class Policy:
    """A whole loaded policy.

    `version` is the first 12 hex digits of a SHA-256 over the policy files
    (see `proxy.policy.loader`); `regions` maps each region to its
    jurisdiction; `files` are the policy files read, as displayed in errors
    (the directory as given joined with the file name); `groups` are the
    jurisdiction groups, expanded to country codes. `index` is built from
    the datasets' resource patterns when the policy is made.
    """

    version: str
    datasets: tuple[Dataset, ...]
    regions: Mapping[str, str]
    files: tuple[str, ...]
    groups: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    index: ResourceIndex[Dataset] = field(init=False, repr=False, compare=False)
    by_name: Mapping[str, Dataset] = field(init=False, repr=False, compare=False)
    # Whether any dataset is stored encrypted: without one, the proxy never looks at encryption again.
    encrypted: bool = field(init=False, repr=False, compare=False)
    # Whether any dataset has CORS rules: without one, requests with an Origin cost nothing more.
    cors: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Derived once when the policy is made; decisions only read them.
        object.__setattr__(
            self, "index", ResourceIndex((p, d) for d in self.datasets for p in d.resources)
        )
        object.__setattr__(self, "by_name", MappingProxyType({d.name: d for d in self.datasets}))
        object.__setattr__(self, "encrypted", any(d.encryption.encrypts for d in self.datasets))
        object.__setattr__(self, "cors", any(d.cors for d in self.datasets))
