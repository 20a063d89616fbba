"""Strict percent-decoding: exactly one round, UTF-8 only, no control characters."""

from __future__ import annotations

import contextlib
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import BadRequest
from proxy.storage.uri import PATH_CHARS, describe, first_outside, percent_decode

NO_CONTROLS = st.characters(blacklist_categories=("Cc", "Cs"))


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("plain", "plain"),
        ("a%20b", "a b"),
        ("%C3%A4", "ä"),
        ("%c3%a4", "ä"),
        ("%F0%9F%98%80", "\U0001f600"),
        ("100%25", "100%"),
        ("%2541", "%41"),  # one round only: the result keeps its escape
        ("a%2Fb", "a/b"),
        ("", ""),
    ],
)
def test_decodes_exactly_once(raw: str, decoded: str) -> None:
    assert percent_decode(raw, "it") == decoded


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("%zz", "invalid percent-escape"),
        ("%4", "invalid percent-escape"),
        ("abc%", "invalid percent-escape"),
        ("%%41", "invalid percent-escape"),
        ("%FF", "UTF-8"),
        ("%C3", "UTF-8"),
        ("%C0%AE", "UTF-8"),  # overlong "." - the classic traversal trick
        ("%ED%A0%80", "UTF-8"),  # an encoded surrogate
        ("%00", "control"),
        ("%0A", "control"),
        ("%7F", "control"),
        ("%C2%85", "control"),  # NEL, a C1 control
        ("a\tb", "control"),
        ("caf\u00e9", "non-ASCII"),
        ("\udcff", "non-ASCII"),
    ],
)
def test_refuses_what_a_server_could_read_another_way(raw: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason) as caught:
        percent_decode(raw, "the thing")
    assert caught.value.code == "InvalidURI"
    assert caught.value.status == 400


def test_error_code_can_be_chosen() -> None:
    with pytest.raises(BadRequest) as caught:
        percent_decode("%zz", "the header", code="InvalidRequest")
    assert caught.value.code == "InvalidRequest"


@pytest.mark.parametrize(
    ("text", "allowed", "first"),
    [("abc", PATH_CHARS, None), ("a+b;c", PATH_CHARS, "+"), ("a;b", PATH_CHARS, ";"), ("a\\b", PATH_CHARS, "\\")],
)
def test_first_outside(text: str, allowed: frozenset[str], first: str | None) -> None:
    assert first_outside(text, allowed) == first


@pytest.mark.parametrize(
    ("char", "shown"), [("a", '"a"'), ("\x00", "U+0000"), ("\udcff", "byte 0xFF"), ("é", "U+00E9")]
)
def test_describe_never_echoes_raw_bytes(char: str, shown: str) -> None:
    assert describe(char) == shown


@given(st.text(alphabet=NO_CONTROLS))
def test_quoted_text_round_trips(text: str) -> None:
    assert percent_decode(quote(text, safe=""), "it") == text
    assert percent_decode(quote(text, safe="/~"), "it") == text


@given(st.text())
def test_decode_only_ever_raises_bad_request(text: str) -> None:
    with contextlib.suppress(BadRequest):
        percent_decode(text, "it")
