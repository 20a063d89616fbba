"""A dataset's ``cors:`` rules: how they load (every problem with its file and line) and which rule matches."""

from __future__ import annotations

import string
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.cli import main
from proxy.errors import PolicyLoadError
from proxy.policy.cors import CorsRule, Wildcard, match, requested_headers
from proxy.policy.model import Policy

from .conftest import WritePolicy

Load = Callable[..., Policy]

DATASET = """\
datasets:
  - name: web
    region: eu-west-1
    resources: [s3://web-assets]
    rules:
      - allow: [read]
        from: [IE]
    cors:
"""


def _with_cors(rules: str) -> dict[str, str]:
    return {"web.yaml": DATASET + rules}


def test_a_full_rule_is_read_as_written(load: Load) -> None:
    policy = load(_with_cors(
        "      - id: app\n"
        "        allowed_origins: [https://app.example.com, \"https://*.example.org\", \"*\"]\n"
        "        allowed_methods: [GET, PUT, HEAD]\n"
        "        allowed_headers: [X-Bailiwick-Token, \"x-amz-*\"]\n"
        "        expose_headers: [ETag, x-amz-version-id]\n"
        "        max_age_seconds: 3000\n"
        "      - allowed_origins: [https://other.example.com]\n"
        "        allowed_methods: [DELETE]\n"
    ))
    first, second = policy.by_name["web"].cors
    assert [o.text for o in first.origins] == ["https://app.example.com", "https://*.example.org", "*"]
    assert first.methods == {"GET", "PUT", "HEAD"}
    assert [h.text for h in first.headers] == ["X-Bailiwick-Token", "x-amz-*"]
    assert (first.expose, first.max_age, first.id, first.line) == (("ETag", "x-amz-version-id"), 3000, "app", 9)
    assert (second.methods, len(second.headers), second.expose, second.max_age) == (frozenset({"DELETE"}), 0, (), None)
    assert policy.cors


def test_a_dataset_without_cors_has_no_rules(load: Load) -> None:
    policy = load({"web.yaml": DATASET.removesuffix("    cors:\n")})
    assert policy.by_name["web"].cors == ()
    assert not policy.cors


P = "policies/web.yaml"


