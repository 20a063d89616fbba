"""The claims bailiwick relies on: time (against the injected clock), subject, jurisdiction."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import Unauthenticated
from proxy.identity.claims import (
    MAX_SUBJECT_CHARS,
    check_times,
    jurisdiction_of,
    subject_of,
)

NOW = 1_000_000.0
LEEWAY = 30.0


@pytest.mark.parametrize(
    "payload",
    [
        {"exp": NOW + 1},
        {"exp": NOW - LEEWAY + 1},  # expired, but within the leeway
        {"exp": NOW + 60, "nbf": NOW + LEEWAY},  # not yet valid, but within the leeway
        {"exp": NOW + 60, "nbf": NOW, "iat": NOW},
        {"exp": NOW + 60.5, "iat": NOW + LEEWAY},
    ],
)
def test_accepts_current_tokens(payload: dict[str, Any]) -> None:
    check_times(payload, NOW, LEEWAY)


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        ({"exp": NOW - LEEWAY}, "ExpiredToken", "has expired"),
        ({"exp": NOW - 3600}, "ExpiredToken", "has expired"),
        ({}, "InvalidToken", "no expiry"),
        ({"exp": NOW + 60, "nbf": NOW + LEEWAY + 1}, "InvalidToken", "not valid yet"),
        ({"exp": NOW + 60, "iat": NOW + LEEWAY + 1}, "InvalidToken", "issued in the future"),
        ({"exp": str(NOW + 60)}, "InvalidToken", "exp claim is not a number"),
        ({"exp": True}, "InvalidToken", "exp claim is not a number"),
        ({"exp": None}, "InvalidToken", "exp claim is not a number"),
        ({"exp": float("nan")}, "InvalidToken", "exp claim is not a number"),
        ({"exp": float("inf")}, "InvalidToken", "exp claim is not a number"),
        ({"exp": 10**400}, "InvalidToken", "exp claim is not a number"),
        ({"exp": NOW + 60, "nbf": [NOW]}, "InvalidToken", "nbf claim is not a number"),
        ({"exp": NOW + 60, "iat": "yesterday"}, "InvalidToken", "iat claim is not a number"),
    ],
)
def test_refuses_tokens_out_of_time(payload: dict[str, Any], code: str, message: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        check_times(payload, NOW, LEEWAY)
    assert refused.value.code == code
    assert message in refused.value.message


@pytest.mark.parametrize(
    ("claim", "value"),
    [("sub", "alice"), ("email", "bob@example.de"), ("sub", "josé müller"), ("sub", "a" * MAX_SUBJECT_CHARS)],
)
def test_reads_the_subject(claim: str, value: str) -> None:
    assert subject_of({claim: value, "other": "x"}, claim) == value


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "has no subject (sub claim)"),
        ({"sub": None}, "has no subject (sub claim)"),
        ({"sub": ""}, "non-empty string"),
        ({"sub": 42}, "non-empty string"),
        ({"sub": ["alice"]}, "non-empty string"),
        ({"sub": "alice\r\nX-Bailiwick-Jurisdiction: IE"}, "control or non-printing characters"),
        ({"sub": "alice\x00"}, "control or non-printing characters"),
        ({"sub": "a" * (MAX_SUBJECT_CHARS + 1)}, f"longer than {MAX_SUBJECT_CHARS}"),
    ],
)
def test_refuses_bad_subjects(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        subject_of(payload, "sub")
    assert refused.value.code == "InvalidToken"
    assert message in refused.value.message


@pytest.mark.parametrize("code", ["IE", "DE", "US", "GB"])
def test_reads_the_jurisdiction(code: str) -> None:
    assert jurisdiction_of({"jurisdiction": code}, "jurisdiction") == code


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["IE"], "is a list"),
        (["IE", "US"], "is a list"),
        ("ie", "upper case"),
        ("Ie", "upper case"),
        (" IE", "spaces around"),
        ("IE ", "spaces around"),
        ("IE\n", "spaces around"),
        ("UK", "not an assigned ISO 3166-1 alpha-2 code"),
        ("EU", "not an assigned ISO 3166-1 alpha-2 code"),
        ("IRL", "not an assigned ISO 3166-1 alpha-2 code"),
        ("ZZ", "not an assigned ISO 3166-1 alpha-2 code"),
        ("", "not an assigned ISO 3166-1 alpha-2 code"),
        ("*", "not an assigned ISO 3166-1 alpha-2 code"),
        (353, "as a string"),
        ({"country": "IE"}, "as a string"),
        (None, "as a string"),
    ],
)
def test_refuses_anything_but_an_exact_country_code(value: Any, message: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        jurisdiction_of({"jurisdiction": value}, "jurisdiction")
    assert refused.value.code == "InvalidToken"
    assert refused.value.message.startswith("the token's jurisdiction claim ")
    assert message in refused.value.message


def test_refuses_a_missing_jurisdiction_naming_the_claim() -> None:
    with pytest.raises(Unauthenticated) as refused:
        jurisdiction_of({"country": "IE"}, "residency")
    assert refused.value.code == "InvalidToken"
    assert "no residency claim" in refused.value.message


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"exp": 1e308}, "past the year 9999"),
        ({"exp": NOW + 60, "iat": -1e308}, "past the year 9999"),
        ({"exp": NOW + 60, "nbf": 1e308}, "past the year 9999"),
        ({"exp": NOW + 3601, "iat": NOW}, "lives longer (exp - iat)"),
        ({"exp": NOW + 60, "iat": NOW - 3600}, "lives longer (exp - iat)"),
        ({"exp": NOW + 3600 + LEEWAY + 1}, "expires further ahead"),
    ],
)
def test_refuses_tokens_that_live_too_long(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        check_times(payload, NOW, LEEWAY, 3600)
    assert (refused.value.code, message in refused.value.message) == ("InvalidToken", True)


@pytest.mark.parametrize(
    "payload", [{"exp": NOW + 3600, "iat": NOW}, {"exp": NOW + 3600 + LEEWAY}, {"exp": NOW + 60, "iat": NOW - 3540}],
)
def test_accepts_tokens_at_the_longest_lifetime(payload: dict[str, Any]) -> None:
    assert check_times(payload, NOW, LEEWAY, 3600) == payload["exp"]
