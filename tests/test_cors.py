"""`proxy.cors` on its own: the headers a preflight and an actual request get, and the response hook's work."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cors import NO_ANSWER, CorsAnswer, PreflightRefused, answer_for, finish_headers, preflight
from proxy.policy.cors import CorsRule, Wildcard

APP = "https://app.example.com"
RULES = (
    CorsRule((Wildcard.of(APP, fold=False),), frozenset({"GET", "PUT"}),
             (Wildcard.of("x-bailiwick-token", fold=True), Wildcard.of("content-*", fold=True)), ("ETag",), 600),
    CorsRule((Wildcard.of("*", fold=False),), frozenset({"GET"})),
)


def _headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def _preflight(origin: str, method: str, *asked: str, api: str = "s3") -> dict[str, str]:
    pairs = [("Origin", origin), ("Access-Control-Request-Method", method)]
    pairs += [("Access-Control-Request-Headers", a) for a in asked]
    return dict(preflight(api, RULES, _headers(*pairs))[0].headers)


def test_an_allowed_preflight_names_origin_methods_headers_and_age() -> None:
    assert _preflight(APP, "PUT", "X-Bailiwick-Token, Content-Type") == {
        "Access-Control-Allow-Origin": APP,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "X-Bailiwick-Error-Code, X-Bailiwick-Reason, x-amz-request-id, ETag",
        "Access-Control-Allow-Methods": "GET, PUT",
        "Access-Control-Allow-Headers": "x-bailiwick-token, content-type",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    }


def test_an_origin_let_in_by_star_gets_itself_back_without_credentials() -> None:
    answer = _preflight("https://elsewhere.test", "GET")
    assert answer["Access-Control-Allow-Origin"] == "https://elsewhere.test"
    assert "Access-Control-Allow-Credentials" not in answer
    assert "Access-Control-Max-Age" not in answer


@pytest.mark.parametrize(("api", "code", "message"), [
    ("s3", "AccessForbidden", "CORSResponse: This CORS request is not allowed."),
    ("azure", "AccessForbidden", "CORS not enabled or no matching rule found for this request."),
])
@pytest.mark.parametrize(("origin", "method", "asked"), [
    ("https://elsewhere.test", "PUT", ()),                 # no rule allows that origin to PUT
    (APP, "DELETE", ()),                                   # nor that method
    (APP, "PUT", ("Authorization",)),                      # nor that header
    (APP, "PATCH", ()),                                    # not a CORS method
    (APP, "get", ()),
])
def test_a_preflight_no_rule_allows_is_refused_in_the_apis_shape(
    api: str, code: str, message: str, origin: str, method: str, asked: tuple[str, ...],
) -> None:
    with pytest.raises(PreflightRefused) as caught:
        _preflight(origin, method, *asked, api=api)
    assert (caught.value.status, caught.value.code) == (403, code)
    assert caught.value.message.startswith(message)


@pytest.mark.parametrize(("origin", "method", "expected"), [
    (APP, "GET", {"Access-Control-Allow-Origin": APP, "Access-Control-Allow-Credentials": "true",
                  "Access-Control-Expose-Headers": "X-Bailiwick-Error-Code, X-Bailiwick-Reason, x-amz-request-id, ETag",
                  "Vary": "Origin"}),
    ("https://elsewhere.test", "GET", {"Access-Control-Allow-Origin": "https://elsewhere.test",
                                       "Access-Control-Expose-Headers":
                                           "X-Bailiwick-Error-Code, X-Bailiwick-Reason, x-amz-request-id",
                                       "Vary": "Origin"}),
    ("https://elsewhere.test", "PUT", {"Vary": "Origin"}),   # not refused for it: only no CORS headers
])
def test_an_actual_request_gets_the_headers_of_the_rule_allowing_it(
    origin: str, method: str, expected: dict[str, str],
) -> None:
    assert dict(answer_for("s3", RULES, method, origin).headers) == expected


def test_azure_exposes_its_own_request_id_and_error_code() -> None:
    exposed = dict(answer_for("azure", RULES, "GET", APP).headers)["Access-Control-Expose-Headers"]
    assert exposed == "X-Bailiwick-Error-Code, X-Bailiwick-Reason, x-ms-request-id, x-ms-error-code, ETag"


def test_no_rules_no_headers() -> None:
    assert answer_for("s3", (), "GET", APP) is NO_ANSWER


@pytest.mark.parametrize(("sent", "answer", "expected"), [
    # The storage server's Access-Control-* go, whatever the policy says; other headers stay.
    ([("Access-Control-Allow-Origin", "*"), ("access-control-expose-headers", "x-secret"), ("ETag", '"1"')],
     None, [("ETag", '"1"')]),
    ([("Access-Control-Allow-Origin", "*"), ("ETag", '"1"')], NO_ANSWER, [("ETag", '"1"')]),
    ([("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Methods", "DELETE")],
     CorsAnswer((("Access-Control-Allow-Origin", APP), ("Vary", "Origin"))),
     [("Access-Control-Allow-Origin", APP), ("Vary", "Origin")]),
    # A Vary the answer has already is kept, and Origin added once.
    ([("Vary", "Accept-Encoding")], CorsAnswer((("Vary", "Origin"),)), [("Vary", "Accept-Encoding, Origin")]),
    ([("Vary", "origin")], CorsAnswer((("Vary", "Origin"),)), [("Vary", "origin")]),
])
def test_the_hook_drops_upstreams_access_control_and_adds_the_policys(
    sent: list[tuple[str, str]], answer: CorsAnswer | None, expected: list[tuple[str, str]],
) -> None:
    headers: CIMultiDict[str] = CIMultiDict(sent)
    finish_headers(headers, answer)
    assert list(headers.items()) == expected
