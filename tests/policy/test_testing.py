"""Policy tests (`bailiwick policy test`): passing, failing, malformed, and the shipped ones."""

from __future__ import annotations

import pytest

from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.errors import BadRequest, PolicyLoadError
from proxy.policy.decision import Outcome
from proxy.policy.loader import load_policy
from proxy.policy.testing import format_report, load_policy_tests, parse_resource, run_policy_tests

from .conftest import SHIPPED_POLICIES, WritePolicy

MAIL = """\
datasets:
  - name: dublin-mail
    region: eu-west-1
    resources: [s3://mail-eu-dublin, azure://mailstoreie/mailboxes]
    rules:
      - id: local-full-access
        allow: [read, list, write, delete]
        from: [HOME]
      - id: no-us-access
        deny: ["*"]
        from: [US]
  - name: us-mail
    region: us-east-1
    resources: [s3://mail-us-east]
    rules:
      - id: us-local
        allow: [read, list, write]
        from: [HOME]
"""

PASSING = """\
tests:
  - name: an Irish mail client reads Dublin mail
    caller: {jurisdiction: IE}
    request: {action: read, resource: s3://mail-eu-dublin/alice/inbox/1.eml}
    expect: allow
    rule: local-full-access
  - name: a US warrant cannot reach Dublin mail
    caller: {jurisdiction: US}
    request: {action: read, resource: s3://mail-eu-dublin/alice/inbox/1.eml}
    expect: deny
  - name: Azure blobs too
    caller: {jurisdiction: IE}
    request: {action: list, resource: azure://mailstoreie/mailboxes/alice/, listing: true}
    expect: allow
  - name: a proxy elsewhere refuses
    caller: {jurisdiction: IE}
    request: {action: read, resource: s3://mail-eu-dublin/x}
    proxy_region: us-east-1
    expect: deny
    rule: region
  - name: unmatched may be allowed
    caller: {jurisdiction: IE}
    request: {action: read, resource: s3://elsewhere/x}
    unmatched: allow
    expect: allow
"""

FAILING = """\
tests:
  - name: passes
    caller: {jurisdiction: IE}
    request: {action: read, resource: s3://mail-eu-dublin/x}
    expect: allow
  - name: wrong outcome
    caller: {jurisdiction: US}
    request: {action: read, resource: s3://mail-eu-dublin/x}
    expect: allow
  - name: wrong rule
    caller: {jurisdiction: IE}
    request: {action: write, resource: s3://mail-us-east/x, copy_from: s3://mail-eu-dublin/x}
    expect: deny
    rule: local-full-access
"""


def test_passing_file(write_policy: WritePolicy) -> None:
    directory = write_policy({"mail.yaml": MAIL, "tests/mail_test.yaml": PASSING})
    report = run_policy_tests(load_policy(directory), directory)
    assert (report.passed, report.failed, report.ok) == (5, 0, True)
    assert report.results[0].case.name == "an Irish mail client reads Dublin mail"
    assert format_report(report) == "5 passed, 0 failed"


def test_failing_file(write_policy: WritePolicy) -> None:
    directory = write_policy({"mail.yaml": MAIL, "tests/mail_test.yaml": FAILING})
    report = run_policy_tests(load_policy(directory), directory)
    assert (report.passed, report.failed, report.ok) == (1, 2, False)
    assert [r.problems for r in report.results] == [
        (),
        ("expected allow, got deny",),
        ('expected rule "local-full-access" to decide, got "no-us-access"',),
    ]
    assert format_report(report) == "\n".join([
        "FAIL wrong outcome",
        "  at:       policies/tests/mail_test.yaml:6",
        "  expected: allow",
        "  actual:   deny",
        "  rule:     no-us-access (dataset dublin-mail)",
        "  reason:   read access to data held in eu-west-1 (IE) is not allowed for callers in US",
        "",
        "FAIL wrong rule",
        "  at:       policies/tests/mail_test.yaml:10",
        "  expected: deny (rule local-full-access)",
        "  actual:   deny",
        "  rule:     no-us-access (dataset dublin-mail)",
        "  reason:   copying data held in eu-west-1 (IE) into us-east-1 (US) requires that US may read it, "
        "and the policy does not allow that",
        "",
        "1 passed, 2 failed",
    ])


