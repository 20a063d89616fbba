"""What the policy engine answers, with the whole trace behind it.

A `Decision` is what `proxy.policy.engine.decide` returns (casbin's
``enforce_ex``): the outcome, the dataset and rule that decided, and a reason
in plain words. `checks` keeps every dataset looked at, for `bailiwick
explain` and the audit log, and each check's `rules` every rule evaluated.

The proxy never reads `rules`, so the engine does not describe the rules while
it decides: a check keeps the dataset it was judged against, and `Check.rules`
walks that dataset's rules (`proxy.policy.model.Dataset.trace`) when it is
read. The walk is pure, so it gives the same trace every time it is asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from proxy.domain import Access

if TYPE_CHECKING:  # the model imports this module; a check only holds a dataset, its mode and encryption
    from proxy.policy.model import Dataset, Encryption, Mode

DEFAULT_DENY = "default deny"


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    DRY_RUN_DENY = "dry_run_deny"


class Purpose(StrEnum):
    """Why an access was judged: what the checked resource is to the request."""

    TARGET = "target"
    NESTED_DATASET = "nested dataset"
    COPY_SOURCE = "copy source"
    COPY_SOURCE_FOR_DESTINATION = "copy source for destination"
    PLACEMENT = "placement"
    SOURCE = "source"
    SOURCE_FOR_DESTINATION = "source for destination"
    DESTINATION = "destination"
    REMOTE_REGION = "remote region"


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule as the engine looked at it."""

    rule: str          # rule id
    effect: str        # "allow" or "deny"
    matched: bool      # did both its actions and its jurisdictions match?
    note: str          # why it did or did not match, in plain words


@dataclass(frozen=True, slots=True)
class Check:
    """One access judged for one jurisdiction against its dataset."""

    access: Access
    jurisdiction: str          # the jurisdiction being asked about
    purpose: Purpose
    dataset: str | None        # None: the resource is in no dataset
    pattern: str | None        # the resource pattern that matched, e.g. "s3://archive/ie/"
    region: str | None
    data_jurisdiction: str | None
    mode: Mode | None          # the dataset's mode; None: no dataset
    outcome: Outcome           # DRY_RUN_DENY when a dry-run dataset would deny
    rule: str                  # deciding rule id, DEFAULT_DENY, or a named check ("unmatched", "region", ...)
    # Plain words, fit for the caller: names the data's and the caller's jurisdiction and the action.
    reason: str
    # Where `rules` comes from: the traces themselves (`decide(..., trace=True)`), or the dataset whose
    # rules decided, to be walked when `rules` is read. () when no rule was looked at.
    traced: tuple[RuleTrace, ...] | Dataset = field(default=(), repr=False, compare=False)
    # The dataset's encryption (`proxy.policy.model.Encryption`); None: no dataset. Read by the proxy to
    # know whether an object is stored encrypted, so it is copied here rather than looked up per request.
    encryption: Encryption | None = None

    @property
    def rules(self) -> tuple[RuleTrace, ...]:
        """Every rule looked at, in the order the engine meets them, up to the one that decided."""
        traced = self.traced
        if isinstance(traced, tuple):
            return traced
        return traced.trace(self.access.action, self.jurisdiction)[1]


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer for a whole request.

    `outcome` is DENY if any check denied (deny-overrides across resources),
    DRY_RUN_DENY if none denied but some dry-run dataset would have, else
    ALLOW. `deciding` is the check that decided: the first denying check, else
    the first would-deny, else the target's check.
    """

    outcome: Outcome
    deciding: Check
    checks: tuple[Check, ...]
    policy_version: str

    @property
    def forwarded(self) -> bool:
        return self.outcome is not Outcome.DENY

    @property
    def dataset(self) -> str | None:
        return self.deciding.dataset

    @property
    def rule(self) -> str:
        return self.deciding.rule

    @property
    def reason(self) -> str:
        return self.deciding.reason

    @property
    def data_region(self) -> str | None:
        return self.deciding.region
