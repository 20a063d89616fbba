"""The requests `bailiwick policy diff` decides under both policies, and those of the policy tests.

A `Sample` is one request to decide again (a `Subject`: who asks, for what,
with which proxy settings) and where it was seen: a policy test
(`samples_from_tests`), or identical audit log lines (`proxy.policy.replay`).
The comparison (`proxy.policy.diff`) decides each sample under the old and
the new policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from proxy.config.model import Unmatched
from proxy.domain import AccessRequest
from proxy.policy.testing import PolicyTestCase


@dataclass(frozen=True, slots=True)
class Settings:
    """The proxy settings a request is decided with (`decide`'s `proxy_region` and `unmatched_allow`)."""

    proxy_region: str | None = None
    unmatched_allow: bool = False

    @property
    def unmatched(self) -> Unmatched:
        """`unmatched_allow` as the configuration and the flag write it."""
        return Unmatched.ALLOW if self.unmatched_allow else Unmatched.DENY


@dataclass(frozen=True, slots=True)
class Subject:
    """One request to decide under both policies: who asks, from where, for what, with which settings.

    `location` is where the caller was seen from, as the engine takes it (`decide`'s `location`): an
    audit line's ``caller.location`` or a test's ``caller.location``; None when not known (no GeoIP, or
    a line written without it), which is how such a request was decided.
    """

    jurisdiction: str
    request: AccessRequest
    settings: Settings = Settings()
    location: str | None = None


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


def samples_from_tests(cases: Iterable[PolicyTestCase]) -> list[Sample]:
    """One sample per distinct request (with its settings) among `cases`, in the order first met.

    The old and the new folder usually hold the same tests; a request written
    twice is one decision, reported at the test that first wrote it.
    """
    samples: dict[Subject, Sample] = {}
    for case in cases:
        settings = Settings(case.proxy_region, case.unmatched_allow)
        subject = Subject(case.jurisdiction, case.request, settings, case.seen_from)
        if subject not in samples:
            samples[subject] = Sample(subject, Source.TEST, case.file, case.line, name=case.name)
    return list(samples.values())