@pytest.mark.parametrize(("rules", "expected"), [
    pytest.param("      - allowed_origins: [https://a.example.com]\n",
                 [f'{P}:9: datasets[0].cors[0]: missing required key "allowed_methods"'], id="no methods"),
    pytest.param("      - AllowedOrigins: [https://a.example.com]\n        allowed_methods: [GET]\n",
                 [f'{P}:9: datasets[0].cors[0]: missing required key "allowed_origins"',
                  f"{P}:9: datasets[0].cors[0].AllowedOrigins: unknown key (did you mean allowed_origins? expected "
                  "one of: id, allowed_origins, allowed_methods, allowed_headers, expose_headers, max_age_seconds)"],
                 id="S3's key name"),
    pytest.param("      - allowed_origins: [https://a.example.com]\n        allowed_methods: [GET]\n"
                 "        max_age: 10\n",
                 [f"{P}:11: datasets[0].cors[0].max_age: unknown key (did you mean max_age_seconds? expected one "
                  "of: id, allowed_origins, allowed_methods, allowed_headers, expose_headers, max_age_seconds)"],
                 id="misspelt key"),
    pytest.param("      - allowed_origins: [https://a.example.com]\n        allowed_methods: [get, PATCH]\n",
                 [f'{P}:10: datasets[0].cors[0].allowed_methods: "get" is not a CORS method (expected one of: '
                  "GET, PUT, POST, DELETE, HEAD) (did you mean GET?)",
                  f'{P}:10: datasets[0].cors[0].allowed_methods: "PATCH" is not a CORS method (expected one of: '
                  "GET, PUT, POST, DELETE, HEAD)"], id="methods"),
    pytest.param("      - allowed_origins: [\"https://*.*.example.com\", app.example.com, https://a.example.com/]\n"
                 "        allowed_methods: [GET]\n",
                 [f'{P}:9: datasets[0].cors[0].allowed_origins: "https://*.*.example.com" has more than one "*" '
                  "(S3's rule: at most one wildcard in an origin)",
                  f'{P}:9: datasets[0].cors[0].allowed_origins: "app.example.com" is not an origin '
                  '(scheme://host[:port], e.g. "https://app.example.com", or "*")',
                  f'{P}:9: datasets[0].cors[0].allowed_origins: "https://a.example.com/" is not an origin '
                  '(scheme://host[:port], e.g. "https://app.example.com", or "*")'], id="origins"),
    pytest.param("      - allowed_origins: [\"*\"]\n        allowed_methods: [GET]\n"
                 "        allowed_headers: [\"x-*-*\", \"bad header\"]\n        expose_headers: [\"*\"]\n",
                 [f'{P}:11: datasets[0].cors[0].allowed_headers: "x-*-*" has more than one "*" '
                  "(S3's rule: at most one wildcard in a header name)",
                  f'{P}:11: datasets[0].cors[0].allowed_headers: "bad header" is not a header name',
                  f'{P}:12: datasets[0].cors[0].expose_headers: "*" is not a header name (expose_headers names '
                  "headers one by one, as S3 does)"], id="headers"),
    pytest.param("      - allowed_origins: [\"*\"]\n        allowed_methods: [GET]\n        max_age_seconds: -1\n"
                 "      - allowed_origins: [\"*\"]\n        allowed_methods: [GET]\n        max_age_seconds: 90000\n",
                 [f'{P}:11: datasets[0].cors[0].max_age_seconds: expected a whole number of seconds from 0 to '
                  '86400, found "-1"',
                  f'{P}:14: datasets[0].cors[1].max_age_seconds: expected a whole number of seconds from 0 to '
                  '86400, found "90000"'], id="max age"),
    pytest.param("      - id: a\n        allowed_origins: [\"*\"]\n        allowed_methods: [GET]\n"
                 "      - id: a\n        allowed_origins: [\"*\"]\n        allowed_methods: [PUT]\n",
                 [f'{P}:12: datasets[0].cors[1].id: CORS rule id "a" is used twice'], id="id twice"),
    pytest.param("      - ID: a\n        allowed_origins: [\"*\"]\n        allowed_methods: [GET]\n        MaxAge: 5\n",
                 [f"{P}:9: datasets[0].cors[0].ID: unknown key (did you mean id? expected one of: id, allowed_origins, "
                  "allowed_methods, allowed_headers, expose_headers, max_age_seconds)",
                  f"{P}:12: datasets[0].cors[0].MaxAge: unknown key (did you mean max_age_seconds? expected one of: "
                  "id, allowed_origins, allowed_methods, allowed_headers, expose_headers, max_age_seconds)"],
                 id="CloudFormation's names"),
    pytest.param("      - id: " + "x" * 256 + "\n        allowed_origins: [\"*\"]\n        allowed_methods: [GET]\n",
                 [f"{P}:9: datasets[0].cors[0].id: is longer than 255 characters (S3's limit)"], id="long id"),
    pytest.param("".join("      - allowed_origins: [\"*\"]\n        allowed_methods: [GET]\n" for _ in range(101)),
                 [f"{P}:9: datasets[0].cors: has 101 rules; S3 takes at most 100"], id="too many rules"),
    pytest.param("      allowed_origins: [\"*\"]\n",
                 [f"{P}:9: datasets[0].cors: expected a list of CORS rules, found a mapping"], id="not a list"),
    pytest.param("      []\n", [f"{P}:9: datasets[0].cors: expected a list of CORS rules, found an empty list"],
                 id="empty list"),
])
def test_load_errors_name_file_line_path(load: Load, rules: str, expected: list[str]) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        load(_with_cors(rules))
    assert [str(issue) for issue in caught.value.issues] == expected


def _rule(origins: tuple[str, ...] = ("https://app.example.com",), methods: tuple[str, ...] = ("GET",),
          headers: tuple[str, ...] = (), rule_id: str = "") -> CorsRule:
    return CorsRule(tuple(Wildcard.of(o, fold=False) for o in origins), frozenset(methods),
                    tuple(Wildcard.of(h, fold=True) for h in headers), id=rule_id)


RULES = (
    _rule(("https://app.example.com", "https://*.example.org"), ("GET", "PUT"), ("x-bailiwick-token", "x-amz-*"),
          "app"),
    _rule(("*",), ("GET",), (), "anyone-reads"),
    _rule(("https://admin.example.com",), ("DELETE",), ("*",), "admin"),
)


