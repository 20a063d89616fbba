"""Policy tests: operators' own examples of what the policy must allow and refuse.

`bailiwick policy test DIR` reads ``DIR/tests/*_test.yaml`` (docs/policies.md,
"Policy tests"), judges each request with the same `decide` the proxy uses
and reports every test whose decision differs from the one expected. A test
file that is malformed is an error with its file and line, like a policy
file: a test that cannot be read must not count as passed.

A test is::

    - name: a US warrant cannot reach Dublin mail through this proxy
      caller: {jurisdiction: US}
      request: {action: read, resource: s3://mail-eu-dublin/alice/inbox/1.eml}
      expect: deny            # allow | deny | dry_run_deny

with these optional extensions: ``rule:`` the rule id (or named check, such
as "default deny" or "unmatched") expected to decide; ``proxy_region:`` the
region the proxy is taken to run in; ``unmatched: allow|deny`` the proxy's
setting for resources in no dataset (deny by default); ``request.copy_from``
the source of a server-side copy (with action write); ``request.listing:
true`` for a listing, where the resource's key is the listing prefix.

Resources are written like patterns but name one object:
``s3://bucket/key``, or ``azure://account/container/blob``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from proxy.config.model import Unmatched
from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.errors import BadRequest, PolicyIssue, PolicyLoadError
from proxy.jurisdictions import describe_invalid, is_country_code
from proxy.policy import patterns
from proxy.policy.decision import Decision, Outcome
from proxy.policy.engine import decide
from proxy.policy.model import UNKNOWN_LOCATION, Policy
from proxy.policy.patterns import PatternError
from proxy.policy.yamlsource import Map, Reader, Value, join, parse

TESTS_FOLDER = "tests"
TEST_FILE_GLOB = "*_test.yaml"

T = TypeVar("T")

_TEST_KEYS = ("name", "caller", "request", "expect", "rule", "proxy_region", "unmatched")
_REQUEST_KEYS = ("action", "resource", "copy_from", "listing")


@dataclass(frozen=True, slots=True)
class PolicyTestCase:
    """One test as written in a test file."""

    name: str
    file: str
    line: int
    jurisdiction: str
    request: AccessRequest
    expect: Outcome
    rule: str | None = None
    proxy_region: str | None = None
    unmatched_allow: bool = False
    # Where GeoIP sees the caller from (``caller.location``): a code or "unknown"; None: not known.
    seen_from: str | None = None

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class PolicyTestResult:
    """A test and the decision it got; `problems` says what differed (empty: passed)."""

    case: PolicyTestCase
    decision: Decision
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class PolicyTestReport:
    results: tuple[PolicyTestResult, ...]

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.passed)

    @property
    def ok(self) -> bool:
        return self.failed == 0


def parse_resource(text: str) -> Resource:
    """A concrete resource written as tests write it, e.g. for `bailiwick explain`.

    Raises `BadRequest` whose message says what is wrong with `text`.
    """
    try:
        return patterns.parse_resource(text)
    except PatternError as exc:
        raise BadRequest(str(exc)) from exc


def run_policy_tests(policy: Policy, directory: Path) -> PolicyTestReport:
    """Run ``directory/tests/*_test.yaml`` against `policy`.

    Raises `PolicyLoadError` (every issue, with file and line) when a test
    file is malformed or when there is no test file at all: a run that
    tested nothing must not look like a run that passed.
    """
    cases = load_policy_tests(policy, directory)
    return PolicyTestReport(tuple(run_case(policy, case) for case in cases))


def run_case(policy: Policy, case: PolicyTestCase) -> PolicyTestResult:
    decision = decide(
        policy, case.jurisdiction, case.request,
        proxy_region=case.proxy_region, unmatched_allow=case.unmatched_allow, location=case.seen_from,
    )
    problems: list[str] = []
    if decision.outcome is not case.expect:
        problems.append(f"expected {case.expect.value}, got {decision.outcome.value}")
    if case.rule is not None and decision.rule != case.rule:
        problems.append(f'expected rule "{case.rule}" to decide, got "{decision.rule}"')
    return PolicyTestResult(case, decision, tuple(problems))


def format_report(report: PolicyTestReport) -> str:
    """Every failure with what was expected and what came out, then "N passed, M failed"."""
    lines: list[str] = []
    for result in report.results:
        if result.passed:
            continue
        case, decision = result.case, result.decision
        expected = case.expect.value + (f" (rule {case.rule})" if case.rule is not None else "")
        lines += [
            f"FAIL {case.name}",
            f"  at:       {case.location}",
            f"  expected: {expected}",
            f"  actual:   {decision.outcome.value}",
            f"  rule:     {decision.rule}"
            + (f" (dataset {decision.dataset})" if decision.dataset is not None else ""),
            f"  reason:   {decision.reason}",
            "",
        ]
    lines.append(f"{report.passed} passed, {report.failed} failed")
    return "\n".join(lines)


def load_policy_tests(policy: Policy, directory: Path) -> tuple[PolicyTestCase, ...]:
    """Read and check every test file; raises `PolicyLoadError` listing every problem."""
    folder = directory / TESTS_FOLDER
    files = sorted(p for p in folder.glob(TEST_FILE_GLOB) if p.is_file()) if folder.is_dir() else []
    if not files:
        raise PolicyLoadError([
            PolicyIssue(str(folder), 0, "", f"no policy tests found (files named {TEST_FILE_GLOB})")
        ])
    issues: list[PolicyIssue] = []
    cases: list[PolicyTestCase] = []
    for path in files:
        shown = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(PolicyIssue(shown, 0, "", f"cannot be read as UTF-8 text: {exc}"))
            continue
        root = parse(text, shown, issues)
        if root is not None:
            cases.extend(_TestReader(Reader(shown, issues), policy).file(root))
    if issues:
        raise PolicyLoadError(issues)
    return tuple(cases)


def _field(entry: Map, path: str, key: str, read: Callable[[Value, str], T | None]) -> T | None:
    """`read` applied to the optional key `key` of `entry`; None when it is absent or unusable."""
    value = entry.get(key)
    return read(value, join(path, key)) if value is not None else None


class _TestReader:
    def __init__(self, reader: Reader, policy: Policy) -> None:
        self.reader = reader
        self.policy = policy

    def file(self, root: Value) -> list[PolicyTestCase]:
        top = self.reader.mapping(root, "", allowed=("tests",), what="a mapping with a tests: list")
        tests = top.get("tests") if top is not None else None
        if tests is None:
            return []
        listed = self.reader.sequence(tests, "tests", what="a list of tests", non_empty=False)
        cases = (self.case(item, f"tests[{i}]") for i, item in enumerate(listed.items if listed else ()))
        return [c for c in cases if c is not None]

    def case(self, node: Value, path: str) -> PolicyTestCase | None:
        reader = self.reader
        before = len(reader.issues)
        entry = reader.mapping(
            node, path, allowed=_TEST_KEYS, required=("name", "caller", "request", "expect"),
            what="a test (a mapping with name, caller, request and expect)",
        )
        if entry is None:
            return None
        name = _field(entry, path, "name", reader.string)
        jurisdiction = self.caller(entry, path)
        location = self.location(entry, path)
        request = self.request(entry, path)
        expected = _field(entry, path, "expect", lambda v, p: reader.choice(v, p, [o.value for o in Outcome]))
        rule = _field(entry, path, "rule", reader.string)
        proxy_region = _field(entry, path, "proxy_region", self.region)
        # Listed as "allow" or "deny" in the message, as the docs write the choice.
        unmatched = _field(entry, path, "unmatched", lambda v, p: reader.choice(v, p, sorted(Unmatched)))
        if len(reader.issues) > before or name is None or jurisdiction is None or request is None:
            return None
        if expected is None:
            return None
        return PolicyTestCase(
            name=name, file=reader.file, line=entry.line, jurisdiction=jurisdiction, request=request,
            expect=Outcome(expected), rule=rule, proxy_region=proxy_region,
            unmatched_allow=unmatched == Unmatched.ALLOW, seen_from=location,
        )

    def region(self, value: Value, path: str) -> str | None:
        region = self.reader.string(value, path, what="a region name")
        if region is not None and region not in self.policy.regions:
            self.reader.error(value.line, path, f'"{region}" is not a defined region')
            return None
        return region

    def caller(self, entry: Map, path: str) -> str | None:
        value = entry.get("caller")
        if value is None:
            return None
        path = join(path, "caller")
        caller = self.reader.mapping(
            value, path, allowed=("jurisdiction", "location"), required=("jurisdiction",),
            what="a caller, e.g. {jurisdiction: IE}",
        )
        node = caller.get("jurisdiction") if caller is not None else None
        if node is None:
            return None
        code = self.reader.string(node, join(path, "jurisdiction"), what="an ISO 3166-1 country code")
        if code is not None and not is_country_code(code):
            self.reader.error(node.line, join(path, "jurisdiction"), describe_invalid(code))
            return None
        return code

    def location(self, entry: Map, path: str) -> str | None:
        """The caller's ``location`` (where GeoIP sees it from): a country code or "unknown"; None if not given.

        An error in it is reported by `caller`'s reading of the mapping, or here for the value.
        """
        value = entry.get("caller")
        node = value.get("location") if isinstance(value, Map) else None
        if node is None:
            return None
        path = join(join(path, "caller"), "location")
        code = self.reader.string(node, path, what='an ISO 3166-1 country code or "unknown"')
        if code is not None and code != UNKNOWN_LOCATION and not is_country_code(code):
            self.reader.error(node.line, path, f'{describe_invalid(code)} (or "unknown")')
            return None
        return code

    def request(self, entry: Map, path: str) -> AccessRequest | None:
        reader = self.reader
        value = entry.get("request")
        if value is None:
            return None
        path = join(path, "request")
        request = reader.mapping(
            value, path, allowed=_REQUEST_KEYS, required=("action", "resource"),
            what="a request, e.g. {action: read, resource: s3://bucket/key}",
        )
        if request is None:
            return None
        action_text = _field(request, path, "action", lambda v, p: reader.choice(v, p, [a.value for a in Action]))
        resource = _field(request, path, "resource", self.resource)
        copy_from = _field(request, path, "copy_from", self.resource)
        listing = _field(request, path, "listing", reader.boolean) or False
        if action_text is None or resource is None:
            return None
        action = Action(action_text)
        if copy_from is not None and action is not Action.WRITE:
            reader.error(request.line, join(path, "copy_from"), "a copy writes its destination: use action write")
            return None
        if listing and action is not Action.LIST:
            reader.error(request.line, join(path, "listing"), "a listing is a list action: use action list")
            return None
        return AccessRequest((Access(action, resource, listing=listing),), copy_from=copy_from)

    def resource(self, value: Value, path: str) -> Resource | None:
        text = self.reader.string(value, path, what="a resource, e.g. s3://bucket/key")
        if text is None:
            return None
        try:
            return patterns.parse_resource(text)
        except PatternError as exc:
            self.reader.error(value.line, path, str(exc))
            return None