def test_cases_are_read_as_written(write_policy: WritePolicy) -> None:
    directory = write_policy({"mail.yaml": MAIL, "tests/mail_test.yaml": PASSING + FAILING.replace("tests:\n", "")})
    cases = load_policy_tests(load_policy(directory), directory)
    listing, proxied, unmatched, copying = cases[2], cases[3], cases[4], cases[7]
    assert listing.request == AccessRequest(
        (Access(Action.LIST, Resource("azure", "mailstoreie", "mailboxes/alice/"), listing=True),)
    )
    assert (proxied.proxy_region, proxied.rule, proxied.location) == (
        "us-east-1", "region", "policies/tests/mail_test.yaml:15",
    )
    assert (unmatched.unmatched_allow, unmatched.expect) == (True, Outcome.ALLOW)
    assert copying.request.copy_from == Resource("s3", "mail-eu-dublin", "x")


MALFORMED = """\
tests:
  - name: bad jurisdiction and action
    caller: {jurisdiction: UK}
    request: {action: fetch, resource: s3://mail-eu-dublin/x}
    expect: allow
  - name: bad resource, expect and region
    caller: {jurisdiction: IE, subject: alice}
    request: {action: read, resource: "s3://mail-*/x"}
    expect: denied
    proxy_region: mars-1
    unmatched: sometimes
  - name: copy and listing need their actions
    caller: {jurisdiction: IE}
    request: {action: read, resource: s3://mail-eu-dublin/x, copy_from: s3://mail-us-east/y, listing: yes}
    expect: deny
  - caller: {jurisdiction: IE}
    expect: deny
"""


def test_malformed_test_file_names_file_and_line(write_policy: WritePolicy) -> None:
    directory = write_policy({
        "mail.yaml": MAIL,
        "tests/a_test.yaml": MALFORMED,
        "tests/b_test.yaml": "tests:\n  name: not a list\n",
        "tests/notes.yaml": "{ not read: [",
    })
    with pytest.raises(PolicyLoadError) as caught:
        run_policy_tests(load_policy(directory), directory)
    assert [str(i) for i in caught.value.issues] == [
        'policies/tests/a_test.yaml:3: tests[0].caller.jurisdiction: "UK" is not an ISO 3166-1 code '
        "(did you mean GB?)",
        'policies/tests/a_test.yaml:4: tests[0].request.action: expected one of "read", "list", "write", '
        '"delete", "admin", found "fetch"',
        "policies/tests/a_test.yaml:7: tests[1].caller.subject: unknown key (expected one of: jurisdiction, location)",
        'policies/tests/a_test.yaml:8: tests[1].request.resource: "s3://mail-*/x": a resource names one bucket '
        'and key; "*" is not allowed here',
        'policies/tests/a_test.yaml:9: tests[1].expect: expected one of "allow", "deny", "dry_run_deny", '
        'found "denied"',
        'policies/tests/a_test.yaml:10: tests[1].proxy_region: "mars-1" is not a defined region',
        'policies/tests/a_test.yaml:11: tests[1].unmatched: expected "allow" or "deny", found "sometimes"',
        'policies/tests/a_test.yaml:14: tests[2].request.listing: expected true or false, found "yes"',
        "policies/tests/a_test.yaml:14: tests[2].request.copy_from: a copy writes its destination: use action write",
        'policies/tests/a_test.yaml:16: tests[3]: missing required key "name"',
        'policies/tests/a_test.yaml:16: tests[3]: missing required key "request"',
        "policies/tests/b_test.yaml:2: tests: expected a list of tests, found a mapping",
    ]


def test_no_test_files_is_an_error(write_policy: WritePolicy) -> None:
    directory = write_policy({"mail.yaml": MAIL, "tests/readme.yaml": "tests: []\n"})
    with pytest.raises(PolicyLoadError) as caught:
        run_policy_tests(load_policy(directory), directory)
    assert str(caught.value) == "policies/tests: no policy tests found (files named *_test.yaml)"


def test_shipped_policy_tests_pass() -> None:
    report = run_policy_tests(load_policy(SHIPPED_POLICIES), SHIPPED_POLICIES)
    assert report.failed == 0, format_report(report)
    assert report.passed >= 20
    names = {r.case.name for r in report.results}
    # The examples of policies/tests/mail_test.yaml, as written there.
    assert {
        "an Irish mail client reads Dublin mail",
        "a US warrant cannot reach Dublin mail through this proxy",
        "copying Dublin mail into a US bucket is refused",
    } <= names
    outcomes = {r.decision.outcome for r in report.results}
    assert outcomes == {Outcome.ALLOW, Outcome.DENY, Outcome.DRY_RUN_DENY}


def test_parse_resource_for_the_command_line() -> None:
    assert parse_resource("azure://mailstoreie/mailboxes/a") == Resource("azure", "mailstoreie", "mailboxes/a")
    with pytest.raises(BadRequest) as caught:
        parse_resource("s3://mail-*/x")
    assert caught.value.message == '"s3://mail-*/x": a resource names one bucket and key; "*" is not allowed here'