@pytest.mark.parametrize(("origin", "method", "headers", "expected", "any_origin"), [
    ("https://app.example.com", "GET", (), "app", False),
    ("https://app.example.com", "PUT", ("x-bailiwick-token", "x-amz-meta-a"), "app", False),
    ("https://shop.example.org", "PUT", ("x-amz-date",), "app", False),
    ("https://example.org", "PUT", (), None, False),              # "*." needs a subdomain
    ("https://a.b.example.org", "PUT", (), "app", False),          # "*" stands for any part of a host
    ("https://shop.example.org.evil.test", "PUT", (), None, False),
    # "*" stands for no path, query, fragment, userinfo, or space: only a hand-made Origin has them there
    ("https://evil.test/.example.org", "PUT", (), None, False),
    ("https://evil.test?.example.org", "PUT", (), None, False),
    ("https://evil.test#.example.org", "PUT", (), None, False),
    ("https://evil.test@x.example.org", "PUT", (), None, False),
    ("https://evil.test\\.example.org", "PUT", (), None, False),
    ("https://a .example.org", "PUT", (), None, False),
    ("https://evil.test/.example.org", "GET", (), "anyone-reads", True),   # "*" alone: any origin, no credentials
    ("https://app.example.com", "PUT", ("authorization",), None, False),   # header not allowed
    ("https://app.example.com", "GET", ("authorization",), None, False),  # the "*" rule allows no header
    ("https://elsewhere.test", "GET", (), "anyone-reads", True),
    ("https://elsewhere.test", "PUT", (), None, False),
    ("https://admin.example.com", "DELETE", ("anything", "x-y"), "admin", False),
    ("https://APP.example.com", "PUT", (), None, False),          # origins are compared as written
    ("https://app.example.com", "POST", (), None, False),
    ("https://app.example.com", "get", (), None, False),          # methods are case-sensitive, as in S3
])
def test_the_first_rule_allowing_origin_method_and_headers_decides(
    origin: str, method: str, headers: tuple[str, ...], expected: str | None, any_origin: bool,
) -> None:
    found = match(RULES, origin, method, headers)
    assert (found.rule.id if found else None) == expected
    assert (found.any_origin if found else False) is any_origin


@pytest.mark.parametrize(("value", "names"), [
    (None, ()), ("", ()), ("X-Bailiwick-Token", ("x-bailiwick-token",)),
    ("content-type, X-Amz-Date,,  x-amz-meta-a ", ("content-type", "x-amz-date", "x-amz-meta-a")),
])
def test_requested_headers_are_lower_case_names(value: str | None, names: tuple[str, ...]) -> None:
    assert requested_headers(value) == names


_TEXT = st.text(alphabet=string.ascii_lowercase + string.digits + ".-:/", max_size=20)


@given(head=_TEXT, middle=_TEXT, tail=_TEXT)
def test_one_wildcard_matches_exactly_what_starts_and_ends_so(head: str, middle: str, tail: str) -> None:
    pattern = Wildcard.of(f"{head}*{tail}", fold=False)
    assert pattern.matches(head + middle + tail)
    assert Wildcard.of(head + tail, fold=False).matches(head + tail)
    assert not Wildcard.of(head + tail, fold=False).matches(head + "x" + tail)


@given(origin=_TEXT, head=_TEXT, tail=_TEXT)
def test_a_wildcard_match_is_a_prefix_and_suffix_that_do_not_overlap(origin: str, head: str, tail: str) -> None:
    expected = len(origin) >= len(head) + len(tail) and origin.startswith(head) and origin.endswith(tail)
    assert Wildcard.of(f"{head}*{tail}", fold=False).matches(origin) is expected
    assert Wildcard.of("*", fold=False).matches(origin)


def test_policy_check_reports_cors_problems_with_file_and_line(
    write_policy: WritePolicy, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = write_policy(_with_cors("      - allowed_origins: [\"*\"]\n        allowed_method: [GET]\n"))
    assert main(["policy", "check", str(folder)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f'{P}:9: datasets[0].cors[0]: missing required key "allowed_methods"',
        f"{P}:10: datasets[0].cors[0].allowed_method: unknown key (did you mean allowed_methods? expected one of: "
        "id, allowed_origins, allowed_methods, allowed_headers, expose_headers, max_age_seconds)",
    ]
