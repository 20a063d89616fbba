"""The loaded policy: datasets, their rules and regions, ready for decisions.

These values are what `proxy.policy.loader.load_policy` builds from the
policy files and what `proxy.policy.engine.decide` reads. Everything a
decision needs is worked out here, once, at load time: jurisdiction groups
and ``HOME`` are expanded to sets of country codes, each dataset's rules are
laid out per action in the order the engine meets them, and the resource
index is built. A decision then only looks things up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from proxy.domain import Action
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
RESERVED_RULE_IDS = frozenset({
    DEFAULT_DENY, UNMATCHED, UNMATCHED_ALLOW, UNMATCHED_DESTINATION, REGION,
    INVALID_JURISDICTION, EMPTY_REQUEST,
})


class Mode(StrEnum):
    ENFORCE = "enforce"
    DRY_RUN = "dry-run"


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

    def applies_to(self, jurisdiction: str) -> bool:
        return self.any_jurisdiction or jurisdiction in self.jurisdictions


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


@dataclass(frozen=True, slots=True)
class Dataset:
    """Where a set of resources lives and who may reach it.

    `jurisdiction` is the jurisdiction of `region` (what ``HOME`` means).
    `plan` is derived from `rules` when the dataset is made.
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
    plan: Mapping[Action, tuple[RuleStep, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The dataclass is frozen; this is its one derived field, set once.
        object.__setattr__(self, "plan", _plan(self.rules))

    @property
    def dry_run(self) -> bool:
        return self.mode is Mode.DRY_RUN


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

    def __post_init__(self) -> None:
        # Derived once when the policy is made; decisions only read them.
        object.__setattr__(
            self, "index", ResourceIndex((p, d) for d in self.datasets for p in d.resources)
        )
        object.__setattr__(self, "by_name", MappingProxyType({d.name: d for d in self.datasets}))
